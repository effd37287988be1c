"""Policy sandbox: what tariffs, demand response, efficiency and EVs would do to regional load."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from collector.api.deps import ID_PATTERN, Connection, MAX_RANGE, param_error
from collector.auth import require_roles
from collector.forecasting import store
from collector.policy import PARAMETERS, PolicyError, sandbox_with_stored_intensity

router = APIRouter(tags=["policy"], dependencies=[require_roles("admin", "analyst", "policymaker")])


@router.get("/policy/parameters", summary="The sandbox's policy parameters and what each means")
async def parameters() -> dict:
    return {"parameters": PARAMETERS}


class SandboxRequest(BaseModel):
    start: datetime = Field(description="first hour of load, ISO 8601 (UTC if no offset)")
    end: datetime = Field(description="end of load, exclusive")
    source: Literal["actual", "forecast"] = Field("actual", description="actual load, or the newest stored "
                                                                         "region forecasts")
    regions: list[str] | None = Field(None, description="only these regions (default: all)")
    params: dict[str, Any] = Field(default_factory=dict, description="policy parameters, see /policy/parameters")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@router.post("/policy/sandbox", summary="Peak, energy, cost and CO2 per region before and after policies",
             description="Applies the policies (order: efficiency, EV charging, time-of-use shift, demand-response "
                         "clipping) to hourly regional load, in each region's local time (regions.timezone and "
                         "its own time-of-use windows). CO2 uses each region's own stored carbon intensity, else "
                         "the system's, when that covers every hour, else carbon_g_per_kwh: the same computation "
                         "as 'gridsight collector policy'.")
async def sandbox(conn: Connection, body: SandboxRequest) -> dict:
    import pandas as pd

    try:
        start = _utc(body.start)
    except OverflowError:
        raise param_error("start", "outside the representable date range", where="body") from None
    try:
        end = _utc(body.end)
    except OverflowError:
        raise param_error("end", "outside the representable date range", where="body") from None
    if end <= start:
        raise param_error("end", "must be after start", where="body")
    if end - start > min(MAX_RANGE, timedelta(days=400)):
        raise param_error("end", "range longer than 400 days", where="body")
    for region in body.regions or []:
        if not re.fullmatch(ID_PATTERN, region):
            raise param_error("regions", f"{region[:64]!r} is not a region id", where="body")
    if body.regions:
        known = {r["id"] for r in await conn.fetch("SELECT id FROM regions WHERE id = ANY($1)", body.regions)}
        for region in body.regions:
            if region not in known:
                raise param_error("regions", f"no region {region!r}", status=404, where="body")
    if body.source == "actual":
        load = await store.regional_load(conn, start, end, body.regions)
    else:
        keys = body.regions or await store.series_keys(conn, "region")
        frames = []
        for key in keys:
            run = await store.stored_forecast(conn, "region", key, start, end)
            if run is not None:
                frames.append(store.stored_forecast_load(run).assign(region=key))
        load = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["region", "ts", "kwh"])
    if load.empty:
        raise param_error("start", f"no {body.source} regional load between {start.isoformat()} and {end.isoformat()}",
                          status=404, where="body")
    intensities = await store.carbon_intensities(conn, start, end)
    regions = await store.region_policies(conn)
    try:
        result, notes = sandbox_with_stored_intensity(load, body.params, intensities, regions)
    except PolicyError as exc:
        raise param_error(exc.parameter, exc.reason, where="body") from None
    return {"source": body.source, "start": start.isoformat(), "end": end.isoformat(), "parameters": body.params,
            "notes": notes, **result.as_dict()}
