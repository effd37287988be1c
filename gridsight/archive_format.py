"""The raw-archive object format and the stores that hold it: a contract between the collector
(which writes it), model training and rebuilds (which read it), and any engine an analyst points
at the bucket.

Layout: ``raw/dt=YYYY-MM-DD/gateway={id}/{first_seq}-{last_seq}-{sha8}.jsonl.gz`` where ``dt`` is
the UTC receive date. Each object is gzip of JSON lines ``{"topic", "received_at", "payload"}``
(the payload exactly as received). The SHA-256 of the compressed bytes travels with the object
(S3 metadata, or a ``.sha256`` file beside it locally) and is checked on every read. Standard
library only; boto3 is imported when an S3 store is opened.
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from gridsight.errors import GridsightError

__all__ = ['RAW_PREFIX', 'ArchiveError', 'StoreUnavailable', 'ObjectStore', 'LocalDirStore', 'S3Store', 'open_store', 'ArchivedMessage', 'archive_key', 'encode_object', 'decode_object', 'key_date']

log = logging.getLogger("gridsight.archive")

RAW_PREFIX = "raw/"
_KEY_RE = re.compile(r"^raw/dt=(\d{4}-\d{2}-\d{2})/gateway=([A-Za-z0-9._-]+)/[^/]+\.jsonl\.gz$")


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


def key_gateway(key: str) -> str | None:
    """The gateway id a raw-archive key is filed under, or None for a key that is not one."""
    match = _KEY_RE.match(key)
    return match.group(2) if match else None


def key_date(key: str) -> dt.date | None:
    match = _KEY_RE.match(key)
    return dt.date.fromisoformat(match.group(1)) if match else None
