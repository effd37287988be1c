"""Helpers shared by the identity tests: the identity schema, a test-driven clock, the app builder."""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, pool

from collector.api.routes import auth as auth_routes, customers as customer_routes, enrollment as enrollment_routes
from collector.auth import install_identity
from collector.pii import MasterKey

REPO = Path(__file__).resolve().parents[3]
MIGRATIONS = [REPO / "collector/db/migrations/versions/0003_identity.py",
              REPO / "collector/db/migrations/versions/0007_trust_boundaries.py"]
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def _migration_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"identity_migration_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_identity_schema(database_url: str) -> None:
    """Run the identity migrations' upgrades alone (0003_identity, then 0007's account generations):
    their tables reference no other revision's."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=pool.NullPool)
    with engine.begin() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            for path in MIGRATIONS:
                _migration_module(path).upgrade()
    engine.dispose()


class StepClock:
    """Wall-clock start, moved only by the test."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    clock: StepClock
    ctx: object
    headers: dict[str, dict[str, str]] = field(default_factory=dict)   # role -> Authorization header
    customer_id: str = ""
    password: str = "correct horse battery"
    master_key_b64: str = ""
    own_meter: str = "m-own-1"
    other_meter: str = "m-other-1"

    def login(self, username: str, password: str) -> dict[str, str]:
        r = self.client.post("/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


def build_app(database_url: str, clock: StepClock, master_key: str | None = None, **limits) -> tuple[FastAPI, object]:
    app = FastAPI(title="gridsight identity test app")
    env = {"GRIDSIGHT_JWT_SECRET": JWT_SECRET, "GRIDSIGHT_MASTER_KEY": master_key or MasterKey.generate()}
    ctx = install_identity(app, database_url, env=env, token_ttl_s=900, now=clock,
                           key_store_dir=tempfile.mkdtemp(prefix="gridsight-test-keys-"), **limits)
    for module in (auth_routes, customer_routes, enrollment_routes):
        app.include_router(module.router)
    return app, ctx




@contextlib.contextmanager
def serve(database_url: str, clock: StepClock | None = None, **limits):
    """The identity app behind a real uvicorn server on a free port: yields ``(port, context)``."""
    import uvicorn

    from gridsight.local_services import free_port, wait_for_port

    app, ctx = build_app(database_url, clock or StepClock(), **limits)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, 20)
    try:
        yield port, ctx
    finally:
        server.should_exit = True
        thread.join(10)
        ctx.store.engine.dispose()
