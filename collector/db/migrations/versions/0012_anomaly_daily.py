"""Tableau at full size: the anomaly map reads a daily rollup, kept fresh day by day.

Revision ID: 0012_anomaly_daily
Revises: 0011_regional_comparison_rollup

bench/tableau_views.py at 1,000 meters x 1 year measured the anomaly map's worksheets at
4.9 s / 2.9 s p50: both aggregated ``tableau.anomaly_map``, one row per meter and scored
15-minute interval (30 days = 2.9 million rows), on every query.

- ``anomaly_daily`` holds, per meter, UTC day and anomaly kind, what those worksheets need from
  ``tableau.anomaly_map``: its rows (``intervals``), lowest score and energy. Kinds, the newest
  re-sent flag and flags without a summary follow ``anomaly_map`` exactly. It is keyed by meter,
  so a meter, site or region moved in the registry needs no recompute: ``tableau.anomaly_daily``
  joins ``tableau.meter_places`` when it is read.
- Statement triggers on ``interval_summaries`` and ``anomaly_flags`` (insert, update, delete: the
  ingest writer, ``collector rebuild`` and any other writer) append the UTC days they touched to
  ``anomaly_daily_changes``, in the writer's own transaction. ``tableau.anomaly_daily`` reads
  the rollup for unchanged days and computes a changed day from the facts when it is read, so
  the view is never stale; it costs what one or two days of facts cost to aggregate.
- ``gridsight_refresh_anomaly_daily(before)`` recomputes the changed days before ``before``
  (default: today, UTC; today keeps changing) and compacts today's change rows to one. It takes
  no lock that ingest waits for: a change row is only removed by a refresh whose recompute
  already sees that row's transaction (the rows are deleted first, the recompute runs on a
  later snapshot), and a writer still in flight appends its own row. Two refreshes serialise on
  an advisory lock. ``gridsight_refresh_tableau_rollups()`` (collector maintenance, hourly)
  calls it.
- Retention drops whole partitions (no trigger fires): the refresh removes rollup days older
  than the oldest stored summary or flag.
- ``interval_summaries`` gets an index on ``interval_start`` so one day of every meter is a
  range scan, not a scan of the month's partition.
"""

from alembic import op

revision = "0012_anomaly_daily"
down_revision = "0011_regional_comparison_rollup"
branch_labels = None
depends_on = None

# the kind of a flag, exactly as tableau.flag_kinds (0004) derives it
_KIND = "COALESCE(NULLIF(btrim(substring(reason FROM '\\(([^()]+)\\)\\s*$')), ''), 'unexplained')"

# anomaly_map's rows in [lo, hi) grouped per meter, day and kind ({day}: the row's UTC day)
_ROWS = """
WITH f AS (
    SELECT DISTINCT ON (meter_id, interval_start) meter_id, interval_start, score, kwh, {kind} AS kind
    FROM anomaly_flags
    WHERE interval_start >= {lo} AND interval_start < {hi}
    ORDER BY meter_id, interval_start, received_at DESC)
SELECT x.meter_id, {day} AS day, x.kind AS anomaly_kind,
       count(*)::integer AS intervals, min(x.score) AS min_score, sum(x.kwh) AS kwh
FROM (SELECT s.meter_id, s.interval_start, s.kwh, s.score,
             CASE WHEN f.meter_id IS NOT NULL THEN f.kind
                  WHEN s.anomalous THEN 'unexplained' ELSE 'none' END AS kind
      FROM interval_summaries s
      LEFT JOIN f ON f.meter_id = s.meter_id AND f.interval_start = s.interval_start
      WHERE s.interval_start >= {lo} AND s.interval_start < {hi} AND s.score IS NOT NULL
      UNION ALL
      SELECT f.meter_id, f.interval_start, f.kwh, f.score, f.kind FROM f
      WHERE NOT EXISTS (SELECT FROM interval_summaries s WHERE s.meter_id = f.meter_id
                        AND s.interval_start = f.interval_start AND s.score IS NOT NULL)) x
GROUP BY {group}
"""

# one changed day d.day, as a LATERAL subquery: index range scans of that day only
_ONE_DAY = _ROWS.format(kind=_KIND, lo="(d.day::timestamp AT TIME ZONE 'UTC')",
                        hi="((d.day + 1)::timestamp AT TIME ZONE 'UTC')", day="d.day",
                        group="x.meter_id, x.kind")
# many changed days: one pass over [lo, hi), kept to the changed days by the caller
_DAY_OF = "(x.interval_start AT TIME ZONE 'UTC')::date"
_RANGE = _ROWS.format(kind=_KIND, lo="lo", hi="hi", day=_DAY_OF, group=f"x.meter_id, {_DAY_OF}, x.kind")

_REFRESH_ALL = """
CREATE OR REPLACE FUNCTION gridsight_refresh_tableau_rollups() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL work_mem = '256MB';
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_hourly;
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_consumption_pattern;
    REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_comparison;
    {extra}
END $$;
"""

UPGRADE = f"""
CREATE INDEX IF NOT EXISTS interval_summaries_start_idx ON interval_summaries (interval_start);

CREATE TABLE anomaly_daily (
    meter_id      text NOT NULL,
    day           date NOT NULL,
    anomaly_kind  text NOT NULL,
    intervals     integer NOT NULL,
    min_score     double precision,
    kwh           double precision,
    PRIMARY KEY (day, meter_id, anomaly_kind)
);
COMMENT ON TABLE anomaly_daily IS
    'tableau.anomaly_map per meter, UTC day and kind; days in anomaly_daily_changes are stale here '
    '(tableau.anomaly_daily computes them from the facts). Refreshed by gridsight_refresh_anomaly_daily().';

CREATE TABLE anomaly_daily_changes (
    day        date NOT NULL,
    marked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX anomaly_daily_changes_day ON anomaly_daily_changes (day);
COMMENT ON TABLE anomaly_daily_changes IS
    'UTC days whose interval summaries or anomaly flags changed since anomaly_daily was computed '
    '(appended by triggers in the writer''s transaction; one row per statement and day).';

CREATE FUNCTION gridsight_mark_anomaly_days() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO anomaly_daily_changes (day)
        SELECT DISTINCT (interval_start AT TIME ZONE 'UTC')::date FROM new_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO anomaly_daily_changes (day)
        SELECT DISTINCT (interval_start AT TIME ZONE 'UTC')::date FROM old_rows;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER interval_summaries_anomaly_days_ins AFTER INSERT ON interval_summaries
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_mark_anomaly_days();
CREATE TRIGGER interval_summaries_anomaly_days_upd AFTER UPDATE ON interval_summaries
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_mark_anomaly_days();
CREATE TRIGGER interval_summaries_anomaly_days_del AFTER DELETE ON interval_summaries
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_mark_anomaly_days();
CREATE TRIGGER anomaly_flags_anomaly_days_ins AFTER INSERT ON anomaly_flags
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_mark_anomaly_days();
CREATE TRIGGER anomaly_flags_anomaly_days_upd AFTER UPDATE ON anomaly_flags
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_mark_anomaly_days();
CREATE TRIGGER anomaly_flags_anomaly_days_del AFTER DELETE ON anomaly_flags
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION gridsight_mark_anomaly_days();

-- every day already stored is a change: the first refresh computes them all
INSERT INTO anomaly_daily_changes (day)
SELECT DISTINCT (interval_start AT TIME ZONE 'UTC')::date FROM interval_summaries
UNION
SELECT DISTINCT (interval_start AT TIME ZONE 'UTC')::date FROM anomaly_flags;

CREATE FUNCTION gridsight_refresh_anomaly_daily(before_day date DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    days date[];
    later date[];
    lo timestamptz;
    hi timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('gridsight_refresh_anomaly_daily'));
    SET LOCAL work_mem = '256MB';
    -- first the change rows this snapshot sees, then the recompute on a later snapshot, which
    -- sees every transaction whose row was removed here (a writer in flight adds its own)
    WITH gone AS (DELETE FROM anomaly_daily_changes RETURNING day)
    SELECT coalesce(array_agg(DISTINCT day) FILTER (WHERE day < before_day), '{{}}'),
           coalesce(array_agg(DISTINCT day) FILTER (WHERE day >= before_day), '{{}}')
    INTO days, later FROM gone;
    -- today and later keep changing: one change row each, so reading them stays cheap
    INSERT INTO anomaly_daily_changes (day) SELECT unnest(later);
    DELETE FROM anomaly_daily
    WHERE day < (LEAST(coalesce((SELECT min(interval_start) FROM interval_summaries), 'infinity'),
                       coalesce((SELECT min(interval_start) FROM anomaly_flags), 'infinity'))
                 AT TIME ZONE 'UTC')::date;
    IF cardinality(days) = 0 THEN
        RETURN 0;
    END IF;
    DELETE FROM anomaly_daily WHERE day = ANY (days);
    IF cardinality(days) <= 7 THEN
        INSERT INTO anomaly_daily (meter_id, day, anomaly_kind, intervals, min_score, kwh)
        SELECT r.* FROM unnest(days) AS d(day) CROSS JOIN LATERAL ({_ONE_DAY}) r;
    ELSE
        lo := days[1]::timestamp AT TIME ZONE 'UTC';
        hi := (days[cardinality(days)] + 1)::timestamp AT TIME ZONE 'UTC';
        INSERT INTO anomaly_daily (meter_id, day, anomaly_kind, intervals, min_score, kwh)
        SELECT r.* FROM ({_RANGE}) r WHERE r.day = ANY (days);
    END IF;
    RETURN cardinality(days);
END $$;
COMMENT ON FUNCTION gridsight_refresh_anomaly_daily(date) IS
    'Recompute anomaly_daily for the changed UTC days before the given day (default today); returns how many.';

CREATE VIEW tableau.anomaly_daily AS
SELECT r.meter_id, p.site_id, p.latitude, p.longitude, p.region, p.feeder, p.area_type, r.day,
       r.anomaly_kind, r.anomaly_kind <> 'none' AS is_anomaly, r.intervals,
       CASE WHEN r.anomaly_kind <> 'none' THEN r.intervals ELSE 0 END AS flagged_intervals,
       r.min_score, r.kwh
FROM (SELECT a.meter_id, a.day, a.anomaly_kind, a.intervals, a.min_score, a.kwh FROM anomaly_daily a
      WHERE NOT EXISTS (SELECT FROM anomaly_daily_changes c WHERE c.day = a.day)
      UNION ALL
      -- a changed day, from the facts as they are now
      SELECT r.meter_id, r.day, r.anomaly_kind, r.intervals, r.min_score, r.kwh
      FROM (SELECT DISTINCT day FROM anomaly_daily_changes) d CROSS JOIN LATERAL ({_ONE_DAY}) r) r
JOIN tableau.meter_places p ON p.meter_id = r.meter_id;
COMMENT ON VIEW tableau.anomaly_daily IS
    'tableau.anomaly_map per meter, UTC day and anomaly kind (none = unflagged): scored intervals, '
    'flagged intervals, lowest score, energy. Always current: changed days are computed when read.';

{_REFRESH_ALL.format(extra="PERFORM gridsight_refresh_anomaly_daily();")}
"""

DOWNGRADE = f"""
{_REFRESH_ALL.format(extra="")}
DROP VIEW IF EXISTS tableau.anomaly_daily;
DROP FUNCTION IF EXISTS gridsight_refresh_anomaly_daily(date);
DROP TRIGGER IF EXISTS interval_summaries_anomaly_days_ins ON interval_summaries;
DROP TRIGGER IF EXISTS interval_summaries_anomaly_days_upd ON interval_summaries;
DROP TRIGGER IF EXISTS interval_summaries_anomaly_days_del ON interval_summaries;
DROP TRIGGER IF EXISTS anomaly_flags_anomaly_days_ins ON anomaly_flags;
DROP TRIGGER IF EXISTS anomaly_flags_anomaly_days_upd ON anomaly_flags;
DROP TRIGGER IF EXISTS anomaly_flags_anomaly_days_del ON anomaly_flags;
DROP FUNCTION IF EXISTS gridsight_mark_anomaly_days();
DROP TABLE IF EXISTS anomaly_daily_changes;
DROP TABLE IF EXISTS anomaly_daily;
DROP INDEX IF EXISTS interval_summaries_start_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
