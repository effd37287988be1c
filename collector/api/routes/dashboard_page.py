"""The built-in dashboard page (``GET /dashboard``): anomaly map, consumption heatmap, forecast chart.

It reads the same ``tableau`` views as the Tableau workbooks, so the page and Tableau never
disagree; the drawing is in :mod:`dashboards.page`. Aggregates only: analysts, admins and
policymakers may see it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from collector.api.deps import ID_PATTERN, Connection
from collector.auth import require_roles
from dashboards.page import ForecastPoint, HeatCell, SitePoint, render_page

router = APIRouter(tags=["dashboard"])

_SITES = """
WITH newest AS (SELECT max(interval_start) AS t FROM tableau.anomaly_map)
SELECT site_id, latitude, longitude, region, area_type, min(score) AS min_score,
       count(*) FILTER (WHERE is_anomaly) AS flags, count(*) AS intervals
FROM tableau.anomaly_map, newest
WHERE interval_start > newest.t - make_interval(days => $1) AND latitude IS NOT NULL
  AND ($2::text IS NULL OR region = $2)
GROUP BY site_id, latitude, longitude, region, area_type
ORDER BY site_id
"""

_CELLS = """
-- meter-hours of a row = total / average per meter-hour, so the weighted mean is exact across regions
SELECT day_of_week, hour_of_day,
       sum(total_kwh) / sum(total_kwh / NULLIF(avg_kwh_per_meter_hour, 0)) AS kwh_per_meter_hour
FROM tableau.consumption_pattern
WHERE ($1::text IS NULL OR region = $1)
GROUP BY 1, 2 HAVING sum(total_kwh) > 0
ORDER BY 1, 2
"""

_FORECAST = """
WITH pts AS (SELECT * FROM tableau.forecast_vs_actual WHERE scope = $1 AND scope_id = $2)
SELECT period_start, forecast_kwh, lower_kwh, upper_kwh, actual_kwh
FROM pts
WHERE period_start > (SELECT max(period_start) FROM pts) - make_interval(days => $3)
ORDER BY period_start
"""


@router.get("/dashboard", response_class=HTMLResponse,
            summary="Built-in dashboard: anomaly map, consumption heatmap and forecast vs actual (HTML with SVG)",
            dependencies=[require_roles("admin", "analyst", "policymaker")])
async def dashboard(conn: Connection,
                    region: Annotated[str | None, Query(pattern=ID_PATTERN, description="one region only")] = None,
                    days: Annotated[int, Query(ge=1, le=366, description="days of anomalies and forecast")] = 7
                    ) -> HTMLResponse:
    sites = [SitePoint(**dict(r)) for r in await conn.fetch(_SITES, days, region)]
    cells = [HeatCell(**dict(r)) for r in await conn.fetch(_CELLS, region)]
    scope, scope_id = ("region", region) if region else ("system", "all")
    forecast = [ForecastPoint(**dict(r)) for r in await conn.fetch(_FORECAST, scope, scope_id, days)]
    where = f"region {region}" if region else "all regions"
    return HTMLResponse(render_page(
        "gridsight — consumption and anomalies",
        f"{where} · last {days} days of scored intervals · from the tableau views the Tableau workbooks use",
        sites, cells, forecast, f"{scope} {scope_id}"))
