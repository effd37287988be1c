"""The window keeps a reading's values in 4 bytes where that loses nothing, and never changes one."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from edge_agent.features import interval_stats
from edge_agent.window import IntervalWindow, _Column, _MeterBuffer
from gridsight.wire import Reading

T0 = 1_767_225_600.0


def _same(a: np.ndarray, b: list[float]) -> bool:
    """Bit for bit (so -0.0 is not 0.0 and NaN is NaN)."""
    return np.array_equal(np.asarray(a, dtype=np.float64).view(np.int64),
                          np.asarray(b, dtype=np.float64).view(np.int64))


@pytest.mark.parametrize("values", [
    [T0 + s for s in range(1000)],  # whole seconds
    [T0 + s * 0.25 for s in range(1000)],  # quarter seconds
    [T0 + s + 0.123456 for s in range(1000)],  # a clock with microseconds, one reading a second
    [round(12_345.678 + s * 0.0137, 3) for s in range(1000)],  # a DSMR register, 3 decimals
    [round(random.Random(1).uniform(0, 9_000), 1) for _ in range(1000)],  # power, wandering
    [round(random.Random(2).uniform(225, 235), 1) for _ in range(1000)],  # voltage
    [random.Random(3).random() * 1000 for _ in range(1000)],  # full precision: kept as doubles
    [math.nan] * 40 + [230.1, math.nan, 229.9] * 30,  # no voltage for a while
    [0.0, -0.0, 1.5, -2.25, math.inf, 1e300, -1e-300, 5.0] * 20,  # the odd ones
])
def test_a_column_gives_back_exactly_what_was_appended(values):
    col = _Column()
    for v in values:
        col.append(v)
    assert _same(col.values(), values)
    assert len(col) == len(values)
    col.flush()
    assert _same(col.values(), values) and len(col) == len(values)
    for v in values[:50]:
        if v == v:
            assert v in col
    assert (T0 - 12.5) not in col


def test_a_meter_with_a_few_decimals_takes_four_bytes_a_value_per_column():
    buffer = _MeterBuffer()
    for s in range(900):
        buffer.add(Reading("m", T0 + s, round(1000 + s * 0.0011, 4), round(400 + 30 * math.sin(s), 1),
                           round(230 + math.cos(s), 1)))
    for col in (buffer.ts, buffer.energy, buffer.power, buffer.voltage):
        col.flush()
        assert col.plain is None and col.codes.itemsize == 4 and len(col) == 900


def test_interval_stats_are_those_of_the_raw_readings():
    """Whatever the values (out of order, missing, phases and export appearing mid-interval),
    the closed interval reduces exactly the readings that came in."""
    rng = random.Random(7)
    readings = []
    for s in rng.sample(range(900), 900):  # any order
        power = None if s % 97 == 0 else (rng.random() * 5000 if s % 5 else round(rng.uniform(0, 5000), 1))
        phases = (round(rng.uniform(200, 240), 1), round(rng.uniform(200, 240), 1)) if s > 400 else (None, None)
        readings.append(Reading("m", T0 + s + (0.5 if s % 7 == 0 else 0.0), 5000.0 + s * 0.001 + rng.random() * 1e-7,
                                power, round(rng.uniform(225, 235), 2), voltage_l2_v=phases[0], voltage_l3_v=phases[1],
                                export_kwh=(10.0 + s * 0.002) if s > 600 else None))
    window = IntervalWindow(900, 0.0)
    intake = window.accept(readings)
    assert len(intake.accepted) == 900
    assert window.accept(readings[:10]).duplicates == 10  # still recognised while buffered
    (closed,) = window.due(T0 + 901)
    got = closed.stats[0]
    ordered = sorted(readings, key=lambda r: r.ts)
    nan = math.nan
    low = [min(v for v in (r.voltage_l2_v, r.voltage_l3_v, r.voltage_v) if v is not None)
           if r.voltage_l2_v is not None else nan for r in ordered]
    want = interval_stats("m", T0, 900, np.array([r.ts for r in ordered]), np.array([r.energy_kwh for r in ordered]),
                          np.array([nan if r.power_w is None else r.power_w for r in ordered]), None,
                          voltage_v=np.array([r.voltage_v for r in ordered]), phase_voltage_min_v=np.array(low),
                          export_kwh=np.array([nan if r.export_kwh is None else r.export_kwh for r in ordered]))
    assert got == want
