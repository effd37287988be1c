"""Where customers' data keys live: outside PostgreSQL, where erasing one really destroys it.

A row PostgreSQL updates or deletes survives as a dead tuple, in the WAL and in every base backup,
so a data key kept in the database can be recovered after "erasure" by anyone holding a backup and
the master key. The key store keeps each customer's wrapped data key as one small file; erasure
overwrites the file with random bytes, fsyncs it, unlinks it and fsyncs the folder.

:class:`KeyStore` is the seam a KMS can fill (AWS KMS or Google Cloud KMS: one key per customer,
scheduled for destruction on erasure; HashiCorp Vault transit: delete the named key). Limits of the
file store: on copy-on-write or log-structured filesystems and on SSDs an overwrite may land on new
blocks, so the old bytes can linger below the filesystem; put the folder on an encrypted volume
(LUKS) and keep it out of backups that outlive the retention you promise (docs/security.md).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Iterator, Protocol

from gridsight.errors import GridsightError

__all__ = ["KeyStore", "FileKeyStore", "KeyStoreError", "KeyMissing"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SUFFIX = ".key"


class KeyStoreError(GridsightError, OSError):
    """The key store cannot be used (folder missing, not writable); the message names it."""


class KeyMissing(GridsightError, LookupError):
    """No key for this customer: never stored, or destroyed by erasure."""


class KeyStore(Protocol):
    """Wrapped per-customer data keys, destroyable one by one."""

    def put(self, customer_id: str, wrapped: bytes) -> None:
        """Store (or replace) a customer's wrapped data key durably before returning."""

    def get(self, customer_id: str) -> bytes:
        """The wrapped data key; raise :class:`KeyMissing` when there is none."""

    def destroy(self, customer_id: str) -> bool:
        """Destroy the key beyond recovery; False if there was none."""

    def customer_ids(self) -> Iterator[str]:
        """Every customer with a key."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileKeyStore:
    """One file per customer (``{folder}/{customer_id}.key``, mode 0600) holding the wrapped key."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise KeyStoreError(f"key store {self.folder}: {exc.strerror or exc}") from None

    def _path(self, customer_id: str) -> Path:
        if not _ID.match(customer_id):
            raise KeyMissing(f"invalid customer id {customer_id[:64]!r}")
        return self.folder / f"{customer_id}{_SUFFIX}"

    def put(self, customer_id: str, wrapped: bytes) -> None:
        path = self._path(customer_id)
        tmp = self.folder / f".{customer_id}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(wrapped)
                fh.flush()
                os.fsync(fh.fileno())
            old = open(path, "r+b", buffering=0) if path.exists() else None
            try:
                os.replace(tmp, path)
                _fsync_dir(self.folder)
                if old is not None:        # the replaced key (e.g. under a retired master key): overwrite it too
                    self._overwrite(old)
            finally:
                if old is not None:
                    old.close()
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KeyStoreError(f"key store {self.folder}: cannot write {path.name} ({exc.strerror or exc})") from None

    def get(self, customer_id: str) -> bytes:
        try:
            return self._path(customer_id).read_bytes()
        except FileNotFoundError:
            raise KeyMissing(f"no data key for {customer_id} (erased, or the key store {self.folder} is not "
                             "the one this database was written with)") from None
        except OSError as exc:
            raise KeyStoreError(f"key store {self.folder}: {exc.strerror or exc}") from None

    def destroy(self, customer_id: str) -> bool:
        path = self._path(customer_id)
        if not path.exists():
            return False
        try:
            self._shred(path)
            _fsync_dir(self.folder)
        except OSError as exc:
            raise KeyStoreError(f"key store {self.folder}: cannot destroy {path.name} ({exc.strerror or exc})") from None
        return True

    @staticmethod
    def _overwrite(fh) -> None:
        """Overwrite an open file in place with random bytes, then zeros, fsync after each pass."""
        size = os.fstat(fh.fileno()).st_size
        for fill in (secrets.token_bytes(size), bytes(size)):
            fh.seek(0)
            fh.write(fill)
            os.fsync(fh.fileno())

    def _shred(self, path: Path) -> None:
        with open(path, "r+b", buffering=0) as fh:
            self._overwrite(fh)
        path.unlink()

    def customer_ids(self) -> Iterator[str]:
        for path in sorted(self.folder.glob(f"*{_SUFFIX}")):
            yield path.name[:-len(_SUFFIX)]
