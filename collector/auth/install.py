"""Put identity and access on a FastAPI app: secrets from the environment, stores, limits, routers."""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Callable, Mapping

from fastapi import FastAPI

from collector.auth.dependencies import IdentityContext
from collector.auth.limits import RequestLimits
from collector.auth.store import IdentityStore, engine_for
from collector.auth.tokens import MIN_SECRET_BYTES, TokenIssuer
from collector.settings import secret_from_env
from gridsight.errors import GridsightError

__all__ = ["install_identity", "token_secret_from_env", "IdentitySetupError"]

log = logging.getLogger("gridsight.auth")


class IdentitySetupError(GridsightError, ValueError):
    """A secret in the environment that cannot be used; names the variable."""


def token_secret_from_env(env: Mapping[str, str] | None = None) -> str:
    """``GRIDSIGHT_JWT_SECRET`` or the file named by ``GRIDSIGHT_JWT_SECRET_FILE``.

    Without either, a random secret for this process only: fine for the embedded demo, but
    tokens then die with the process and replicas would not accept each other's tokens.
    """
    env = os.environ if env is None else env
    secret = secret_from_env("GRIDSIGHT_JWT_SECRET", env, IdentitySetupError)
    if secret is None:
        log.warning("GRIDSIGHT_JWT_SECRET is not set: using a per-process secret (tokens end with this process)")
        return secrets.token_urlsafe(48)
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise IdentitySetupError(f"GRIDSIGHT_JWT_SECRET: must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def install_identity(app: FastAPI, database_url: str, *, env: Mapping[str, str] | None = None,
                     token_ttl_s: int = 3600, max_body_bytes: int = 1024 * 1024, body_timeout_s: float = 10.0,
                     now: Callable[[], float] = time.time) -> IdentityContext:
    """Attach authentication, the customer vault and request limits to ``app``.

    The identity routes (``/auth``, ``/customers``, ``/enrollment``) are listed with every other
    route in ``collector.api.app.ROUTERS``.

    Call before the app starts serving. The customer vault exists only when a master key is
    configured; without it the customer routes answer 503 and nothing personal can be stored.
    Calling it again on the same app only swaps the context (secrets, database, clock).
    """
    from collector.pii import CustomerVault, MasterKey, MasterKeyError

    env = os.environ if env is None else env
    engine = engine_for(database_url)
    store = IdentityStore(engine, now=now)
    issuer = TokenIssuer(token_secret_from_env(env), ttl_s=token_ttl_s, now=now)
    try:
        vault = CustomerVault(engine, MasterKey.from_env(env), now=now)
    except MasterKeyError as exc:
        if env.get("GRIDSIGHT_MASTER_KEY") or env.get("GRIDSIGHT_MASTER_KEY_FILE"):
            raise
        log.warning("personal data disabled: %s", exc)
        vault = None
    ctx = IdentityContext(store=store, issuer=issuer, vault=vault)
    previous = getattr(app.state, "identity", None)
    app.state.identity = ctx
    if previous is not None:
        # installed before (the app factory does it): only the context changes, e.g. a test's secrets
        previous.store.engine.dispose()
        return ctx
    app.add_middleware(RequestLimits, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s)
    return ctx
