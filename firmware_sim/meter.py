"""A simulated meter: a healthy load profile plus the events injected into it.

:class:`SimulatedMeter` answers two questions, both pure functions of time:
``day(d)`` is what the meter measured during local day ``d`` (consumption anomalies
applied, register carried forward past earlier events), and ``emitted(after, until)`` is
which readings the meter hands over between two poll times (data faults applied:
duplicates, late deliveries, clock offsets, gaps).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from gridsight.wire import Reading
from firmware_sim.anomalies import ENERGY_KINDS, AnomalyEvent
from firmware_sim.profiles import DaySeries, LoadProfile
from firmware_sim.randomness import uniform

__all__ = ["SimulatedMeter", "Emission", "MAX_DELAY_STEPS"]

MAX_DELAY_STEPS = 6  # an out-of-order reading arrives at most this many steps late
_WH = 3_600_000.0
_GAS_CAPTURE_S = 300        # a DSMR 5 gas value is captured every five minutes
_PHASE_SHARE = (0.36, 0.33, 0.31)      # a three-phase load is never perfectly balanced
_PHASE_OFFSET = (0.0, 0.0015, -0.0015)  # nor are the phase voltages
_LOST_PHASE_V = 1.5                     # what a lost phase still shows (coupling through the load)


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
    # layout-2 values (export, tariff registers, per-phase) and gas readings, filled by
    # ``SimulatedMeter.emitted(..., channels=True)``
    extra: dict[str, np.ndarray] | None = None
    gas: tuple[np.ndarray, np.ndarray] | None = None  # (capture ts, m3)

    def __len__(self) -> int:
        return int(self.ts.size)

    def readings(self, meter_id: str) -> list[Reading]:
        """As wire readings, rounded like a real meter's display (Wh, 0.1 W, 0.1 V, mA)."""
        base = [Reading(meter_id, float(t), e, p, v, i, pf) for t, e, p, v, i, pf in zip(
            self.ts.tolist(), np.round(self.energy_kwh, 3).tolist(), np.round(self.power_w, 1).tolist(),
            np.round(self.voltage_v, 1).tolist(), np.round(self.current_a, 3).tolist(),
            np.round(self.power_factor, 3).tolist())]
        if self.extra:
            digits = {"tariff": 0, "voltage": 1, "current": 3, "power": 1}
            cols = {k: (np.round(v, next((d for p, d in digits.items() if k.startswith(p)), 3)).tolist()
                        if k != "tariff" else v.astype(int).tolist()) for k, v in self.extra.items()}
            base = [replace(r, **{k: c[n] for k, c in cols.items()}) for n, r in enumerate(base)]
        if self.gas is not None:
            base += [Reading(f"{meter_id}-gas", float(t), None, channel="gas", volume_m3=m3)
                     for t, m3 in zip(self.gas[0].tolist(), np.round(self.gas[1], 3).tolist())]
        return base


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
                             clean.power_factor, clean.register_start + shift, clean.export_step_kwh)
        power, step_kwh, voltage, current, pf = self._apply(clean, events)
        return DaySeries(day, clean.ts, power, step_kwh, voltage, current, pf, clean.register_start + shift,
                         clean.export_step_kwh)

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

    def emitted(self, after: float, until: float, *, channels: bool = False) -> Emission:
        """Readings this meter hands over to a poll at ``until`` when the previous poll was at ``after``.

        With ``channels`` the readings also carry what a smart meter of this class shows beyond the
        import register: export (PV homes), tariff registers and the active tariff (single-phase
        homes), per-phase voltage, current and power (three-phase meters, one phase near 0 V during
        a phase loss), and its gas meter's five-minute values (gas-heated homes).
        """
        lookback = MAX_DELAY_STEPS * self.step_s if self._faults else 0.0
        ts, reg, p, v, i, pf = self.series(after - lookback, until)
        if channels:
            extra = self.channel_values(ts, reg, p, v, i, pf)
            names = sorted(extra)
        else:
            extra, names = {}, []
        avail = ts.copy()
        reported = ts.copy()
        keep = np.ones(ts.size, dtype=bool)
        dup: list[tuple[np.ndarray, ...]] = []
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
                dup.append((ts[m] + self.step_s, reported[m], reg[m], p[m], v[m], i[m], pf[m],
                            *(extra[k][m] for k in names)))
        cols = [avail[keep], reported[keep], reg[keep], p[keep], v[keep], i[keep], pf[keep],
                *(extra[k][keep] for k in names)]
        for ex in dup:
            cols = [np.concatenate([c, x]) for c, x in zip(cols, ex)]
        window = (cols[0] > after) & (cols[0] <= until)
        cols = [c[window] for c in cols]
        order = np.lexsort((cols[1], cols[0]))
        cols = [c[order] for c in cols]
        gas = self.gas_values(after, until) if channels and self.profile.has_gas else None
        return Emission(*cols[:7], extra=dict(zip(names, cols[7:])) if names else None, gas=gas)

    # ---------------------------------------------------------------- meter channels

    def channel_values(self, ts: np.ndarray, reg: np.ndarray, power: np.ndarray, voltage: np.ndarray,
                       current: np.ndarray, pf: np.ndarray) -> dict[str, np.ndarray]:
        """Export, tariff and per-phase values at grid times ``ts`` (see :meth:`emitted`)."""
        prof = self.profile
        out: dict[str, np.ndarray] = {}
        if not ts.size:
            return out
        cal = prof.calendar
        days = np.array([cal.day_of(t - 1e-3) for t in ts.tolist()], dtype=np.int64)
        if prof.pv_kwp:
            export = np.zeros(ts.size)
            for d in np.unique(days).tolist():
                m = days == d
                s = self.day(d)
                steps = s.export_step_kwh if s.export_step_kwh is not None else np.zeros(s.ts.size)
                k = np.clip(np.searchsorted(s.ts, ts[m]), 0, s.ts.size - 1)
                export[m] = prof.running_total("export", d) + np.cumsum(steps)[k]
            out["export_kwh"] = np.round(export, 6)
        if prof.dual_tariff:
            t1, tariff = np.zeros(ts.size), np.zeros(ts.size)
            for d in np.unique(days).tolist():
                m = days == d
                low = bool(cal.weekdays([d])[0] >= 5 or cal.holidays([d])[0])
                start = prof.running_total("low_tariff", d)
                # registers only grow: tariff 1 counts this day's import on low days, else stands still
                t1[m] = start + (reg[m] - self.day(d).register_start if low else 0.0)
                tariff[m] = 1 if low else 2
            t1 = np.minimum(np.maximum(t1, 0.0), reg)
            out["import_t1_kwh"], out["import_t2_kwh"], out["tariff"] = np.round(t1, 6), np.round(reg - t1, 6), tariff
        if prof.params.phases == 3:
            lost = self._lost_phase(ts)
            for k in range(3):
                phase_v = voltage * (1.0 + _PHASE_OFFSET[k])
                share = np.full(ts.size, _PHASE_SHARE[k])
                down = lost == k
                up = (lost >= 0) & ~down
                # during a phase loss the meter's mean voltage is 2/3 of normal: the live phases are normal
                phase_v = np.where(up, voltage * 1.5 * (1.0 + _PHASE_OFFSET[k]), phase_v)
                phase_v = np.where(down, _LOST_PHASE_V, phase_v)
                share = np.where(up, 0.5, np.where(down, 0.0, share))
                watts = power * share
                with np.errstate(divide="ignore", invalid="ignore"):
                    amps = np.where(phase_v > 10.0, np.abs(watts) / (phase_v * np.maximum(pf, 0.05)), 0.0)
                out[f"voltage_l{k + 1}_v"], out[f"current_l{k + 1}_a"], out[f"power_l{k + 1}_w"] = phase_v, amps, watts
        return out

    def _lost_phase(self, ts: np.ndarray) -> np.ndarray:
        """Index (0..2) of the phase lost at each time, -1 when all are live; which phase is fixed per event."""
        lost = np.full(ts.size, -1)
        for e in self._consumption:
            if e.kind == "phase_loss":
                lost = np.where(e.covers(ts), int(e.start // 900) % 3, lost)
        return lost

    def gas_values(self, after: float, until: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(capture time, m3) of the gas meter's five-minute values in (after, until]."""
        first = np.floor(after / _GAS_CAPTURE_S) * _GAS_CAPTURE_S + _GAS_CAPTURE_S
        captures = np.arange(first, until + 1e-6, _GAS_CAPTURE_S)
        if not captures.size:
            return None
        prof, cal = self.profile, self.profile.calendar
        m3 = np.zeros(captures.size)
        for n, t in enumerate(captures.tolist()):
            d = cal.day_of(t - 1e-3)
            start, end = cal.day_bounds(d)
            m3[n] = prof.running_total("gas", d) + float(prof.daily_gas_m3(np.array([d]))[0]) * (t - start) / (end - start)
        return captures, m3
