"""Fault tests with real parts: a broker outage, SIGKILLs of the agent process, a full disk budget."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from edge_agent.clock import ManualClock, SimulatedClock
from edge_agent.config import AgentSettings, MqttSettings, OutboxSettings
from edge_agent.readers.replay import ReplayReader
from edge_agent.runtime import Agent, NullTransport
from meter_data import T0, Subscriber, readings_by_meter, recording, wait_until, write_csv

pytestmark = pytest.mark.slow


def assert_exactly_once_in_order(subscriber: Subscriber, taken) -> None:
    """Every taken reading arrived once (after (gateway, seq) dedupe), in order per meter by seq."""
    received = subscriber.raw_readings()
    keys = Counter((r.meter_id, r.ts) for r in received)
    assert not [k for k, n in keys.items() if n > 1], "a reading arrived under two sequence numbers"
    got = readings_by_meter(received)
    want = readings_by_meter(taken)
    assert set(got) == set(want)
    for meter in want:
        assert got[meter] == want[meter], f"{meter}: missing, extra or out-of-order readings"


def summaries_once_per_interval(subscriber: Subscriber) -> dict[float, object]:
    by_interval: dict[float, object] = {}
    for s in subscriber.unique("summary"):
        assert s.interval_start not in by_interval, f"interval {s.interval_start} summarised twice"
        by_interval[s.interval_start] = s
    return by_interval


def test_broker_down_for_minutes_then_back_every_reading_arrives_exactly_once_in_order(tmp_path, mosquitto):
    subscriber = Subscriber(mosquitto.port, persistent=True)
    taken = recording(3, T0, 3600, 10)
    speed = 300.0  # 1 simulated hour in 12 s; the outage below is 15 simulated minutes
    clock = SimulatedClock(T0, speed)
    settings = AgentSettings(gateway_id="gw-outage", data_dir=tmp_path / "data", poll_s=10, raw_chunk_s=60,
                             status_s=300, mqtt=MqttSettings(url=mosquitto.url, reconnect_min_s=0.1,
                                                             reconnect_max_s=0.5, drain_rate=0))
    agent = Agent(settings, readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))], clock=clock, scorer=None)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) > 50, timeout=30)
        mosquitto.stop()
        time.sleep(1.5)
        during = agent.status()
        time.sleep(1.5)
        mosquitto.start()
        while clock.now() < T0 + 3600 + 120:
            time.sleep(0.1)
        stop.set()
        runner.join(30)
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken), timeout=30)
    finally:
        stop.set()
        subscriber.close()
    assert during["counters"]["mqtt_connected"] == 0 and during["queue_depth"] > 0  # it kept reading
    assert_exactly_once_in_order(subscriber, taken)
    intervals = summaries_once_per_interval(subscriber)
    assert sorted(intervals) == [T0 + i * 900 for i in range(4)]
    assert all(m.readings == 90 for s in intervals.values() for m in s.meters)
    assert agent.transport.counters.connects >= 2


def test_agent_killed_with_sigkill_again_and_again_loses_and_duplicates_nothing(tmp_path, mosquitto):
    subscriber = Subscriber(mosquitto.port, persistent=True)
    taken = recording(3, T0, 6 * 900, 10)
    csv = write_csv(tmp_path / "r.csv", taken)
    speed = 300.0
    anchor = time.time() + 1.0  # simulated T0 happens one wall second from now, in whichever process runs
    config = tmp_path / "agent.toml"
    config.write_text(f"""
gateway_id = "gw-kill"
data_dir = "{tmp_path / 'data'}"
poll_s = 10
raw_chunk_s = 60
status_s = 600
[mqtt]
url = "{mosquitto.url}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
drain_rate = 0
[clock]
start = {T0}
speed = {speed}
anchor = {anchor}
[[readers]]
type = "replay"
path = "{csv}"
""")
    rng = random.Random(3)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config)]
    kills = 0
    try:
        end_of_data = anchor + (6 * 900 + 120) / speed
        while time.time() < end_of_data - 4 and kills < 6:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            time.sleep(rng.uniform(0.8, 3.0))
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        last_start = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        status_file = tmp_path / "data" / "status.json"
        # SIGTERM only once this process runs its loop (before that, SIGTERM would just kill it)
        assert wait_until(lambda: status_file.exists() and status_file.stat().st_mtime >= last_start
                          or proc.poll() is not None, 60)
        while time.time() < end_of_data:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, proc.stderr.read().decode()[-2000:]
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken), timeout=30)
    finally:
        subscriber.close()
    assert kills >= 4
    assert_exactly_once_in_order(subscriber, taken)
    intervals = summaries_once_per_interval(subscriber)
    assert sorted(intervals) == [T0 + i * 900 for i in range(6)]
    assert all(m.readings == 90 for s in intervals.values() for m in s.meters)
    # a sequence number always names the same message, whichever process sent it
    by_seq: dict[int, bytes] = {}
    for m in subscriber.messages:
        if type(m).KIND in ("summary", "raw"):
            assert by_seq.setdefault(m.seq, repr(m)) == repr(m)


def test_outbox_at_its_budget_evicts_raw_first_keeps_summaries_and_counts_in_status(tmp_path):
    taken = recording(5, T0, 4 * 3600, 30)
    clock = ManualClock(T0)
    settings = AgentSettings(gateway_id="gw-full", data_dir=tmp_path / "data", poll_s=30, raw_chunk_s=120,
                             outbox=OutboxSettings(budget_mb=0.04))
    agent = Agent(settings, readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))], clock=clock,
                  scorer=None, transport=NullTransport())
    while clock.now() < T0 + 4 * 3600 + 60:
        agent.tick()
        clock.advance(30)
    counters = agent.status()["counters"]
    depth = agent.outbox.depth()
    assert counters["evicted_raw"] > 0 and counters["evicted_raw_bytes"] > 0
    assert counters["evicted_summary"] == 0 and counters["evicted_flag"] == 0
    assert depth["summary"] == 16  # every interval's summary survived
    assert agent.outbox.used_bytes <= 0.04 * 1024 * 1024
    # what is left of the raw data is the newest
    from gridsight.wire import decode, topic_for
    raw = [decode(topic_for("gw-full", "raw"), p.payload)
           for p in agent.outbox.pending(10_000, live_from_seq=10**9, backlog_limit=10_000) if p.kind == "raw"]
    assert max(r.ts for c in raw for r in c.readings) == taken[-1].ts


def test_after_an_outage_live_data_goes_out_ahead_of_the_backlog_which_drains_most_valuable_first(tmp_path, mosquitto):
    subscriber = Subscriber(mosquitto.port, persistent=True)
    taken = recording(2, T0, 3600 + 600, 30)
    clock = ManualClock(T0)
    settings = AgentSettings(gateway_id="gw-drain", data_dir=tmp_path / "data", poll_s=30, raw_chunk_s=120,
                             status_s=10_000, mqtt=MqttSettings(url=mosquitto.url, reconnect_min_s=0.1,
                                                                reconnect_max_s=0.3, drain_rate=5))
    agent = Agent(settings, readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))], clock=clock, scorer=None)
    mosquitto.stop()
    agent.transport.start()
    try:
        while clock.now() < T0 + 3600 + 60:  # an hour of readings while the broker is down
            agent.tick()
            clock.advance(30)
        backlog_until = agent.outbox.next_seq
        mosquitto.start()
        assert wait_until(lambda: agent.transport.connected, 20)
        while clock.now() < T0 + 3600 + 600 + 150:  # live data after the reconnect, all of it sealed
            agent.tick()
            clock.advance(30)
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken), timeout=60)
    finally:
        agent.shutdown()
        subscriber.close()
    arrivals = [m for m in subscriber.messages if type(m).KIND in ("raw", "summary")]
    backlog = [i for i, m in enumerate(arrivals) if m.seq < backlog_until]
    live = [i for i, m in enumerate(arrivals) if m.seq >= backlog_until]
    assert live and live[0] < backlog[-1], "live data waited for the whole backlog"
    backlog_kinds = [type(arrivals[i]).KIND for i in backlog]
    assert backlog_kinds.index("raw") > backlog_kinds.index("summary")  # summaries before raw chunks
    assert_exactly_once_in_order(subscriber, taken)
