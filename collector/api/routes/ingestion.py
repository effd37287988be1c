"""Ingestion health and the dead-letter table."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from collector.api.deps import ID_PATTERN, Connection, Paging, fast_json, param_error
from collector.auth import ADMIN, ANALYST, TECHNICIAN, require_roles
from collector.db import queries

router = APIRouter(prefix="/ingestion", tags=["ingestion"])


@router.get("/health", dependencies=[require_roles(ADMIN, TECHNICIAN, ANALYST)], summary="Messages, dead letters, gateways reporting and archive backlog in the last hour")
async def health(conn: Connection, request: Request) -> dict:
    out = await queries.ingestion_health(conn, skew_warn_s=request.app.state.settings.clock_skew_warn_s)
    worker = request.app.state.worker
    if worker is not None:
        m = request.app.state.metrics
        out["replica"] = {"id": request.app.state.settings.replica_id,
                          "mqtt_connected": m.value("gridsight_collector_mqtt_connected") == 1,
                          "database_up": m.value("gridsight_collector_database_up") == 1,
                          "last_error": worker.last_error}
    return out


@router.get("/dead-letters", dependencies=[require_roles(ADMIN, ANALYST)], summary="Rejected messages with the reason, newest first")
async def dead_letters(conn: Connection, page: Paging,
                       reason: Annotated[str | None, Query(max_length=40)] = None,
                       gateway_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None) -> dict:
    # a dead letter may come from a gateway the registry never held: 404 only when neither knows it
    if gateway_id is not None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM gateways WHERE id = $1) OR EXISTS (SELECT 1 FROM dead_letters "
            "WHERE gateway_id = $1)", gateway_id):
        raise param_error("gateway_id", f"no gateway {gateway_id!r} in the registry or the dead letters", status=404)
    result = await queries.dead_letters(conn, limit=page.limit, offset=page.offset, reason=reason,
                                        gateway_id=gateway_id)
    return fast_json(result.as_dict())
