"""Personal data of customers, encrypted at the application level.

Each customer gets a random 256-bit data key; their name, address and contact are sealed
with AES-GCM under that key (the customer id and field name as associated data, so a
ciphertext cannot be moved to another customer or field). The data key is kept only wrapped
(AES-GCM) by the master key, which comes from the environment (``GRIDSIGHT_MASTER_KEY``,
base64 of 32 bytes, or ``GRIDSIGHT_MASTER_KEY_FILE``), and only in the key store
(:mod:`collector.keystore`), never in PostgreSQL: a key in a table would survive erasure in
dead tuples, the WAL and backups. Erasure destroys the key in the key store first, then nulls
the ciphertexts and unlinks the meters: readings and aggregates stay, but nothing connects
them to a person any more, and every copy of the ciphertext (backups included) is unreadable.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from collector.keystore import KeyMissing, KeyStore

from collector.settings import CollectorSecrets, load_secrets
from gridsight.settings import ConfigError
from gridsight.errors import GridsightError

__all__ = ["MasterKey", "MasterKeyError", "CustomerVault", "Customer", "CustomerNotFound", "MeterTaken",
           "PERSONAL_FIELDS"]

PERSONAL_FIELDS = ("name", "address", "contact")
_NONCE = 12


class MasterKeyError(GridsightError, ValueError):
    """The master key is missing or malformed; the message names the variable to set."""


class CustomerNotFound(GridsightError, LookupError):
    """No such customer (or the customer was erased)."""


class MeterTaken(GridsightError, ValueError):
    """The meter is already bound to another customer."""


class MasterKey:
    """The key that wraps every customer's data key. Only ever read from env or a file."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise MasterKeyError("the master key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(raw)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "MasterKey":
        """The key in ``GRIDSIGHT_MASTER_KEY[_FILE]`` of ``env`` (default: the process environment)."""
        try:
            keys = load_secrets(None if env is None else
                                {k: v for k, v in env.items() if k.startswith("GRIDSIGHT_MASTER_KEY")})
        except ConfigError as exc:
            raise MasterKeyError(f"{exc.key}: {exc.reason}") from None
        return cls.from_secrets(keys)

    @classmethod
    def from_secrets(cls, keys: CollectorSecrets) -> "MasterKey":
        """The key of the collector's settings (``GRIDSIGHT_MASTER_KEY`` or ``GRIDSIGHT_MASTER_KEY_FILE``)."""
        encoded = keys.master_key
        if encoded is None:
            raise MasterKeyError("set GRIDSIGHT_MASTER_KEY or GRIDSIGHT_MASTER_KEY_FILE to base64 of 32 random "
                                 "bytes (python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())')")
        try:
            return cls(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise MasterKeyError("GRIDSIGHT_MASTER_KEY: not base64 of 32 bytes") from None

    @staticmethod
    def generate() -> str:
        """A new master key, base64-encoded, for setup scripts and tests."""
        return base64.b64encode(os.urandom(32)).decode("ascii")

    def wrap(self, data_key: bytes, customer_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, b"dek:" + customer_id.encode())

    def unwrap(self, wrapped: bytes, customer_id: str) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"dek:" + customer_id.encode())
        except InvalidTag:
            raise MasterKeyError("the master key does not open this customer's data key (wrong key?)") from None


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    address: str
    contact: str
    meters: tuple[str, ...]


def _seal(key: bytes, customer_id: str, field: str, value: str) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, value.encode("utf-8"), f"{customer_id}:{field}".encode())


def _open(key: bytes, customer_id: str, field: str, sealed: bytes) -> str:
    return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], f"{customer_id}:{field}".encode()).decode("utf-8")


class CustomerVault:
    """Customers and their meters: create, read (decrypting), export, erase."""

    def __init__(self, engine: Engine, master_key: MasterKey, key_store: KeyStore,
                 now: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.master_key = master_key
        self.key_store = key_store
        self._now = now

    def create(self, name: str, address: str, contact: str, meters: tuple[str, ...] = ()) -> Customer:
        customer_id = f"c-{uuid.uuid4().hex[:16]}"
        data_key = AESGCM.generate_key(bit_length=256)
        values = {"name": name, "address": address, "contact": contact}
        params: dict[str, Any] = {f"{f}_enc": _seal(data_key, customer_id, f, values[f]) for f in PERSONAL_FIELDS}
        params.update(cid=customer_id)
        self.key_store.put(customer_id, self.master_key.wrap(data_key, customer_id))
        try:
            with self.engine.begin() as conn:
                conn.execute(text("INSERT INTO customers (customer_id, name_enc, address_enc, contact_enc) "
                                  "VALUES (:cid, :name_enc, :address_enc, :contact_enc)"), params)
                for meter_id in meters:
                    self._link(conn, customer_id, meter_id)
        except BaseException:
            self.key_store.destroy(customer_id)
            raise
        return Customer(customer_id, name, address, contact, tuple(sorted(meters)))

    def _data_key(self, customer_id: str, legacy_wrapped: bytes | None = None) -> bytes:
        try:
            wrapped = self.key_store.get(customer_id)
        except KeyMissing:
            if legacy_wrapped is None:
                raise CustomerNotFound(customer_id) from None
            wrapped = legacy_wrapped          # written before the key store (see adopt_database_keys)
        return self.master_key.unwrap(wrapped, customer_id)

    def adopt_database_keys(self) -> int:
        """Move data keys still wrapped in the ``customers`` table (written before the key store)
        into the key store and null them in the table; returns how many moved. Idempotent.

        Copies of those keys stay in the database's WAL and backups, wrapped under the current
        master key: rotate the master key afterwards and destroy the old one, so they can never
        be unwrapped (docs/security.md)."""
        moved = 0
        with self.engine.begin() as conn:
            rows = conn.execute(text("SELECT customer_id, wrapped_key FROM customers WHERE wrapped_key IS NOT NULL "
                                     "FOR UPDATE")).all()
            for row in rows:
                wrapped = bytes(row.wrapped_key)
                self.master_key.unwrap(wrapped, row.customer_id)        # refuse to move a key we cannot open
                self.key_store.put(row.customer_id, wrapped)
                conn.execute(text("UPDATE customers SET wrapped_key = NULL WHERE customer_id = :c"),
                             {"c": row.customer_id})
                moved += 1
        return moved

    def _link(self, conn, customer_id: str, meter_id: str) -> None:
        owner = conn.execute(text("SELECT customer_id FROM customer_meters WHERE meter_id = :m"),
                             {"m": meter_id}).first()
        if owner is not None and owner.customer_id != customer_id:
            raise MeterTaken(f"meter {meter_id} is bound to another customer")
        conn.execute(text("INSERT INTO customer_meters (meter_id, customer_id) VALUES (:m, :c) "
                          "ON CONFLICT (meter_id) DO NOTHING"), {"m": meter_id, "c": customer_id})

    def link_meter(self, customer_id: str, meter_id: str) -> None:
        try:
            with self.engine.begin() as conn:
                self._require_live(conn, customer_id)
                self._link(conn, customer_id, meter_id)
        except IntegrityError:
            raise MeterTaken(f"meter {meter_id} is bound to another customer") from None

    @staticmethod
    def _require_live(conn, customer_id: str):
        row = conn.execute(text("SELECT * FROM customers WHERE customer_id = :c AND erased_at IS NULL"),
                           {"c": customer_id}).first()
        if row is None:
            raise CustomerNotFound(customer_id)
        return row

    def get(self, customer_id: str) -> Customer:
        with self.engine.connect() as conn:
            row = self._require_live(conn, customer_id)
            meters = tuple(r.meter_id for r in conn.execute(
                text("SELECT meter_id FROM customer_meters WHERE customer_id = :c ORDER BY meter_id"),
                {"c": customer_id}))
        data_key = self._data_key(customer_id, bytes(row.wrapped_key) if row.wrapped_key is not None else None)
        fields = {f: _open(data_key, customer_id, f, bytes(getattr(row, f"{f}_enc"))) for f in PERSONAL_FIELDS}
        return Customer(customer_id, meters=meters, **fields)

    def list_ids(self, limit: int = 100, offset: int = 0) -> list[tuple[str, tuple[str, ...]]]:
        """Customer ids with their meters, without decrypting anything (for analysts)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT c.customer_id, coalesce(array_agg(m.meter_id ORDER BY m.meter_id) "
                "FILTER (WHERE m.meter_id IS NOT NULL), '{}') AS meters FROM customers c "
                "LEFT JOIN customer_meters m USING (customer_id) WHERE c.erased_at IS NULL "
                "GROUP BY c.customer_id ORDER BY c.customer_id LIMIT :l OFFSET :o"), {"l": limit, "o": offset})
            return [(r.customer_id, tuple(r.meters)) for r in rows]

    def export(self, customer_id: str) -> dict[str, Any]:
        """Everything gridsight holds about a customer: personal fields, meters and their readings."""
        customer = self.get(customer_id)
        return {"customer_id": customer.customer_id,
                "personal": {f: getattr(customer, f) for f in PERSONAL_FIELDS},
                "meters": list(customer.meters),
                "consumption": self._consumption(customer.meters),
                "exported_at": self._now()}

    def _consumption(self, meters: tuple[str, ...]) -> dict[str, list[dict[str, float]]]:
        """Daily energy per meter from the collector's rollup, when that table exists."""
        out: dict[str, list[dict[str, float]]] = {m: [] for m in meters}
        if not meters:
            return out
        with self.engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('readings_daily')")).scalar() is None:
                return out
            rows = conn.execute(text("SELECT meter_id, bucket, kwh FROM readings_daily "
                                     "WHERE meter_id = ANY(:m) ORDER BY meter_id, bucket"), {"m": list(meters)})
            for r in rows:
                out[r.meter_id].append({"day": r.bucket.date().isoformat(), "kwh": float(r.kwh)})
        return out

    def erase(self, customer_id: str) -> None:
        """GDPR erasure: destroy the data key in the key store (crypto-shredding: every copy of the
        ciphertext, in the WAL and backups too, becomes unreadable), then null the ciphertexts,
        unlink meters and remove their logins. A failure after the key is gone leaves a customer
        that cannot be read; erasing again completes it."""
        with self.engine.connect() as conn:
            self._require_live(conn, customer_id)
        self.key_store.destroy(customer_id)
        with self.engine.begin() as conn:
            self._require_live(conn, customer_id)
            conn.execute(text("DELETE FROM customer_meters WHERE customer_id = :c"), {"c": customer_id})
            conn.execute(text("DELETE FROM users WHERE customer_id = :c"), {"c": customer_id})
            conn.execute(text("UPDATE customers SET wrapped_key = NULL, name_enc = NULL, address_enc = NULL, "
                              "contact_enc = NULL, erased_at = now() WHERE customer_id = :c"), {"c": customer_id})

    def rotate_master_key(self, new_key: MasterKey) -> int:
        """Re-wrap every live customer's data key under ``new_key`` in the key store.

        The personal ciphertexts are untouched (their data keys do not change). Every key is
        unwrapped first, so a wrong current key changes nothing; each file is then replaced
        atomically, so a crash mid-way leaves keys under the old or the new master key, and
        running the rotation again with both keys completes it. Returns the number re-wrapped;
        afterwards this vault uses ``new_key``.
        """
        self.adopt_database_keys()
        with self.engine.connect() as conn:
            live = {r.customer_id for r in conn.execute(text("SELECT customer_id FROM customers "
                                                             "WHERE erased_at IS NULL"))}
        ids = [c for c in self.key_store.customer_ids() if c in live]
        rewrapped = {c: new_key.wrap(self.master_key.unwrap(self.key_store.get(c), c), c) for c in ids}
        for customer_id, wrapped in rewrapped.items():       # every key opened before any is replaced
            self.key_store.put(customer_id, wrapped)
        self.master_key = new_key
        return len(ids)

    def owner_of(self, meter_id: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT customer_id FROM customer_meters WHERE meter_id = :m"),
                               {"m": meter_id}).first()
        return row.customer_id if row else None
