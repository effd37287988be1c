"""Signed, expiring access tokens (JWT, HS256) and API keys for machines.

A JWT carries the subject, role, (for consumers) the customer id and the account's generation;
it expires after ``ttl_s``, and it ends earlier when the account's generation moves on (deleted,
re-created, disabled, role or customer changed): the store checks that, remembered for a few
seconds, so most requests need no database round trip. API keys are for
services (Tableau's service account, TabPy) that cannot do an interactive login: the
key is ``gsk_<key_id>_<secret>``, only a SHA-256 of the high-entropy secret is stored,
and a key can be revoked at once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Callable

import jwt

from collector.auth.roles import ROLES, Principal
from collector.settings import MIN_JWT_SECRET_BYTES
from gridsight.errors import GridsightError

__all__ = ["AuthError", "TokenIssuer", "new_api_key", "split_api_key", "secret_digest"]

_ALGORITHM = "HS256"
_ISSUER = "gridsight"
MIN_SECRET_BYTES = MIN_JWT_SECRET_BYTES


class AuthError(GridsightError):
    """Credentials that cannot be accepted; the message says why (never echoes a secret)."""


class TokenIssuer:
    """Issues and checks access tokens with one secret. ``now`` is injectable so tests drive expiry."""

    def __init__(self, secret: str | bytes, ttl_s: int = 3600, now: Callable[[], float] = time.time) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._key = key
        self.ttl_s = ttl_s
        self._now = now

    def issue(self, principal: Principal) -> str:
        now = int(self._now())
        claims = {"iss": _ISSUER, "sub": principal.subject, "role": principal.role, "iat": now,
                  "exp": now + self.ttl_s, "jti": secrets.token_hex(8)}
        if principal.customer_id:
            claims["cid"] = principal.customer_id
        if principal.generation is not None:
            claims["gen"] = principal.generation
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self._key, algorithms=[_ALGORITHM], issuer=_ISSUER,
                                options={"require": ["exp", "iat", "sub", "iss"], "verify_iat": False},
                                leeway=0)
            # PyJWT compares exp with the wall clock; the injected clock is the one that counts.
            if claims["exp"] <= self._now():
                raise jwt.ExpiredSignatureError("expired")
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        role = claims.get("role")
        if role not in ROLES:
            raise AuthError("invalid token")
        generation = claims.get("gen")
        if not isinstance(generation, int) or isinstance(generation, bool):
            raise AuthError("token without an account generation: log in again")
        return Principal(subject=str(claims["sub"]), role=role, customer_id=claims.get("cid"), via="token",
                         account=str(claims["sub"]), generation=generation)


def secret_digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (API key or enrollment token): safe to store, fast to check."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_api_key() -> tuple[str, str, str]:
    """A fresh ``(key_id, full_key, digest_of_secret)``; the full key is shown to its owner once."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"gsk_{key_id}_{secret}", secret_digest(secret)


def split_api_key(key: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a presented key; raises :class:`AuthError` when malformed."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "gsk" or not parts[1] or not parts[2] or len(key) > 200:
        raise AuthError("malformed API key")
    return parts[1], parts[2]
