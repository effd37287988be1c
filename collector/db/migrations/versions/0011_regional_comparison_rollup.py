"""Tableau at full size: ``tableau.regional_comparison`` reads a materialised rollup too.

Revision ID: 0011_regional_comparison_rollup
Revises: 0010_forecast_selection

bench/tableau_views.py at 1,000 meters x 1 year measured the "Regional comparison" worksheet at
1.8 s p50: the view counted distinct meters over every row of ``readings_daily`` (365,000) on
each query. ``mv_regional_comparison`` holds the view's rows (one per day, region and
urban/rural) and the view reads it, with the same columns; ``gridsight_refresh_tableau_rollups()``
(collector maintenance, hourly) refreshes it with the two rollups of 0009.
"""

from alembic import op

revision = "0011_regional_comparison_rollup"
down_revision = "0010_forecast_selection"
branch_labels = None
depends_on = None

_REGIONAL_COMPARISON = """
SELECT (d.bucket AT TIME ZONE 'UTC')::date AS day, p.region, p.area_type,
       count(DISTINCT d.meter_id) AS meters,
       sum(d.kwh) AS total_kwh,
       sum(d.kwh) / count(DISTINCT d.meter_id) AS kwh_per_meter,
       sum(d.anomalous_intervals)::bigint AS anomalies
FROM readings_daily d
JOIN tableau.meter_places p ON p.meter_id = d.meter_id
GROUP BY 1, 2, 3
"""

_REFRESH = """
CREATE OR REPLACE FUNCTION gridsight_refresh_tableau_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL work_mem = '256MB';
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_hourly;
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_consumption_pattern;
    {extra}
END $$;
"""

UPGRADE = f"""
CREATE MATERIALIZED VIEW mv_regional_comparison AS {_REGIONAL_COMPARISON};
CREATE UNIQUE INDEX mv_regional_comparison_key ON mv_regional_comparison (day, region, area_type);
COMMENT ON MATERIALIZED VIEW mv_regional_comparison IS
    'tableau.regional_comparison, materialised; refreshed by gridsight_refresh_tableau_rollups() (collector maintenance).';
CREATE OR REPLACE VIEW tableau.regional_comparison AS
SELECT day, region, area_type, meters, total_kwh, kwh_per_meter, anomalies FROM mv_regional_comparison;
{_REFRESH.format(extra="REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_comparison;")}
"""

DOWNGRADE = f"""
CREATE OR REPLACE VIEW tableau.regional_comparison AS {_REGIONAL_COMPARISON};
{_REFRESH.format(extra="")}
DROP MATERIALIZED VIEW IF EXISTS mv_regional_comparison;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
