"""Schema and settings: partitions ahead, retention, idempotent migrations, the settings' variables."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from collector.db import current_revision, migrate
from collector.settings import asyncpg_dsn, load_collector_settings, mqtt_endpoint, sqlalchemy_url
from gridsight.settings import ConfigError

from collector_kit import scalar, sql


def _partitions(url: str, table: str) -> list[str]:
    return sorted(r[0] for r in sql(url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         f"WHERE i.inhparent = '{table}'::regclass"))


def _month(offset: int) -> str:
    t = time.gmtime()
    y, m = divmod(t.tm_year * 12 + t.tm_mon - 1 + offset, 12)
    return f"{y:04d}_{m + 1:02d}"


def test_migration_creates_partitioned_facts_with_months_ahead_and_is_rerunnable(collector_db):
    head = current_revision(collector_db)
    migrate(collector_db)
    assert current_revision(collector_db) == head
    for table in ("readings", "interval_summaries", "anomaly_flags"):
        assert scalar(collector_db, f"SELECT relkind FROM pg_class WHERE relname = '{table}'") == "p"
        assert {f"{table}_p{_month(k)}" for k in range(3)} <= set(_partitions(collector_db, table))
    for table in ("regions", "feeders", "sites", "gateways", "meters", "model_versions", "dead_letters",
                  "readings_hourly", "readings_daily", "ingest_log", "archive_outbox", "archive_objects"):
        assert scalar(collector_db, f"SELECT to_regclass('{table}') IS NOT NULL")


def test_maintenance_drops_partitions_past_retention_and_forgets_old_dedupe_keys(collector_db):
    sql(collector_db, "SELECT gridsight_ensure_partitions('readings', now() - interval '14 months', now())")
    sql(collector_db, "INSERT INTO ingest_log VALUES ('gw-1', 1, 'raw', now() - interval '100 days', "
                      "now() - interval '100 days', 1, 'r'), ('gw-1', 2, 'raw', now(), now(), 1, 'r')")
    assert f"readings_p{_month(-13)}" in _partitions(collector_db, "readings")

    dropped = sql(collector_db, "SELECT target FROM gridsight_maintain_partitions(3, 365, 90, 30) "
                                "WHERE action = 'dropped'")

    remaining = _partitions(collector_db, "readings")
    assert f"readings_p{_month(-13)}" not in remaining and (f"readings_p{_month(-13)}",) in dropped
    assert f"readings_p{_month(-6)}" in remaining and f"readings_p{_month(3)}" in remaining
    assert sql(collector_db, "SELECT seq FROM ingest_log") == [(2,)]


def test_settings_read_the_deployment_variables_and_name_bad_keys(tmp_path):
    env = {"DATABASE_URL": "postgresql://u:p%40ss@db:5433/grid", "MQTT_URL": "mqtts://broker.example",
           "S3_ENDPOINT_URL": "http://minio:9000", "S3_BUCKET": "raw", "GRIDSIGHT_DATA_DIR": str(tmp_path),
           "GRIDSIGHT_COLLECTOR_REPLICA_ID": "c-2", "GRIDSIGHT_COLLECTOR_RETENTION_DAYS": "730"}
    s = load_collector_settings(env=env)
    assert (s.database_url, s.s3_bucket, s.data_dir, s.replica_id, s.retention_days) == (
        env["DATABASE_URL"], "raw", Path(tmp_path), "c-2", 730)
    assert s.client_id == "gridsight-collector-c-2"
    assert mqtt_endpoint(s.mqtt_url) == ("broker.example", 8883, True)
    assert sqlalchemy_url("postgres://x/y") == "postgresql+psycopg://x/y"
    assert asyncpg_dsn("postgresql+psycopg://x/y") == "postgresql://x/y"

    for key, value in (("BATCH_MAX_MESSAGES", "0"), ("UNKNOWN_GATEWAYS", "sometimes"), ("REPLICA_ID", "a/b"),
                       ("API_PORT", "70000"), ("SHARED_GROUP", "a+b")):
        with pytest.raises(ConfigError) as err:
            load_collector_settings(env={f"GRIDSIGHT_COLLECTOR_{key}": value})
        assert err.value.key == key.lower()
    with pytest.raises(ConfigError) as err:
        load_collector_settings(env={"MQTT_URL": "http://broker"})
    assert err.value.key == "mqtt_url"
    toml = tmp_path / "c.toml"
    toml.write_text('batch_max_mesages = 5\n')
    with pytest.raises(ConfigError) as err:
        load_collector_settings(toml, env={})
    assert err.value.key == "batch_max_mesages"
