"""The raw-archive object format and the stores that hold it: a contract between the collector
(which writes it), model training and rebuilds (which read it), and any engine an analyst points
at the bucket.

Layout (Hive-style partitions, ``dt`` the UTC receive date):

- ``raw/dt=YYYY-MM-DD/gateway={id}/{first_seq}-{last_seq}-{sha8}.parquet``: every accepted
  message of one gateway and day, one row each: ``topic``, ``kind``, ``seq``, ``received_at``
  (timestamp, UTC) and ``payload`` (the JSON exactly as received). Enough to rebuild the database.
- ``readings/dt=YYYY-MM-DD/gateway={id}/{same name}.parquet`` beside it: the raw readings of those
  messages flattened, one row per reading (``meter_id``, ``ts``, ``energy_kwh``, ``power_w``,
  ``voltage_v`` ... every :class:`gridsight.wire.Reading` field, plus the message's ``seq`` and
  ``received_at``), so DuckDB, Spark, Trino or Athena read a year of readings with no custom code.
  Partition columns (``dt``, ``gateway``) live in the path only, as Hive layout wants.
- Objects written before Parquet, ``raw/.../{...}.jsonl.gz`` (gzip of JSON lines ``{"topic",
  "received_at", "payload"}``), stay readable: :func:`decode_object` reads both.

The SHA-256 of an object's bytes travels with it (S3 metadata, or a ``.sha256`` file beside it
locally) and is checked on every read. Parquet files are snappy-compressed (every engine reads
it). pyarrow is imported only to write or read Parquet, boto3 only when an S3 store is opened.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, cast, runtime_checkable

from gridsight.errors import GridsightError

__all__ = [
    "RAW_PREFIX",
    "READINGS_PREFIX",
    "ArchiveError",
    "StoreUnavailable",
    "ObjectStore",
    "LocalDirStore",
    "S3Store",
    "open_store",
    "ArchivedMessage",
    "archive_key",
    "readings_key",
    "encode_object",
    "encode_readings",
    "decode_object",
    "key_date",
    "key_gateway",
    "PARQUET",
    "JSONL_GZ",
]

log = logging.getLogger("gridsight.archive")

RAW_PREFIX = "raw/"
READINGS_PREFIX = "readings/"
PARQUET, JSONL_GZ = "parquet", "jsonl.gz"
_KEY_RE = re.compile(r"^raw/dt=(\d{4}-\d{2}-\d{2})/gateway=([A-Za-z0-9._-]+)/[^/]+\.(?:jsonl\.gz|parquet)$")


class ArchiveError(GridsightError, RuntimeError):
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

    def __init__(self, endpoint_url: str | None, bucket: str, *, region: str | None = None, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_url = endpoint_url
        self.bucket = bucket
        # fail fast: the archiver has its own backoff, and ingest must not wait on S3
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 2, "mode": "standard"}),
        )

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
        self._call(
            self._client.put_object,
            Key=key,
            Body=data,
            Metadata={"sha256": sha256},
            ContentType="application/vnd.apache.parquet" if key.endswith(".parquet") else "application/gzip",
        )

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


def archive_key(day: dt.date, gateway_id: str, first_seq: int, last_seq: int, sha256: str, fmt: str = PARQUET) -> str:
    return f"raw/dt={day.isoformat()}/gateway={gateway_id}/{first_seq:020d}-{last_seq:020d}-{sha256[:8]}.{fmt}"


def readings_key(key: str) -> str:
    """Where the flattened readings of the Parquet object ``key`` go: the same name under ``readings/``."""
    if not key.startswith(RAW_PREFIX) or not key.endswith(".parquet"):
        raise ArchiveError(f"{key}: not a Parquet raw-archive key")
    return READINGS_PREFIX + key[len(RAW_PREFIX) :]


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ArchiveError("Parquet archive objects need pyarrow: pip install 'gridsight[collector]'") from None
    return pa, pq


def _parquet_bytes(table) -> bytes:
    pa, pq = _pyarrow()
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def _payload_seq(payload: bytes) -> int | None:
    """The message's sequence number, for a queryable column (the payload stays the record)."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    seq = obj.get("seq") if isinstance(obj, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def encode_object(messages: list[ArchivedMessage], fmt: str = PARQUET) -> tuple[bytes, str]:
    """The archive object of ``messages`` (Parquet, or the older gzip JSON lines) and its SHA-256."""
    if fmt == JSONL_GZ:
        lines = [
            json.dumps(
                {"topic": m.topic, "received_at": m.received_at, "payload": m.payload.decode("utf-8")},
                separators=(",", ":"),
            )
            for m in messages
        ]
        data = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6, mtime=0)
        return data, hashlib.sha256(data).hexdigest()
    if fmt != PARQUET:
        raise ArchiveError(f"unknown archive format {fmt!r}; {PARQUET} or {JSONL_GZ}")
    pa, _ = _pyarrow()
    table = pa.table(
        {
            "topic": pa.array([m.topic for m in messages], pa.string()),
            "kind": pa.array([m.topic.rsplit("/", 1)[-1] for m in messages], pa.string()),
            "seq": pa.array([_payload_seq(m.payload) for m in messages], pa.int64()),
            "received_at": pa.array([int(round(m.received_at * 1e6)) for m in messages], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "payload": pa.array([m.payload.decode("utf-8") for m in messages], pa.string()),
        }
    )
    data = _parquet_bytes(table)
    return data, hashlib.sha256(data).hexdigest()


def encode_readings(messages: list[ArchivedMessage]) -> tuple[bytes, str] | None:
    """The raw readings inside ``messages`` as one flat Parquet table, or None when there are none.

    Messages that do not decode (they were dead-lettered at ingest, never archived) are skipped."""
    from gridsight import wire

    rows: list[tuple[int, float, wire.Reading]] = []
    for m in messages:
        if not m.topic.endswith("/raw"):
            continue
        try:
            chunk = wire.decode(m.topic, m.payload)
        except wire.WireError:
            continue
        rows.extend((chunk.seq, m.received_at, r) for r in cast(wire.RawChunk, chunk).readings)
    if not rows:
        return None
    pa, _ = _pyarrow()

    def ts(values):
        return pa.array([int(round(v * 1e6)) for v in values], pa.int64()).cast(pa.timestamp("us", tz="UTC"))

    columns = {
        "meter_id": pa.array([r.meter_id for _, _, r in rows], pa.string()),
        "ts": ts([r.ts for _, _, r in rows]),
    }
    for f in (field.name for field in fields(wire.Reading)):
        if f in ("meter_id", "ts"):
            continue
        values = [getattr(r, f) for _, _, r in rows]
        kind = pa.string() if f == "channel" else pa.int32() if f == "tariff" else pa.float64()
        columns[f] = pa.array(values, kind)
    columns["seq"] = pa.array([seq for seq, _, _ in rows], pa.int64())
    columns["received_at"] = ts([t for _, t, _ in rows])
    data = _parquet_bytes(pa.table(columns))
    return data, hashlib.sha256(data).hexdigest()


def decode_object(key: str, data: bytes) -> list[ArchivedMessage]:
    """The messages of an archive object, Parquet or the older gzip JSON lines (chosen by the key)."""
    if key.endswith(".parquet"):
        return _decode_parquet(key, data)
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


def _decode_parquet(key: str, data: bytes) -> list[ArchivedMessage]:
    pa, pq = _pyarrow()
    try:
        table = pq.read_table(pa.BufferReader(data), columns=["topic", "received_at", "payload"])
        topics = table.column("topic").to_pylist()
        received = table.column("received_at").cast(pa.int64()).to_pylist()
        payloads = table.column("payload").to_pylist()
    except (pa.ArrowException, KeyError, ValueError, OSError) as exc:
        raise ArchiveError(f"{key}: not a gridsight Parquet archive object ({exc})") from None
    return [ArchivedMessage(t, r / 1e6, p.encode("utf-8")) for t, r, p in zip(topics, received, payloads)]


def key_gateway(key: str) -> str | None:
    """The gateway id a raw-archive key is filed under, or None for a key that is not one."""
    match = _KEY_RE.match(key)
    return match.group(2) if match else None


def key_date(key: str) -> dt.date | None:
    match = _KEY_RE.match(key)
    return dt.date.fromisoformat(match.group(1)) if match else None
