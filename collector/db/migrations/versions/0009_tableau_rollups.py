"""Tableau at full size: the views that aggregate every hour of every meter read materialised rollups.

Revision ID: 0009_tableau_rollups
Revises: 0008_outbox_epochs

Measured with bench/tableau_views.py (the shipped worksheets' queries as Tableau's live
connection sends them): ``tableau.regional_hourly`` (and so ``carbon_by_region`` and
``policy_sandbox_inputs``) and ``consumption_pattern`` grouped all of ``readings_hourly`` — a
year of 1,000 meters is 8.8 million rows — on every query, and ``forecast_vs_actual`` summed
every meter's hour for each forecast step. Seconds at 50 meters, tens of seconds at 1,000.

- ``mv_regional_hourly`` holds what ``tableau.regional_hourly`` computed (energy per region,
  urban/rural and hour, meters, carbon intensity) and ``mv_consumption_pattern`` what
  ``tableau.consumption_pattern`` computed. The two views now read them, with the same columns,
  so workbooks and extracts are unchanged.
- ``forecast_vs_actual`` takes a system or region hour's actual energy from
  ``mv_regional_hourly`` (a feeder's, and quarter-hour steps, still from the facts).
- ``gridsight_refresh_tableau_rollups()`` recomputes both (``REFRESH ... CONCURRENTLY``: readers
  are never blocked). The collector's maintenance runs it (hourly in every ingest worker, and
  ``gridsight collector maintain``), so these views lag the facts by at most that interval.
"""

from alembic import op

revision = "0009_tableau_rollups"
down_revision = "0008_outbox_epochs"
branch_labels = None
depends_on = None

_REGIONAL_HOURLY = """
SELECT e.region, e.area_type, e.hour_start, e.meters, e.kwh, ci.intensity_g_per_kwh
FROM (SELECT p.region, p.area_type, h.bucket AS hour_start,
             count(DISTINCT h.meter_id) AS meters, sum(h.kwh) AS kwh
      FROM readings_hourly h
      JOIN tableau.meter_places p ON p.meter_id = h.meter_id
      GROUP BY 1, 2, 3) e
LEFT JOIN LATERAL (
    SELECT c.intensity_g_per_kwh FROM carbon_intensity c
    WHERE c.hour_start = e.hour_start AND c.area IN (e.region, 'system')
    ORDER BY (c.area = e.region) DESC, c.is_forecast
    LIMIT 1) ci ON true
"""

_CONSUMPTION_PATTERN = """
SELECT p.region, p.area_type,
       EXTRACT(ISODOW FROM h.bucket AT TIME ZONE 'UTC')::int AS day_of_week,
       to_char(h.bucket AT TIME ZONE 'UTC', 'FMDay') AS weekday,
       EXTRACT(HOUR FROM h.bucket AT TIME ZONE 'UTC')::int AS hour_of_day,
       count(DISTINCT h.meter_id) AS meters,
       sum(h.intervals)::bigint AS intervals,
       sum(h.kwh) AS total_kwh,
       avg(h.kwh) AS avg_kwh_per_meter_hour
FROM readings_hourly h
JOIN tableau.meter_places p ON p.meter_id = h.meter_id
GROUP BY 1, 2, 3, 4, 5
"""

_FORECAST_LATEST = """
WITH latest AS (
    SELECT DISTINCT ON (series_kind, series_key, interval_s, ts)
           series_kind, series_key, interval_s, ts, yhat, yhat_lower, yhat_upper, model, model_version, created_at
    FROM forecasts
    ORDER BY series_kind, series_key, interval_s, ts, created_at DESC, id DESC)
SELECT l.series_kind AS scope, l.series_key AS scope_id, l.ts AS period_start,
       l.yhat AS forecast_kwh, l.yhat_lower AS lower_kwh, l.yhat_upper AS upper_kwh,
       a.kwh AS actual_kwh, l.model || ' ' || l.model_version AS model_version, l.created_at AS issued_at
FROM latest l
"""

_FORECAST_ACTUAL_NEW = """
LEFT JOIN LATERAL (
    SELECT sum(x.kwh) AS kwh FROM (
        SELECT r.kwh, r.region, NULL::text AS feeder FROM mv_regional_hourly r
        WHERE l.interval_s = 3600 AND l.series_kind IN ('system', 'region') AND r.hour_start = l.ts
        UNION ALL
        SELECT h.kwh, p.region, p.feeder FROM readings_hourly h
        JOIN tableau.meter_places p ON p.meter_id = h.meter_id
        WHERE l.interval_s = 3600 AND l.series_kind = 'feeder' AND h.bucket = l.ts
        UNION ALL
        SELECT s.kwh, p.region, p.feeder FROM interval_summaries s
        JOIN tableau.meter_places p ON p.meter_id = s.meter_id
        WHERE l.interval_s = 900 AND s.interval_start = l.ts) x
    WHERE l.series_kind = 'system'
       OR (l.series_kind = 'region' AND x.region = l.series_key)
       OR (l.series_kind = 'feeder' AND x.feeder = l.series_key)) a ON true;
"""

_FORECAST_ACTUAL_OLD = """
LEFT JOIN LATERAL (
    SELECT sum(x.kwh) AS kwh FROM (
        SELECT h.kwh, p.region, p.feeder FROM readings_hourly h
        JOIN tableau.meter_places p ON p.meter_id = h.meter_id
        WHERE l.interval_s = 3600 AND h.bucket = l.ts
        UNION ALL
        SELECT s.kwh, p.region, p.feeder FROM interval_summaries s
        JOIN tableau.meter_places p ON p.meter_id = s.meter_id
        WHERE l.interval_s = 900 AND s.interval_start = l.ts) x
    WHERE l.series_kind = 'system'
       OR (l.series_kind = 'region' AND x.region = l.series_key)
       OR (l.series_kind = 'feeder' AND x.feeder = l.series_key)) a ON true;
"""

UPGRADE = f"""
SET LOCAL work_mem = '256MB';
CREATE MATERIALIZED VIEW mv_regional_hourly AS {_REGIONAL_HOURLY};
CREATE UNIQUE INDEX mv_regional_hourly_key ON mv_regional_hourly (region, area_type, hour_start);
CREATE INDEX mv_regional_hourly_hour ON mv_regional_hourly (hour_start) INCLUDE (region, kwh);
CREATE MATERIALIZED VIEW mv_consumption_pattern AS {_CONSUMPTION_PATTERN};
CREATE UNIQUE INDEX mv_consumption_pattern_key ON mv_consumption_pattern (region, area_type, day_of_week, hour_of_day);
COMMENT ON MATERIALIZED VIEW mv_regional_hourly IS
    'tableau.regional_hourly, materialised; refreshed by gridsight_refresh_tableau_rollups() (collector maintenance).';
COMMENT ON MATERIALIZED VIEW mv_consumption_pattern IS
    'tableau.consumption_pattern, materialised; refreshed by gridsight_refresh_tableau_rollups() (collector maintenance).';

CREATE OR REPLACE VIEW tableau.regional_hourly AS
SELECT region, area_type, hour_start, meters, kwh, intensity_g_per_kwh FROM mv_regional_hourly;
CREATE OR REPLACE VIEW tableau.consumption_pattern AS
SELECT region, area_type, day_of_week, weekday, hour_of_day, meters, intervals, total_kwh, avg_kwh_per_meter_hour
FROM mv_consumption_pattern;
CREATE OR REPLACE VIEW tableau.forecast_vs_actual AS {_FORECAST_LATEST} {_FORECAST_ACTUAL_NEW}

CREATE FUNCTION gridsight_refresh_tableau_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL work_mem = '256MB';
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_hourly;
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_consumption_pattern;
END $$;
"""

DOWNGRADE = f"""
CREATE OR REPLACE VIEW tableau.forecast_vs_actual AS {_FORECAST_LATEST} {_FORECAST_ACTUAL_OLD}
CREATE OR REPLACE VIEW tableau.regional_hourly AS {_REGIONAL_HOURLY};
CREATE OR REPLACE VIEW tableau.consumption_pattern AS {_CONSUMPTION_PATTERN};
DROP FUNCTION IF EXISTS gridsight_refresh_tableau_rollups();
DROP MATERIALIZED VIEW IF EXISTS mv_consumption_pattern;
DROP MATERIALIZED VIEW IF EXISTS mv_regional_hourly;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
