"""The two routes a dashboard calls most, answered without FastAPI's per-request machinery.

A map asks ``GET /anomalies`` and a chart ``GET /consumption`` many times a second. For such a
request FastAPI matches it against every route, then resolves its tree of dependencies
(authentication, a pooled connection, the time range, the page) by introspecting their
signatures again on every call; measured in-process, that was about 60 % of the API's CPU for
these requests (``bench/query.py``), more than the queries' own client side.

:class:`HotRoutes` is a pure ASGI middleware that answers a well-formed request of an admin or
an analyst for those two paths itself: the same parameter rules (:mod:`collector.api.deps`),
the same credential checks from the identity store's memory, the same queries and the same
JSON. Anything else goes to the application unchanged and is answered there: another path or
method, a parameter it does not take or gives twice, a value that is not in the plain form
(an ISO 8601 time with a ``T`` and a zone or none, a decimal integer), an out-of-range value, a
missing or unknown credential, a check the identity store does not remember (the app asks the
database, as before), another role (consumers and policymakers have per-request scope checks),
an answer that would be a 404, a database error. Only a query that ran out of time is not
tried again: it is the same 500 the application gives. So every error, and every case the shortcut
does not know, keeps the application's own answer; ``tests/collector/test_hot_routes.py``
sends the same requests both ways and compares the answers byte for byte.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Awaitable, Callable
from urllib.parse import parse_qsl

import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send

from collector.api.deps import ID_PATTERN, MAX_RANGE, fast_json
from collector.auth.dependencies import authenticate
from collector.auth.roles import ADMIN, ANALYST
from collector.auth.store import NotRemembered
from collector.auth.tokens import AuthError
from collector.db import queries
from gridsight.errors import GridsightError

__all__ = ["HotRoutes"]

_ID = re.compile(ID_PATTERN)
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
_INT = re.compile(r"0|[1-9][0-9]{0,8}")
_ROLES = frozenset({ADMIN, ANALYST})     # the roles both routes admit without a per-request scope check
_ANOMALY_PARAMS = frozenset({"start", "end", "limit", "offset", "region_id", "meter_id"})
_CONSUMPTION_PARAMS = frozenset({"start", "end", "points", "region_id", "meter_id"})
_HEADERS = [(b"content-type", b"application/json")]


class _Defer(GridsightError):
    """The request is not one the shortcut answers: the application will (never leaves this module)."""


def _params(scope: Scope, allowed: frozenset[str]) -> dict[str, str]:
    query = scope.get("query_string", b"").decode("latin-1")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise _Defer from None
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= allowed:
        raise _Defer
    return params


def _time(value: str | None) -> datetime:
    if value is None or not _TIME.fullmatch(value):
        raise _Defer
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Defer from None
    try:
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except OverflowError:
        raise _Defer from None


def _span(params: dict[str, str]) -> tuple[datetime, datetime]:
    start, end = _time(params.get("start")), _time(params.get("end"))
    if end < start or end - start > MAX_RANGE:
        raise _Defer
    return start, end


def _int(value: str | None, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not _INT.fullmatch(value):
        raise _Defer
    number = int(value)
    if not low <= number <= high:
        raise _Defer
    return number


def _id(value: str | None) -> str | None:
    if value is not None and not _ID.fullmatch(value):
        raise _Defer
    return value


def _credentials_allow(scope: Scope) -> bool:
    """Whether the request's credential is accepted, from memory, for an admin or an analyst."""
    api_key = token = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            if api_key is not None:
                return False
            api_key = value.decode("latin-1")
        elif name == b"authorization":
            if token is not None:
                return False
            scheme, _, param = value.decode("latin-1").partition(" ")
            token = param if scheme.lower() == "bearer" else ""
    ctx = getattr(scope["app"].state, "identity", None)
    if ctx is None or not (api_key or token):
        return False
    try:
        with ctx.store.from_memory():
            principal = authenticate(ctx, token, api_key)
    except (AuthError, NotRemembered):
        return False
    return principal.role in _ROLES


async def _anomalies(scope: Scope) -> bytes:
    params = _params(scope, _ANOMALY_PARAMS)
    start, end = _span(params)
    settings = scope["app"].state.settings
    top = settings.api_max_page
    limit = _int(params.get("limit"), min(100, top), 1, top)
    offset = _int(params.get("offset"), 0, 0, 10_000_000)
    region_id, meter_id = _id(params.get("region_id")), _id(params.get("meter_id"))
    if not _credentials_allow(scope):
        raise _Defer
    async with scope["app"].state.hot_pool.acquire() as conn:
        result = await queries.anomalies(conn, start, end, limit=limit, offset=offset, region_id=region_id,
                                         meter_id=meter_id)
        if result.total == 0 and await queries.unknown_ids(conn, region_id=region_id, meter_id=meter_id):
            raise _Defer            # a 404: the application words it
    return fast_json(result.as_dict()).body


async def _consumption(scope: Scope) -> bytes:
    params = _params(scope, _CONSUMPTION_PARAMS)
    start, end = _span(params)
    points = _int(params.get("points"), 500, 2, scope["app"].state.settings.api_max_points)
    region_id, meter_id = _id(params.get("region_id")), _id(params.get("meter_id"))
    if (meter_id is None) == (region_id is None):
        raise _Defer
    if not _credentials_allow(scope):
        raise _Defer
    async with scope["app"].state.hot_pool.acquire() as conn:
        series = await queries.consumption_series(conn, start, end, points, meter_id=meter_id, region_id=region_id)
    if series is None:
        raise _Defer                # a 404
    return fast_json(series).body


_HANDLERS: dict[str, Callable[[Scope], Awaitable[bytes]]] = {"/anomalies": _anomalies, "/consumption": _consumption}


class HotRoutes:
    """Pure ASGI middleware; see the module's docstring for what it answers and what it passes on."""

    def __init__(self, app: ASGIApp, routes_app=None) -> None:
        self.app = app
        self.answered = 0                # requests answered here rather than by the application
        if routes_app is not None:
            routes_app.state.hot_routes = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            handler = _HANDLERS.get(scope["path"])
            if handler is not None:
                try:
                    body = await handler(scope)
                except (TimeoutError, asyncpg.QueryCanceledError):
                    raise                # a query that ran out of time: a 500, as in the application, not a second try
                except Exception:        # _Defer, or anything else: the application answers (or fails) in full
                    body = None
                if body is not None:
                    self.answered += 1
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-length", str(len(body)).encode()), *_HEADERS]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)
