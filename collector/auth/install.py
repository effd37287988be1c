"""Put identity and access on a FastAPI app: secrets from the settings, stores, limits."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Callable, Mapping

from fastapi import FastAPI

from collector.auth.dependencies import IdentityContext
from collector.auth.limits import RequestLimits
from collector.auth.store import IdentityStore, engine_for
from collector.auth.tokens import MIN_SECRET_BYTES, TokenIssuer
from collector.settings import CollectorSecrets, load_secrets
from gridsight.settings import ConfigError
from gridsight.errors import GridsightError

__all__ = ["install_identity", "token_secret", "token_secret_from_env", "IdentitySetupError"]

log = logging.getLogger("gridsight.auth")


class IdentitySetupError(GridsightError, ValueError):
    """A secret in the environment that cannot be used; names the variable."""


def _secrets_from(env: Mapping[str, str] | None) -> CollectorSecrets:
    try:
        return load_secrets(env)
    except ConfigError as exc:
        raise IdentitySetupError(f"{exc.key}: {exc.reason}") from None


def token_secret(keys: CollectorSecrets) -> str:
    """The token signing secret (``GRIDSIGHT_JWT_SECRET[_FILE]``, at least
    :data:`MIN_SECRET_BYTES`, checked by the settings).

    Without it, a random secret for this process only: fine for the embedded demo, but
    tokens then die with the process and replicas would not accept each other's tokens.
    """
    if keys.jwt_secret is None:
        log.warning("GRIDSIGHT_JWT_SECRET is not set: using a per-process secret (tokens end with this process)")
        return secrets.token_urlsafe(48)
    return keys.jwt_secret


def token_secret_from_env(env: Mapping[str, str] | None = None) -> str:
    """:func:`token_secret` of the secrets in ``env`` (default: the process environment)."""
    return token_secret(_secrets_from(env))


def install_identity(app: FastAPI, database_url: str, *, secrets: CollectorSecrets | None = None,
                     key_store_dir: str | Path | None = None,
                     env: Mapping[str, str] | None = None, token_ttl_s: int = 3600, max_body_bytes: int = 1024 * 1024, body_timeout_s: float = 10.0,
                     now: Callable[[], float] = time.time) -> IdentityContext:
    """Attach authentication, the customer vault and request limits to ``app``.

    The identity routes (``/auth``, ``/customers``, ``/enrollment``) are listed with every other
    route in ``collector.api.app.ROUTERS``.

    Call before the app starts serving. The customer vault exists only when a master key is
    configured; without it the customer routes answer 503 and nothing personal can be stored.
    Calling it again on the same app only swaps the context (secrets, database, clock).
    The secrets are ``secrets`` (the collector's settings), else those in ``env`` (default: the
    process environment). Customers' data keys live in the key store folder ``key_store_dir``
    (default: the collector settings' ``data_dir/keys``); data keys an older version kept in the
    database are moved there now.
    """
    from collector.pii import CustomerVault, MasterKey, MasterKeyError

    keys = _secrets_from(env) if secrets is None else secrets
    engine = engine_for(database_url)
    store = IdentityStore(engine, now=now)
    issuer = TokenIssuer(token_secret(keys), ttl_s=token_ttl_s, now=now)
    try:
        master_key = MasterKey.from_secrets(keys)
    except MasterKeyError as exc:
        if keys.master_key:
            raise
        log.warning("personal data disabled: %s", exc)
        vault = None
    else:
        from collector.keystore import FileKeyStore
        from collector.settings import CollectorSettings

        settings = getattr(app.state, "settings", None) or CollectorSettings()
        folder = Path(key_store_dir) if key_store_dir is not None else settings.key_store_path
        vault = CustomerVault(engine, master_key, FileKeyStore(folder), now=now)
        _adopt_database_keys(vault)
    ctx = IdentityContext(store=store, issuer=issuer, vault=vault)
    previous = getattr(app.state, "identity", None)
    app.state.identity = ctx
    if previous is not None:
        # installed before (the app factory does it): only the context changes, e.g. a test's secrets
        previous.store.engine.dispose()
        return ctx
    app.add_middleware(RequestLimits, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s)
    return ctx


def _adopt_database_keys(vault) -> None:
    from sqlalchemy.exc import ProgrammingError

    try:
        moved = vault.adopt_database_keys()
    except ProgrammingError:
        return                    # the identity tables are not there yet (migrated later)
    if moved:
        log.warning("moved %d customer data keys from the database into the key store %s; rotate the master "
                    "key now (gridsight accounts rotate-master-key) and destroy the old one, or copies of "
                    "those keys in the WAL and backups stay usable", moved, getattr(vault.key_store, "folder", ""))
