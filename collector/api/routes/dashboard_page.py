"""The built-in dashboard page (``GET /dashboard``): anomaly map, consumption heatmap, forecast chart.

It reads the same ``tableau`` views as the Tableau workbooks, so the page and Tableau never
disagree; the drawing is in :mod:`collector.api.page_render`. Admins and analysts see every site;
policymakers see the same page with aggregates only, as the API's role policy says: one bubble
per region with its totals, never a site, a score or the position of a single household, and a
region of fewer than :data:`MIN_AGGREGATE_METERS` meters is withheld from them altogether.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from collector.api.deps import ID_PATTERN, Connection
from collector.api.page_render import (ForecastPoint, HeatCell, RegionAggregate, SitePoint, aggregate_section,
                                       map_section, not_found_page, render_page)
from collector.auth import require_roles
from collector.auth.roles import POLICYMAKER, Principal

router = APIRouter(tags=["dashboard"])

TITLE = "gridsight: consumption and anomalies"
MIN_AGGREGATE_METERS = 5   # small-cell suppression for policymakers: fewer meters could single out a household

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

_REGIONS = """
SELECT region, min(area_type) AS area_type, avg(latitude) AS latitude, avg(longitude) AS longitude,
       count(DISTINCT meter_id) AS meters, count(*) FILTER (WHERE is_anomaly) AS flags, count(*) AS intervals
FROM tableau.anomaly_map
WHERE interval_start >= $1::timestamptz - make_interval(days => $2) AND latitude IS NOT NULL
  AND ($3::text IS NULL OR region = $3)
GROUP BY region
ORDER BY region
"""

# the model's decision threshold of the period: the newest flag's (every flag carries it)
_THRESHOLD = """
SELECT threshold FROM anomaly_flags
WHERE interval_start >= $1::timestamptz - make_interval(days => $2) AND interval_start < $1::timestamptz
ORDER BY interval_start DESC LIMIT 1
"""

# A weekday x hour pattern needs whole weeks: the heatmap covers at least HEATMAP_DAYS.
HEATMAP_DAYS = 28
# Live from the hourly rollup rather than tableau.regional_hourly, which is materialised and
# refreshed by maintenance (migration 0009): the page shows the newest hour at once.
_CELLS = """
SELECT EXTRACT(ISODOW FROM h.bucket AT TIME ZONE 'UTC')::int AS day_of_week,
       EXTRACT(HOUR FROM h.bucket AT TIME ZONE 'UTC')::int AS hour_of_day,
       avg(h.kwh) AS kwh_per_meter_hour
FROM readings_hourly h JOIN tableau.meter_places p ON p.meter_id = h.meter_id
WHERE h.bucket >= $1::timestamptz - make_interval(days => $2) AND ($3::text IS NULL OR p.region = $3)
GROUP BY 1, 2
ORDER BY 1, 2
"""

_FORECAST = """
WITH pts AS (SELECT * FROM tableau.forecast_vs_actual WHERE scope = $1 AND scope_id = $2)
SELECT period_start, forecast_kwh, lower_kwh, upper_kwh, actual_kwh
FROM pts
WHERE period_start > (SELECT max(period_start) FROM pts) - make_interval(days => $3)
ORDER BY period_start
"""

_REGION_METERS = ("SELECT count(*) FROM meters m LEFT JOIN gateways g ON g.id = m.gateway_id "
                  "LEFT JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id) WHERE s.region_id = $1")


@router.get("/dashboard", response_class=HTMLResponse,
            summary="Built-in dashboard: anomaly map, consumption heatmap and forecast vs actual (HTML with SVG)",
            description="Admins and analysts see every site; policymakers see aggregates per region only "
                        f"(regions of fewer than {MIN_AGGREGATE_METERS} meters withheld). An unknown region "
                        "answers a 404 page.",
            responses={404: {"description": "no such region", "content": {"text/html": {}}}})
async def dashboard(conn: Connection,
                    principal: Annotated[Principal, require_roles("admin", "analyst", "policymaker")],
                    region: Annotated[str | None, Query(pattern=ID_PATTERN, description="one region only")] = None,
                    days: Annotated[int, Query(ge=1, le=366, description="days of anomalies and forecast")] = 7
                    ) -> HTMLResponse:
    aggregate_only = principal.role == POLICYMAKER
    if region is not None and not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM regions WHERE id = $1)", region):
        known = [r["id"] for r in await conn.fetch("SELECT id FROM regions ORDER BY id")]
        return HTMLResponse(not_found_page(TITLE, f"No region named {region}", known), status_code=404)
    newest = await conn.fetchval(_NEWEST)
    heat_days = max(days, HEATMAP_DAYS)
    too_small = aggregate_only and region is not None and \
        await conn.fetchval(_REGION_METERS, region) < MIN_AGGREGATE_METERS
    withheld_note = (f"Withheld: region {region} has fewer than {MIN_AGGREGATE_METERS} meters"
                     if too_small else "")
    if aggregate_only:
        rows = [RegionAggregate(**dict(r)) for r in await conn.fetch(_REGIONS, newest, days, region)] if newest else []
        shown = [r for r in rows if r.meters >= MIN_AGGREGATE_METERS]
        map_html = aggregate_section(shown, MIN_AGGREGATE_METERS, len(rows) - len(shown))
        map_title = f"Anomalies per region: {len(shown)} regions, {sum(r.flags for r in shown):,} flagged intervals"
    else:
        sites = [SitePoint(**dict(r)) for r in await conn.fetch(_SITES, newest, days, region)] if newest else []
        threshold = await conn.fetchval(_THRESHOLD, newest, days) if newest else None
        map_html = map_section(sites, threshold)
        map_title = (f"Anomaly map: {len(sites)} sites, {sum(1 for s in sites if s.flags)} with flagged "
                     f"intervals, {sum(s.flags for s in sites):,} flags")
    cells = [HeatCell(**dict(r)) for r in await conn.fetch(_CELLS, newest, heat_days, region)] \
        if newest and not too_small else []
    scope, scope_id = ("region", region) if region else ("system", "all")
    forecast = [] if too_small else [ForecastPoint(**dict(r)) for r in await conn.fetch(_FORECAST, scope, scope_id, days)]
    where = f"region {region}" if region else "all regions"
    forecast_title = (f"Forecast vs actual: {'region ' + region if region else 'all regions (system total)'}, "
                      f"kWh per hour, last {days} days of the newest forecast")
    return HTMLResponse(render_page(
        TITLE, f"{where} · last {days} days of scored intervals · from the tableau views the Tableau workbooks use"
        + (" · aggregates only" if aggregate_only else ""),
        map_html, cells, forecast, forecast_title, heat_days, map_title, heatmap_note=withheld_note))
