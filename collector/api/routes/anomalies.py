"""Anomaly flags with location and score, for maps; and the same flags merged into events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from collector.api.deps import ID_PATTERN, Connection, Paging, Range, fast_json, require_known
from collector.auth import ADMIN, ANALYST, CONSUMER, require_roles
from collector.db import queries
from gridsight.anomaly_events import MERGE_GAP_S

router = APIRouter(tags=["anomalies"], dependencies=[require_roles(ADMIN, ANALYST, CONSUMER, consumer_scope="meter")])


@router.get("/anomalies", summary="Anomalies in a time range with site location, newest first",
            description="`total` is the exact number of flags in the range (all regions, or the region's "
                        "meters). With `meter_id` or `max_score`, or for a region whose registry change waits for "
                        "the hourly refresh, it is counted up to 10,000: `total_is_lower_bound` is true when it "
                        "stopped there.")
async def anomalies(conn: Connection, span: Range, page: Paging,
                    region_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                    meter_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                    max_score: Annotated[float | None, Query(ge=-1e6, le=1e6,
                                                             description="only scores at or below")] = None) -> dict:
    result = await queries.anomalies(conn, span.start, span.end, limit=page.limit, offset=page.offset,
                                     region_id=region_id, meter_id=meter_id, max_score=max_score)
    if result.total == 0:   # only an empty answer needs the check: no extra round trip on the hot path
        await require_known(conn, region_id=region_id, meter_id=meter_id)
    return fast_json(result.as_dict())


@router.get("/anomalies/events", summary="Flags merged into anomaly events, newest first, with counts per region and meter",
            description="Flags of one meter whose gap is at most merge_gap_s form one event: the rule the "
                        "simulator's QA score uses, so these counts are the QA report's detections. Each event "
                        "has its first interval start, last interval end, number of flagged intervals, strongest "
                        "(lowest) score and that flag's reason. Counts cover the whole range; `events` is one page.")
async def anomaly_events(conn: Connection, span: Range, page: Paging,
                         region_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                         meter_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                         gateway_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                         merge_gap_s: Annotated[float, Query(ge=0, le=86400,
                                                             description="largest gap inside one event, s")]
                         = MERGE_GAP_S) -> dict:
    events = await queries.anomaly_events(conn, span.start, span.end, limit=page.limit, offset=page.offset,
                                          region_id=region_id, meter_id=meter_id, gateway_id=gateway_id,
                                          merge_gap_s=merge_gap_s)
    if events["total"] == 0:
        await require_known(conn, region_id=region_id, meter_id=meter_id, gateway_id=gateway_id)
    return fast_json(events)
