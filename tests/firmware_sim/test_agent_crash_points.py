"""A real agent process killed at every step of its poll cycle loses no reading and stores none twice.

The agent honours ``GRIDSIGHT_FAILPOINT`` (see :mod:`edge_agent.failpoints`): it SIGKILLs itself
the n-th time it reaches a step, so each kill lands exactly between two steps instead of wherever
the scheduler happens to be. The meters are the simulator's, read by index through a persisted
cursor (``state_path``) as a real gateway reads a meter's load-profile log; the outbox is the real
SQLite file. After every kill the agent is started again on the same data directory.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from firmware_sim.reader import SimulatedMeterReader, committed_cursor
from gridsight.wire import RawChunk, decode, topic_for

pytestmark = pytest.mark.slow

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SPEED = 600.0  # a 60 s poll every 0.1 wall seconds, a 900 s interval every 1.5

# every step, first on a cycle of a running agent, then on the first cycle after a restart
# (the one that takes everything the meters logged while the agent was down)
KILLS = [f"{step}:{n}" for n in (3, 1) for step in
         ("agent.polled", "agent.stored", "reader.cursor_written", "agent.committed")]


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def sealed_readings(path, gateway_id: str) -> Counter:
    """(meter, ts) of every reading in the outbox's raw chunks, counted (after a graceful stop,
    which seals everything staged, that is every reading the agent stored)."""
    db = sqlite3.connect(path)
    try:
        chunks = [decode(topic_for(gateway_id, "raw"), bytes(p)) for (p,) in
                  db.execute("SELECT payload FROM messages WHERE kind = 'raw' ORDER BY seq")]
        unsealed = db.execute("SELECT COUNT(*) FROM batches WHERE id > "
                              "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'chunked_upto')").fetchone()[0]
    finally:
        db.close()
    assert unsealed == 0
    assert all(isinstance(c, RawChunk) for c in chunks)
    return Counter((r.meter_id, r.ts) for c in chunks for r in c.readings)


def test_an_agent_killed_at_each_step_of_its_poll_cycle_keeps_every_reading_once(tmp_path):
    data = tmp_path / "data"
    cursor = data / "cursor.json"
    anchor = time.time() + 1.0
    reader_options = {"seed": 4, "gateway": 0, "meters": 3, "step_s": 60, "since": T0, "tz": "UTC"}
    config = tmp_path / "agent.toml"
    config.write_text(f"""
gateway_id = "gw-crash"
data_dir = "{data}"
poll_s = 60
interval_s = 900
grace_s = 30
raw_chunk_s = 900
status_s = 900
log_level = "warning"
[clock]
start = {T0}
speed = {SPEED}
anchor = {anchor}
[[readers]]
type = "sim"
state_path = "{cursor}"
""" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in reader_options.items()))
    cmd = [sys.executable, "-m", "gridsight", "agent", "run", "--no-publish", "--config", str(config)]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSIGHT_")}
    for failpoint in KILLS:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**base_env, "GRIDSIGHT_FAILPOINT": failpoint})
        try:
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
        # killed by its own failpoint, not stopped or crashed some other way
        assert code == -signal.SIGKILL, f"{failpoint}: exit {code}: {proc.stderr.read().decode()[-2000:]}"
        proc.stderr.close()
    # one last run, stopped gracefully once it has polled a few times more
    started = time.time()
    killed_at = committed_cursor(cursor)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=base_env)
    status = data / "status.json"
    try:
        assert _wait_until(lambda: status.exists() and status.stat().st_mtime >= started
                           and committed_cursor(cursor) > killed_at + 600 or proc.poll() is not None, 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()

    end = committed_cursor(cursor)
    expected = SimulatedMeterReader.from_config(reader_options).read(end)
    assert len(expected) > 3 * 30
    stored = sealed_readings(data / "outbox.sqlite", "gw-crash")
    want = {(r.meter_id, r.ts) for r in expected}
    missing = sorted(want - set(stored))
    assert not missing, f"{len(missing)} readings lost, first {missing[:5]}"
    assert not [k for k, n in stored.items() if n > 1], "a reading was stored twice"
    assert set(stored) == want  # and nothing the meters never handed over


def test_readings_kept_in_memory_after_a_failed_outbox_write_are_never_passed_by_the_meter_cursor(tmp_path):
    """The outbox cannot be written (another process holds its write lock) for two cycles: the
    agent keeps those readings in memory, and the meters' cursor must not move past them, or a
    kill before the outbox recovers would lose them."""
    from edge_agent.clock import ManualClock
    from edge_agent.config import AgentSettings
    from edge_agent.outbox import Outbox
    from edge_agent.runtime import Agent, NullTransport

    options = {"seed": 4, "gateway": 0, "meters": 3, "step_s": 60, "since": T0, "tz": "UTC",
               "state_path": str(tmp_path / "cursor.json")}
    clock = ManualClock(T0)
    settings = AgentSettings(gateway_id="gw-locked", data_dir=tmp_path / "data", poll_s=60, raw_chunk_s=900,
                             status_s=900)
    outbox_path = tmp_path / "data" / "outbox.sqlite"
    agent = Agent(settings, readers=[SimulatedMeterReader.from_config(options)], clock=clock, scorer=None,
                  transport=NullTransport(), outbox=Outbox(outbox_path, busy_timeout_s=0.2))
    for _ in range(3):
        clock.advance(300)
        agent.tick()
    stored_until = clock.now()
    assert committed_cursor(tmp_path / "cursor.json") <= stored_until
    blocker = sqlite3.connect(outbox_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: every append fails
    try:
        for _ in range(2):
            clock.advance(300)
            assert agent.tick() == 0
        assert agent.counters.outbox_errors == 2
        # what a kill -9 now would leave: the cursor, and the outbox as committed
        assert committed_cursor(tmp_path / "cursor.json") <= stored_until
        replayed = SimulatedMeterReader.from_config(options).read(clock.now())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    staged = {(r.meter_id, r.ts) for r in agent.outbox.open_readings(0)}
    everything = {(r.meter_id, r.ts) for r in SimulatedMeterReader.from_config(
        {k: v for k, v in options.items() if k != "state_path"}).read(clock.now())}
    assert everything - staged == {(r.meter_id, r.ts) for r in replayed}
    # the outbox recovers: the readings kept in memory are stored and only then the cursor moves
    clock.advance(300)
    assert agent.tick() == 3 * 15
    assert committed_cursor(tmp_path / "cursor.json") == clock.now()
    agent.shutdown()
    stored = sealed_readings(outbox_path, "gw-locked")
    assert set(stored) == everything | {(r.meter_id, r.ts) for r in SimulatedMeterReader.from_config(
        {k: v for k, v in options.items() if k != "state_path"}).read(clock.now())}
    assert max(stored.values()) == 1
