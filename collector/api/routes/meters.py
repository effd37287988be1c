"""Meters with where they are and when they last reported."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from collector.api.deps import ID_PATTERN, Connection, Paging, param_error, fast_json, require_known
from collector.auth import ADMIN, ANALYST, CONSUMER, TECHNICIAN, require_roles
from collector.db import queries

router = APIRouter(prefix="/meters", tags=["registry"])


@router.get("", summary="Meters, optionally of one gateway or region",
            dependencies=[require_roles(ADMIN, TECHNICIAN, ANALYST)])
async def list_meters(conn: Connection, page: Paging,
                      gateway_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                      region_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None) -> dict:
    await require_known(conn, gateway_id=gateway_id, region_id=region_id)
    result = await queries.list_meters(conn, limit=page.limit, offset=page.offset, gateway_id=gateway_id,
                                       region_id=region_id)
    return fast_json(result.as_dict())


@router.get("/{meter_id}", summary="One meter",
            dependencies=[require_roles(ADMIN, TECHNICIAN, ANALYST, CONSUMER, consumer_scope="meter")])
async def get_meter(conn: Connection, meter_id: Annotated[str, Path(pattern=ID_PATTERN)]) -> dict:
    meter = await queries.get_meter(conn, meter_id)
    if meter is None:
        raise param_error("meter_id", f"no meter {meter_id!r}", status=404, where="path")
    return meter
