"""Core schema: dimensions, time-partitioned facts, dead letters, dedupe log, archive outbox, rollups.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-25

Facts (readings, interval_summaries, anomaly_flags) are range-partitioned by month on their
time column. Partitions are created ahead by ``gridsight_maintain_partitions`` (run by
``gridsight collector migrate`` and hourly by every ingest worker) and on demand by
``gridsight_ensure_partitions`` for the months a batch touches, so a late or back-filled
message never fails for want of a partition. Retention drops whole partitions.
See collector/db/SCHEMA.md for every column.
"""

from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

FACT_TABLES = ("readings", "interval_summaries", "anomaly_flags")

UPGRADE = r"""
-- ---------------------------------------------------------------- dimensions
CREATE TABLE regions (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE feeders (
    id          text PRIMARY KEY,
    region_id   text NOT NULL REFERENCES regions(id),
    name        text NOT NULL,
    capacity_kw double precision,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feeders_region_idx ON feeders (region_id);

CREATE TABLE sites (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    region_id   text REFERENCES regions(id),
    feeder_id   text REFERENCES feeders(id),
    lat         double precision CHECK (lat BETWEEN -90 AND 90),
    lon         double precision CHECK (lon BETWEEN -180 AND 180),
    timezone    text NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_region_idx ON sites (region_id);
CREATE INDEX sites_feeder_idx ON sites (feeder_id);

CREATE TABLE gateways (
    id                text PRIMARY KEY,
    site_id           text REFERENCES sites(id),
    name              text,
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    auto_registered   boolean NOT NULL DEFAULT false,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz,
    last_seq          bigint,
    model_version     text,
    online            boolean,
    status_at         timestamptz,
    uptime_s          double precision,
    queue_depth       bigint,
    clock_synced      boolean,
    clock_offset_s    double precision,
    agent_version     text,
    skew_s            double precision
);
CREATE INDEX gateways_site_idx ON gateways (site_id);

CREATE TABLE meters (
    id                  text PRIMARY KEY,
    gateway_id          text NOT NULL REFERENCES gateways(id),
    site_id             text REFERENCES sites(id),
    name                text,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz,
    last_interval_start timestamptz,
    last_reading_ts     timestamptz
);
CREATE INDEX meters_gateway_idx ON meters (gateway_id);
CREATE INDEX meters_site_idx ON meters (site_id);

CREATE TABLE model_versions (
    version        text PRIMARY KEY,
    name           text,
    sha256         text,
    threshold      double precision,
    interval_s     integer,
    feature_names  jsonb,
    object_key     text,
    published_at   timestamptz,
    first_seen_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- facts (partitioned by month)
CREATE TABLE readings (
    meter_id      text NOT NULL,
    ts            timestamptz NOT NULL,
    energy_kwh    double precision NOT NULL,
    power_w       double precision,
    voltage_v     double precision,
    current_a     double precision,
    power_factor  double precision,
    gateway_id    text NOT NULL,
    seq           bigint NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX readings_meter_ts_idx ON readings (meter_id, ts);

CREATE TABLE interval_summaries (
    meter_id        text NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_s      integer NOT NULL,
    kwh             double precision NOT NULL,
    readings        integer NOT NULL,
    power_w_mean    double precision,
    power_w_max     double precision,
    score           double precision,
    anomalous       boolean,
    model_version   text,
    gateway_id      text NOT NULL,
    seq             bigint NOT NULL,
    received_at     timestamptz NOT NULL
) PARTITION BY RANGE (interval_start);
CREATE INDEX interval_summaries_meter_start_idx ON interval_summaries (meter_id, interval_start);

CREATE TABLE anomaly_flags (
    meter_id        text NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_s      integer NOT NULL,
    score           double precision NOT NULL,
    threshold       double precision NOT NULL,
    kwh             double precision NOT NULL,
    features        jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason          text,
    model_version   text,
    gateway_id      text NOT NULL,
    seq             bigint NOT NULL,
    sent_at         timestamptz NOT NULL,
    received_at     timestamptz NOT NULL
) PARTITION BY RANGE (interval_start);
CREATE INDEX anomaly_flags_start_idx ON anomaly_flags (interval_start);
CREATE INDEX anomaly_flags_meter_start_idx ON anomaly_flags (meter_id, interval_start);

-- ---------------------------------------------------------------- rollups (from interval_summaries)
CREATE TABLE readings_hourly (
    meter_id             text NOT NULL,
    bucket               timestamptz NOT NULL,
    kwh                  double precision NOT NULL DEFAULT 0,
    intervals            integer NOT NULL DEFAULT 0,
    readings             integer NOT NULL DEFAULT 0,
    power_w_sum          double precision NOT NULL DEFAULT 0,
    power_w_n            integer NOT NULL DEFAULT 0,
    power_w_max          double precision,
    anomalous_intervals  integer NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- covering: chart queries read a meter's buckets from the index alone
    PRIMARY KEY (meter_id, bucket) INCLUDE (kwh, intervals, readings, power_w_sum, power_w_n, power_w_max,
                                             anomalous_intervals)
);
CREATE INDEX readings_hourly_bucket_idx ON readings_hourly (bucket);

CREATE TABLE readings_daily (LIKE readings_hourly INCLUDING ALL);

-- ---------------------------------------------------------------- ingestion bookkeeping
CREATE TABLE ingest_log (
    gateway_id   text NOT NULL,
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    sent_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    rows         integer NOT NULL,
    replica      text,
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX ingest_log_received_idx ON ingest_log (received_at);

CREATE TABLE dead_letters (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    topic          text NOT NULL,
    gateway_id     text,
    reason         text NOT NULL,
    field          text,
    payload        bytea NOT NULL,
    payload_bytes  integer NOT NULL,
    replica        text
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason);

CREATE TABLE archive_outbox (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    gateway_id   text NOT NULL,
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    topic        text NOT NULL,
    payload      bytea NOT NULL
);

CREATE TABLE archive_objects (
    key               text PRIMARY KEY,
    sha256            text NOT NULL,
    bytes             bigint NOT NULL,
    messages          integer NOT NULL,
    gateway_id        text NOT NULL,
    dt                date NOT NULL,
    first_received_at timestamptz NOT NULL,
    last_received_at  timestamptz NOT NULL,
    uploaded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archive_objects_dt_idx ON archive_objects (dt);

-- ---------------------------------------------------------------- partition maintenance
-- One monthly partition of `parent` covering the month that contains `at`; no-op if present.
CREATE FUNCTION gridsight_ensure_partition(parent text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    child text := parent || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(child) IS NULL THEN
        -- replicas may race to create the same month: serialise, then re-check
        PERFORM pg_advisory_xact_lock(hashtext('gridsight_partitions'));
        IF to_regclass(child) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           child, parent, lo, hi);
        END IF;
    END IF;
    RETURN child;
END $$;

-- Every monthly partition of `parent` between `from_ts` and `to_ts` (inclusive); returns how many exist.
CREATE FUNCTION gridsight_ensure_partitions(parent text, from_ts timestamptz, to_ts timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    n integer := 0;
BEGIN
    WHILE m <= to_ts LOOP
        PERFORM gridsight_ensure_partition(parent, m);
        n := n + 1;
        m := ((m AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    END LOOP;
    RETURN n;
END $$;

-- Drop partitions of `parent` whose whole range ends on or before `before`; returns their names.
CREATE FUNCTION gridsight_drop_partitions_before(parent text, before timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    upper_bound timestamptz;
BEGIN
    FOR r IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass
    LOOP
        upper_bound := substring(r.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= before THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            RETURN NEXT r.relname;
        END IF;
    END LOOP;
END $$;

-- The periodic maintenance step: partitions for this month and `months_ahead` more for every
-- fact table, retention (0 = keep forever), and pruning of the dedupe log and dead letters.
CREATE FUNCTION gridsight_maintain_partitions(months_ahead integer, retention_days integer,
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

SELECT count(*) FROM gridsight_maintain_partitions(2, 0, 0, 0);
"""

DOWNGRADE = r"""
DROP FUNCTION IF EXISTS gridsight_maintain_partitions(integer, integer, integer, integer);
DROP FUNCTION IF EXISTS gridsight_drop_partitions_before(text, timestamptz);
DROP FUNCTION IF EXISTS gridsight_ensure_partitions(text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS gridsight_ensure_partition(text, timestamptz);
DROP TABLE IF EXISTS archive_objects, archive_outbox, dead_letters, ingest_log,
    readings_daily, readings_hourly, anomaly_flags, interval_summaries, readings,
    model_versions, meters, gateways, sites, feeders, regions CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
