"""The ingest worker with real parts: Mosquitto, PostgreSQL, collector processes killed with SIGKILL."""

from __future__ import annotations

import pytest
import os
import signal
import subprocess
import sys
import threading
import time

from gridsight.local_services import EmbeddedPostgres

from collector.db import migrate
from collector_kit import Publisher, flag, message, raw_chunk, scalar, sql, summary, wait_until


def test_gateway_messages_are_stored_acked_and_archived(start_worker, publisher, collector_db, archive_dir):
    worker = start_worker()
    publisher.send_all([message(raw_chunk("gw-1", 1)), message(summary("gw-1", 2)), message(flag("gw-1", 3))])

    wait_until(lambda: worker.metrics.total("gridsight_collector_acks_total") == 3, what="3 acks")
    assert scalar(collector_db, "SELECT count(*) FROM readings") == 40
    assert scalar(collector_db, "SELECT count(*) FROM interval_summaries") == 4
    assert scalar(collector_db, "SELECT count(*) FROM anomaly_flags") == 1
    wait_until(lambda: scalar(collector_db, "SELECT count(*) FROM archive_outbox") == 0, what="archive drained")
    assert scalar(collector_db, "SELECT sum(messages) FROM archive_objects") == 3
    assert list(archive_dir.glob("raw/dt=*/gateway=gw-1/*.parquet"))


def test_a_flood_of_malformed_messages_is_dead_lettered_and_good_traffic_is_unaffected(
        start_worker, publisher, collector_db):
    worker = start_worker()
    good = [message(summary(f"gw-{g}", s)) for s in range(1, 26) for g in range(4)]
    junk = []
    for i in range(400):
        junk.append((f"gridsight/v1/gw-{i % 4}/summary", os.urandom(i % 50 + 1)))
        junk.append((f"gridsight/v1/gw-{i % 4}/raw", b'{"v": 1, "kind": "raw"}'))
    flood = threading.Thread(target=Publisher(publisher.client._port).send_all, args=(junk,))
    flood.start()
    publisher.send_all(good)
    flood.join()

    wait_until(lambda: worker.metrics.total("gridsight_collector_acks_total") == len(good) + len(junk),
               what="every message acked")
    assert scalar(collector_db, "SELECT count(*) FROM interval_summaries") == len(good) * 4
    assert scalar(collector_db, "SELECT count(*) FROM dead_letters") == len(junk)
    assert worker.metrics.total("gridsight_collector_dead_letters_total") == len(junk)
    assert worker.thread.is_alive()


@pytest.mark.slow
def test_postgres_outage_pauses_ingest_without_acking_then_catches_up(tmp_path, start_worker, publisher):
    pg = EmbeddedPostgres(tmp_path / "own-pg", durable=False).start()
    try:
        migrate(pg.url)
        worker = start_worker(database_url=pg.url)
        publisher.send_all([message(raw_chunk("gw-1", s)) for s in range(1, 21)])
        wait_until(lambda: worker.metrics.total("gridsight_collector_acks_total") == 20, what="first 20 acked")

        pg.stop()
        publisher.send_all([message(raw_chunk("gw-1", s)) for s in range(21, 61)])
        wait_until(lambda: worker.metrics.total("gridsight_collector_db_errors_total") >= 2, what="failed retries")
        acks_during_outage = worker.metrics.total("gridsight_collector_acks_total")
        time.sleep(1.0)
        assert worker.metrics.total("gridsight_collector_acks_total") == acks_during_outage == 20

        pg.start()
        wait_until(lambda: worker.metrics.total("gridsight_collector_acks_total") == 60, timeout=90,
                   what="backlog acked after recovery")
        assert scalar(pg.url, "SELECT count(*) FROM ingest_log") == 60
        assert scalar(pg.url, "SELECT count(*) FROM readings") == 60 * 40
        assert scalar(pg.url, "SELECT count(DISTINCT (meter_id, ts)) FROM readings") == 60 * 40
    finally:
        pg.stop()


def test_two_replicas_on_one_shared_subscription_split_the_load_with_exact_totals(
        start_worker, publisher, collector_db):
    first, second = start_worker("replica-a"), start_worker("replica-b")
    publisher.send_all([message(summary(f"gw-{g}", s)) for s in range(1, 51) for g in range(4)])

    wait_until(lambda: scalar(collector_db, "SELECT count(*) FROM ingest_log") == 200, what="200 messages stored")
    by_replica = dict(sql(collector_db, "SELECT replica, count(*) FROM ingest_log GROUP BY replica"))
    assert set(by_replica) == {"replica-a", "replica-b"}
    assert sum(by_replica.values()) == 200
    assert min(by_replica.values()) > 0
    assert scalar(collector_db, "SELECT count(*) FROM interval_summaries") == 800
    assert scalar(collector_db, "SELECT sum(intervals) FROM readings_hourly") == 800
    wait_until(lambda: first.metrics.total("gridsight_collector_acks_total")
               + second.metrics.total("gridsight_collector_acks_total") == 200, what="all acked")


def _collector_process(tmp_path, database_url: str, mqtt_url: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "MQTT_URL": mqtt_url,
           "GRIDSIGHT_DATA_DIR": str(tmp_path / "collector"), "GRIDSIGHT_COLLECTOR_REPLICA_ID": "crashy",
           "GRIDSIGHT_COLLECTOR_BATCH_MAX_WAIT_S": "0.05", "GRIDSIGHT_COLLECTOR_BATCH_MAX_MESSAGES": "20",
           "GRIDSIGHT_COLLECTOR_UNKNOWN_GATEWAYS": "register"}
    return subprocess.Popen([sys.executable, "-m", "gridsight", "collector", "ingest"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "collector.log", "ab"))


@pytest.mark.slow
def test_collector_killed_mid_batch_stores_every_reading_exactly_once_after_restart(
        tmp_path, mosquitto, collector_db):
    total = 300
    proc = _collector_process(tmp_path, collector_db, mosquitto.url)
    try:
        pub = Publisher(mosquitto.port, client_id="gateway-gw-9")
        _wait_consuming(pub, collector_db, proc)
        sender = threading.Thread(target=pub.send_all,
                                  args=([message(raw_chunk("gw-9", s, per_meter=20)) for s in range(1, total + 1)],))
        sender.start()
        wait_until(lambda: scalar(collector_db, "SELECT count(*) FROM ingest_log") >= 40, what="ingest under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored_at_kill = scalar(collector_db, "SELECT count(*) FROM ingest_log")
        sender.join(60)
        pub.close()
        assert stored_at_kill < total

        proc = _collector_process(tmp_path, collector_db, mosquitto.url)
        wait_until(lambda: scalar(collector_db, "SELECT count(*) FROM ingest_log") == total, timeout=120,
                   what="every message stored after restart")
        assert scalar(collector_db, "SELECT count(*) FROM readings") == total * 80
        assert scalar(collector_db, "SELECT count(DISTINCT (meter_id, ts)) FROM readings") == total * 80
        assert scalar(collector_db, "SELECT count(*) FROM ingest_log WHERE replica = 'crashy'") == total
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _wait_consuming(publisher: Publisher, database_url: str, proc: subprocess.Popen) -> None:
    """Publish a probe the collector dead-letters until one lands: then it is subscribed and writing."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited with {proc.returncode}")
        publisher.send("gridsight/v1/probe/raw", b"probe")
        if scalar(database_url, "SELECT count(*) FROM dead_letters") > 0:
            return
        time.sleep(0.5)
    raise AssertionError("collector never consumed the probe")
