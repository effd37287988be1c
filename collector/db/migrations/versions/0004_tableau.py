"""Tableau: the ``tableau`` schema of read-only views that workbooks bind to, and its reader role.

Revision ID: 0004_tableau
Revises: 0003_identity

The views are the stable contract with analysts' workbooks (see dashboards/catalog.py, which
a test compares with this schema): columns are added, never renamed. ``tableau_reader`` can
log in, read these views and nothing else: it has no privilege on any table, and no view
exposes a personal field (customers live in the identity tables, which no view touches).
Its password is set by the operator (``ALTER ROLE tableau_reader PASSWORD '...'``).

``sites.area_type`` ('urban' or 'rural') is added here because the urban/rural comparison
needs it and nothing recorded it; unclassified sites show as 'unclassified'.
All hour and weekday buckets are UTC, like every time in gridsight.
"""

from alembic import op

revision = "0004_tableau"
down_revision = "0003_identity"
branch_labels = None
depends_on = None

# Where a meter is: its site's region, feeder, coordinates and urban/rural class.
_PLACE = """
    FROM meters m
    LEFT JOIN sites st ON st.id = m.site_id
"""

UPGRADE = f"""
ALTER TABLE sites ADD COLUMN IF NOT EXISTS area_type text
    CHECK (area_type IN ('urban', 'rural'));

CREATE SCHEMA tableau;
COMMENT ON SCHEMA tableau IS 'Read-only views for Tableau workbooks and extracts; stable column names.';

CREATE VIEW tableau.meter_places AS
SELECT m.id AS meter_id, m.site_id, st.lat AS latitude, st.lon AS longitude,
       COALESCE(st.region_id, 'unassigned') AS region,
       COALESCE(st.feeder_id, 'unassigned') AS feeder,
       COALESCE(st.area_type, 'unclassified') AS area_type
{_PLACE};

-- The newest flag of each meter-interval (a gateway may re-flag after a restart), with its kind:
-- the tag the agent's explanation ends with, e.g. "kwh 0.05 vs profile 1.20 (drop)".
CREATE VIEW tableau.flag_kinds AS
SELECT DISTINCT ON (meter_id, interval_start)
       meter_id, interval_start, score, kwh, model_version,
       COALESCE(NULLIF(btrim(substring(reason FROM '\\(([^()]+)\\)\\s*$')), ''), 'unexplained') AS kind
FROM anomaly_flags
ORDER BY meter_id, interval_start, received_at DESC;

-- Two branches joined by UNION ALL rather than one FULL JOIN, so a filter on interval_start
-- (a Tableau time filter, the page's period) reaches the partitioned tables and prunes them.
CREATE VIEW tableau.anomaly_map AS
SELECT s.meter_id, p.site_id, p.latitude, p.longitude, p.region, p.feeder, p.area_type,
       s.interval_start, s.kwh, s.score,
       (f.meter_id IS NOT NULL OR COALESCE(s.anomalous, false)) AS is_anomaly,
       CASE WHEN f.meter_id IS NOT NULL THEN f.kind
            WHEN s.anomalous THEN 'unexplained' ELSE 'none' END AS anomaly_kind,
       COALESCE(s.model_version, f.model_version) AS model_version
FROM interval_summaries s
LEFT JOIN tableau.flag_kinds f ON f.meter_id = s.meter_id AND f.interval_start = s.interval_start
JOIN tableau.meter_places p ON p.meter_id = s.meter_id
WHERE s.score IS NOT NULL
UNION ALL
-- flags whose interval has no scored summary (the summary was lost, or is still on its way)
SELECT f.meter_id, p.site_id, p.latitude, p.longitude, p.region, p.feeder, p.area_type,
       f.interval_start, f.kwh, f.score, true, f.kind, f.model_version
FROM tableau.flag_kinds f
JOIN tableau.meter_places p ON p.meter_id = f.meter_id
WHERE NOT EXISTS (SELECT FROM interval_summaries s WHERE s.meter_id = f.meter_id
                  AND s.interval_start = f.interval_start AND s.score IS NOT NULL);
COMMENT ON VIEW tableau.anomaly_map IS
    'One row per meter and scored interval at its site: score (lower = more anomalous), flag and kind.';

CREATE VIEW tableau.consumption_pattern AS
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
GROUP BY 1, 2, 3, 4, 5;
COMMENT ON VIEW tableau.consumption_pattern IS
    'Energy by UTC hour of day x ISO day of week (1 = Monday) per region and urban/rural.';

CREATE VIEW tableau.regional_comparison AS
SELECT (d.bucket AT TIME ZONE 'UTC')::date AS day, p.region, p.area_type,
       count(DISTINCT d.meter_id) AS meters,
       sum(d.kwh) AS total_kwh,
       sum(d.kwh) / count(DISTINCT d.meter_id) AS kwh_per_meter,
       sum(d.anomalous_intervals)::bigint AS anomalies
FROM readings_daily d
JOIN tableau.meter_places p ON p.meter_id = d.meter_id
GROUP BY 1, 2, 3;
COMMENT ON VIEW tableau.regional_comparison IS
    'Daily energy, meters and anomalous intervals per region and urban/rural.';

CREATE VIEW tableau.regional_hourly AS
SELECT e.region, e.area_type, e.hour_start, e.meters, e.kwh, ci.intensity_g_per_kwh
FROM (SELECT p.region, p.area_type, h.bucket AS hour_start,
             count(DISTINCT h.meter_id) AS meters, sum(h.kwh) AS kwh
      FROM readings_hourly h
      JOIN tableau.meter_places p ON p.meter_id = h.meter_id
      GROUP BY 1, 2, 3) e
-- a region's own carbon intensity when known, else the system-wide figure of that hour
LEFT JOIN LATERAL (
    SELECT c.intensity_g_per_kwh FROM carbon_intensity c
    WHERE c.hour_start = e.hour_start AND c.area IN (e.region, 'system')
    ORDER BY (c.area = e.region) DESC, c.is_forecast
    LIMIT 1) ci ON true;
COMMENT ON VIEW tableau.regional_hourly IS
    'Energy per region, urban/rural and UTC hour, with the carbon intensity that applies to it.';

CREATE VIEW tableau.forecast_vs_actual AS
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
COMMENT ON VIEW tableau.forecast_vs_actual IS
    'The newest forecast of every step with its prediction interval beside the measured energy (null until measured).';

CREATE VIEW tableau.carbon_by_region AS
SELECT region, hour_start, sum(kwh) AS kwh, max(intensity_g_per_kwh) AS intensity_g_per_kwh,
       sum(kwh * intensity_g_per_kwh) / 1000.0 AS co2_kg
FROM tableau.regional_hourly
GROUP BY 1, 2;
COMMENT ON VIEW tableau.carbon_by_region IS
    'Hourly energy per region times the carbon intensity of that hour (co2_kg null when the intensity is unknown).';

CREATE VIEW tableau.policy_sandbox_inputs AS
SELECT region, area_type,
       EXTRACT(HOUR FROM hour_start AT TIME ZONE 'UTC')::int AS hour_of_day,
       max(meters) AS meters,
       avg(kwh) AS avg_kwh,
       max(kwh) AS peak_kwh,
       avg(intensity_g_per_kwh) AS intensity_g_per_kwh
FROM tableau.regional_hourly
GROUP BY 1, 2, 3;
COMMENT ON VIEW tableau.policy_sandbox_inputs IS
    'Average and peak hourly energy per region, urban/rural and UTC hour of day: what the policy sliders act on.';
"""

READER = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tableau_reader') THEN
        CREATE ROLE tableau_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END $$;
ALTER ROLE tableau_reader SET default_transaction_read_only = on;
ALTER ROLE tableau_reader SET search_path = tableau;
REVOKE ALL ON SCHEMA public FROM tableau_reader;
GRANT USAGE ON SCHEMA tableau TO tableau_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA tableau TO tableau_reader;
-- views that later migrations add to the schema are readable too
ALTER DEFAULT PRIVILEGES IN SCHEMA tableau GRANT SELECT ON TABLES TO tableau_reader;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO tableau_reader', current_database());
END $$;
"""

DOWNGRADE = """
DROP SCHEMA IF EXISTS tableau CASCADE;
ALTER TABLE sites DROP COLUMN IF EXISTS area_type;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tableau_reader') THEN
        EXECUTE format('REVOKE ALL ON DATABASE %I FROM tableau_reader', current_database());
    END IF;
END $$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(READER)


def downgrade() -> None:
    op.execute(DOWNGRADE)
