"""The built-in dashboard page (``GET /dashboard``): anomaly map, consumption heatmap, forecast chart.

It reads the same ``tableau`` views as the Tableau workbooks, so the page and Tableau never
disagree; the drawing is in :mod:`collector.api.page_render`. Aggregates only: analysts, admins and
policymakers may see it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from collector.api.deps import ID_PATTERN, Connection
from collector.auth import require_roles
from collector.api.page_render import ForecastPoint, HeatCell, SitePoint, render_page

router = APIRouter(tags=["dashboard"])

# The end of the newest hour with data, from the hourly rollup's index: the period ends there.
_NEWEST = "SELECT max(bucket) + interval '1 hour' FROM readings_hourly"

_SITES = """
SELECT site_id, latitude, longitude, region, area_type, min(score) AS min_score,
       count(*) FILTER (WHERE is_anomaly) AS flags, count(*) AS intervals
FROM tableau.anomaly_map
WHERE interval_start >= $1::timestamptz - make_interval(days => $2) AND latitude IS NOT NULL
  AND ($3::text IS NULL OR region = $3)
GROUP BY site_id, latitude, longitude, region, area_type
ORDER BY site_id
"""

# A weekday x hour pattern needs whole weeks: the heatmap covers at least HEATMAP_DAYS.
HEATMAP_DAYS = 28
_CELLS = """
SELECT EXTRACT(ISODOW FROM hour_start AT TIME ZONE 'UTC')::int AS day_of_week,
       EXTRACT(HOUR FROM hour_start AT TIME ZONE 'UTC')::int AS hour_of_day,
       sum(kwh) / sum(meters) AS kwh_per_meter_hour
FROM tableau.regional_hourly
WHERE hour_start >= $1::timestamptz - make_interval(days => $2) AND ($3::text IS NULL OR region = $3)
GROUP BY 1, 2 HAVING sum(meters) > 0
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
    newest = await conn.fetchval(_NEWEST)
    sites = [SitePoint(**dict(r)) for r in await conn.fetch(_SITES, newest, days, region)] if newest else []
    heat_days = max(days, HEATMAP_DAYS)
    cells = [HeatCell(**dict(r)) for r in await conn.fetch(_CELLS, newest, heat_days, region)] if newest else []
    scope, scope_id = ("region", region) if region else ("system", "all")
    forecast = [ForecastPoint(**dict(r)) for r in await conn.fetch(_FORECAST, scope, scope_id, days)]
    where = f"region {region}" if region else "all regions"
    return HTMLResponse(render_page(
        "gridsight — consumption and anomalies",
        f"{where} · last {days} days of scored intervals · from the tableau views the Tableau workbooks use",
        sites, cells, forecast, f"{scope} {scope_id}", heat_days))
