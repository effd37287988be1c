"""The anomaly map's page is read from the indexes alone, already in its order.

Revision ID: 0013_anomaly_page_indexes
Revises: 0012_anomaly_daily

``GET /anomalies`` (a map's page: the newest flags of a range, all regions or one) read each
flag's row from the table after finding it in an index, and sorted every page again because
the index on ``interval_start`` did not hold the page's tie-break (``meter_id``). A region's
newest flags lie among every other region's flags of the same days, so its page touched about
one table page per flag. The two indexes on ``anomaly_flags`` become covering indexes with the
same leading columns, so every query that used the old ones still can:

- ``(interval_start DESC, meter_id)`` with the page's columns: all regions, in page order;
- ``(meter_id, interval_start)`` with the page's columns: one region's meters, or one meter.

Flags are a small table (about 0.3 % of intervals), so the wider indexes cost little space and
nothing an ingest notices. ``bench/query.py`` measured what this saved (docs/benchmarks.md).
"""

from alembic import op

revision = "0013_anomaly_page_indexes"
down_revision = "0012_anomaly_daily"
branch_labels = None
depends_on = None

_PAGE_COLUMNS = "gateway_id, interval_s, score, threshold, kwh, reason, model_version"

UPGRADE = f"""
CREATE INDEX anomaly_flags_page_idx ON anomaly_flags (interval_start DESC, meter_id) INCLUDE ({_PAGE_COLUMNS});
CREATE INDEX anomaly_flags_meter_page_idx ON anomaly_flags (meter_id, interval_start) INCLUDE ({_PAGE_COLUMNS});
DROP INDEX IF EXISTS anomaly_flags_start_idx;
DROP INDEX IF EXISTS anomaly_flags_meter_start_idx;
"""

DOWNGRADE = """
CREATE INDEX IF NOT EXISTS anomaly_flags_start_idx ON anomaly_flags (interval_start);
CREATE INDEX IF NOT EXISTS anomaly_flags_meter_start_idx ON anomaly_flags (meter_id, interval_start);
DROP INDEX IF EXISTS anomaly_flags_page_idx;
DROP INDEX IF EXISTS anomaly_flags_meter_page_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
