"""The window stage: per-meter interval buckets that close on the clock and reduce to stats.

Readings enter through :meth:`IntervalWindow.accept`, which sorts them into three piles:

* **accepted**: new readings. Those inside an open interval are buffered for it (in any
  order: out-of-order readings are fine until the interval closes).
* **duplicates**: a ``(meter, ts)`` already buffered or already summarised (a replay after a
  restart, a meter re-sending). Dropped and counted. Summarised timestamps are remembered for
  the last few intervals; a reading older than that memory and behind the meter's high-water
  mark is taken as a replay.
* **late**: behind the closed watermark but never seen (a DSMR telegram delayed on the serial
  line, out-of-order delivery, a meter clock stepping back). Kept as raw data, not summarised.

After a gap in a meter's intervals the next interval's kWh comes from its own readings only:
the register step across the gap belongs to the missing intervals, as in training.

An interval ``[s, s + interval_s)`` closes once the clock passes its end plus ``grace_s``
(:meth:`IntervalWindow.due`); every meter with readings in it becomes one
:class:`edge_agent.features.IntervalStats` via ``interval_stats``, and the meter's last
register value carries over so the next interval's kWh is a true register delta.

If the clock jumps back by more than an interval (NTP correcting a gateway that booted with a
wrong time), the window restarts from the new time instead of calling every new reading late.
State is small JSON (:meth:`state`), persisted by the agent atomically with the summaries, and
the open intervals are rebuilt from the outbox's reading journal after a restart.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edge_agent.features import IntervalStats, interval_stats
from edge_agent.medians import sorted_unique
from gridsight.wire import Reading

__all__ = ["IntervalWindow", "Intake", "ClosedInterval"]


@dataclass(slots=True)
class Intake:
    accepted: list[Reading] = field(default_factory=list)
    duplicates: int = 0
    late: int = 0


@dataclass(frozen=True, slots=True)
class ClosedInterval:
    interval_start: float
    interval_s: int
    stats: tuple[IntervalStats, ...]  # one per meter with readings, sorted by meter id


def _lowest_phase(r: Reading) -> float | None:
    """A three-phase reading's lowest phase voltage (None for a single-phase or voltage-less meter)."""
    if r.voltage_l2_v is None and r.voltage_l3_v is None:
        return None
    phases = [v for v in (r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v) if v is not None]
    return min(phases) if len(phases) > 1 else None


class _MeterBuffer:
    """One meter's open readings as packed arrays: 32 bytes a reading, not a Python object each.

    ``low_phase`` (lowest phase voltage) and ``export`` (export register) exist only for meters
    that give them, so a plain meter's buffer stays at four columns.
    """

    __slots__ = ("ts", "energy", "power", "voltage", "low_phase", "export")

    def __init__(self) -> None:
        self.ts = array("d")
        self.energy = array("d")
        self.power = array("d")
        self.voltage = array("d")
        self.low_phase: array | None = None
        self.export: array | None = None

    def _column(self, name: str) -> array:
        col = getattr(self, name)
        if col is None:
            col = array("d", [math.nan]) * (len(self.ts) - 1)
            setattr(self, name, col)
        return col

    def add(self, r: Reading) -> bool:
        """Buffer ``r``; False if a reading with the same timestamp is already here."""
        ts = self.ts
        if ts and r.ts <= ts[-1] and r.ts in ts:  # only out-of-order readings pay for the scan
            return False
        ts.append(r.ts)
        self.energy.append(r.energy_kwh)  # type: ignore[arg-type]  # a channel reading without energy never reaches the window
        self.power.append(math.nan if r.power_w is None else r.power_w)
        self.voltage.append(math.nan if r.voltage_v is None else r.voltage_v)
        low = _lowest_phase(r)
        if low is not None or self.low_phase is not None:
            self._column("low_phase").append(math.nan if low is None else low)
        if r.export_kwh is not None or self.export is not None:
            self._column("export").append(math.nan if r.export_kwh is None else r.export_kwh)
        return True

    def earliest(self) -> float:
        return min(self.ts)

    def take_before(self, end: float) -> tuple[np.ndarray, ...] | None:
        """Remove and return (ts, energy, power, voltage, low_phase, export) of readings before ``end``,
        by time; low_phase and export are None for a meter without them."""
        ts = np.frombuffer(self.ts, dtype=np.float64) if self.ts else np.empty(0)
        if not ts.size:
            return None
        inside = ts < end
        if not inside.any():
            return None
        names = ("energy", "power", "voltage", "low_phase", "export")
        columns = [None if getattr(self, n) is None else np.frombuffer(getattr(self, n), dtype=np.float64)
                   for n in names]
        order = np.argsort(ts[inside], kind="stable")
        taken = (ts[inside][order].copy(), *(None if c is None else c[inside][order].copy() for c in columns))
        keep = ~inside
        rest = [ts[keep].tolist()] + [None if c is None else c[keep].tolist() for c in columns]
        del ts, columns  # release the buffer views before the arrays are replaced
        self.ts = array("d", rest[0])
        for n, c in zip(names, rest[1:]):
            setattr(self, n, None if c is None else array("d", c))
        return taken  # type: ignore[return-value]  # energy is always there; the optional columns may be None

    def __len__(self) -> int:
        return len(self.ts)


_RECENT_PER_METER = 512   # summarised timestamps remembered per meter (a few intervals at 1 s)


class IntervalWindow:
    """Buffers readings per meter until their interval closes."""

    def __init__(self, interval_s: int = 900, grace_s: float = 30.0) -> None:
        if not 1 <= interval_s <= 86_400:
            raise ValueError(f"interval_s must be 1..86400, got {interval_s}")
        self.interval_s = int(interval_s)
        self.grace_s = float(grace_s)
        self.closed_until: float | None = None  # every interval before this is summarised
        self.clock_jumps = 0
        self._open: dict[str, _MeterBuffer] = {}
        self._prev_energy: dict[str, float] = {}
        self._prev_export: dict[str, float] = {}
        self._channel_last: dict[str, float] = {}  # newest capture time of each gas/water/heat channel
        self._high_water: dict[str, float] = {}  # last ts of each meter at its latest close
        self._last_start: dict[str, float] = {}  # start of each meter's latest summarised interval
        # Timestamps already summarised, per meter (bounded): a reading behind the high-water mark
        # that is not among them was never seen (out-of-order delivery, a meter clock stepping
        # back) and is kept as late raw data instead of being dropped as a duplicate.
        # Sorted packed array per meter (8 bytes a timestamp; a set of floats costs ~130).
        self._recent: dict[str, array] = {}

    def _floor(self, ts: float) -> float:
        return math.floor(ts / self.interval_s) * self.interval_s

    def accept(self, readings: Iterable[Reading]) -> Intake:
        intake = Intake()
        for r in readings:
            if r.channel is not None:
                # gas, water and heat sub-meters travel as raw readings (the model scores electricity);
                # their capture times only move forward, so anything not newer is a replay
                if r.ts <= self._channel_last.get(r.meter_id, -math.inf):
                    intake.duplicates += 1
                    continue
                self._channel_last[r.meter_id] = r.ts
                intake.accepted.append(r)
                continue
            if self.closed_until is None:
                self.closed_until = self._floor(r.ts)
            if r.ts < self.closed_until:
                if self._seen_before(r.meter_id, r.ts):
                    intake.duplicates += 1
                    continue
                intake.late += 1
                self._remember(r.meter_id, np.array([r.ts]))  # a second copy of it is a duplicate
                self._high_water[r.meter_id] = max(r.ts, self._high_water.get(r.meter_id, -math.inf))
                intake.accepted.append(r)
                continue
            bucket = self._open.get(r.meter_id)
            if bucket is None:
                bucket = self._open[r.meter_id] = _MeterBuffer()
            if not bucket.add(r):
                intake.duplicates += 1
                continue
            intake.accepted.append(r)
        return intake

    def _seen_before(self, meter_id: str, ts: float) -> bool:
        if ts > self._high_water.get(meter_id, -math.inf):
            return False
        recent = self._recent.get(meter_id)
        if not recent or ts < recent[0]:
            return True  # older than what we remember (e.g. a replay after a restart): assume seen
        i = bisect_left(recent, ts)
        return i < len(recent) and recent[i] == ts

    def _remember(self, meter_id: str, ts: np.ndarray) -> None:
        recent = self._recent.get(meter_id)
        known = np.frombuffer(recent, dtype=np.float64) if recent else np.empty(0)
        merged = sorted_unique(np.concatenate((known, np.asarray(ts, dtype=np.float64))))[-_RECENT_PER_METER:]
        del known  # release the buffer view before the array is replaced
        self._recent[meter_id] = array("d", merged.tobytes())

    def open_count(self) -> int:
        return sum(len(b) for b in self._open.values())

    def due(self, now: float) -> list[ClosedInterval]:
        """Close and reduce every interval whose end plus grace the clock has passed."""
        if self.closed_until is None:
            return []
        if now + self.interval_s < self.closed_until:
            self._restart_after_clock_jump(now)
            return []
        closed: list[ClosedInterval] = []
        while self.closed_until + self.interval_s + self.grace_s <= now:
            start = self.closed_until
            end = start + self.interval_s
            stats = []
            for meter_id in sorted(self._open):
                bucket = self._open[meter_id]
                inside = bucket.take_before(end)
                if not len(bucket):
                    del self._open[meter_id]
                if inside is None:
                    continue
                stats.append(self._reduce(meter_id, start, *inside))
            if stats:
                closed.append(ClosedInterval(start, self.interval_s, tuple(stats)))
            self.closed_until = end
            if not self._open:
                # nothing buffered: skip straight past idle intervals (meters silent, clock leapt)
                self.closed_until = max(end, self._floor(now - self.grace_s))
            else:
                earliest = min(b.earliest() for b in self._open.values())
                self.closed_until = max(self.closed_until, self._floor(earliest))
        return closed

    def _reduce(self, meter_id: str, start: float, ts: np.ndarray, energy: np.ndarray,
                power: np.ndarray, voltage: np.ndarray, low_phase: np.ndarray | None,
                export: np.ndarray | None) -> IntervalStats:
        # Across a gap (meter silent, reader down) the register step belongs to many intervals,
        # not this one: start afresh like training does, instead of reporting one huge interval.
        last_start = self._last_start.get(meter_id)
        contiguous = last_start is None or start - last_start <= self.interval_s
        prev = self._prev_energy.get(meter_id) if contiguous else None
        has_export = export is not None and not np.isnan(export).all()
        stats = interval_stats(meter_id, start, self.interval_s, ts, energy,
                               None if np.isnan(power).all() else power, prev,
                               voltage_v=None if np.isnan(voltage).all() else voltage,
                               phase_voltage_min_v=None if low_phase is None or np.isnan(low_phase).all() else low_phase,
                               export_kwh=export if has_export else None,
                               prev_export_kwh=self._prev_export.get(meter_id) if contiguous else None)
        self._prev_energy[meter_id] = float(energy[-1])
        if has_export:
            self._prev_export[meter_id] = float(export[np.isfinite(export)][-1])  # type: ignore[index,arg-type]
        self._last_start[meter_id] = start
        self._high_water[meter_id] = max(float(ts[-1]), self._high_water.get(meter_id, -math.inf))
        self._remember(meter_id, ts)
        return stats

    def _restart_after_clock_jump(self, now: float) -> None:
        self.clock_jumps += 1
        self._open.clear()
        self._high_water.clear()
        self._recent.clear()
        self._last_start.clear()
        self.closed_until = None

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "closed_until": self.closed_until,
                "prev_energy": dict(self._prev_energy), "prev_export": dict(self._prev_export),
                "channel_last": dict(self._channel_last),
                "high_water": dict(self._high_water),
                "last_start": dict(self._last_start), "clock_jumps": self.clock_jumps}

    def load_state(self, state: dict[str, Any], open_readings: Iterable[Reading] = ()) -> int:
        """Restore persisted state and rebuild open intervals from journalled readings.

        Returns the number of readings restored into open intervals.
        """
        if state:
            if state.get("interval_s") != self.interval_s:
                raise ValueError(f"window state is for {state.get('interval_s')} s intervals, "
                                 f"this agent uses {self.interval_s} s")
            self.closed_until = state.get("closed_until")
            self._prev_energy = {str(k): float(v) for k, v in state.get("prev_energy", {}).items()}
            self._prev_export = {str(k): float(v) for k, v in state.get("prev_export", {}).items()}
            self._channel_last = {str(k): float(v) for k, v in state.get("channel_last", {}).items()}
            self._high_water = {str(k): float(v) for k, v in state.get("high_water", {}).items()}
            self._last_start = {str(k): float(v) for k, v in state.get("last_start", {}).items()}
            self.clock_jumps = int(state.get("clock_jumps", 0))
        restored = 0
        for r in open_readings:
            if r.channel is not None:  # journalled channel readings were sent raw: remember them only
                self._channel_last[r.meter_id] = max(r.ts, self._channel_last.get(r.meter_id, -math.inf))
                continue
            if self.closed_until is None:
                self.closed_until = self._floor(r.ts)
            if r.ts < self.closed_until:
                continue  # journalled late reading: already raw, never summarised
            bucket = self._open.get(r.meter_id)
            if bucket is None:
                bucket = self._open[r.meter_id] = _MeterBuffer()
            if bucket.add(r):
                restored += 1
        return restored
