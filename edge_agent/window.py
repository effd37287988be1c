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


_NAN_CODE = -(1 << 31)
_CODE_LIMIT = (1 << 31) - 1
_POW10 = tuple(10.0**k for k in range(7))
_BATCH = 64


class _Column:
    """A column of floats in 4 bytes a value where that loses nothing, else in 8.

    Meters report registers, power, voltage and time with a few decimals (a DSMR telegram's
    ``001234.567*kWh``, a Modbus register scaled by 0.1, whole-second timestamps), so each value
    is kept as an int32 ``q`` with ``value == base + q / 10**digits`` (``base``: the column's
    first value, or 0 for values that wander far from it; ``digits`` 0-6, raised for the whole
    column when a value needs more). Every value is checked: a column where that would not give
    back the very same float becomes plain doubles, so :meth:`values` is always exactly what was
    appended. Values are coded in batches of :data:`_BATCH` with numpy (a few dozen staged as
    doubles), so appending costs about what appending to an ``array("d")`` does.
    """

    __slots__ = ("codes", "base", "digits", "plain", "staged")

    def __init__(self) -> None:
        self.codes = array("i")
        self.base: float | None = None
        self.digits = 0
        self.plain: array | None = None  # doubles, once a value could not be coded
        self.staged = array("d")  # appended, not coded yet

    @classmethod
    def of_nan(cls, coded: int, staged: int) -> "_Column":
        """A column holding no value (NaN) for ``coded`` + ``staged`` readings, staged as another's are."""
        col = cls()
        col.codes = array("i", [_NAN_CODE]) * coded
        col.staged = array("d", [math.nan]) * staged
        return col

    def coded_len(self) -> int:
        return len(self.plain) if self.plain is not None else len(self.codes)

    def __len__(self) -> int:
        return (len(self.plain) if self.plain is not None else len(self.codes)) + len(self.staged)

    def append(self, v: float) -> None:
        self.staged.append(v)
        if len(self.staged) >= _BATCH:
            self.flush()

    def extend(self, values: Iterable[float]) -> None:
        self.staged.extend(values)
        self.flush()

    def flush(self) -> None:
        staged, self.staged = self.staged, array("d")
        if not staged:
            return
        if self.plain is not None:
            self.plain.extend(staged)
            return
        v = np.frombuffer(staged, dtype=np.float64)
        lo, hi = float(v.min()), float(v.max())  # NaN if there is a NaN
        if lo != lo and np.isnan(v).all():  # no value at all (a meter without voltage)
            self.codes.extend(array("i", [_NAN_CODE]) * len(v))
            return
        if self.base is None and math.isfinite(lo) and math.isfinite(hi):
            self.base = float(v[0])
        base = self.base
        scale = _POW10[self.digits]
        # no NaN and every code in range: code the batch at once, kept only if every value comes
        # back bit for bit (which also sends -0.0 down the one-by-one path)
        if (
            base is not None
            and lo == lo
            and hi == hi
            and -_CODE_LIMIT <= (lo - base) * scale
            and (hi - base) * scale <= _CODE_LIMIT
        ):
            q = np.rint((v - base) * scale).astype(np.int32)
            if ((q / scale + base).view(np.int64) == v.view(np.int64)).all():
                self.codes.frombytes(q.tobytes())
                return
        del v  # release the view of ``staged``
        for value in staged:  # one by one: NaN, more decimals, another base, or doubles
            self._append_one(value)

    def _append_one(self, v: float) -> None:
        if self.plain is None:
            if self.base is None and v == v and math.isfinite(v):
                self.base = v
            q = self._code(v, rescale=True)
            if q is not None:
                self.codes.append(q)
                return
            if self._recode(v):
                return
            self.plain = array("d", self._coded().tobytes())
            self.codes = array("i")
        self.plain.append(v)

    def _code(self, v: float, rescale: bool) -> int | None:
        """The code of ``v`` (raising ``digits`` if allowed and needed), or None if it has none."""
        if v != v:
            return _NAN_CODE
        base = self.base
        if base is None or not math.isfinite(v) or (v == 0.0 and math.copysign(1.0, v) < 0.0):
            return None  # (-0.0 would come back as 0.0)
        for digits in range(self.digits, len(_POW10) if rescale else self.digits + 1):
            scale = _POW10[digits]
            x = (v - base) * scale
            if not -_CODE_LIMIT <= x <= _CODE_LIMIT:
                return None  # more decimals would only make it larger
            q = round(x)
            if base + q / scale == v:
                if digits != self.digits and not self._rescale(digits):
                    return None
                return q
        return None

    def _rescale(self, digits: int) -> bool:
        """Code every value with more decimals (exact: the same ratio, rounded the same way)."""
        factor = 10 ** (digits - self.digits)
        codes = np.frombuffer(self.codes, dtype=np.int32).astype(np.int64) if self.codes else np.empty(0, np.int64)
        nan = codes == _NAN_CODE
        scaled = codes * factor
        if np.abs(scaled[~nan]).max(initial=0) > _CODE_LIMIT:
            return False
        scaled[nan] = _NAN_CODE
        self.codes = array("i", scaled.astype(np.int32).tobytes())
        self.digits = digits
        return True

    def _recode(self, v: float) -> bool:
        """Code every value and ``v`` afresh around 0: a column whose values wander far from the
        first one (power, voltage) needs ``q / 10**digits`` itself to be the value."""
        if self.base == 0.0:
            return False
        trial = _Column()
        trial.base = 0.0
        for x in (*self._coded().tolist(), v):
            q = trial._code(x, rescale=True)
            if q is None:
                return False
            trial.codes.append(q)
        self.codes, self.base, self.digits = trial.codes, 0.0, trial.digits
        return True

    def __contains__(self, v: float) -> bool:
        if v in self.staged:
            return True
        if self.plain is not None:
            return v in self.plain
        q = self._code(v, rescale=False)
        return q is not None and q != _NAN_CODE and q in self.codes

    def _coded(self) -> np.ndarray:
        if not self.codes:
            return np.empty(0)
        q = np.frombuffer(self.codes, dtype=np.int32)
        out = q / _POW10[self.digits] + (self.base if self.base is not None else 0.0)
        out[q == _NAN_CODE] = np.nan
        return out

    def values(self) -> np.ndarray:
        """The column as float64 (a new array): exactly the appended values."""
        head = np.array(self.plain, dtype=np.float64) if self.plain is not None else self._coded()
        if not self.staged:
            return head
        return np.concatenate((head, np.frombuffer(self.staged, dtype=np.float64)))


def _flush_together(columns: list[_Column]) -> None:
    """Code the staged values of a meter's columns with one set of numpy operations for all of
    them (as :meth:`_Column.flush` would one by one); columns it cannot code at once go alone."""
    n = len(columns[0].staged)
    batch = [c for c in columns if c.plain is None and len(c.staged) == n and n]
    alone = [c for c in columns if c not in batch]
    if batch:
        v = np.frombuffer(b"".join([c.staged.tobytes() for c in batch]), dtype=np.float64).reshape(len(batch), n)
        b = np.array([c.base if c.base is not None else c.staged[0] for c in batch])
        s = np.array([_POW10[c.digits] for c in batch])
        lo, hi = v.min(axis=1), v.max(axis=1)  # NaN if a NaN is there
        # no NaN, inf or huge value (so no floating-point warning), every code within int32
        ok = (np.abs(lo) < 1e15) & (np.abs(hi) < 1e15) & (np.abs(b) < 1e15)
        lo, hi, b = np.where(ok, lo, 0.0), np.where(ok, hi, 0.0), np.where(ok, b, 0.0)
        ok &= ((lo - b) * s >= -_CODE_LIMIT) & ((hi - b) * s <= _CODE_LIMIT)
        rows = np.flatnonzero(ok)
        exact = np.zeros(len(batch), dtype=bool)
        if rows.size:
            vb, bb, sb = v[rows], b[rows, None], s[rows, None]
            q = np.rint((vb - bb) * sb).astype(np.int32)
            # kept only if every value comes back bit for bit (which sends -0.0 down the slow path)
            exact[rows] = ((q / sb + bb).view(np.int64) == vb.view(np.int64)).all(axis=1)
        for i, col in enumerate(batch):
            if exact[i]:
                col.base = float(b[i])
                col.codes.frombytes(q[int(np.searchsorted(rows, i))].tobytes())
                col.staged = array("d")
            else:
                alone.append(col)
    for col in alone:
        col.flush()


class _MeterBuffer:
    """One meter's open readings as packed columns: 16 bytes a reading where the values have a
    few decimals (:class:`_Column`), 32 otherwise; never a Python object each.

    ``low_phase`` (lowest phase voltage) and ``export`` (export register) exist only for meters
    that give them, so a plain meter's buffer stays at four columns.
    """

    __slots__ = ("ts", "energy", "power", "voltage", "low_phase", "export", "max_ts")

    def __init__(self) -> None:
        self.max_ts = -math.inf  # the newest timestamp held
        self.ts = _Column()
        self.energy = _Column()
        self.power = _Column()
        self.voltage = _Column()
        self.low_phase: _Column | None = None
        self.export: _Column | None = None

    def _column(self, name: str) -> _Column:
        col = getattr(self, name)
        if col is None:
            col = _Column.of_nan(self.ts.coded_len(), len(self.ts.staged) - 1)
            setattr(self, name, col)
        return col

    def add(self, r: Reading) -> bool:
        """Buffer ``r``; False if a reading with the same timestamp is already here."""
        ts = self.ts
        if r.ts <= self.max_ts and r.ts in ts:  # only out-of-order readings pay for the scan
            return False
        if r.ts > self.max_ts:
            self.max_ts = r.ts
        # straight into the columns' staging arrays; they are coded together every _BATCH readings
        ts.staged.append(r.ts)
        self.energy.staged.append(r.energy_kwh)  # type: ignore[arg-type]  # a channel reading without energy never reaches the window
        self.power.staged.append(math.nan if r.power_w is None else r.power_w)
        self.voltage.staged.append(math.nan if r.voltage_v is None else r.voltage_v)
        low = _lowest_phase(r)
        if low is not None or self.low_phase is not None:
            self._column("low_phase").staged.append(math.nan if low is None else low)
        if r.export_kwh is not None or self.export is not None:
            self._column("export").staged.append(math.nan if r.export_kwh is None else r.export_kwh)
        if len(ts.staged) >= _BATCH:
            _flush_together(
                [c for c in (ts, self.energy, self.power, self.voltage, self.low_phase, self.export) if c is not None]
            )
        return True

    def earliest(self) -> float:
        return float(self.ts.values().min())

    def take_before(self, end: float) -> tuple[np.ndarray, ...] | None:
        """Remove and return (ts, energy, power, voltage, low_phase, export) of readings before ``end``,
        by time; low_phase and export are None for a meter without them."""
        if not len(self.ts):
            return None
        ts = self.ts.values()
        inside = ts < end
        if not inside.any():
            return None
        names = ("energy", "power", "voltage", "low_phase", "export")
        columns = [None if getattr(self, n) is None else getattr(self, n).values() for n in names]
        order = np.argsort(ts[inside], kind="stable")
        taken = (ts[inside][order], *(None if c is None else c[inside][order] for c in columns))
        keep = ~inside
        for n, c in zip(("ts", *names), (ts, *columns)):
            if c is not None:
                rest = _Column()
                rest.extend(c[keep].tolist())
                setattr(self, n, rest)
        self.max_ts = float(ts[keep].max()) if keep.any() else -math.inf
        return taken  # type: ignore[return-value]  # energy is always there; the optional columns may be None

    def __len__(self) -> int:
        return len(self.ts)


_RECENT_PER_METER = 512  # summarised timestamps remembered per meter (a few intervals at 1 s)


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

    def _reduce(
        self,
        meter_id: str,
        start: float,
        ts: np.ndarray,
        energy: np.ndarray,
        power: np.ndarray,
        voltage: np.ndarray,
        low_phase: np.ndarray | None,
        export: np.ndarray | None,
    ) -> IntervalStats:
        # Across a gap (meter silent, reader down) the register step belongs to many intervals,
        # not this one: start afresh like training does, instead of reporting one huge interval.
        last_start = self._last_start.get(meter_id)
        contiguous = last_start is None or start - last_start <= self.interval_s
        prev = self._prev_energy.get(meter_id) if contiguous else None
        has_export = export is not None and not np.isnan(export).all()
        stats = interval_stats(
            meter_id,
            start,
            self.interval_s,
            ts,
            energy,
            None if np.isnan(power).all() else power,
            prev,
            voltage_v=None if np.isnan(voltage).all() else voltage,
            phase_voltage_min_v=None if low_phase is None or np.isnan(low_phase).all() else low_phase,
            export_kwh=export if has_export else None,
            prev_export_kwh=self._prev_export.get(meter_id) if contiguous else None,
        )
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
        return {
            "interval_s": self.interval_s,
            "closed_until": self.closed_until,
            "prev_energy": dict(self._prev_energy),
            "prev_export": dict(self._prev_export),
            "channel_last": dict(self._channel_last),
            "high_water": dict(self._high_water),
            "last_start": dict(self._last_start),
            "clock_jumps": self.clock_jumps,
        }

    def load_state(self, state: dict[str, Any], open_readings: Iterable[Reading] = ()) -> int:
        """Restore persisted state and rebuild open intervals from journalled readings.

        Returns the number of readings restored into open intervals.
        """
        if state:
            if state.get("interval_s") != self.interval_s:
                raise ValueError(
                    f"window state is for {state.get('interval_s')} s intervals, this agent uses {self.interval_s} s"
                )
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
