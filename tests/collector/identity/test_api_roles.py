"""Every route of the whole collector API states who may call it, and that is what happens, role by role."""

from __future__ import annotations

import re

import pytest

from collector.auth import PUBLIC_ROUTES, ROLES, roles_of_scopes
from collector.auth.dependencies import AGGREGATE

_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def api(collector_api):
    """The collector's own app factory with every area's routers (not only identity's)."""
    return collector_api


def operations(app) -> list[tuple[str, str, dict]]:
    spec = app.openapi()
    return [(m.upper(), path, op) for path, ops in spec["paths"].items() for m, op in ops.items() if m in _METHODS]


def policy_scopes(op: dict) -> set[str] | None:
    """Scopes from the operation's security requirement, or None when it states no policy."""
    requirements = op.get("security")
    if not requirements:
        return None
    return {scope for requirement in requirements for scopes in requirement.values() for scope in scopes}


def allowed_roles(op: dict) -> set[str] | None:
    scopes = policy_scopes(op)
    return None if scopes is None else roles_of_scopes(sorted(scopes))


def concrete_path(path: str, api) -> str:
    """Fill path parameters with values that exist for the caller, or harmless ones that do not."""
    values = {"meter_id": api.own_meter, "customer_id": "c-0000000000000000", "username": "nobody",
              "key_id": "000000000000", "gateway_id": "gw-unknown"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


def call(api, method: str, path: str, headers: dict | None = None, meter: bool = True):
    """Call an operation; a consumer asks about their own meter, a policymaker about no meter."""
    url = concrete_path(path, api)
    params = {"meter_id": api.own_meter} if meter and "{meter_id}" not in path else None
    return api.client.request(method, url, headers=headers or {}, params=params)


def test_every_route_states_its_roles_or_is_deliberately_public(api):
    unpoliced = [(m, p) for m, p, op in operations(api.app)
                 if allowed_roles(op) is None and (m, p) not in PUBLIC_ROUTES]
    assert unpoliced == [], f"routes without require_roles(...) and not in PUBLIC_ROUTES: {unpoliced}"


def test_policy_scopes_are_known_roles_or_narrowings(api):
    known = set(ROLES) | {"consumer:own-meter", "consumer:self", AGGREGATE}
    for method, path, op in operations(api.app):
        scopes = policy_scopes(op) or set()
        assert scopes <= known, f"{method} {path} names unknown scopes {scopes - known}"


def test_protected_routes_refuse_anonymous_callers(api):
    for method, path, op in operations(api.app):
        if allowed_roles(op) is None:
            continue
        r = call(api, method, path)
        assert r.status_code == 401, f"{method} {path} answered {r.status_code} without credentials"
        assert r.headers.get("www-authenticate") == "Bearer"


def test_protected_routes_refuse_forged_and_garbage_tokens(api):
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiJ9."}
    for method, path, op in operations(api.app):
        if allowed_roles(op) is None:
            continue
        assert call(api, method, path, forged).status_code == 401, f"{method} {path} accepted an unsigned token"
        assert call(api, method, path, {"X-API-Key": "gsk_nope_nope"}).status_code == 401


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_exactly_the_routes_its_policy_allows(api, role):
    wrong = []
    for method, path, op in operations(api.app):
        roles = allowed_roles(op)
        if roles is None:
            continue
        aggregate_only = role == "policymaker" and AGGREGATE in (policy_scopes(op) or set())
        status = call(api, method, path, api.headers[role], meter=not aggregate_only).status_code
        assert status < 500, f"{method} {path} as {role}: {status}"
        if role in roles and status in (401, 403):
            wrong.append(f"{method} {path}: {role} is allowed but got {status}")
        if role not in roles and status != 403:
            wrong.append(f"{method} {path}: {role} is not allowed but got {status}")
    assert wrong == []


def test_public_routes_answer_without_credentials(api):
    for method, path, op in operations(api.app):
        if (method, path) in PUBLIC_ROUTES:
            r = call(api, method, path)
            assert r.status_code not in (401, 403) or path == "/auth/token", f"{method} {path}: {r.status_code}"
            assert r.status_code < 500


def test_policymakers_are_never_admitted_to_single_meter_or_personal_routes(api):
    for method, path, op in operations(api.app):
        roles = allowed_roles(op) or set()
        if "{meter_id}" in path or "{customer_id}" in path or path.startswith(("/customers", "/readings",
                                                                                 "/anomalies")):
            assert "policymaker" not in roles, f"{method} {path} admits policymakers"


CONSUMPTION_DATA = ("/customers", "/consumption", "/readings", "/anomalies", "/forecasts", "/policy",
                    "/carbon/emissions", "/ingestion/dead-letters")


def test_technicians_never_see_personal_or_consumption_data(api):
    for method, path, op in operations(api.app):
        if path.startswith(CONSUMPTION_DATA):
            assert "technician" not in (allowed_roles(op) or set()), f"{method} {path} admits technicians"


def test_consumers_are_admitted_only_with_a_narrowing(api):
    for method, path, op in operations(api.app):
        scopes = policy_scopes(op) or set()
        assert "consumer" not in scopes, f"{method} {path} admits consumers without own-meter/self narrowing"
