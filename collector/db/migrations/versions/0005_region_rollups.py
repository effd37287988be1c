"""Region rollups: a region's consumption per quarter hour, hour and day, for regional charts.

Revision ID: 0005_region_rollups
Revises: 0004_tableau

A regional chart summed the per-meter rollups of every meter in the region at query time:
a month of a 100-meter region is 72,000 hourly rows per request. ``region_rollups`` holds
the sums per region, so the same chart reads 720 rows. It is maintained in the ingest
transaction like the per-meter rollups (collector/db/writer.py), from the region each meter
is in when its summary is stored.

Regions are what the registry says *now* (a meter's site, or its gateway's site), so a
registry change that moves a meter, gateway or site to another region makes both regions'
rows wrong. Triggers mark such regions in ``region_rollups_stale``; queries read a stale
region from the per-meter rollups (exact, slower) until ``gridsight_refresh_region_rollups()``
(run by ``gridsight_maintain_partitions``, i.e. ``collector maintain`` and hourly by every
ingest worker) recomputes it from the per-meter rollups and interval summaries.

``meters`` counts the distinct meters with data in the row's period. The ingest transaction
knows whether a meter is new to a period from the per-meter rollups it upserts: an hour or day
is new when the row's interval count equals what the batch added, and a quarter hour is new
when its lane of ``readings_hourly.quarters`` (four 16-bit counters, one per quarter of the
hour) equals what the batch added. Both are read back from the upsert under its row lock, so
two replicas storing the same meter-hour cannot both count it.
"""

from alembic import op

revision = "0005_region_rollups"
down_revision = "0004_tableau"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- interval summaries per quarter of the hour, as four 16-bit counters (quarter q at bit 16*q)
ALTER TABLE readings_hourly ADD COLUMN quarters bigint NOT NULL DEFAULT 0;
SET LOCAL work_mem = '256MB';   -- the backfill groups every stored summary by meter and hour
UPDATE readings_hourly h SET quarters = q.packed
FROM (SELECT meter_id, date_trunc('hour', interval_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket,
             sum(1::bigint << (16 * (extract(minute FROM interval_start AT TIME ZONE 'UTC')::int / 15))) AS packed
      FROM interval_summaries GROUP BY 1, 2) AS q
WHERE h.meter_id = q.meter_id AND h.bucket = q.bucket;

CREATE TABLE region_rollups (
    region_id            text NOT NULL,
    bucket_s             integer NOT NULL CHECK (bucket_s IN (900, 3600, 86400)),
    bucket               timestamptz NOT NULL,
    kwh                  double precision NOT NULL DEFAULT 0,
    intervals            integer NOT NULL DEFAULT 0,
    readings             integer NOT NULL DEFAULT 0,
    power_w_sum          double precision NOT NULL DEFAULT 0,
    power_w_n            integer NOT NULL DEFAULT 0,
    power_w_max          double precision,
    anomalous_intervals  integer NOT NULL DEFAULT 0,
    meters               integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- covering: a regional chart is one index-only range scan
    PRIMARY KEY (region_id, bucket_s, bucket) INCLUDE (kwh, intervals, readings, power_w_sum, power_w_n,
                                                       power_w_max, anomalous_intervals, meters)
);

CREATE TABLE region_rollups_stale (
    region_id   text PRIMARY KEY,
    generation  bigint NOT NULL DEFAULT 1,     -- bumped by every change, so a refresh clears only what it saw
    since       timestamptz NOT NULL DEFAULT now()
);

-- The region a meter is in: its own site's, else its gateway's site's.
CREATE FUNCTION gridsight_region_of(meter_site text, meter_gateway text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT s.region_id FROM sites s
    WHERE s.id = COALESCE(meter_site, (SELECT g.site_id FROM gateways g WHERE g.id = meter_gateway))
$$;

CREATE FUNCTION gridsight_mark_region_stale(region text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO region_rollups_stale (region_id) SELECT region WHERE region IS NOT NULL
    ON CONFLICT (region_id) DO UPDATE SET generation = region_rollups_stale.generation + 1
$$;

CREATE FUNCTION gridsight_meters_region_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    before text;
    after text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        before := gridsight_region_of(OLD.site_id, OLD.gateway_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        after := gridsight_region_of(NEW.site_id, NEW.gateway_id);
    END IF;
    IF before IS DISTINCT FROM after THEN
        -- a new meter has no rollups yet unless it was deleted and comes back with its history
        IF TG_OP <> 'INSERT' OR EXISTS (SELECT 1 FROM readings_daily WHERE meter_id = NEW.id) THEN
            PERFORM gridsight_mark_region_stale(before);
            PERFORM gridsight_mark_region_stale(after);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER meters_region_changed AFTER INSERT OR DELETE ON meters
FOR EACH ROW EXECUTE FUNCTION gridsight_meters_region_changed();
-- ingest sets gateway_id on every batch: only an actual change is worth a look
CREATE TRIGGER meters_region_moved AFTER UPDATE OF site_id, gateway_id ON meters
FOR EACH ROW WHEN (OLD.site_id IS DISTINCT FROM NEW.site_id OR OLD.gateway_id IS DISTINCT FROM NEW.gateway_id)
EXECUTE FUNCTION gridsight_meters_region_changed();

CREATE FUNCTION gridsight_gateways_region_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- meters without a site of their own are where their gateway is
    IF EXISTS (SELECT 1 FROM meters WHERE gateway_id = NEW.id AND site_id IS NULL) THEN
        PERFORM gridsight_mark_region_stale((SELECT region_id FROM sites WHERE id = OLD.site_id));
        PERFORM gridsight_mark_region_stale((SELECT region_id FROM sites WHERE id = NEW.site_id));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER gateways_region_moved AFTER UPDATE OF site_id ON gateways
FOR EACH ROW WHEN (OLD.site_id IS DISTINCT FROM NEW.site_id)
EXECUTE FUNCTION gridsight_gateways_region_changed();

CREATE FUNCTION gridsight_sites_region_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM gridsight_mark_region_stale(OLD.region_id);
    PERFORM gridsight_mark_region_stale(NEW.region_id);
    RETURN NULL;
END $$;

CREATE TRIGGER sites_region_moved AFTER UPDATE OF region_id ON sites
FOR EACH ROW WHEN (OLD.region_id IS DISTINCT FROM NEW.region_id)
EXECUTE FUNCTION gridsight_sites_region_changed();

-- Recompute every stale region from the per-meter rollups and the interval summaries.
-- The EXCLUSIVE lock waits for ingest transactions that are adding to region_rollups and holds
-- new ones back until this commits, so no batch is counted twice or lost between the recompute's
-- snapshot and its rows.
CREATE FUNCTION gridsight_refresh_region_rollups() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r text;
    gen bigint;
BEGIN
    FOR r, gen IN SELECT region_id, generation FROM region_rollups_stale ORDER BY region_id LOOP
        LOCK TABLE region_rollups IN EXCLUSIVE MODE;
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
        DELETE FROM region_rollups_stale WHERE region_id = r AND generation = gen;
        RETURN NEXT r;
    END LOOP;
END $$;

-- The periodic step of 0001, plus retention for region rollups and the refresh of stale regions.
CREATE OR REPLACE FUNCTION gridsight_maintain_partitions(months_ahead integer, retention_days integer,
                                                         dedupe_days integer DEFAULT 90,
                                                         dead_letter_days integer DEFAULT 30)
RETURNS TABLE (action text, target text)
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    dropped text;
BEGIN
    FOREACH t IN ARRAY ARRAY['readings', 'interval_summaries', 'anomaly_flags'] LOOP
        PERFORM gridsight_ensure_partitions(t, now(),
            ((now() AT TIME ZONE 'UTC') + make_interval(months => months_ahead)) AT TIME ZONE 'UTC');
        IF retention_days > 0 THEN
            FOR dropped IN SELECT gridsight_drop_partitions_before(t, now() - make_interval(days => retention_days)) LOOP
                action := 'dropped'; target := dropped; RETURN NEXT;
            END LOOP;
        END IF;
    END LOOP;
    IF retention_days > 0 THEN  -- once, not once per partitioned table as in 0001
        DELETE FROM readings_hourly WHERE bucket < now() - make_interval(days => retention_days);
        DELETE FROM readings_daily WHERE bucket < now() - make_interval(days => retention_days);
        DELETE FROM region_rollups WHERE bucket < now() - make_interval(days => retention_days);
    END IF;
    IF dedupe_days > 0 THEN
        DELETE FROM ingest_log WHERE received_at < now() - make_interval(days => dedupe_days);
    END IF;
    IF dead_letter_days > 0 THEN
        DELETE FROM dead_letters WHERE received_at < now() - make_interval(days => dead_letter_days);
    END IF;
    FOR dropped IN SELECT gridsight_refresh_region_rollups() LOOP
        action := 'refreshed region'; target := dropped; RETURN NEXT;
    END LOOP;
END $$;

-- fill from what is already stored
INSERT INTO region_rollups_stale (region_id) SELECT id FROM regions;
SELECT count(*) FROM gridsight_refresh_region_rollups();
"""

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION gridsight_maintain_partitions(months_ahead integer, retention_days integer,
                                                         dedupe_days integer DEFAULT 90,
                                                         dead_letter_days integer DEFAULT 30)
RETURNS TABLE (action text, target text)
LANGUAGE plpgsql AS $$
DECLARE
    t text;
    dropped text;
BEGIN
    FOREACH t IN ARRAY ARRAY['readings', 'interval_summaries', 'anomaly_flags'] LOOP
        PERFORM gridsight_ensure_partitions(t, now(),
            ((now() AT TIME ZONE 'UTC') + make_interval(months => months_ahead)) AT TIME ZONE 'UTC');
        IF retention_days > 0 THEN
            FOR dropped IN SELECT gridsight_drop_partitions_before(t, now() - make_interval(days => retention_days)) LOOP
                action := 'dropped'; target := dropped; RETURN NEXT;
            END LOOP;
            DELETE FROM readings_hourly WHERE bucket < now() - make_interval(days => retention_days);
            DELETE FROM readings_daily WHERE bucket < now() - make_interval(days => retention_days);
        END IF;
    END LOOP;
    IF dedupe_days > 0 THEN
        DELETE FROM ingest_log WHERE received_at < now() - make_interval(days => dedupe_days);
    END IF;
    IF dead_letter_days > 0 THEN
        DELETE FROM dead_letters WHERE received_at < now() - make_interval(days => dead_letter_days);
    END IF;
END $$;
DROP TRIGGER IF EXISTS meters_region_changed ON meters;
DROP TRIGGER IF EXISTS meters_region_moved ON meters;
DROP TRIGGER IF EXISTS gateways_region_moved ON gateways;
DROP TRIGGER IF EXISTS sites_region_moved ON sites;
DROP FUNCTION IF EXISTS gridsight_refresh_region_rollups();
DROP FUNCTION IF EXISTS gridsight_sites_region_changed();
DROP FUNCTION IF EXISTS gridsight_gateways_region_changed();
DROP FUNCTION IF EXISTS gridsight_meters_region_changed();
DROP FUNCTION IF EXISTS gridsight_mark_region_stale(text);
DROP FUNCTION IF EXISTS gridsight_region_of(text, text);
DROP TABLE IF EXISTS region_rollups_stale, region_rollups;
ALTER TABLE readings_hourly DROP COLUMN IF EXISTS quarters;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
