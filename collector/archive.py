"""The raw archive: every accepted message, compressed, checksummed, in an object store.

Layout: ``raw/dt=YYYY-MM-DD/gateway={id}/{first_seq}-{last_seq}-{sha8}.jsonl.gz`` where ``dt`` is
the UTC receive date. Each object is gzip of JSON lines ``{"topic", "received_at", "payload"}``
(the payload exactly as received, which is valid UTF-8 JSON because it passed the wire
contract). The SHA-256 of the compressed bytes travels with the object (S3 metadata, or a
``.sha256`` file beside it locally) and is checked on every read. Models live under
``models/{name}/{version}/`` in the same store (written by model_export).

The :class:`Archiver` drains ``archive_outbox`` (filled in the ingest transaction) group by
group; an object is recorded in ``archive_objects`` and its messages leave the outbox in one
transaction after the upload succeeded. While the store is down it backs off and retries;
ingest is unaffected because the outbox holds the messages durably in PostgreSQL.
:func:`rebuild` replays objects through the same batch writer, so it is idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable

__all__ = ["ObjectStore", "ArchiveError", "StoreUnavailable", "LocalDirStore", "S3Store", "Archiver",
           "RebuildResult", "archive_key", "encode_object", "decode_object", "rebuild", "open_store"]

log = logging.getLogger("gridsight.collector.archive")

RAW_PREFIX = "raw/"
_KEY_RE = re.compile(r"^raw/dt=(\d{4}-\d{2}-\d{2})/gateway=([A-Za-z0-9._-]+)/[^/]+\.jsonl\.gz$")


class ArchiveError(RuntimeError):
    """An object that cannot be used: missing, corrupt (checksum mismatch) or unparsable."""


class StoreUnavailable(ArchiveError):
    """The object store cannot be reached right now; retry later."""


@runtime_checkable
class ObjectStore(Protocol):
    """Where archive objects and model files live: a local directory or any S3 endpoint."""

    def put(self, key: str, data: bytes, sha256: str) -> None:
        """Store ``data`` under ``key`` durably (overwriting is allowed: keys are content-derived)."""

    def get(self, key: str) -> bytes:
        """The object's bytes, checked against its stored SHA-256."""

    def list(self, prefix: str, start_after: str = "") -> Iterator[str]:
        """Keys under ``prefix`` in lexical order, after ``start_after``."""

    def describe(self) -> str:
        """Human-readable location, for status output."""


class LocalDirStore:
    """Objects as files under ``root`` (atomic rename, fsync), checksum in ``<key>.sha256``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ArchiveError(f"unsafe key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, sha256: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for target, body in ((path, data), (path.with_name(path.name + ".sha256"), sha256.encode())):
                tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                with open(tmp, "wb") as fh:
                    fh.write(body)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = path.read_bytes()
            expected = path.with_name(path.name + ".sha256").read_text().strip()
        except FileNotFoundError:
            raise ArchiveError(f"{key}: missing object or checksum") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise ArchiveError(f"{key}: checksum mismatch")
        return data

    def list(self, prefix: str, start_after: str = "") -> Iterator[str]:
        keys = []
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.endswith(".sha256") or name.startswith("."):
                    continue
                key = str(Path(dirpath, name).relative_to(self.root)).replace(os.sep, "/")
                if key.startswith(prefix) and key > start_after:
                    keys.append(key)
        return iter(sorted(keys))

    def describe(self) -> str:
        return f"local directory {self.root}"


class S3Store:
    """Objects in an S3 bucket through boto3; any S3-compatible endpoint (AWS, MinIO, moto)."""

    def __init__(self, endpoint_url: str | None, bucket: str, *, region: str | None = None,
                 client: object | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self.bucket = bucket
        # fail fast: the archiver has its own backoff, and ingest must not wait on S3
        self._client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 2, "mode": "standard"}))

    def _call(self, fn: Callable, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise ArchiveError(f"{kwargs.get('Key', '')}: missing object") from None
            if code in ("NoSuchBucket",):
                raise StoreUnavailable(f"bucket {self.bucket!r} does not exist") from None
            raise StoreUnavailable(f"S3 error {code}: {exc}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 unreachable: {exc}") from None

    def put(self, key: str, data: bytes, sha256: str) -> None:
        self._call(self._client.put_object, Key=key, Body=data, Metadata={"sha256": sha256},
                   ContentType="application/gzip")

    def get(self, key: str) -> bytes:
        obj = self._call(self._client.get_object, Key=key)
        data = obj["Body"].read()
        expected = obj.get("Metadata", {}).get("sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ArchiveError(f"{key}: checksum mismatch")
        return data

    def list(self, prefix: str, start_after: str = "") -> Iterator[str]:
        token = None
        while True:
            kwargs = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after
            page = self._call(self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield item["Key"]
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def describe(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint_url or 'AWS'}"


def open_store(settings) -> ObjectStore:
    """The store the settings ask for: S3 when a bucket is set, else ``data_dir/archive``."""
    if settings.s3_bucket:
        return S3Store(settings.s3_endpoint_url, settings.s3_bucket)
    return LocalDirStore(Path(settings.data_dir) / "archive")


# --------------------------------------------------------------------------- object format


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    topic: str
    received_at: float
    payload: bytes


def archive_key(day: dt.date, gateway_id: str, first_seq: int, last_seq: int, sha256: str) -> str:
    return f"raw/dt={day.isoformat()}/gateway={gateway_id}/{first_seq:020d}-{last_seq:020d}-{sha256[:8]}.jsonl.gz"


def encode_object(messages: list[ArchivedMessage]) -> tuple[bytes, str]:
    """gzip JSON lines of the messages and the SHA-256 of the compressed bytes."""
    lines = [json.dumps({"topic": m.topic, "received_at": m.received_at, "payload": m.payload.decode("utf-8")},
                        separators=(",", ":")) for m in messages]
    data = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)
    return data, hashlib.sha256(data).hexdigest()


def decode_object(key: str, data: bytes) -> list[ArchivedMessage]:
    try:
        text = gzip.decompress(data).decode("utf-8")
        out = []
        for line in text.splitlines():
            if line:
                obj = json.loads(line)
                out.append(ArchivedMessage(obj["topic"], float(obj["received_at"]), obj["payload"].encode("utf-8")))
        return out
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{key}: not a gridsight archive object ({exc})") from None


def key_date(key: str) -> dt.date | None:
    match = _KEY_RE.match(key)
    return dt.date.fromisoformat(match.group(1)) if match else None


# --------------------------------------------------------------------------- archiver


class Archiver:
    """Drains ``archive_outbox`` into the object store, one (day, gateway) group per object."""

    def __init__(self, dsn: str, store: ObjectStore, *, batch_messages: int = 5000,
                 max_backoff_s: float = 60.0, metrics=None) -> None:
        self.dsn = dsn
        self.store = store
        self.batch_messages = batch_messages
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics
        self.failures = 0
        self.last_error: str | None = None
        self._conn = None

    async def _connection(self):
        from collector.db.writer import connect

        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self.dsn)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def backoff_s(self) -> float:
        """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4 ... capped."""
        return 0.0 if self.failures == 0 else min(self.max_backoff_s, 2.0 ** (self.failures - 1))

    async def pending(self) -> int:
        conn = await self._connection()
        return await conn.fetchval("SELECT count(*) FROM archive_outbox")

    async def drain(self) -> int:
        """Upload everything pending; returns messages archived. Raises StoreUnavailable on outage."""
        total = 0
        while True:
            n = await self.run_once()
            total += n
            if n == 0:
                return total

    async def run_once(self) -> int:
        """Upload the groups among the oldest pending messages; returns messages archived."""
        conn = await self._connection()
        groups = await conn.fetch(
            "SELECT DISTINCT gateway_id, (received_at AT TIME ZONE 'UTC')::date AS day "
            "FROM (SELECT gateway_id, received_at FROM archive_outbox ORDER BY id LIMIT $1) AS head",
            self.batch_messages)
        done = 0
        for group in groups:
            done += await self._archive_group(conn, group["gateway_id"], group["day"])
        if self.metrics is not None:
            self.metrics.set("gridsight_collector_archive_pending", await conn.fetchval("SELECT count(*) FROM archive_outbox"))
        return done

    async def _archive_group(self, conn, gateway_id: str, day: dt.date) -> int:
        start = dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, received_at, seq, topic, payload FROM archive_outbox WHERE gateway_id = $1 "
                "AND received_at >= $2 AND received_at < $3 ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED",
                gateway_id, start, start + 86400, self.batch_messages)
            if not rows:
                return 0
            messages = [ArchivedMessage(r["topic"], r["received_at"], bytes(r["payload"])) for r in rows]
            data, sha = await asyncio.get_running_loop().run_in_executor(None, encode_object, messages)
            key = archive_key(day, gateway_id, rows[0]["seq"], rows[-1]["seq"], sha)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.store.put, key, data, sha)
            except ArchiveError as exc:
                self.failures += 1
                self.last_error = str(exc)
                if self.metrics is not None:
                    self.metrics.inc("gridsight_collector_archive_failures_total")
                raise StoreUnavailable(str(exc)) from exc
            await conn.execute(
                "INSERT INTO archive_objects (key, sha256, bytes, messages, gateway_id, dt, first_received_at, "
                "last_received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING",
                key, sha, len(data), len(rows), gateway_id, day,
                min(r["received_at"] for r in rows), max(r["received_at"] for r in rows))
            await conn.execute("DELETE FROM archive_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.failures = 0
        self.last_error = None
        if self.metrics is not None:
            self.metrics.inc("gridsight_collector_archive_objects_total")
        return len(rows)

    async def run(self, stop: threading.Event, interval_s: float = 2.0,
                  maintenance: Callable[[], object] | None = None, maintenance_interval_s: float = 3600.0) -> None:
        """Archive until ``stop`` is set, backing off while the store or database is down."""
        from collector.db.writer import TransientDatabaseError, _TRANSIENT

        next_maintenance = 0.0
        while not stop.is_set():
            wait = interval_s
            try:
                if maintenance is not None and time.monotonic() >= next_maintenance:
                    await maintenance(await self._connection())
                    next_maintenance = time.monotonic() + maintenance_interval_s
                await self.drain()
            except StoreUnavailable:
                wait = max(interval_s, self.backoff_s())
            except (TransientDatabaseError, *_TRANSIENT):
                await self.close()
                wait = max(interval_s, 2.0)
            except Exception as exc:  # the archiver must outlive any single failure; the outbox keeps the data
                log.warning("archiver pass failed, retrying: %s: %s", type(exc).__name__, exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                await self.close()
                wait = max(interval_s, 5.0)
            await asyncio.get_running_loop().run_in_executor(None, stop.wait, wait)


# --------------------------------------------------------------------------- rebuild


@dataclass
class RebuildResult:
    objects: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    rows: int = 0


async def rebuild(dsn: str, store: ObjectStore, since: dt.date, *, replica: str = "rebuild",
                  batch_messages: int = 500, progress: Callable[[str], None] | None = None) -> RebuildResult:
    """Reload PostgreSQL from the archive objects received on or after ``since``; idempotent."""
    from collector.db.writer import BatchWriter, Received, connect

    writer = BatchWriter(dsn, replica=replica, unknown_gateways="register", archive=False)
    conn = await connect(dsn)
    result = RebuildResult()
    try:
        start_after = f"{RAW_PREFIX}dt={(since - dt.timedelta(days=1)).isoformat()}/~"
        for key in store.list(RAW_PREFIX, start_after=start_after):
            day = key_date(key)
            if day is None or day < since:
                continue
            data = await asyncio.get_running_loop().run_in_executor(None, store.get, key)
            messages = decode_object(key, data)
            if not messages:
                continue
            for i in range(0, len(messages), batch_messages):
                chunk = [Received(m.topic, m.payload, m.received_at) for m in messages[i:i + batch_messages]]
                out = await writer.write(chunk)
                result.messages += out.messages
                result.stored += sum(out.stored.values())
                result.duplicates += out.duplicates
                result.dead_letters += sum(out.dead_letters.values())
                result.rows += sum(v for k, v in out.rows.items() if k in ("readings", "interval_summaries",
                                                                          "anomaly_flags"))
            await conn.execute(
                "INSERT INTO archive_objects (key, sha256, bytes, messages, gateway_id, dt, first_received_at, "
                "last_received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING",
                key, hashlib.sha256(data).hexdigest(), len(data), len(messages), _KEY_RE.match(key).group(2), day,
                min(m.received_at for m in messages), max(m.received_at for m in messages))
            result.objects += 1
            if progress is not None:
                progress(f"{key}: {len(messages)} messages")
    finally:
        await writer.close()
        await conn.close()
    return result
