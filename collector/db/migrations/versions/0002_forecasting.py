"""Forecasting: stored load forecasts, hourly weather observations, hourly grid carbon intensity.

Revision ID: 0002_forecasting
Revises: 0001_core

``forecasts`` holds one row per forecast step. A run (one series forecast once) shares a
``run_id`` and ``created_at``; Tableau shows the newest run beside the actuals of
``readings_hourly``. ``series_kind`` is feeder, region or system; ``series_key`` the feeder or
region id (``all`` for the system). Values are kWh per step (``interval_s``).

``weather_observations`` caches the provider's hourly temperature per location (a site id or
``lat,lon``), so forecasts re-run without calling the provider again. ``carbon_intensity`` is
the grid's g CO2/kWh per UTC hour per ``area`` — ``system`` for the national figure, or a
region id when a regional figure is known; emissions join a region's own row, else ``system``.
"""

from alembic import op

revision = "0002_forecasting"
down_revision = "0001_core"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE forecasts (
    id              bigserial PRIMARY KEY,
    run_id          uuid NOT NULL,
    series_kind     text NOT NULL CHECK (series_kind IN ('feeder', 'region', 'system')),
    series_key      text NOT NULL,
    model           text NOT NULL,
    model_version   text NOT NULL,
    interval_s      int NOT NULL CHECK (interval_s IN (900, 3600)),
    horizon         int NOT NULL CHECK (horizon >= 1),
    ts              timestamptz NOT NULL,
    yhat            double precision NOT NULL,
    yhat_lower      double precision,
    yhat_upper      double precision,
    interval_width  double precision NOT NULL DEFAULT 0.8,
    used_temperature boolean NOT NULL DEFAULT false,
    notes           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, ts)
);
CREATE INDEX forecasts_series_ts_idx ON forecasts (series_kind, series_key, ts);
CREATE INDEX forecasts_created_idx ON forecasts (created_at);
COMMENT ON TABLE forecasts IS 'Load forecasts per step with prediction interval; one run_id per series per issue.';

CREATE TABLE weather_observations (
    location        text NOT NULL,
    ts              timestamptz NOT NULL,
    temperature_c   double precision NOT NULL,
    lat             double precision,
    lon             double precision,
    source          text NOT NULL,
    is_forecast     boolean NOT NULL DEFAULT false,
    fetched_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (location, ts)
);
COMMENT ON TABLE weather_observations IS 'Hourly air temperature per location from a weather provider.';

CREATE TABLE carbon_intensity (
    area                text NOT NULL DEFAULT 'system',
    hour_start          timestamptz NOT NULL,
    intensity_g_per_kwh double precision NOT NULL CHECK (intensity_g_per_kwh >= 0),
    source              text NOT NULL,
    is_forecast         boolean NOT NULL DEFAULT false,
    fetched_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (area, hour_start)
);
COMMENT ON TABLE carbon_intensity IS 'Grid carbon intensity, g CO2 per kWh, per UTC hour; area system or a region id.';
"""

DOWNGRADE = """
DROP TABLE IF EXISTS carbon_intensity;
DROP TABLE IF EXISTS weather_observations;
DROP TABLE IF EXISTS forecasts;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
