"""Consumption and readings over a time range, downsampled server-side to what a chart shows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from collector.api.deps import ID_PATTERN, Connection, Points, Range, param_error, fast_json
from collector.auth import ADMIN, ANALYST, CONSUMER, POLICYMAKER, require_roles
from collector.db import queries

router = APIRouter(tags=["consumption"])
# regions for policymakers too; a single meter for admins, analysts and the consumer who owns it
REGION_OR_OWN_METER = require_roles(ADMIN, ANALYST, POLICYMAKER, CONSUMER, consumer_scope="meter",
                                    policymaker_scope="aggregate")
OWN_METER = require_roles(ADMIN, ANALYST, CONSUMER, consumer_scope="meter")


@router.get("/consumption", dependencies=[REGION_OR_OWN_METER], summary="Energy per bucket for one meter or a whole region",
            description="Give exactly one of meter_id or region_id. Buckets are chosen so at most `points` "
                        "come back; kWh are exact sums of the interval summaries.")
async def consumption(conn: Connection, span: Range, points: Points,
                      meter_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                      region_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None) -> dict:
    if (meter_id is None) == (region_id is None):
        raise param_error("meter_id" if meter_id is None else "region_id", "give exactly one of meter_id or region_id")
    series = await queries.consumption_series(conn, span.start, span.end, points, meter_id=meter_id,
                                              region_id=region_id)
    if series is None:
        name, value = ("meter_id", meter_id) if meter_id is not None else ("region_id", region_id)
        raise param_error(name, f"no {name.split('_')[0]} {value!r}", status=404)
    return fast_json(series)


@router.get("/readings", dependencies=[OWN_METER], summary="Raw readings of one meter, averaged into at most `points` buckets")
async def readings(conn: Connection, span: Range, points: Points,
                   meter_id: Annotated[str, Query(pattern=ID_PATTERN)]) -> dict:
    if not await queries.meter_exists(conn, meter_id):
        raise param_error("meter_id", f"no meter {meter_id!r}", status=404)
    return fast_json(await queries.readings_series(conn, meter_id, span.start, span.end, points))
