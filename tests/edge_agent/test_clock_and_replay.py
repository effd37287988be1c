"""Clocks drive time; the replay reader releases recorded readings as that time passes."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edge_agent.clock import ManualClock, SimulatedClock, SystemClock, clock_health
from edge_agent.readers import ReaderError, build_reader
from edge_agent.readers.replay import ReplayReader
from gridsight.settings import ConfigError

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_simulated_clock_runs_speed_times_faster_than_real_time():
    clock = SimulatedClock(T0, speed=1000)
    start = time.monotonic()
    time.sleep(0.05)
    elapsed_real = time.monotonic() - start
    assert clock.now() - T0 >= 1000 * 0.05
    assert clock.now() - T0 <= 1000 * (elapsed_real + 1.0)


def test_manual_clock_moves_only_when_told_and_wait_returns_on_a_set_event():
    clock = ManualClock(T0)
    assert clock.now() == T0
    clock.advance(15)
    assert clock.now() == T0 + 15
    stop = threading.Event()
    assert clock.wait(stop, 5) is False and clock.now() == T0 + 20
    stop.set()
    assert clock.wait(stop, 5) is True


def test_system_clock_reports_unix_time_and_kernel_clock_health_is_readable():
    assert abs(SystemClock().now() - time.time()) < 5
    health = clock_health()
    assert health.synced in (True, False, None)


def _write_csv(path, rows, header="meter_id,ts,energy_kwh,power_w"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_replay_releases_readings_only_once_the_clock_reaches_them(tmp_path):
    f = _write_csv(tmp_path / "r.csv", [f"m1,{T0 + i * 10},{1.0 + i * 0.01},{400 + i}" for i in range(6)])
    reader = ReplayReader(f)
    assert [r.ts for r in reader.read(T0 + 15)] == [T0, T0 + 10]
    assert reader.read(T0 + 15) == []
    rest = reader.read(T0 + 1000)
    assert [r.ts for r in rest] == [T0 + 20, T0 + 30, T0 + 40, T0 + 50]
    assert rest[-1].energy_kwh == pytest.approx(1.05) and rest[-1].power_w == 405
    assert reader.read(T0 + 2000) == [] and reader.exhausted


def test_replay_reads_ndjson_with_iso_timestamps_and_aligns_to_the_clock(tmp_path):
    f = tmp_path / "r.ndjson"
    f.write_text("\n".join(json.dumps({"meter_id": "m2", "ts": f"2020-05-01T00:00:{s:02d}Z",
                                       "energy_kwh": 5 + s / 100}) for s in (0, 30)) + "\n")
    reader = build_reader({"type": "replay", "path": str(f), "align_to_clock": True})
    first = reader.read(T0)
    assert [(r.meter_id, r.ts) for r in first] == [("m2", T0)]
    assert [r.ts for r in reader.read(T0 + 30)] == [T0 + 30]


def test_replay_reports_a_garbage_line_by_number_and_loses_no_good_reading(tmp_path):
    f = _write_csv(tmp_path / "bad.csv", [f"m1,{T0},1.0,1", "m1,not-a-time,1.1,1", f"m1,{T0 + 20},nan,1",
                                          f"m1,{T0 + 30},1.3,1"])
    reader = ReplayReader(f)
    got, errors = [], []
    for _ in range(5):
        try:
            got += reader.read(T0 + 100)
        except ReaderError as exc:
            errors.append(str(exc))
    assert [r.ts for r in got] == [T0, T0 + 30]
    assert len(errors) == 2 and "bad.csv:3" in errors[0] and "bad.csv:4" in errors[1]


def test_reader_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"readers\[2\]\.type") as exc:
        build_reader({"type": "telepathy"}, "readers[2]")
    assert "modbus_tcp" in str(exc.value)
    with pytest.raises(ConfigError, match=r"readers\[0\]\.path: missing"):
        build_reader({"type": "replay"})
    with pytest.raises(ConfigError, match=r"readers\[0\]\.path"):
        build_reader({"type": "replay", "path": "/nonexistent/file.csv"})
    with pytest.raises(ConfigError, match=r"readers\[0\]\.speling: unknown key"):
        build_reader({"type": "replay", "path": "/dev/null", "speling": 1})
