"""A simulated meter: a healthy load profile plus the events injected into it.

:class:`SimulatedMeter` answers two questions, both pure functions of time:
``day(d)`` is what the meter measured during local day ``d`` (consumption anomalies
applied, register carried forward past earlier events), and ``emitted(after, until)`` is
which readings the meter hands over between two poll times (data faults applied:
duplicates, late deliveries, clock offsets, gaps).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gridsight.wire import Reading
from firmware_sim.anomalies import ENERGY_KINDS, AnomalyEvent
from firmware_sim.profiles import DaySeries, LoadProfile
from firmware_sim.randomness import uniform

__all__ = ["SimulatedMeter", "Emission", "MAX_DELAY_STEPS"]

MAX_DELAY_STEPS = 6  # an out-of-order reading arrives at most this many steps late
_WH = 3_600_000.0


@dataclass(frozen=True)
class Emission:
    """Readings a meter hands over in one poll window, in delivery order (arrays of equal length)."""

    available_at: np.ndarray
    ts: np.ndarray
    energy_kwh: np.ndarray
    power_w: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    power_factor: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def readings(self, meter_id: str) -> list[Reading]:
        """As wire readings, rounded like a real meter's display (Wh, 0.1 W, 0.1 V, mA)."""
        return [Reading(meter_id, float(t), e, p, v, i, pf) for t, e, p, v, i, pf in zip(
            self.ts.tolist(), np.round(self.energy_kwh, 3).tolist(), np.round(self.power_w, 1).tolist(),
            np.round(self.voltage_v, 1).tolist(), np.round(self.current_a, 3).tolist(),
            np.round(self.power_factor, 3).tolist())]


class SimulatedMeter:
    """One meter's measured series and deliveries, with ground-truth ``events``."""

    def __init__(self, profile: LoadProfile, events: Sequence[AnomalyEvent] = ()) -> None:
        self.profile = profile
        self.meter_id = profile.meter_id
        self.step_s = profile.step_s
        self.events = tuple(sorted(events, key=lambda e: e.start))
        self._consumption = tuple(e for e in self.events if e.is_consumption)
        self._faults = tuple(e for e in self.events if not e.is_consumption)
        self._days: OrderedDict[int, DaySeries] = OrderedDict()
        self._energy_delta: dict[int, float] = {}

    # ---------------------------------------------------------------- measured series

    def day(self, day: int) -> DaySeries:
        """What the meter measured during local day ``day``."""
        cached = self._days.get(day)
        if cached is not None:
            self._days.move_to_end(day)
            return cached
        series = self._measure(day)
        self._days[day] = series
        if len(self._days) > 4:
            self._days.popitem(last=False)
        return series

    def _events_on(self, start: float, end: float, kinds: frozenset[str] | None = None) -> list[AnomalyEvent]:
        return [e for e in self._consumption if e.start < end and e.end > start
                and (kinds is None or e.kind in kinds)]

    def _register_shift(self, day: int) -> float:
        """How far the measured register is from the healthy one at the start of ``day``."""
        shift = 0.0
        cal = self.profile.calendar
        for e in self._consumption:
            if e.kind not in ENERGY_KINDS:
                continue
            first, last = cal.day_of(e.start), cal.day_of(e.end - 1e-3)
            for d in range(first, min(last, day - 1) + 1):
                if d not in self._energy_delta:
                    clean = self.profile.day(d)
                    measured = self._apply(clean, self._events_on(*cal.day_bounds(d)))
                    self._energy_delta[d] = float(measured[1].sum() - clean.step_kwh.sum())
        for d in {d for e in self._consumption for d in range(cal.day_of(e.start), cal.day_of(e.end - 1e-3) + 1)}:
            if d < day:
                shift += self._energy_delta.get(d, 0.0)
        return shift

    def _apply(self, clean: DaySeries, events: list[AnomalyEvent]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ts = clean.ts
        power = clean.power_w.copy()
        step_kwh = clean.step_kwh.copy()
        vscale = np.ones_like(ts)
        stuck: list[tuple[np.ndarray, AnomalyEvent]] = []
        typical = self.profile.typical_w
        for e in events:
            m = e.covers(ts)
            if not m.any():
                continue
            if e.kind == "theft":
                power[m] *= e.magnitude
            elif e.kind == "tamper_zero":
                power[m] = 0.0
            elif e.kind == "tamper_flatline":
                power[m] = e.magnitude * typical
            elif e.kind in ("spike", "night_load"):
                power[m] += e.magnitude * typical
            elif e.kind == "drift":
                frac = np.clip((ts[m] - e.start) / (e.end - e.start), 0.0, 1.0)
                power[m] *= 1.0 + e.magnitude * frac
            elif e.kind == "phase_loss":
                power[m] *= 2.0 / 3.0
                vscale[m] = 2.0 / 3.0
            elif e.kind == "voltage_sag":
                power[m] *= e.magnitude ** 1.6
                vscale[m] = e.magnitude
            elif e.kind == "stuck":
                stuck.append((m, e))
            step_kwh[m] = np.maximum(power[m], 0.0) * self.step_s / _WH
            if e.kind == "tamper_reverse":
                power[m] = -np.abs(power[m])
                step_kwh[m] = -step_kwh[m]
        voltage, current, pf = self.profile.electrics(ts, power, vscale)
        for m, e in stuck:
            for arr, value in zip((power, voltage, current, pf), self._frozen_values(e)):
                arr[m] = value
            step_kwh[m] = 0.0
        return power, step_kwh, voltage, current, pf

    def _frozen_values(self, event: AnomalyEvent) -> tuple[float, float, float, float]:
        """What a stuck meter keeps showing: its healthy values at the first step of the event."""
        t = event.start + self.step_s
        clean = self.profile.day(self.profile.calendar.day_of(t - 1e-3))
        k = int(np.clip(np.searchsorted(clean.ts, t), 0, clean.ts.size - 1))
        return (float(clean.power_w[k]), float(clean.voltage_v[k]), float(clean.current_a[k]),
                float(clean.power_factor[k]))

    def _measure(self, day: int) -> DaySeries:
        clean = self.profile.day(day)
        events = self._events_on(*self.profile.calendar.day_bounds(day))
        if not self._consumption:
            return clean
        shift = self._register_shift(day)
        if not events:
            return DaySeries(day, clean.ts, clean.power_w, clean.step_kwh, clean.voltage_v, clean.current_a,
                             clean.power_factor, clean.register_start + shift)
        power, step_kwh, voltage, current, pf = self._apply(clean, events)
        return DaySeries(day, clean.ts, power, step_kwh, voltage, current, pf, clean.register_start + shift)

    def series(self, after: float, until: float) -> tuple[np.ndarray, ...]:
        """Measured (ts, register kWh, power, voltage, current, pf) for grid times in (after, until]."""
        cal = self.profile.calendar
        if until <= after:
            empty = np.zeros(0)
            return empty, empty, empty, empty, empty, empty
        first, last = cal.day_of(after + 1e-3), cal.day_of(until)
        parts = []
        for d in range(first, last + 1):
            s = self.day(d)
            m = (s.ts > after) & (s.ts <= until)
            if not m.any():
                continue
            # a register counts in whole units (here 1 mWh): day boundaries never show float dust
            register = np.round(s.register_start + np.cumsum(s.step_kwh), 6)
            parts.append((s.ts[m], register[m], s.power_w[m], s.voltage_v[m], s.current_a[m], s.power_factor[m]))
        if not parts:
            empty = np.zeros(0)
            return empty, empty, empty, empty, empty, empty
        return tuple(np.concatenate(cols) for cols in zip(*parts))

    # ---------------------------------------------------------------- deliveries

    def emitted(self, after: float, until: float) -> Emission:
        """Readings this meter hands over to a poll at ``until`` when the previous poll was at ``after``."""
        lookback = MAX_DELAY_STEPS * self.step_s if self._faults else 0.0
        ts, reg, p, v, i, pf = self.series(after - lookback, until)
        avail = ts.copy()
        reported = ts.copy()
        keep = np.ones(ts.size, dtype=bool)
        extra: list[tuple[np.ndarray, ...]] = []
        for e in self._faults:
            m = e.covers(ts)
            if not m.any():
                continue
            if e.kind == "gap":
                keep &= ~m
            elif e.kind == "clock_jump":
                reported[m] = ts[m] + e.magnitude
            elif e.kind == "out_of_order":
                u = uniform(self.profile.key ^ 0x0D, ts[m].astype(np.int64))
                avail[m] = ts[m] + self.step_s * (1 + np.floor(u * (MAX_DELAY_STEPS - 1)))
            elif e.kind == "duplicate":
                extra.append((ts[m] + self.step_s, reported[m], reg[m], p[m], v[m], i[m], pf[m]))
        cols = [avail[keep], reported[keep], reg[keep], p[keep], v[keep], i[keep], pf[keep]]
        for ex in extra:
            cols = [np.concatenate([c, x]) for c, x in zip(cols, ex)]
        window = (cols[0] > after) & (cols[0] <= until)
        cols = [c[window] for c in cols]
        order = np.lexsort((cols[1], cols[0]))
        cols = [c[order] for c in cols]
        return Emission(*cols)
