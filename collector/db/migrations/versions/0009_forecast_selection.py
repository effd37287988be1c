"""Forecast runs say which model was chosen and why; half-hourly forecasts; regions' local time.

Revision ID: 0009_forecast_selection
Revises: 0008_outbox_epochs

``forecast_runs`` holds one row per run (the ``run_id`` of its steps in ``forecasts``): the
model chosen, the reason in words, and the selection record (every candidate's day-ahead
MAPE over the days before the run, the ensemble's weights) as JSON. ``forecasts.interval_s``
admits half-hourly steps (1800 s), the settlement period in Great Britain and much of the EU.

``tableau.meter_places`` places a meter in its site's region, else its site's feeder's region
(as the collector's API and CLI do), so every carbon and policy figure counts a region's
meters alike.

``regions.timezone`` (an IANA name, default UTC) is the region's local time: time-of-use
windows and the policy sandbox's hour of day are read in it. ``regions.tou_peak_hours`` and
``regions.tou_offpeak_hours`` (hours of the local day like '17-20' or '0-5,23'; null = the
sandbox defaults) set a region's own time-of-use windows.
"""

from alembic import op

revision = "0009_forecast_selection"
down_revision = "0008_outbox_epochs"
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


def downgrade() -> None:
    # A view cannot drop a column by CREATE OR REPLACE: drop and recreate it, then the columns.
    op.execute(DOWNGRADE)
    op.execute("DROP VIEW IF EXISTS tableau.policy_sandbox_inputs")
    op.execute(DOWNGRADE_INPUTS)
    op.execute("GRANT SELECT ON tableau.policy_sandbox_inputs TO tableau_reader")
    op.execute(DOWNGRADE_REST)
