"""Accounts, API keys, enrollment tokens and gateway credentials in PostgreSQL.

The queries live here, beside the tables of migration ``0003_identity``; routes stay thin.
Secrets never reach the database in the clear: passwords as scrypt hashes, API keys and
enrollment tokens as SHA-256 of high-entropy random strings.
"""

from __future__ import annotations

import contextvars
import hmac
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError

from collector.auth.passwords import MIN_PASSWORD_LENGTH, hash_password, verify_password
from collector.auth.roles import CONSUMER, ROLES, Principal
from collector.auth.tokens import AuthError, new_api_key, secret_digest, split_api_key
from gridsight.errors import GridsightError

__all__ = ["IdentityStore", "IdentityError", "EnrollmentRefused", "LoginThrottled", "User", "ApiKey", "EnrollmentToken",
           "NotRemembered", "engine_for"]

# scrypt of a fixed string, checked when the user does not exist, so a login for an unknown
# name costs the same as a wrong password and does not reveal which names exist.
_DUMMY_HASH = hash_password("gridsight-no-such-user")

# Failed logins per account before each further attempt must wait; the wait doubles per failure
# up to the cap. Kept in the database, so every replica sees the same count.
FREE_ATTEMPTS = 5
MAX_LOCK_S = 900.0


class NotRemembered(GridsightError, LookupError):
    """Raised inside :meth:`IdentityStore.from_memory` by a check that would need the database."""


# set while a caller on the event loop asks for remembered answers only
_from_memory: contextvars.ContextVar[bool] = contextvars.ContextVar("gridsight_identity_from_memory", default=False)


class IdentityError(GridsightError, ValueError):
    """A request that breaks an identity rule; ``field`` names the input at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class LoginThrottled(GridsightError):
    """Too many wrong passwords for one account: refused until ``retry_after_s`` has passed."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class EnrollmentRefused(GridsightError):
    """An enrollment token that is unknown, expired, already used or for another gateway."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    customer_id: str | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    role: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    token_id: str
    token: str           # shown once to the technician; only its digest is stored
    gateway_id: str
    expires_at: float


def engine_for(database_url: str) -> Engine:
    """A pooled SQLAlchemy engine on the psycopg driver for a ``postgresql://`` URL."""
    url = database_url
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=timezone.utc)


class IdentityStore:
    """The identity tables behind one engine. ``now`` is injectable so tests drive expiry.

    Checks made on every request (is this API key valid, is this account still active) are
    remembered for ``check_ttl_s`` so a busy API does not pay a database round trip per call.
    A revocation or deletion through this store takes effect at once here; other replicas
    notice within ``check_ttl_s``.
    """

    def __init__(self, engine: Engine, now: Callable[[], float] = time.time, check_ttl_s: float = 5.0) -> None:
        self.engine = engine
        self._now = now
        self.check_ttl_s = check_ttl_s
        self._checks: dict[str, tuple[float, object]] = {}
        self._checks_lock = threading.Lock()

    @contextmanager
    def from_memory(self) -> Iterator[None]:
        """Within this block a check the store does not remember raises :class:`NotRemembered`
        instead of querying the database: the request path runs the usual case on the event
        loop and hands only a miss to a thread."""
        token = _from_memory.set(True)
        try:
            yield
        finally:
            _from_memory.reset(token)

    def _remembered(self, key: str, compute: Callable[[], object]) -> object:
        now = self._now()
        with self._checks_lock:
            hit = self._checks.get(key)
        if hit is not None and now - hit[0] < self.check_ttl_s:
            return hit[1]
        if _from_memory.get():
            raise NotRemembered(key)
        value = compute()
        with self._checks_lock:
            if len(self._checks) > 10_000:
                self._checks.clear()
            self._checks[key] = (now, value)
        return value

    def _forget(self, key: str) -> None:
        with self._checks_lock:
            self._checks.pop(key, None)

    def forget_checks(self) -> None:
        """Drop every remembered check, after a change made outside this store (e.g. an erasure)."""
        with self._checks_lock:
            self._checks.clear()

    # ------------------------------------------------------------------ users
    def create_user(self, username: str, password: str, role: str, customer_id: str | None = None) -> User:
        if role not in ROLES:
            raise IdentityError("role", f"must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise IdentityError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        if role == CONSUMER and not customer_id:
            raise IdentityError("customer_id", "a consumer account must belong to a customer")
        if role != CONSUMER and customer_id:
            raise IdentityError("customer_id", "only consumer accounts belong to a customer")
        try:
            with self.engine.begin() as conn:
                if customer_id is not None:
                    found = conn.execute(text("SELECT 1 FROM customers WHERE customer_id = :c AND erased_at IS NULL"),
                                         {"c": customer_id}).first()
                    if found is None:
                        raise IdentityError("customer_id", "no such customer")
                conn.execute(text("INSERT INTO users (username, password_hash, role, customer_id) "
                                  "VALUES (:u, :h, :r, :c)"),
                             {"u": username, "h": hash_password(password), "r": role, "c": customer_id})
        except IntegrityError:
            raise IdentityError("username", "already exists") from None
        self._forget(f"user:{username}")
        return User(username, role, customer_id, False)

    def authenticate(self, username: str, password: str) -> Principal:
        now = self._now()
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT password_hash, role, customer_id, disabled, failed_logins, locked_until, "
                                    "generation FROM users WHERE username = :u"), {"u": username}).first()
        if row is None:
            verify_password(password, _DUMMY_HASH)
            raise AuthError("wrong username or password")
        if row.locked_until is not None and row.locked_until.timestamp() > now:
            raise LoginThrottled(row.locked_until.timestamp() - now)
        if not verify_password(password, row.password_hash) or row.disabled:
            failures = row.failed_logins + 1
            lock = None
            if failures >= FREE_ATTEMPTS:
                lock = _ts(now + min(MAX_LOCK_S, 2.0 ** (failures - FREE_ATTEMPTS + 1)))
            with self.engine.begin() as conn:
                conn.execute(text("UPDATE users SET failed_logins = :f, locked_until = :l WHERE username = :u"),
                             {"f": failures, "l": lock, "u": username})
            raise AuthError("wrong username or password")
        if row.failed_logins:
            with self.engine.begin() as conn:
                conn.execute(text("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE username = :u"),
                             {"u": username})
        return Principal(subject=username, role=row.role, customer_id=row.customer_id, via="token",
                         account=username, generation=row.generation)

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT username, role, customer_id, disabled FROM users ORDER BY username"))
            return [User(r.username, r.role, r.customer_id, r.disabled) for r in rows]

    def delete_user(self, username: str) -> bool:
        with self.engine.begin() as conn:
            deleted = conn.execute(text("DELETE FROM users WHERE username = :u"), {"u": username}).rowcount > 0
        self._forget(f"user:{username}")
        return deleted

    def account_generation(self, username: str) -> int | None:
        """The account's current generation, None if it is deleted or disabled (remembered ``check_ttl_s``)."""
        def lookup() -> int | None:
            with self.engine.connect() as conn:
                row = conn.execute(text("SELECT disabled, generation FROM users WHERE username = :u"),
                                   {"u": username}).first()
            return None if row is None or row.disabled else int(row.generation)
        return self._remembered(f"user:{username}", lookup)

    def user_active(self, username: str) -> bool:
        """Whether the account exists and is not disabled (within ``check_ttl_s``)."""
        return self.account_generation(username) is not None

    def check_current(self, principal: Principal) -> None:
        """Refuse a credential issued to an earlier generation of its account: the account was deleted,
        re-created, disabled, or its role, customer or password changed since (within ``check_ttl_s``)."""
        if principal.account is None:
            return                       # an API key made with the accounts CLI belongs to no account
        current = self.account_generation(principal.account)
        if current is None:
            raise AuthError("account disabled or deleted")
        if current != principal.generation:
            raise AuthError("the account changed since this credential was issued (role, customer, "
                            "password, or deleted and re-created): log in again")

    # ------------------------------------------------------------------ API keys
    def create_api_key(self, name: str, role: str, created_by: Principal | None = None) -> tuple[ApiKey, str]:
        """A key for a service. Made through the API (``created_by``), it belongs to the creator's
        account at its current generation and ends with it; made with the CLI, to no account."""
        if role not in ROLES or role == CONSUMER:
            raise IdentityError("role", "API keys are for services: admin, technician, analyst or policymaker")
        owner = created_by.account if created_by is not None else None
        generation = created_by.generation if owner is not None else None
        key_id, full_key, digest = new_api_key()
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO api_keys (key_id, name, role, secret_sha256, owner, owner_generation) "
                              "VALUES (:k, :n, :r, :d, :o, :g)"),
                         {"k": key_id, "n": name, "r": role, "d": digest, "o": owner, "g": generation})
        return ApiKey(key_id, name, role, False), full_key

    def authenticate_api_key(self, presented: str) -> Principal:
        key_id, secret = split_api_key(presented)
        digest = secret_digest(secret)

        def lookup() -> Principal | AuthError:
            with self.engine.connect() as conn:
                row = conn.execute(text("SELECT role, secret_sha256, revoked_at, owner, owner_generation "
                                        "FROM api_keys WHERE key_id = :k"), {"k": key_id}).first()
            if row is None or not hmac.compare_digest(row.secret_sha256, digest):
                return AuthError("unknown API key")
            if row.revoked_at is not None:
                return AuthError("API key revoked")
            return Principal(subject=f"key:{key_id}", role=row.role, via="api_key", account=row.owner,
                             generation=row.owner_generation)

        result = self._remembered(f"key:{key_id}:{digest}", lookup)
        if isinstance(result, AuthError):
            raise AuthError(str(result))
        self.check_current(result)
        return result

    def list_api_keys(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT key_id, name, role, revoked_at FROM api_keys ORDER BY created_at"))
            return [ApiKey(r.key_id, r.name, r.role, r.revoked_at is not None) for r in rows]

    def revoke_api_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            revoked = conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :k "
                                        "AND revoked_at IS NULL"), {"k": key_id}).rowcount > 0
        with self._checks_lock:
            for cached in [k for k in self._checks if k.startswith(f"key:{key_id}:")]:
                del self._checks[cached]
        return revoked

    # ------------------------------------------------------------------ enrollment
    def issue_enrollment_token(self, gateway_id: str, ttl_s: int, created_by: str) -> EnrollmentToken:
        token_id = secrets.token_hex(6)
        token = f"gse_{secrets.token_urlsafe(24)}"
        expires = self._now() + ttl_s
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO enrollment_tokens (token_id, token_sha256, gateway_id, created_by, "
                              "created_at, expires_at) VALUES (:i, :d, :g, :b, :c, :e)"),
                         {"i": token_id, "d": secret_digest(token), "g": gateway_id, "b": created_by,
                          "c": _ts(self._now()), "e": _ts(expires)})
        return EnrollmentToken(token_id, token, gateway_id, expires)

    def redeem_enrollment_token(self, token: str, gateway_id: str, credential: str,
                                fingerprint: str | None) -> float:
        """Consume ``token`` for ``gateway_id`` and record its credential; returns the enrollment time.

        The row is locked and marked used in the same transaction, so two gateways racing with
        one token cannot both succeed. The gateway is also registered in the collector's
        ``gateways`` table, so a collector running with ``unknown_gateways = "refuse"`` stores
        data from enrolled gateways only.
        """
        now = self._now()
        with self.engine.begin() as conn:
            row = conn.execute(text("SELECT token_id, gateway_id, expires_at, used_at FROM enrollment_tokens "
                                    "WHERE token_sha256 = :d FOR UPDATE"), {"d": secret_digest(token)}).first()
            if row is None:
                raise EnrollmentRefused("unknown enrollment token")
            if row.used_at is not None:
                raise EnrollmentRefused("enrollment token already used")
            if row.expires_at.timestamp() <= now:
                raise EnrollmentRefused("enrollment token expired")
            if row.gateway_id != gateway_id:
                raise EnrollmentRefused("enrollment token was issued for another gateway")
            conn.execute(text("UPDATE enrollment_tokens SET used_at = :n WHERE token_id = :i"),
                         {"n": _ts(now), "i": row.token_id})
            conn.execute(text("INSERT INTO gateway_credentials (gateway_id, credential, fingerprint, enrolled_at, "
                              "token_id) VALUES (:g, :c, :f, :n, :i) ON CONFLICT (gateway_id) DO UPDATE SET "
                              "credential = EXCLUDED.credential, fingerprint = EXCLUDED.fingerprint, "
                              "enrolled_at = EXCLUDED.enrolled_at, token_id = EXCLUDED.token_id"),
                         {"g": gateway_id, "c": credential, "f": fingerprint, "n": _ts(now), "i": row.token_id})
            if conn.execute(text("SELECT to_regclass('gateways')")).scalar() is not None:
                conn.execute(text("INSERT INTO gateways (id) VALUES (:g) ON CONFLICT (id) DO NOTHING"), {"g": gateway_id})
        return now

    def enrolled_gateways(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT gateway_id, credential, fingerprint, enrolled_at "
                                     "FROM gateway_credentials ORDER BY gateway_id"))
            return [{"gateway_id": r.gateway_id, "credential": r.credential, "fingerprint": r.fingerprint,
                     "enrolled_at": r.enrolled_at.timestamp()} for r in rows]

    # ------------------------------------------------------------------ scoping
    def meters_of(self, customer_id: str) -> list[str]:
        if _from_memory.get():
            raise NotRemembered(f"meters:{customer_id}")
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT meter_id FROM customer_meters WHERE customer_id = :c ORDER BY meter_id"),
                                {"c": customer_id})
            return [r.meter_id for r in rows]
