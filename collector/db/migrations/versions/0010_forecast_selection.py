"""Forecast runs say which model was chosen and why; half-hourly forecasts; regions' local time.

Revision ID: 0010_forecast_selection
Revises: 0009_tableau_rollups

``forecast_runs`` holds one row per run (the ``run_id`` of its steps in ``forecasts``): the
model chosen, the reason in words, and the selection record (every candidate's day-ahead
MAPE over the days before the run, the ensemble's weights) as JSON. ``forecasts.interval_s``
admits half-hourly steps (1800 s), the settlement period in Great Britain and much of the EU;
``tableau.forecast_vs_actual`` sums a half-hour's two quarter-hour summaries beside them.

``tableau.meter_places`` places a meter in its site's region, else its site's feeder's region
(as the collector's API and CLI do), so every carbon and policy figure counts a region's
meters alike; the materialised rollups behind the views are refreshed with it.

``regions.timezone`` (an IANA name, default UTC) is the region's local time: time-of-use
windows and the policy sandbox's hour of day are read in it. ``regions.tou_peak_hours`` and
``regions.tou_offpeak_hours`` (hours of the local day like '17-20' or '0-5,23'; null = the
sandbox defaults) set a region's own time-of-use windows.
"""

from alembic import op

_FORECAST_VS_ACTUAL = r"""
WITH latest AS (
    SELECT DISTINCT ON (series_kind, series_key, interval_s, ts)
           series_kind, series_key, interval_s, ts, yhat, yhat_lower, yhat_upper, model, model_version, created_at
    FROM forecasts
    ORDER BY series_kind, series_key, interval_s, ts, created_at DESC, id DESC)
SELECT l.series_kind AS scope, l.series_key AS scope_id, l.ts AS period_start,
       l.yhat AS forecast_kwh, l.yhat_lower AS lower_kwh, l.yhat_upper AS upper_kwh,
       a.kwh AS actual_kwh, l.model || ' ' || l.model_version AS model_version, l.created_at AS issued_at
FROM latest l
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
        WHERE l.interval_s = 900 AND s.interval_start = l.ts
        UNION ALL
        SELECT s.kwh, p.region, p.feeder FROM interval_summaries s
        JOIN tableau.meter_places p ON p.meter_id = s.meter_id
        WHERE l.interval_s = 1800 AND s.interval_s = 900
          AND s.interval_start >= l.ts AND s.interval_start < l.ts + interval '30 minutes') x
    WHERE l.series_kind = 'system'
       OR (l.series_kind = 'region' AND x.region = l.series_key)
       OR (l.series_kind = 'feeder' AND x.feeder = l.series_key)) a ON true;
"""

_FORECAST_VS_ACTUAL_BEFORE = r"""
WITH latest AS (
    SELECT DISTINCT ON (series_kind, series_key, interval_s, ts)
           series_kind, series_key, interval_s, ts, yhat, yhat_lower, yhat_upper, model, model_version, created_at
    FROM forecasts
    ORDER BY series_kind, series_key, interval_s, ts, created_at DESC, id DESC)
SELECT l.series_kind AS scope, l.series_key AS scope_id, l.ts AS period_start,
       l.yhat AS forecast_kwh, l.yhat_lower AS lower_kwh, l.yhat_upper AS upper_kwh,
       a.kwh AS actual_kwh, l.model || ' ' || l.model_version AS model_version, l.created_at AS issued_at
FROM latest l
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

revision = "0010_forecast_selection"
down_revision = "0009_tableau_rollups"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE forecasts DROP CONSTRAINT IF EXISTS forecasts_interval_s_check;
ALTER TABLE forecasts ADD CONSTRAINT forecasts_interval_s_check CHECK (interval_s IN (900, 1800, 3600));

CREATE TABLE forecast_runs (
    run_id          uuid PRIMARY KEY,
    series_kind     text NOT NULL CHECK (series_kind IN ('feeder', 'region', 'system')),
    series_key      text NOT NULL,
    model           text NOT NULL,
    model_version   text NOT NULL,
    chosen_because  text,
    selection       jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX forecast_runs_series_idx ON forecast_runs (series_kind, series_key, created_at);
COMMENT ON TABLE forecast_runs IS
    'One row per forecast run: the model chosen for the series and why (candidate errors, ensemble weights).';

ALTER TABLE regions ADD COLUMN timezone text NOT NULL DEFAULT 'UTC';
ALTER TABLE regions ADD COLUMN tou_peak_hours text;
ALTER TABLE regions ADD COLUMN tou_offpeak_hours text;
COMMENT ON COLUMN regions.timezone IS 'IANA time zone of the region: time-of-use windows are in its local time.';

CREATE OR REPLACE VIEW tableau.meter_places AS
SELECT m.id AS meter_id, m.site_id, st.lat AS latitude, st.lon AS longitude,
       COALESCE(st.region_id, fd.region_id, 'unassigned') AS region,
       COALESCE(st.feeder_id, 'unassigned') AS feeder,
       COALESCE(st.area_type, 'unclassified') AS area_type
FROM meters m
LEFT JOIN sites st ON st.id = m.site_id
LEFT JOIN feeders fd ON fd.id = st.feeder_id;
REFRESH MATERIALIZED VIEW mv_regional_hourly;
REFRESH MATERIALIZED VIEW mv_consumption_pattern;

CREATE OR REPLACE VIEW tableau.policy_sandbox_inputs AS
SELECT h.region, h.area_type,
       EXTRACT(HOUR FROM h.hour_start AT TIME ZONE COALESCE(r.timezone, 'UTC'))::int AS hour_of_day,
       max(h.meters) AS meters,
       avg(h.kwh) AS avg_kwh,
       max(h.kwh) AS peak_kwh,
       avg(h.intensity_g_per_kwh) AS intensity_g_per_kwh,
       COALESCE(max(r.timezone), 'UTC') AS timezone
FROM tableau.regional_hourly h
LEFT JOIN regions r ON r.id = h.region
GROUP BY h.region, h.area_type, 3;
COMMENT ON VIEW tableau.policy_sandbox_inputs IS
    'Average and peak hourly energy per region, urban/rural and hour of the region''s local day: what the policy sliders act on.';
"""

DOWNGRADE = r"""
CREATE OR REPLACE VIEW tableau.meter_places AS
SELECT m.id AS meter_id, m.site_id, st.lat AS latitude, st.lon AS longitude,
       COALESCE(st.region_id, 'unassigned') AS region,
       COALESCE(st.feeder_id, 'unassigned') AS feeder,
       COALESCE(st.area_type, 'unclassified') AS area_type
FROM meters m
LEFT JOIN sites st ON st.id = m.site_id;
REFRESH MATERIALIZED VIEW mv_regional_hourly;
REFRESH MATERIALIZED VIEW mv_consumption_pattern;
"""

DOWNGRADE_INPUTS = r"""
CREATE VIEW tableau.policy_sandbox_inputs AS
SELECT region, area_type,
       EXTRACT(HOUR FROM hour_start AT TIME ZONE 'UTC')::int AS hour_of_day,
       max(meters) AS meters,
       avg(kwh) AS avg_kwh,
       max(kwh) AS peak_kwh,
       avg(intensity_g_per_kwh) AS intensity_g_per_kwh
FROM tableau.regional_hourly
GROUP BY 1, 2, 3;
"""

DOWNGRADE_REST = r"""
ALTER TABLE regions DROP COLUMN IF EXISTS tou_offpeak_hours;
ALTER TABLE regions DROP COLUMN IF EXISTS tou_peak_hours;
ALTER TABLE regions DROP COLUMN IF EXISTS timezone;
DROP TABLE IF EXISTS forecast_runs;
DELETE FROM forecasts WHERE interval_s = 1800;
ALTER TABLE forecasts DROP CONSTRAINT IF EXISTS forecasts_interval_s_check;
ALTER TABLE forecasts ADD CONSTRAINT forecasts_interval_s_check CHECK (interval_s IN (900, 3600));
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute("CREATE OR REPLACE VIEW tableau.forecast_vs_actual AS " + _FORECAST_VS_ACTUAL)


def downgrade() -> None:
    op.execute("CREATE OR REPLACE VIEW tableau.forecast_vs_actual AS " + _FORECAST_VS_ACTUAL_BEFORE)
    # A view cannot drop a column by CREATE OR REPLACE: drop and recreate it, then the columns.
    op.execute(DOWNGRADE)
    op.execute("DROP VIEW IF EXISTS tableau.policy_sandbox_inputs")
    op.execute(DOWNGRADE_INPUTS)
    op.execute("GRANT SELECT ON tableau.policy_sandbox_inputs TO tableau_reader")
    op.execute(DOWNGRADE_REST)
