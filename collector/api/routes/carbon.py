"""Carbon: the grid's hourly carbon intensity and the emissions of consumption."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from collector.api.deps import ID_PATTERN, Connection, Range, param_error
from collector.auth import require_roles
from collector.auth.roles import POLICYMAKER, Principal
from collector.carbon import CarbonError, emissions_by
from collector.forecasting import store

router = APIRouter(tags=["carbon"])

Readers = Annotated[Principal, require_roles("admin", "analyst", "policymaker")]


@router.get("/carbon/intensity", summary="Grid carbon intensity per UTC hour (g CO2/kWh)",
            description="A region's own figures where stored, else the system figure.")
async def intensity(conn: Connection, span: Range, principal: Readers,
                    area: Annotated[str, Query(pattern=ID_PATTERN, description="'system' or a region id")] = "system"
                    ) -> dict:
    if area != "system" and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM regions WHERE id = $1) OR EXISTS (SELECT 1 FROM carbon_intensity "
            "WHERE area = $1)", area):
        raise param_error("area", f"no region or carbon area {area!r}", status=404)
    series = await store.stored_carbon_intensity(conn, area, span.start, span.end)
    return {"area": area, "hours": [{"hour_start": ts.isoformat(), "intensity_g_per_kwh": v}
                                    for ts, v in series.items()]}


@router.get("/carbon/emissions", summary="kWh and kg CO2 per region, feeder or meter in a time range",
            description="Each hour's consumption times that hour's carbon intensity: the region's own where "
                        "stored, else the system's (the rule of the CLI, TabPy and tableau.carbon_by_region). "
                        "Policymakers see regions and feeders only.")
async def emissions(conn: Connection, span: Range, principal: Readers,
                    by: Literal["region", "feeder", "meter"] = "region") -> dict:
    if by == "meter" and principal.role == POLICYMAKER:
        raise HTTPException(status_code=403, detail="policymakers see aggregates only: use by=region or by=feeder")
    consumption = await store.consumption_by(conn, span.start, span.end)
    if consumption.empty:
        return {"by": by, "rows": []}
    intensity = await store.carbon_intensities(conn, span.start, span.end)
    column = {"meter": "meter_id", "feeder": "feeder_id", "region": "region"}[by]
    try:
        result = emissions_by(consumption, intensity, [column])
    except CarbonError as exc:
        raise param_error("start", f"{exc} (fetch it with 'gridsight collector carbon fetch')") from None
    return {"by": by, "rows": [{column: r[column], "kwh": float(r["kwh"]), "co2_kg": float(r["co2_kg"]),
                                "intensity_g_per_kwh": float(r["intensity_g_per_kwh"])}
                               for r in result.to_dict(orient="records")]}
