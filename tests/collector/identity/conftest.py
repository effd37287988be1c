"""Fixtures for identity and access: the identity schema on a fresh database, and an API app
with one account per role and a clock the tests move to expire tokens."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, pool, text

from collector.auth import ROLES
from collector.pii import MasterKey
from identity_support import JWT_SECRET, Api, StepClock, apply_identity_schema, build_app


@pytest.fixture
def identity_db(database_url) -> str:
    apply_identity_schema(database_url)
    return database_url


def _seed(a: Api) -> Api:
    """Two customers with one meter each; one account per role (the consumer is the first customer)."""
    own = a.ctx.vault.create("Ada Lovelace", "12 Analytical Way, London", "ada@example.org", (a.own_meter,))
    a.ctx.vault.create("Charles Babbage", "1 Difference St, London", "cb@example.org", (a.other_meter,))
    a.customer_id = own.customer_id
    for role in ROLES:
        a.ctx.store.create_user(role, a.password, role, own.customer_id if role == "consumer" else None)
        a.headers[role] = a.login(role, a.password)
    return a


@pytest.fixture
def api(identity_db) -> Api:
    """The identity routers alone on a FastAPI app, over the identity schema."""
    clock = StepClock()
    master_key = MasterKey.generate()
    app, ctx = build_app(identity_db, clock, master_key)
    with TestClient(app) as client:
        yield _seed(Api(app=app, client=client, clock=clock, ctx=ctx, master_key_b64=master_key))
    ctx.store.engine.dispose()


def _collector_api(database_url: str, data_dir) -> "contextlib.AbstractContextManager[Api]":
    """The whole collector API (every area's routers) from its own factory, fully migrated."""
    from collector.api.app import create_app
    from collector.auth import install_identity
    from collector.db import migrate
    from collector.settings import CollectorSettings

    @contextlib.contextmanager
    def run():
        migrate(database_url)
        clock = StepClock()
        master_key = MasterKey.generate()
        app = create_app(CollectorSettings(database_url=database_url, data_dir=data_dir), database_url=database_url,
                         pool_size=2)
        ctx = install_identity(app, database_url, env={"GRIDSIGHT_JWT_SECRET": JWT_SECRET,
                                                       "GRIDSIGHT_MASTER_KEY": master_key}, now=clock)
        with TestClient(app) as client:
            yield _seed(Api(app=app, client=client, clock=clock, ctx=ctx, master_key_b64=master_key))
        ctx.store.engine.dispose()
    return run()


@pytest.fixture(scope="module")
def collector_api(postgres_server, tmp_path_factory) -> Api:
    """The whole collector API on a database of this module (tests using it must not change it)."""
    name = f"policy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server.dsn("postgres").replace("postgresql://", "postgresql+psycopg://"),
                          isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    with _collector_api(postgres_server.dsn(name), tmp_path_factory.mktemp("collector")) as a:
        yield a
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def fresh_collector_api(database_url, tmp_path) -> Api:
    """The whole collector API on a fresh database, for tests that change data (fuzzing)."""
    with _collector_api(database_url, tmp_path) as a:
        yield a
