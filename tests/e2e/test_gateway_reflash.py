"""A gateway that loses its data directory (SD-card swap, re-flash, reinstall) loses nothing it
reads afterwards: real agent processes, real Mosquitto, a real ingest worker and PostgreSQL.

The agent runs, stops, its data directory is wiped, and it starts again under the same
gateway id. Its sequence numbers restart at 1, inside the range the first outbox already
used; keyed on (gateway, seq) alone every one of those messages was acked and discarded as
a duplicate. Keyed on (gateway, epoch, seq), every reading is stored exactly once, and the
new outbox is visible in the gateway's record, in /ingestion/health and in the metrics.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from collector.archive import LocalDirStore
from collector.db import migrate, queries
from collector.ingest import IngestWorker
from collector.services import Services
from collector.settings import CollectorSettings

pytestmark = pytest.mark.slow  # make test-fast leaves it out

T0 = float(int(time.time()) // 900 * 900) - 86_400
SPEED = 300.0          # simulated seconds per wall second: a 15-minute interval passes in 3 s
METERS, STEP_S = 3, 10.0


def write_csv(path: Path, start: float, end: float) -> set[tuple[str, float]]:
    taken = set()
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["meter_id", "ts", "energy_kwh", "power_w"])
        ts = start
        while ts < end:
            for m in range(METERS):
                out.writerow([f"gw-flash-m{m}", ts, round(100 + (ts - T0) / 3600 * (m + 1), 6), 500 + 10 * m])
                taken.add((f"gw-flash-m{m}", ts))
            ts += STEP_S
    return taken


def agent_config(tmp_path: Path, name: str, csv_path: Path, mqtt_url: str, start: float, anchor: float) -> Path:
    """Simulated time ``start`` happens at wall time ``anchor`` and runs at SPEED."""
    config = tmp_path / f"{name}.toml"
    config.write_text(f"""
gateway_id = "gw-flash"
data_dir = "{tmp_path / 'data'}"
poll_s = 10
raw_chunk_s = 60
status_s = 600
[mqtt]
url = "{mqtt_url}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
drain_rate = 0
[clock]
start = {start}
speed = {SPEED}
anchor = {anchor}
[[readers]]
type = "replay"
path = "{csv_path}"
""")
    return config


def run_agent_until(config: Path, start: float, anchor: float, sim_end: float) -> None:
    """Run the agent as a process until the simulated clock passes ``sim_end``, then SIGTERM it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall_end = anchor + (sim_end - start) / SPEED
    while time.time() < wall_end:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, proc.stderr.read().decode()[-2000:]


def agent_status(tmp_path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "gridsight.cli", "agent", "status", "--data-dir",
                          str(tmp_path / "data"), "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def fetch(url: str, call):
    async def go():
        conn = await asyncpg.connect(url)
        try:
            return await call(conn)
        finally:
            await conn.close()
    return asyncio.run(go())


def stored_readings(url: str) -> list[tuple[str, float]]:
    rows = fetch(url, lambda c: c.fetch("SELECT meter_id, extract(epoch FROM ts)::float8 AS ts FROM readings"))
    return [(r["meter_id"], r["ts"]) for r in rows]


def settle(url: str, quiet_s: float = 3.0, timeout: float = 90.0) -> None:
    """Wait until the collector has taken in everything published (its counts stop moving)."""
    def counts():
        return fetch(url, lambda c: c.fetchrow("SELECT (SELECT count(*) FROM ingest_log) AS a, "
                                                "(SELECT count(*) FROM dead_letters) AS b"))
    deadline = time.monotonic() + timeout
    last, since = counts(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = counts()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise AssertionError("the collector kept receiving")


def summaries(url: str) -> set[tuple[str, float]]:
    rows = fetch(url, lambda c: c.fetch("SELECT DISTINCT meter_id, extract(epoch FROM interval_start)::float8 AS s "
                                        "FROM interval_summaries"))
    return {(r["meter_id"], r["s"]) for r in rows}


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ingest(tmp_path, mosquitto, database_url):
    migrate(database_url)
    fetch(database_url, lambda c: c.execute("INSERT INTO gateways (id) VALUES ('gw-flash')"))  # provisioned
    settings = CollectorSettings(database_url=database_url, mqtt_url=mosquitto.url, data_dir=tmp_path / "collector",
                                 replica_id="r1", archive_interval_s=0.2, batch_max_wait_s=0.05)
    worker = IngestWorker(settings, services=Services(database_url, mosquitto.url,
                                                      LocalDirStore(tmp_path / "archive")))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert worker.ready.wait(30), worker.last_error
    yield worker
    stop.set()
    thread.join(60)


def test_an_agent_restarted_with_an_empty_data_dir_loses_no_reading_and_its_new_epoch_is_visible(
        tmp_path, mosquitto, database_url, ingest):
    before = write_csv(tmp_path / "before.csv", T0, T0 + 3 * 900)
    after = write_csv(tmp_path / "after.csv", T0 + 3 * 900, T0 + 6 * 900)
    start, anchor = T0, time.time() + 2.0
    run_agent_until(agent_config(tmp_path, "before", tmp_path / "before.csv", mosquitto.url, start, anchor),
                    start, anchor, T0 + 3 * 900 + 120)
    wait_until(lambda: len(stored_readings(database_url)) >= len(before), 60, "the first outbox's readings")
    old = agent_status(tmp_path)
    old_last_seq = old["next_seq"] - 1

    shutil.rmtree(tmp_path / "data")            # the SD card is replaced; same gateway id, same broker account
    start, anchor = T0 + 3 * 900 + 120, time.time() + 2.0
    run_agent_until(agent_config(tmp_path, "after", tmp_path / "after.csv", mosquitto.url, start, anchor),
                    start, anchor, T0 + 6 * 900 + 120)
    new = agent_status(tmp_path)
    assert new["epoch"] != old["epoch"]

    wait_until(lambda: len(stored_readings(database_url)) >= len(before | after), 60, "every reading")
    time.sleep(1.0)                              # anything extra (a duplicate) would arrive by now
    stored = stored_readings(database_url)
    assert len(stored) == len(set(stored)), "a reading was stored twice"
    assert set(stored) == before | after, f"lost: {len((before | after) - set(stored))}"
    assert fetch(database_url, lambda c: c.fetchval("SELECT count(*) FROM dead_letters")) == 0

    gateway = fetch(database_url, lambda c: queries.get_gateway(c, "gw-flash"))
    assert gateway["epoch"] == new["epoch"] and gateway["outbox"]["epochs"] == 2
    assert gateway["outbox"]["previous"]["epoch"] == old["epoch"]
    assert gateway["outbox"]["previous"]["last_seq"] <= old_last_seq
    health = fetch(database_url, queries.ingestion_health)
    (event,) = health["new_epochs"]
    assert event["gateway_id"] == "gw-flash" and event["epoch"] == new["epoch"]
    # seqs restarted inside the old outbox's range (seq 1 went to the last will, never sent)
    assert event["first_seq"] <= 2 < old_last_seq
    assert f"the previous one ended at seq {gateway['outbox']['previous']['last_seq']}" in event["message"]
    assert ingest.metrics.value("gridsight_collector_epochs_started_total") == 1
    # the status file and `agent status` agree on queue depth and sequence numbers
    assert new["status_file_agrees"], (new["last_status"] or {}).get("outbox")


def publish_forgeries(mqtt_port: int, epoch: str, seqs: range) -> None:
    """Messages on gw-flash's topic with its epoch and the seqs it will use next (a forger who
    knows the epoch; one who does not only starts an epoch of its own, which collides with nothing)."""
    import paho.mqtt.client as mqtt

    from gridsight import wire

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", mqtt_port)
    client.loop_start()
    try:
        for seq in seqs:
            readings = tuple(wire.Reading("gw-flash-m0", T0 + 10 * 900 + seq, 9999.0) for _ in range(1))
            msg = wire.RawChunk("gw-flash", seq, None, time.time(), readings, epoch=epoch)
            client.publish(wire.topic_for("gw-flash", "raw"), wire.encode(msg), qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def collector_cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "gridsight.cli", "collector", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_forged_future_seqs_make_conflicts_that_are_visible_and_replay_recovers_every_genuine_reading(
        tmp_path, mosquitto, database_url, ingest):
    before = write_csv(tmp_path / "before.csv", T0, T0 + 2 * 900)
    after = write_csv(tmp_path / "after.csv", T0 + 2 * 900, T0 + 4 * 900)
    start, anchor = T0, time.time() + 2.0
    run_agent_until(agent_config(tmp_path, "before", tmp_path / "before.csv", mosquitto.url, start, anchor),
                    start, anchor, T0 + 2 * 900 + 60)
    status = agent_status(tmp_path)
    forged = range(status["next_seq"], status["next_seq"] + 10)
    publish_forgeries(mosquitto.port, status["epoch"], forged)
    wait_until(lambda: fetch(database_url, lambda c: c.fetchval(
        "SELECT count(*) FROM ingest_log WHERE seq >= $1", forged.start)) == 10, 60, "the forged messages")

    # the genuine agent carries on (same data directory, same epoch) and reaches those seqs
    start, anchor = T0 + 2 * 900 + 60, time.time() + 2.0
    run_agent_until(agent_config(tmp_path, "after", tmp_path / "after.csv", mosquitto.url, start, anchor),
                    start, anchor, T0 + 4 * 900 + 120)
    assert agent_status(tmp_path)["queue_depth"] == 0          # the agent delivered everything it had
    settle(database_url)
    conflicts = fetch(database_url, lambda c: c.fetchval(
        "SELECT count(*) FROM dead_letters WHERE reason = 'seq_conflict'"))
    # the forged range covers the agent's next messages (a few seqs went to unsent last wills)
    assert conflicts >= 5
    health = fetch(database_url, queries.ingestion_health)
    assert health["seq_conflicts"]["unreplayed"] == conflicts
    assert ingest.metrics.value("gridsight_collector_seq_conflicts_total") == conflicts
    lost = len((before | after) - set(stored_readings(database_url))) + 4 * METERS - len(summaries(database_url))
    assert lost > 0, "the forgery should have cost genuine readings or summaries until the replay"

    dry = collector_cli(database_url, "dead-letters", "replay", "--reason", "seq_conflict", "--gateway", "gw-flash",
                        "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout.splitlines()[-1])["results"] == {"stored_under_replay_key": conflicts}
    done = collector_cli(database_url, "dead-letters", "replay", "--reason", "seq_conflict", "--gateway", "gw-flash")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["results"] == {"stored_under_replay_key": conflicts}

    stored = stored_readings(database_url)
    assert (before | after) <= set(stored), f"still missing: {len((before | after) - set(stored))}"
    genuine = [r for r in stored if r[1] < T0 + 10 * 900]
    assert len(genuine) == len(set(genuine)) == len(before | after)
    assert summaries(database_url) == {(f"gw-flash-m{m}", T0 + i * 900) for m in range(METERS) for i in range(4)}
    assert fetch(database_url, queries.ingestion_health)["seq_conflicts"]["unreplayed"] == 0
