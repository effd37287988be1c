"""An agent reads meters, closes 15-minute intervals, scores them and publishes to a real broker."""

from __future__ import annotations

import threading
from datetime import date

import pytest

from edge_agent.clock import ManualClock
from edge_agent.config import AgentSettings, ModelSettings, MqttSettings
from edge_agent.readers.replay import ReplayReader
from edge_agent.runtime import Agent, NullTransport
from gridsight.settings import ConfigError
from meter_data import T0, load_profile_w, readings_by_meter, recording, wait_until, write_csv


def settings_for(tmp_path, mosquitto=None, **kw) -> AgentSettings:
    mqtt = MqttSettings(url=mosquitto.url if mosquitto else "mqtt://127.0.0.1:9", reconnect_min_s=0.2,
                        reconnect_max_s=1.0, drain_rate=0)
    return AgentSettings(gateway_id=kw.pop("gateway_id", "gw-test"), data_dir=tmp_path / "data", mqtt=mqtt, **kw)


def drive(agent: Agent, clock: ManualClock, until: float, step: float) -> None:
    while clock.now() < until:
        agent.tick()
        clock.advance(step)
    agent.tick()


@pytest.mark.slow
def test_agent_publishes_every_reading_and_one_summary_per_interval_to_a_real_broker(tmp_path, mosquitto, subscriber):
    taken = recording(3, T0, 2 * 3600, 10)
    clock = ManualClock(T0)
    agent = Agent(settings_for(tmp_path, mosquitto), readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))],
                  clock=clock, scorer=None)
    agent.transport.start()
    drive(agent, clock, T0 + 2 * 3600 + 60, 10)
    # shutdown flushes only what is in flight (at most max_inflight, within its flush timeout);
    # whatever is still queued waits in the outbox for the next start. Under load the uplink
    # thread can be behind the simulated clock (or not yet connected) when driving ends, so wait
    # for the outbox to drain as it does in real time, however long that takes on this machine.
    assert wait_until(lambda: not any(n for kind, n in agent.outbox.depth().items() if kind != "status"), 120), \
        f"the outbox never drained: {agent.outbox.depth()}"
    agent.shutdown()

    assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken))
    got = readings_by_meter(subscriber.raw_readings())
    want = readings_by_meter(taken)
    assert got == want  # every reading exactly once, in order per meter
    summaries = subscriber.unique("summary")
    assert [s.interval_start for s in summaries] == [T0 + i * 900 for i in range(8)]
    for s in summaries:
        assert {m.meter_id for m in s.meters} == {"meter-0", "meter-1", "meter-2"}
        assert all(m.readings == 90 and m.score is None for m in s.meters)
    # kWh of an interval is the register delta: the energy of its readings
    m0 = [r for r in taken if r.meter_id == "meter-0"]
    second = summaries[1].meters[0]
    assert second.kwh == pytest.approx(m0[179].energy_kwh - m0[89].energy_kwh, rel=1e-6)
    # the last status is retained and says the gateway went offline cleanly
    assert subscriber.wait_for(lambda: subscriber.retained_status.get("gw-test") is not None
                               and subscriber.retained_status["gw-test"].online is False)
    seqs = [m.seq for m in subscriber.messages if type(m).KIND != "status"]
    assert len(set(seqs)) == len(subscriber.unique("summary")) + len(subscriber.unique("raw"))


@pytest.mark.slow
def test_agent_flags_a_meter_whose_consumption_jumps_with_the_models_reason(tmp_path, mosquitto, subscriber, model_path):
    spike_start = T0 + 3 * 86_400 + 12 * 3600

    def power(meter: int, ts: float) -> float:
        if meter == 1 and spike_start <= ts < spike_start + 3600:
            return 12 * load_profile_w(meter, ts)
        return load_profile_w(meter, ts)

    taken = recording(3, T0, 3 * 86_400 + 14 * 3600, 300, power)
    clock = ManualClock(T0)
    settings = settings_for(tmp_path, mosquitto, model=ModelSettings(path=str(model_path)))
    agent = Agent(settings, readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))], clock=clock)
    agent.transport.start()
    drive(agent, clock, taken[-1].ts + 960, 300)
    agent.shutdown()

    assert subscriber.wait_for(lambda: subscriber.retained_status.get("gw-test") is not None
                               and not subscriber.retained_status["gw-test"].online)
    flags = subscriber.unique("flag")
    flagged = {(f.meter_id, f.interval_start) for f in flags}
    assert ("meter-1", spike_start) in flagged
    assert all(f.model_version == "test-1" and f.score < f.threshold for f in flags)
    assert any(f.reason for f in flags if f.meter_id == "meter-1")
    summaries = subscriber.unique("summary")
    assert all(m.score is not None for s in summaries for m in s.meters)
    # the spike hour stands out far more than anything else that was flagged
    assert sum(1 for f in flags if f.meter_id == "meter-1" and spike_start <= f.interval_start < spike_start + 3600) >= 2


def test_readings_taken_while_the_uplink_is_missing_stay_queued_in_the_outbox(tmp_path):
    taken = recording(2, T0, 1800, 30)
    clock = ManualClock(T0)
    agent = Agent(settings_for(tmp_path), readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))],
                  clock=clock, scorer=None, transport=NullTransport())
    drive(agent, clock, T0 + 1800 + 60, 30)
    depth = agent.outbox.depth()
    assert depth["summary"] == 2 and depth["raw"] >= 1
    assert agent.status()["counters"]["readings"] == len(taken)


def test_a_failing_reader_is_retried_with_backoff_and_reported_while_the_others_keep_reading(tmp_path):
    good = ReplayReader(write_csv(tmp_path / "good.csv", recording(1, T0, 600, 10)))

    class UnpluggedMeter:
        name = "unplugged"
        calls = 0

        def read(self, now):
            from edge_agent.readers.base import ReaderError
            self.calls += 1
            raise ReaderError("no response from unit 3 (timeout)")

        def close(self):
            pass

    bad = UnpluggedMeter()
    clock = ManualClock(T0)
    agent = Agent(settings_for(tmp_path, poll_s=10), readers=[bad, good], clock=clock, scorer=None,
                  transport=NullTransport())
    drive(agent, clock, T0 + 600, 10)
    status = agent.status()
    assert status["counters"]["readings"] == 60
    assert status["counters"]["readers_failing"] == 1
    assert status["readers"][0]["last_error"].endswith("no response from unit 3 (timeout)")
    assert 3 <= bad.calls < 30  # backoff: far fewer attempts than the 61 polls


def test_a_restarted_agent_continues_its_intervals_and_sequence_numbers(tmp_path):
    taken = recording(2, T0, 1800, 30)
    csv = write_csv(tmp_path / "r.csv", taken)
    clock = ManualClock(T0)
    agent = Agent(settings_for(tmp_path), readers=[ReplayReader(csv)], clock=clock, scorer=None,
                  transport=NullTransport())
    drive(agent, clock, T0 + 1200, 30)  # one interval closed, the second one half full
    last_seq = agent.outbox.next_seq
    agent.outbox.close()  # no graceful shutdown: as after a crash
    agent2 = Agent(settings_for(tmp_path), readers=[ReplayReader(csv)], clock=clock, scorer=None,
                   transport=NullTransport())
    drive(agent2, clock, T0 + 1800 + 60, 30)
    assert agent2.status()["counters"]["duplicates"] > 0  # the replay started over; nothing counted twice
    pending = agent2.outbox.pending(1000, live_from_seq=10**9, backlog_limit=1000)
    from gridsight.wire import decode, topic_for
    summaries = [decode(topic_for("gw-test", p.kind), p.payload) for p in pending if p.kind == "summary"]
    assert [s.interval_start for s in summaries] == [T0, T0 + 900]
    assert all(m.readings == 30 for s in summaries for m in s.meters)
    assert summaries[0].seq < last_seq <= summaries[1].seq  # numbering continued, never reused
    assert len({p.seq for p in pending}) == len(pending)


def test_a_model_for_another_interval_length_stops_start_up_naming_the_key(tmp_path, model_path):
    with pytest.raises(ConfigError, match="interval_s"):
        Agent(settings_for(tmp_path, interval_s=300, model=ModelSettings(path=str(model_path))), readers=[],
              clock=ManualClock(T0), transport=NullTransport())


def test_reconnect_delays_double_up_to_the_cap_and_are_jittered_so_a_fleet_never_reconnects_in_lockstep():
    import random

    from edge_agent.publisher import backoff_delay

    rng = random.Random(1)
    first = [backoff_delay(0, 1.0, 120.0, rng) for _ in range(200)]
    later = [backoff_delay(20, 1.0, 120.0, rng) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in first) and len(set(first)) == 200
    assert all(60.0 <= d <= 120.0 for d in later) and max(later) - min(later) > 30


def test_a_reader_with_a_bug_is_reported_and_never_stops_the_agent(tmp_path):
    class BrokenReader:
        name = "broken"

        def read(self, now):
            raise ZeroDivisionError("division by zero in a register map")

        def close(self):
            pass

    good = ReplayReader(write_csv(tmp_path / "good.csv", recording(1, T0, 300, 10)))
    clock = ManualClock(T0)
    agent = Agent(settings_for(tmp_path, poll_s=10), readers=[BrokenReader(), good], clock=clock, scorer=None,
                  transport=NullTransport())
    drive(agent, clock, T0 + 300, 10)
    status = agent.status()
    assert status["counters"]["readings"] == 30
    assert status["readers"][0]["last_error"] == "ZeroDivisionError: division by zero in a register map"


def test_messages_the_broker_accepts_while_nobody_subscribes_stay_in_the_outbox_until_someone_does(tmp_path, mosquitto):
    # After a broker restart the collector's shared subscription is gone until it reconnects;
    # MQTT 5 brokers still PUBACK (reason 0x10, no matching subscribers). Those must not count.
    from meter_data import Subscriber, wait_until

    taken = recording(2, T0, 1800, 10)
    clock = ManualClock(T0)
    agent = Agent(settings_for(tmp_path, mosquitto), readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))],
                  clock=clock, scorer=None)
    agent.transport.start()
    try:
        drive(agent, clock, T0 + 1800 + 60, 10)
        assert wait_until(lambda: agent.status()["counters"]["mqtt_undelivered"] > 0)
        assert agent.status()["queue_depth"] > 0  # nothing was deleted on the 0x10 PUBACK

        late_collector = Subscriber(mosquitto.port)
        try:
            assert late_collector.wait_for(lambda: len(late_collector.raw_readings()) >= len(taken))
            assert readings_by_meter(late_collector.raw_readings()) == readings_by_meter(taken)
        finally:
            late_collector.close()
    finally:
        agent.shutdown()


def test_the_status_file_and_agent_status_agree_on_queue_depth_and_sequence_numbers(tmp_path, mosquitto, subscriber):
    # The file was written on a timer right after the poll that queued the periodic status
    # message, so with status_s at its cadence it showed a queue of 1 for a whole run while the
    # outbox was empty. Now it follows every queue change within one poll cycle.
    import json
    import sqlite3

    from edge_agent.outbox import read_snapshot
    from meter_data import wait_until

    taken = recording(2, T0, 600, 10)
    agent = Agent(settings_for(tmp_path, mosquitto, poll_s=0.2, status_s=2.0, raw_chunk_s=0.5),
                  readers=[ReplayReader(write_csv(tmp_path / "r.csv", taken))], scorer=None)
    status_file, outbox = tmp_path / "data" / "status.json", tmp_path / "data" / "outbox.sqlite"

    def outbox_now() -> dict:
        db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
        try:
            return read_snapshot(db)
        finally:
            db.close()

    def agree(queue_depth: int | None = None) -> bool:
        try:
            written = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return False
        now = outbox_now()
        return (written.get("queue_depth") == now["queue_depth"]
                and (queue_depth is None or now["queue_depth"] == queue_depth)
                and (written.get("outbox") or {}).get("next_seq") == now["next_seq"]
                and written["outbox"].get("epoch") == now["epoch"])

    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken), timeout=60)
        assert wait_until(lambda: agree(queue_depth=0), 60), "status.json never showed the drained outbox"
    finally:
        stop.set()
        runner.join(60)
    assert agree()


def test_the_agent_reads_local_hours_and_holidays_of_its_configured_site(tmp_path):
    settings = settings_for(tmp_path, time_zone="Europe/Paris", holiday_country="FR")
    agent = Agent(settings, readers=[], clock=ManualClock(T0), scorer=None, transport=NullTransport())
    calendar = agent.scoring.calendar
    assert calendar.time_zone == "Europe/Paris"
    # 2025-07-14 10:30 UTC is 12:30 in Paris on Bastille Day: a Sunday-like holiday
    from datetime import datetime, timezone

    day, hour, _, kind = calendar.locate(datetime(2025, 7, 14, 10, 30, tzinfo=timezone.utc).timestamp())
    assert hour == 12 and kind == 2


def test_the_holidays_package_never_stays_in_the_agents_memory():
    import subprocess
    import sys

    code = ("import sys; from edge_agent.site_calendar import holiday_ordinals_in_child; "
            "days = holiday_ordinals_in_child('FR', [2025]); print(len(days), 'holidays' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    count, imported = out.stdout.split()
    assert int(count) >= 11 and imported == "False"


def test_holidays_are_kept_in_the_data_directory_so_a_restart_reads_them_back(tmp_path, caplog):
    import json

    from edge_agent.site_calendar import holiday_ordinals_cached

    first = holiday_ordinals_cached("FR", [2025], tmp_path)
    (cached,) = tmp_path.glob("holidays-FR-2025-2025-*.json")
    assert sorted(first) == json.loads(cached.read_text())["days"] and len(first) >= 11
    # The restart answers from the file: a day written there (not a French holiday) comes back.
    stored = json.loads(cached.read_text())
    stored["days"].append(date(2025, 3, 3).toordinal())
    cached.write_text(json.dumps(stored))
    assert date(2025, 3, 3).toordinal() in holiday_ordinals_cached("FR", [2025], tmp_path)
    # A damaged file is computed again, said in the log, and replaced.
    cached.write_text("{not json")
    with caplog.at_level("WARNING", logger="edge_agent.site_calendar"):
        assert holiday_ordinals_cached("FR", [2025], tmp_path) == first
    assert "unreadable" in caplog.text
    assert json.loads(cached.read_text())["days"] == sorted(first)


def test_a_data_directory_that_cannot_be_written_costs_only_the_holiday_cache(tmp_path):
    from edge_agent.site_calendar import holiday_ordinals_cached

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert len(holiday_ordinals_cached("FR", [2025], not_a_dir)) >= 11


def test_an_unknown_time_zone_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="time_zone"):
        settings_for(tmp_path, time_zone="Mars/Olympus")
