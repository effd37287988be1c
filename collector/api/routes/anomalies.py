"""Anomaly flags with location and score, for maps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from collector.api.deps import ID_PATTERN, Connection, Paging, Range, fast_json
from collector.auth import ADMIN, ANALYST, CONSUMER, require_roles
from collector.db import queries

router = APIRouter(tags=["anomalies"], dependencies=[require_roles(ADMIN, ANALYST, CONSUMER, consumer_scope="meter")])


@router.get("/anomalies", summary="Anomalies in a time range with site location, newest first")
async def anomalies(conn: Connection, span: Range, page: Paging,
                    region_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                    meter_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                    max_score: Annotated[float | None, Query(ge=-1e6, le=1e6,
                                                             description="only scores at or below")] = None) -> dict:
    result = await queries.anomalies(conn, span.start, span.end, limit=page.limit, offset=page.offset,
                                     region_id=region_id, meter_id=meter_id, max_score=max_score)
    return fast_json(result.as_dict())
