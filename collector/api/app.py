"""The collector's FastAPI application factory.

Routes stay thin: each module in ``collector/api/routes/`` holds one ``APIRouter`` and calls
queries in ``collector.db.queries``. To add a router, append its module to :data:`ROUTERS`.
Requests get an asyncpg connection from one pool per process (created at startup), and the
app carries the replica's :class:`~collector.metrics.Metrics` so ``/metrics`` shows ingest
counters when the API and the ingest worker share a process (``gridsight collector serve``).
"""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI

from collector.api.fair_pool import FairPool
from collector.api.hot_routes import HotRoutes
from collector.api.openapi import document_api
from collector.api.request_checks import RequestChecks
from collector.auth import install_identity
from collector.metrics import Metrics
from collector.settings import CollectorSettings, asyncpg_dsn

__all__ = ["create_app", "app_from_environment", "ROUTERS"]

# One line per router module (each exposes `router`). Other areas append theirs here.
ROUTERS: list[str] = [
    "collector.api.routes.health",
    "collector.api.routes.gateways",
    "collector.api.routes.meters",
    "collector.api.routes.consumption",
    "collector.api.routes.anomalies",
    "collector.api.routes.ingestion",
    "collector.api.routes.forecasts",
    "collector.api.routes.policy",
    "collector.api.routes.carbon",
    "collector.api.routes.dashboard_page",
    "collector.api.routes.registry",
    "collector.api.routes.auth",
    "collector.api.routes.customers",
    "collector.api.routes.enrollment",
]


def _resolve_database_url(settings: CollectorSettings, database_url: str | None) -> str:
    from gridsight.settings import ConfigError
    from collector.services import embedded_database_url

    url = database_url or settings.database_url or embedded_database_url(settings)
    if url is None:
        raise ConfigError("database_url", "DATABASE_URL is not set and no embedded PostgreSQL runs in "
                          f"{settings.data_dir}; start 'gridsight collector serve' or set DATABASE_URL")
    return url


API_SESSION = {"timezone": "UTC"}
# The hot routes' connections (collector/api/hot_routes.py) plan each of their few statements once
# per connection (asyncpg prepares and caches them): with the default plan_cache_mode PostgreSQL
# planned every execution again over every monthly partition of the fact tables, about 40 % of
# its CPU for an anomaly page (bench/query.py, docs/benchmarks.md). A generic plan prunes the
# partitions when it runs. Only these statements were measured that way, so only their pool has it.
HOT_SESSION = {**API_SESSION, "plan_cache_mode": "force_generic_plan"}


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (RESET ALL, UNLISTEN, ...): API requests
    change no session state, and that query was one more round trip on every request. An open
    transaction is still rolled back by the pool before this is called."""


def create_app(settings: CollectorSettings, *, database_url: str | None = None, metrics: Metrics | None = None,
               worker: Any = None, pool_size: int = 10, hot_routes: bool = True) -> FastAPI:
    """Build the API for ``settings``; ``worker`` (an IngestWorker in this process) feeds /readyz.
    ``hot_routes=False`` leaves every request to FastAPI (the tests compare both)."""
    url = _resolve_database_url(settings, database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=pool_size, command_timeout=30,
                                         server_settings=API_SESSION, reset=_keep_session)
        app.state.pool = FairPool(pool, pool_size)      # connections go to requests in arrival order
        app.state.hot_pool = None
        try:
            if hot_routes:
                # few connections: requests beyond them wait in arrival order (FairPool) instead of
                # time-sharing the same cores in PostgreSQL, which stretched the slowest ones
                size = settings.api_hot_connections
                hot = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=size, command_timeout=30,
                                                server_settings=HOT_SESSION, reset=_keep_session)
                app.state.hot_pool = FairPool(hot, size)
            yield
        finally:
            if app.state.hot_pool is not None:
                await app.state.hot_pool.close()
            await app.state.pool.close()

    app = FastAPI(
        title="gridsight collector API",
        version="1",
        description="Gateways and meters with their status, consumption and readings downsampled for charts, "
                    "anomalies with location for maps, ingestion health, Prometheus metrics.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database_url = url
    app.state.metrics = metrics or Metrics()
    app.state.worker = worker
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    # well-formed GET /anomalies and /consumption of admins and analysts skip FastAPI's per-request
    # dependency resolution (same checks, queries and JSON); added first, so it runs after the checks below
    if hot_routes:
        app.add_middleware(HotRoutes, routes_app=app)
    # control characters in parameters -> 422 everywhere; OPTIONS answers with Allow
    app.add_middleware(RequestChecks, routes_app=app)
    document_api(app, max_page=settings.api_max_page, max_points=settings.api_max_points)
    # every route's require_roles(...) needs this; it also bounds request bodies
    install_identity(app, url, secrets=settings.secrets, key_store_dir=settings.key_store_path)
    return app


def app_from_environment() -> FastAPI:
    """The app from the environment and the TOML file named by ``GRIDSIGHT_COLLECTOR_CONFIG``,
    for ``uvicorn --factory collector.api.app:app_from_environment`` (``serve --workers N``
    hands its processes the settings directly)."""
    import os

    from collector.settings import load_collector_settings

    return create_app(load_collector_settings(os.environ.get("GRIDSIGHT_COLLECTOR_CONFIG") or None))
