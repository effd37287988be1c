"""The window stage on its own: what is summarised, what is kept late, what is a duplicate."""

from __future__ import annotations

import pytest

from edge_agent.window import IntervalWindow
from gridsight.wire import Reading

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, an interval boundary


def minute_readings(meter: str, start: float, minutes: int, kwh_per_min: float, register: float = 100.0):
    return [Reading(meter, start + 60 * i, register + kwh_per_min * (i + 1), 1000.0) for i in range(minutes)]


def test_a_delayed_reading_never_seen_is_kept_late_and_a_replayed_one_is_a_duplicate():
    w = IntervalWindow(900, grace_s=30)
    first = minute_readings("m-1", T0, 15, 0.01)
    held_back = first.pop(7)                              # delivered out of order, after the close
    w.accept(first)
    assert [c.interval_start for c in w.due(T0 + 900 + 31)] == [T0]
    late = w.accept([held_back])
    assert (late.late, late.duplicates, late.accepted) == (1, 0, [held_back])
    again = w.accept([held_back, first[3]])               # both already taken once
    assert (again.late, again.duplicates, again.accepted) == (0, 2, [])


def test_a_replay_after_a_restart_is_recognised_as_duplicate():
    w = IntervalWindow(900, grace_s=30)
    day = minute_readings("m-1", T0, 15, 0.01)
    w.accept(day)
    w.due(T0 + 931)
    restarted = IntervalWindow(900, grace_s=30)
    restarted.load_state(w.state())                       # memory of timestamps is not persisted
    replay = restarted.accept(day)
    assert replay.duplicates == 15 and not replay.accepted


@pytest.mark.parametrize("silent_intervals", [0, 3])
def test_the_interval_after_a_gap_counts_only_its_own_energy(silent_intervals):
    w = IntervalWindow(900, grace_s=30)
    w.accept(minute_readings("m-1", T0, 15, 0.01, register=100.0))
    w.due(T0 + 931)
    resume = T0 + 900 * (1 + silent_intervals)
    # the register kept counting while the meter was silent: 0.5 kWh per silent interval
    w.accept(minute_readings("m-1", resume, 15, 0.01, register=100.15 + 0.5 * silent_intervals))
    (closed,) = w.due(resume + 931)
    kwh = closed.stats[0].kwh
    if silent_intervals:
        assert kwh == pytest.approx(0.14)   # its own 15 readings: 14 steps of 0.01
    else:
        assert kwh == pytest.approx(0.15)   # contiguous: register delta from the previous interval


def test_closed_intervals_carry_the_lowest_and_mean_voltage():
    w = IntervalWindow(900, grace_s=30)
    readings = [Reading("m-1", T0 + 60 * i, 100.0 + 0.01 * i, 1000.0, 230.0 if i < 10 else 172.0)
                for i in range(15)]
    w.accept(readings + [Reading("m-2", T0 + 30, 5.0, None)])
    (closed,) = w.due(T0 + 931)
    sagging, silent = closed.stats
    assert sagging.voltage_v_min == 172.0 and sagging.voltage_v_mean == pytest.approx((10 * 230.0 + 5 * 172.0) / 15)
    assert silent.voltage_v_min is None and silent.voltage_v_mean is None


def test_a_lost_phase_on_a_three_phase_meter_sets_the_interval_minimum_voltage():
    w = IntervalWindow(interval_s=60, grace_s=0)
    base = 1_767_225_600.0
    w.accept([Reading("m", base + i, 1.0 + i * 0.001, 500.0, 230.0, voltage_l1_v=230.0,
                      voltage_l2_v=2.0 if i == 30 else 231.0, voltage_l3_v=229.0) for i in range(60)])
    (closed,) = w.due(base + 61)
    assert closed.stats[0].voltage_v_min == 2.0 and closed.stats[0].voltage_v_mean == 230.0


def test_exported_energy_of_an_interval_is_the_export_register_delta_across_intervals():
    w = IntervalWindow(interval_s=60, grace_s=0)
    base = 1_767_225_600.0
    w.accept([Reading("pv", base + i, 10.0, -1500.0, export_kwh=5.0 + i * 0.01) for i in range(60)])
    w.accept([Reading("pv", base + 60 + i, 10.0, -1500.0, export_kwh=5.6 + i * 0.01) for i in range(60)])
    first, second = w.due(base + 121)
    assert first.stats[0].export_kwh == pytest.approx(0.59)
    assert second.stats[0].export_kwh == pytest.approx(0.60)  # 5.59 -> 6.19 across the boundary


def test_gas_channel_readings_pass_as_raw_data_and_are_never_summarised():
    w = IntervalWindow(interval_s=60, grace_s=0)
    base = 1_767_225_600.0
    intake = w.accept([Reading("m-gas", base, None, channel="gas", volume_m3=12.5), Reading("m", base, 1.0)])
    assert len(intake.accepted) == 2
    (closed,) = w.due(base + 61)
    assert [s.meter_id for s in closed.stats] == ["m"]
