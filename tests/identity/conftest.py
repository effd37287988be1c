"""Fixtures for identity and access: the identity schema on a fresh database, and an API app
with one account per role and a clock the tests move to expire tokens."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from collector.auth import ROLES
from collector.pii import MasterKey
from identity_support import Api, StepClock, apply_identity_schema, build_app


@pytest.fixture
def identity_db(database_url) -> str:
    apply_identity_schema(database_url)
    return database_url


@pytest.fixture
def api(identity_db) -> Api:
    clock = StepClock()
    master_key = MasterKey.generate()
    app, ctx = build_app(identity_db, clock, master_key)
    with TestClient(app) as client:
        a = Api(app=app, client=client, clock=clock, ctx=ctx, master_key_b64=master_key)
        own = ctx.vault.create("Ada Lovelace", "12 Analytical Way, London", "ada@example.org", (a.own_meter,))
        ctx.vault.create("Charles Babbage", "1 Difference St, London", "cb@example.org", (a.other_meter,))
        a.customer_id = own.customer_id
        for role in ROLES:
            ctx.store.create_user(role, a.password, role, own.customer_id if role == "consumer" else None)
            a.headers[role] = a.login(role, a.password)
        yield a
    ctx.store.engine.dispose()
