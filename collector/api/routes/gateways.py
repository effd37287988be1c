"""Gateways with their status."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from collector.api.deps import ID_PATTERN, Connection, Paging, param_error, fast_json, require_known
from collector.auth import ADMIN, ANALYST, TECHNICIAN, require_roles
from collector.db import queries

router = APIRouter(prefix="/gateways", tags=["registry"], dependencies=[require_roles(ADMIN, TECHNICIAN, ANALYST)])


@router.get("", summary="Gateways with their state (online, stale, offline, never_seen, disabled)")
async def list_gateways(conn: Connection, page: Paging,
                        region_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
                        state: Annotated[Literal["online", "stale", "offline", "never_seen", "disabled"] | None,
                                         Query()] = None) -> dict:
    await require_known(conn, region_id=region_id)
    result = await queries.list_gateways(conn, limit=page.limit, offset=page.offset, region_id=region_id,
                                         status=state)
    return fast_json(result.as_dict())


@router.get("/{gateway_id}", summary="One gateway")
async def get_gateway(conn: Connection, gateway_id: Annotated[str, Path(pattern=ID_PATTERN)]) -> dict:
    gateway = await queries.get_gateway(conn, gateway_id)
    if gateway is None:
        raise param_error("gateway_id", f"no gateway {gateway_id!r}", status=404, where="path")
    return gateway
