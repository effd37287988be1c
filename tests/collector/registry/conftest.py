"""Fixtures for the grid registry: a migrated database and the
whole collector API with one logged-in account per role."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from collector.db import migrate

JWT_SECRET = "registry-test-secret-that-is-long-enough-0123456789"
PASSWORD = "correct horse battery"


@pytest.fixture
def db(database_url) -> str:
    """A fresh database at the newest schema revision."""
    migrate(database_url)
    return database_url


@dataclass
class Api:
    client: TestClient
    headers: dict[str, dict[str, str]] = field(default_factory=dict)   # role -> Authorization header


@pytest.fixture
def api(db, tmp_path) -> Api:
    """The collector API from its own factory, with identity installed and an account per role."""
    from collector.api.app import create_app
    from collector.auth import ROLES, install_identity
    from collector.pii import MasterKey
    from collector.settings import CollectorSettings

    app = create_app(CollectorSettings(database_url=db, data_dir=tmp_path), database_url=db, pool_size=2)
    ctx = install_identity(app, db, env={"GRIDSIGHT_JWT_SECRET": JWT_SECRET,
                                         "GRIDSIGHT_MASTER_KEY": MasterKey.generate()})
    customer = ctx.vault.create("Test Customer", "1 Test Street", "t@example.org", ("m-1",))
    with TestClient(app) as client:
        a = Api(client)
        for role in ROLES:
            ctx.store.create_user(role, PASSWORD, role, customer.customer_id if role == "consumer" else None)
            r = client.post("/auth/token", data={"username": role, "password": PASSWORD})
            assert r.status_code == 200, r.text
            a.headers[role] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        yield a
    ctx.store.engine.dispose()
