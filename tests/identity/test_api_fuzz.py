"""Property-based fuzzing from the OpenAPI schema (schemathesis): no request yields a 5xx.

Each operation is called as a role its policy admits, so the fuzzer reaches the handlers
instead of stopping at 401/403. A server exception fails the test as well as a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from collector.auth import PUBLIC_ROUTES, roles_of_scopes


def _caller_role(op_security: list | None) -> str | None:
    if not op_security:
        return None
    roles = sorted(roles_of_scopes(next(iter(op_security[0].values()))))
    return "admin" if "admin" in roles else roles[0]


def test_no_generated_request_yields_a_server_error(fresh_collector_api):
    api = fresh_collector_api       # the whole collector API, every area's routers
    schema = schemathesis.openapi.from_dict(api.app.openapi())
    spec = api.app.openapi()
    failures: list[str] = []
    statuses: list[int] = []
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        method, path = operation.method.upper(), operation.path
        role = _caller_role(spec["paths"][path][operation.method.lower()].get("security"))
        headers = api.headers[role] if role else {}
        assert role or (method, path) in PUBLIC_ROUTES

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:
            request = case.as_transport_kwargs(base_url="http://testserver", headers={**(case.headers or {}), **headers})
            request.pop("cookies", None)     # the API uses no cookies; per-request cookies are deprecated in httpx
            response = api.client.request(**request)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{method} {path} -> {response.status_code}: {case.path_parameters} "
                                f"{case.query} {str(case.body)[:200]}")

        run()
        checked += 1
    assert checked >= 30
    assert sum(1 for s in statuses if s < 300) > 20, "the fuzzer never got past validation"
    assert failures == []
