"""The OpenAPI document as the API behaves: every status code a route can answer, and the
bounds the API enforces from its settings.

FastAPI documents what it can see in a route's signature (200, and 422 when there are
parameters). Authentication (401/403), request limits (400/408/413), the control-character
check (422 on every route), the database being unreachable (503), missing path resources (404),
conflicts and login throttling are added here once, by rule, instead of on each route; the
``limit`` and ``points`` maxima come from ``api_max_page`` and ``api_max_points``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["document_api"]

_ERROR_SCHEMA = {"title": "Error", "type": "object", "required": ["detail"],
                 "properties": {"detail": {"description": "what went wrong: a message, or a list of "
                                                          "{loc, msg, type} naming the input at fault"}}}
_REASONS = {
    "400": "malformed request (e.g. a Content-Length that is not a number)",
    "401": "no credentials, or a token or API key that is invalid, expired, revoked or from an earlier "
           "generation of its account",
    "403": "authenticated, but the role (or scope) may not do this",
    "404": "no such resource",
    "408": "the request body arrived too slowly",
    "409": "conflicts with what exists (e.g. a meter bound to another customer)",
    "413": "request body too large",
    "422": "a parameter or body field is invalid (bounds, patterns, control characters, start after end); "
           "detail names it",
    "429": "too many failed logins for this account; retry after the Retry-After header",
    "503": "a service it needs (the database, personal-data key) is unavailable",
}
# (method, path) -> extra status codes beyond the rules
_SPECIFIC: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/auth/token"): ("401", "429"),
    ("post", "/customers"): ("409",),
    ("post", "/customers/{customer_id}/meters"): ("409",),
    ("post", "/enrollment/enroll"): ("403",),
    ("get", "/forecasts"): ("404",),            # no forecast stored for series_key
    ("post", "/forecasts/run"): ("404",),       # no such series
}
_NO_DATABASE = {"/healthz", "/metrics"}


def _error(code: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/HTTPValidationError"} if code == "422" else \
        {"$ref": "#/components/schemas/Error"}
    return {"description": _REASONS[code], "content": {"application/json": {"schema": schema}}}


def _codes(method: str, path: str, op: dict) -> list[str]:
    codes = ["422"]
    if op.get("security"):
        codes += ["401", "403"]
    # a path parameter, or a query parameter naming one thing (region_id, meter_id...), may name nothing
    if any(p.get("in") == "path" or p.get("name", "").endswith("_id") for p in op.get("parameters", [])):
        codes.append("404")
    if "requestBody" in op:
        codes += ["400", "408", "413"]
    if path not in _NO_DATABASE:
        codes.append("503")
    codes += _SPECIFIC.get((method, path), ())
    return codes


def _bound(op: dict, name: str, maximum: int) -> None:
    for param in op.get("parameters", []):
        if param.get("name") == name and param.get("in") == "query":
            schema = param.setdefault("schema", {})
            schema["maximum"] = maximum          # also when the integer is optional (anyOf with null)
            for branch in schema.get("anyOf", []):
                if branch.get("type") == "integer":
                    branch["maximum"] = maximum


def document_api(app: FastAPI, *, max_page: int, max_points: int) -> None:
    """Make ``app.openapi()`` return the completed document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.setdefault("Error", _ERROR_SCHEMA)
            if "HTTPValidationError" not in components:
                components["HTTPValidationError"] = {
                    "title": "HTTPValidationError", "type": "object",
                    "properties": {"detail": {"type": "array", "items": {"type": "object"}}}}
            for path, ops in schema.get("paths", {}).items():
                for method, op in ops.items():
                    if not isinstance(op, dict) or "responses" not in op:
                        continue
                    for code in _codes(method, path, op):
                        op["responses"].setdefault(code, _error(code))
                    _bound(op, "limit", max_page)
                    _bound(op, "points", max_points)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
