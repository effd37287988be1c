"""Shared request dependencies: a database connection, pagination, time ranges, 4xx helpers.

Every client error names the parameter at fault in FastAPI's own shape
(``{"detail": [{"loc": ["query", "end"], "msg": ...}]}``), so a caller can act on it.
The dependencies are ``async def`` although they never wait: FastAPI runs a plain ``def``
dependency on its thread pool, a hand-off that cost more than the check itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, AsyncIterator

import asyncpg
from fastapi import Depends, HTTPException, Query, Request
from fastapi.responses import Response

from collector.db.queries import RawJSON

__all__ = ["fast_json", "Connection", "Pagination", "Paging", "TimeRange", "Range", "param_error", "Points", "ID_PATTERN",
           "MAX_RANGE", "require_known"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_RANGE = timedelta(days=3660)


def fast_json(content: dict) -> Response:
    """Serialise a plain dict whose lists may be PostgreSQL-built JSON (:class:`RawJSON`) without
    FastAPI's per-value encoder, which would dominate the cost of a chart's worth of points."""
    raws: dict[str, str] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, RawJSON):
            token = f"@raw{len(raws)}@"
            raws[json.dumps(token)] = value
            return token
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return value

    text = json.dumps(swap(content), separators=(",", ":"), allow_nan=False)
    for token, raw in raws.items():
        text = text.replace(token, raw, 1)
    return Response(text, media_type="application/json")


def param_error(name: str, message: str, status: int = 422, where: str = "query") -> HTTPException:
    return HTTPException(status_code=status, detail=[{"loc": [where, name], "msg": message, "type": "value_error"}])


async def require_known(conn: asyncpg.Connection, **ids: str | None) -> None:
    """404 naming the first of ``region_id``/``meter_id``/``gateway_id`` the registry does not hold."""
    from collector.db.queries import unknown_ids

    for name in await unknown_ids(conn, **ids):
        raise param_error(name, f"no {name.removesuffix('_id')} {ids[name]!r}", status=404)


async def _connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    try:
        async with request.app.state.pool.acquire() as conn:
            yield conn
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        raise HTTPException(status_code=503, detail=f"database unavailable: {exc}") from None


Connection = Annotated[asyncpg.Connection, Depends(_connection)]


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


async def _pagination(request: Request,
                limit: Annotated[int | None, Query(ge=1, description="page size (default 100, at most api_max_page)")] = None,
                offset: Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")] = 0) -> Pagination:
    top = request.app.state.settings.api_max_page
    if limit is None:
        limit = min(100, top)
    if limit > top:
        raise param_error("limit", f"at most {top}")
    return Pagination(limit, offset)


Paging = Annotated[Pagination, Depends(_pagination)]


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


async def _time_range(start: Annotated[datetime, Query(description="range start, ISO 8601 (UTC if no offset) or Unix s")],
                end: Annotated[datetime, Query(description="range end, exclusive; not before start (equal: an "
                                                           "empty range); at most 3660 days after start")]) -> TimeRange:
    try:
        start = _utc(start)
    except OverflowError:
        raise param_error("start", "outside the representable date range") from None
    try:
        end = _utc(end)
    except OverflowError:
        raise param_error("end", "outside the representable date range") from None
    if end < start:
        raise param_error("end", "must not be before start (start == end is an empty range)")
    if end - start > MAX_RANGE:
        raise param_error("end", f"range longer than {MAX_RANGE.days} days")
    return TimeRange(start, end)


Range = Annotated[TimeRange, Depends(_time_range)]


async def _points(request: Request, points: Annotated[int, Query(ge=2, description="most points to return")] = 500) -> int:
    top = request.app.state.settings.api_max_points
    if points > top:
        raise param_error("points", f"at most {top}")
    return points


Points = Annotated[int, Depends(_points)]
