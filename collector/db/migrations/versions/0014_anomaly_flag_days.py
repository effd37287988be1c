"""The anomaly map's ``total`` from flag counts per region and UTC day, exact and cheap.

Revision ID: 0014_anomaly_flag_days
Revises: 0013_anomaly_page_indexes

``GET /anomalies`` counted every flag of its range for ``total`` (up to 10,000, then "at least"):
about 2.5 ms of PostgreSQL per page for a region over a year (issue #19). ``anomaly_flag_days``
holds how many flags each region has per UTC day, and the flags of every region and of meters in
none under region ``''``. A page's total is then the whole days of its range from here plus the
flags of its two partial edge days, counted from ``anomaly_flags`` (collector/db/queries.py): a
region over a year reads about 365 rows and two days of flags instead of 13,700 flags.

- Statement triggers on ``anomaly_flags`` (insert, update, delete, truncate: the ingest writer,
  ``collector rebuild``, any other writer of the parent table) append signed counts per region
  and day in the writer's own transaction, so a count is never behind the flags a query sees.
  The region is the meter's at that moment (its site's, else its gateway's site's): the ingest
  writer registers a batch's meters before it stores the batch's flags.
- A registry change that moves a meter, gateway or site marks both regions in
  ``region_rollups_stale`` (migration 0005), and so does a meter registered after flags of its
  id were stored (a trigger here). A stale region's total is counted from the flags, as
  before, until ``gridsight_refresh_region_rollups()`` (hourly, ``collector maintain``)
  recomputes its region rollups and, now, its flag counts. Region ``''`` never goes stale.
- Each writing statement adds rows; the same refresh folds them into one row per region and
  day (in one statement, so a reader sees the rows before or after, never half) and removes
  days before the oldest stored flag (retention drops whole partitions, which fires no trigger;
  ``gridsight_maintain_partitions`` drops them and refreshes in one transaction).
- The refresh of a stale region takes ``anomaly_flag_days`` and ``region_rollups`` in EXCLUSIVE
  mode (in the order the ingest writer takes them): a batch whose meter moved while it was in
  flight commits first, and its rows are recounted from the region as it is now.

Writes straight into one partition of ``anomaly_flags`` (bypassing the parent) fire none of these
triggers; nothing in gridsight does that.
"""

from alembic import op

revision = "0014_anomaly_flag_days"
down_revision = "0013_anomaly_page_indexes"
branch_labels = None
depends_on = None

# per region ('' = every flag) and UTC day, the flags of a transition table {rows}, signed {sign}
_COUNTS = """
SELECT CASE WHEN GROUPING(x.region_id) = 1 THEN '' ELSE x.region_id END, x.day, {sign}count(*)::integer
FROM (SELECT s.region_id, (f.interval_start AT TIME ZONE 'UTC')::date AS day
      FROM {rows} f
      LEFT JOIN meters m ON m.id = f.meter_id
      LEFT JOIN gateways g ON g.id = m.gateway_id
      LEFT JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id)) x
GROUP BY GROUPING SETS ((x.region_id, x.day), (x.day))
HAVING GROUPING(x.region_id) = 1 OR x.region_id IS NOT NULL
"""

# The refresh of 0005, with a stale region's flag counts recomputed under the same lock, then the
# additions folded and days before the oldest flag removed.
_REFRESH = r"""
CREATE OR REPLACE FUNCTION gridsight_refresh_region_rollups() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r text;
    gen bigint;
BEGIN
    FOR r, gen IN SELECT region_id, generation FROM region_rollups_stale ORDER BY region_id LOOP
        {lock}
        DELETE FROM region_rollups WHERE region_id = r;
        INSERT INTO region_rollups (region_id, bucket_s, bucket, kwh, intervals, readings, power_w_sum, power_w_n,
                                    power_w_max, anomalous_intervals, meters)
        SELECT r, 3600, h.bucket, sum(h.kwh), sum(h.intervals), sum(h.readings), sum(h.power_w_sum),
               sum(h.power_w_n), max(h.power_w_max), sum(h.anomalous_intervals), count(*)
        FROM meters m JOIN readings_hourly h ON h.meter_id = m.id
        WHERE gridsight_region_of(m.site_id, m.gateway_id) = r GROUP BY h.bucket;
        INSERT INTO region_rollups (region_id, bucket_s, bucket, kwh, intervals, readings, power_w_sum, power_w_n,
                                    power_w_max, anomalous_intervals, meters)
        SELECT r, 86400, d.bucket, sum(d.kwh), sum(d.intervals), sum(d.readings), sum(d.power_w_sum),
               sum(d.power_w_n), max(d.power_w_max), sum(d.anomalous_intervals), count(*)
        FROM meters m JOIN readings_daily d ON d.meter_id = m.id
        WHERE gridsight_region_of(m.site_id, m.gateway_id) = r GROUP BY d.bucket;
        INSERT INTO region_rollups (region_id, bucket_s, bucket, kwh, intervals, readings, power_w_sum, power_w_n,
                                    power_w_max, anomalous_intervals, meters)
        SELECT r, 900, date_bin('15 minutes', i.interval_start, '2000-01-03T00:00:00Z'), sum(i.kwh), count(*),
               sum(i.readings), coalesce(sum(i.power_w_mean), 0), count(i.power_w_mean), max(i.power_w_max),
               count(*) FILTER (WHERE i.anomalous), count(DISTINCT i.meter_id)
        FROM interval_summaries i
        WHERE i.meter_id IN (SELECT m.id FROM meters m WHERE gridsight_region_of(m.site_id, m.gateway_id) = r)
        GROUP BY 3;
        {recount}
        DELETE FROM region_rollups_stale WHERE region_id = r AND generation = gen;
        RETURN NEXT r;
    END LOOP;
    {fold}
END $$;
"""

_RECOUNT = """
        WITH gone AS (DELETE FROM anomaly_flag_days WHERE region_id = r)
        INSERT INTO anomaly_flag_days (region_id, day, flags)
        SELECT r, (f.interval_start AT TIME ZONE 'UTC')::date, count(*)::integer
        FROM anomaly_flags f
        WHERE f.meter_id IN (SELECT m.id FROM meters m WHERE gridsight_region_of(m.site_id, m.gateway_id) = r)
        GROUP BY 2;"""

_FOLD = """
    -- one row per region and day (the rows read and removed, and their sums, in one snapshot)
    WITH gone AS (
        DELETE FROM anomaly_flag_days a
        WHERE (a.region_id, a.day) IN (SELECT region_id, day FROM anomaly_flag_days
                                       GROUP BY 1, 2 HAVING count(*) > 1 OR sum(flags) = 0)
        RETURNING a.region_id, a.day, a.flags)
    INSERT INTO anomaly_flag_days (region_id, day, flags)
    SELECT region_id, day, sum(flags) FROM gone GROUP BY 1, 2 HAVING sum(flags) <> 0;
    -- retention dropped whole partitions of flags (no trigger fires for that)
    DELETE FROM anomaly_flag_days
    WHERE day < coalesce((SELECT min(interval_start) FROM anomaly_flags) AT TIME ZONE 'UTC', 'infinity')::date;"""

_LOCK_0005 = "LOCK TABLE region_rollups IN EXCLUSIVE MODE;"
# in the order the ingest writer takes them (flags, then region rollups), so neither waits on the other
_LOCK = "LOCK TABLE anomaly_flag_days, region_rollups IN EXCLUSIVE MODE;"

UPGRADE = f"""
CREATE TABLE anomaly_flag_days (
    region_id  text NOT NULL,
    day        date NOT NULL,
    flags      integer NOT NULL
);
CREATE INDEX anomaly_flag_days_idx ON anomaly_flag_days (region_id, day) INCLUDE (flags);
COMMENT ON TABLE anomaly_flag_days IS
    'Flags per region (the meter''s when stored; '''' = every flag) and UTC day, as signed additions per '
    'statement (triggers on anomaly_flags), folded to one row per region and day by '
    'gridsight_refresh_region_rollups(). A region in region_rollups_stale is not exact here.';

CREATE FUNCTION gridsight_count_flag_days() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM anomaly_flag_days;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO anomaly_flag_days (region_id, day, flags) {_COUNTS.format(rows="new_rows", sign="")};
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO anomaly_flag_days (region_id, day, flags) {_COUNTS.format(rows="old_rows", sign="-")};
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER anomaly_flags_days_ins AFTER INSERT ON anomaly_flags
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_count_flag_days();
CREATE TRIGGER anomaly_flags_days_upd AFTER UPDATE ON anomaly_flags
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_count_flag_days();
CREATE TRIGGER anomaly_flags_days_del AFTER DELETE ON anomaly_flags
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_count_flag_days();
CREATE TRIGGER anomaly_flags_days_trunc AFTER TRUNCATE ON anomaly_flags
FOR EACH STATEMENT EXECUTE FUNCTION gridsight_count_flag_days();

-- a meter registered after flags of its id were stored: those were counted in no region
CREATE FUNCTION gridsight_meter_flags_placed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM anomaly_flags WHERE meter_id = NEW.id) THEN
        PERFORM gridsight_mark_region_stale(gridsight_region_of(NEW.site_id, NEW.gateway_id));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER meters_flags_placed AFTER INSERT ON meters
FOR EACH ROW EXECUTE FUNCTION gridsight_meter_flags_placed();

{_REFRESH.format(lock=_LOCK, recount=_RECOUNT, fold=_FOLD)}

-- what is already stored
SET LOCAL work_mem = '256MB';
INSERT INTO anomaly_flag_days (region_id, day, flags) {_COUNTS.format(rows="anomaly_flags", sign="")};
"""

DOWNGRADE = f"""
{_REFRESH.format(lock=_LOCK_0005, recount="", fold="")}
DROP TRIGGER IF EXISTS meters_flags_placed ON meters;
DROP FUNCTION IF EXISTS gridsight_meter_flags_placed();
DROP TRIGGER IF EXISTS anomaly_flags_days_ins ON anomaly_flags;
DROP TRIGGER IF EXISTS anomaly_flags_days_upd ON anomaly_flags;
DROP TRIGGER IF EXISTS anomaly_flags_days_del ON anomaly_flags;
DROP TRIGGER IF EXISTS anomaly_flags_days_trunc ON anomaly_flags;
DROP FUNCTION IF EXISTS gridsight_count_flag_days();
DROP TABLE IF EXISTS anomaly_flag_days;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
