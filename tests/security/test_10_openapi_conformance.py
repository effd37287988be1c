"""Item 10: the OpenAPI document describes the API. schemathesis calls every operation (as a role
its policy admits) and checks each answer against the document: no server error, every status code
documented, bodies and headers as documented. Bounds the API enforces are in the schema, and
OPTIONS answers with an ``Allow`` header."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from collector.auth import PUBLIC_ROUTES, ROLES, roles_of_scopes
from collector.pii import MasterKey

pytestmark = pytest.mark.slow  # make test-fast leaves it out

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def whole_api(database_url, tmp_path):
    """The whole collector API (every area's routers) from its factory on a migrated database."""
    from collector.api.app import create_app
    from collector.auth import install_identity
    from collector.db import migrate
    from collector.settings import CollectorSettings

    migrate(database_url)
    app = create_app(CollectorSettings(database_url=database_url, data_dir=tmp_path), database_url=database_url,
                     pool_size=2)
    ctx = install_identity(app, database_url, env={"GRIDSIGHT_JWT_SECRET": "x" * 48,
                                                   "GRIDSIGHT_MASTER_KEY": MasterKey.generate()},
                           key_store_dir=tmp_path / "keys")
    with TestClient(app) as client:
        own = ctx.vault.create("Ada Lovelace", "12 Analytical Way", "ada@example.org", ("m-own-1",))
        headers = {}
        for role in ROLES:
            ctx.store.create_user(role, PASSWORD, role, own.customer_id if role == "consumer" else None)
            token = client.post("/auth/token", data={"username": role, "password": PASSWORD}).json()["access_token"]
            headers[role] = {"Authorization": f"Bearer {token}"}
        yield app, client, headers
    ctx.store.engine.dispose()


def _caller_role(op_security: list | None) -> str | None:
    if not op_security:
        return None
    roles = sorted(roles_of_scopes(next(iter(op_security[0].values()))))
    return "admin" if "admin" in roles else roles[0]


def test_every_generated_request_gets_a_documented_answer_and_no_server_error(whole_api):
    app, client, headers = whole_api
    spec = app.openapi()
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        method, path = operation.method.upper(), operation.path
        if (method, path) == ("DELETE", "/auth/users/{username}"):
            continue          # would delete the accounts the fuzzer logs in with; covered by test_4
        role = _caller_role(spec["paths"][path][operation.method.lower()].get("security"))
        assert role or (method, path) in PUBLIC_ROUTES
        auth = headers[role] if role else {}

        @settings(max_examples=20, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:
            nonlocal calls
            request = case.as_transport_kwargs(base_url="http://testserver", headers={**(case.headers or {}), **auth})
            request.pop("cookies", None)
            response = client.request(**request)
            calls += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=auth)
            except BaseExceptionGroup as exc:       # schemathesis raises a group of failures
                failures.append(f"{method} {path} -> {response.status_code}: {str(exc).strip()[:400]}")

        run()
    assert calls > 500
    assert failures == [], "\n".join(failures[:20]) + f"\n... {len(failures)} in all"


def test_the_schema_states_the_bounds_the_api_enforces(whole_api):
    app, client, headers = whole_api
    spec = app.openapi()
    limit = next(p for p in spec["paths"]["/meters"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == app.state.settings.api_max_page
    too_many = client.get("/meters", params={"limit": app.state.settings.api_max_page + 1}, headers=headers["admin"])
    assert too_many.status_code == 422
    # a time range whose end equals its start is allowed by the schema, so the API answers it (empty)
    same = client.get("/consumption", params={"region_id": "r1", "start": 1.8e9, "end": 1.8e9}, headers=headers["admin"])
    assert same.status_code in (200, 404), same.text
    backwards = client.get("/consumption", params={"region_id": "r1", "start": 1.8e9, "end": 1.7e9},
                           headers=headers["admin"])
    assert backwards.status_code == 422
    assert "422" in spec["paths"]["/consumption"]["get"]["responses"]


def test_options_answers_with_the_allowed_methods(whole_api):
    app, client, headers = whole_api
    response = client.options("/meters", headers=headers["admin"])
    assert response.status_code in (200, 204), response.text
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "OPTIONS"}
    wrong = client.put("/meters", headers=headers["admin"])
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]
