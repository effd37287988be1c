"""Injected anomalies with ground truth: what happens to a meter, when, and the labels file.

Two families:

- **Consumption anomalies** change what the meter measures and are what the detector must
  find: theft or bypass (sustained drop), tampering (zeros, flatline, reversed register),
  spikes, calibration drift, phase loss, voltage sag, unusual night-time load, stuck meter.
- **Data faults** change only how readings arrive (duplicates, out-of-order delivery, a
  meter clock jump, a gap); the pipeline must absorb them without losing or doubling data,
  and the detector should not call them anomalies.

An event covers the readings whose timestamp lies in ``(start, end]``: the energy of each
such reading was consumed inside the span. Labels are CSV ``meter_id,start,end,kind`` with
ISO-8601 UTC times; planning is a pure function of (seed, meter id, window), so the labels
of any fleet can be rebuilt from its seed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edge_agent.clock import parse_utc_time
from firmware_sim.randomness import choice_index, key_for, uniform
from gridsight.errors import GridsightError

__all__ = ["CONSUMPTION_KINDS", "DATA_FAULT_KINDS", "ALL_KINDS", "ENERGY_KINDS", "AnomalyEvent",
           "LabelError", "plan_events", "write_labels_csv", "read_labels_csv", "iso_utc", "parse_time"]

CONSUMPTION_KINDS: tuple[str, ...] = (
    "theft", "tamper_zero", "tamper_flatline", "tamper_reverse", "spike", "drift",
    "phase_loss", "voltage_sag", "night_load", "stuck")
DATA_FAULT_KINDS: tuple[str, ...] = ("duplicate", "out_of_order", "clock_jump", "gap")
ALL_KINDS = CONSUMPTION_KINDS + DATA_FAULT_KINDS
# kinds whose effect changes the energy the register counts (and so every later register value)
ENERGY_KINDS = frozenset({"theft", "tamper_zero", "tamper_flatline", "tamper_reverse", "spike", "drift",
                          "phase_loss", "voltage_sag", "night_load", "stuck"})

_H = 3600.0
_DAY = 86400.0
_QUARTER = 900.0
# (min, max) duration in hours, relative weight in a fleet
_CONSUMPTION_PLAN: dict[str, tuple[float, float, float]] = {
    "theft": (48, 168, 3.0),
    "tamper_zero": (6, 36, 1.0),
    "tamper_flatline": (12, 48, 1.0),
    "tamper_reverse": (6, 24, 1.0),
    "spike": (0.5, 1.0, 2.0),
    "drift": (72, 240, 1.0),
    "phase_loss": (4, 24, 1.0),
    "voltage_sag": (3, 12, 1.0),
    "night_load": (2, 4, 2.0),   # nights, not hours
    "stuck": (12, 48, 1.0),
}
_FAULT_PLAN: dict[str, tuple[float, float, float]] = {
    "duplicate": (1, 6, 1.0),
    "out_of_order": (1, 6, 1.0),
    "clock_jump": (1, 6, 1.0),
    "gap": (1, 6, 1.0),
}


class LabelError(GridsightError, ValueError):
    """A labels file that cannot be used; the message names the line and field."""


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """One injected event on one meter. ``magnitude`` means per kind:

    theft: fraction of consumption still measured; tamper_flatline: constant power as a
    multiple of the meter's typical power; spike and night_load: added power, likewise;
    drift: relative error reached at the end (+ over-reads, - under-reads); voltage_sag:
    voltage factor; clock_jump: seconds added to the meter's timestamps; others unused.
    """

    meter_id: str
    start: float
    end: float
    kind: str
    magnitude: float = 0.0

    def covers(self, ts: np.ndarray) -> np.ndarray:
        return (ts > self.start) & (ts <= self.end)

    @property
    def is_consumption(self) -> bool:
        return self.kind in CONSUMPTION_KINDS


def iso_utc(ts: float) -> str:
    """ISO-8601 UTC with a Z suffix, second precision."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | float | int, what: str = "time") -> float:
    """Unix seconds from Unix seconds or ISO-8601 (naive means UTC); ValueError naming ``what``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected ISO-8601 time or Unix seconds, got {value!r}")
    try:
        return parse_utc_time(value)
    except ValueError:
        raise ValueError(f"{what}: {value.strip()[:40]!r} is not an ISO-8601 time") from None


def _quarter(t: float) -> float:
    return float(np.floor(t / _QUARTER) * _QUARTER)


def plan_events(meter_id: str, seed: int, window_start: float, window_end: float, *,
                anomaly_rate: float, fault_rate: float, three_phase: bool, typical_w: float,
                utc_offset_h: float = -5.0, kinds: Sequence[str] | None = None) -> list[AnomalyEvent]:
    """The events of one meter in ``[window_start, window_end]`` (pure function of its inputs).

    With probability ``anomaly_rate`` the meter gets one consumption anomaly, with
    ``fault_rate`` one data fault. Events start after the first 15% of the window, so a
    detector has seen normal behaviour first. ``kinds`` restricts the kinds drawn.
    """
    key = key_for(seed, meter_id, "plan")
    u = uniform(key, np.arange(16))
    span = window_end - window_start
    earliest = window_start + 0.15 * span
    events: list[AnomalyEvent] = []
    allowed = set(kinds) if kinds else set(ALL_KINDS)
    unknown = allowed - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown anomaly kind {sorted(unknown)[0]!r}; one of {', '.join(ALL_KINDS)}")

    consumption = {k: v for k, v in _CONSUMPTION_PLAN.items()
                   if k in allowed and (three_phase or k != "phase_loss")}
    if consumption and u[0] < anomaly_rate:
        names = list(consumption)
        kind = names[choice_index(key, 101, [consumption[k][2] for k in names])]
        lo, hi, _ = consumption[kind]
        if kind == "night_load":
            events.extend(_nights(meter_id, int(lo + (hi - lo + 1) * u[1]), earliest, window_end, u[2], u[3],
                                  typical_w, utc_offset_h))
        else:
            duration = min((lo + (hi - lo) * u[1]) * _H, max(_QUARTER, window_end - earliest - _QUARTER))
            duration = max(_QUARTER, _quarter(duration))
            start = _quarter(earliest + u[2] * max(0.0, window_end - earliest - duration))
            events.append(AnomalyEvent(meter_id, start, start + duration, kind,
                                       float(_magnitude(kind, u[3], u[4], typical_w))))

    faults = {k: v for k, v in _FAULT_PLAN.items() if k in allowed}
    if faults and u[5] < fault_rate:
        names = list(faults)
        kind = names[choice_index(key, 102, [faults[k][2] for k in names])]
        lo, hi, _ = faults[kind]
        duration = max(_QUARTER, _quarter(min((lo + (hi - lo) * u[6]) * _H, window_end - earliest - _QUARTER)))
        start = _quarter(earliest + u[7] * max(0.0, window_end - earliest - duration))
        magnitude = 0.0
        if kind == "clock_jump":
            # forward or back by 2..30 minutes plus half a minute: never lands on the reading grid
            magnitude = (1 if u[8] < 0.5 else -1) * (120.0 + 60.0 * np.floor(u[9] * 29) + 30.0)
        events.append(AnomalyEvent(meter_id, start, start + duration, kind, float(magnitude)))
    return events


def _magnitude(kind: str, u1: float, u2: float, typical_w: float) -> float:
    if kind == "theft":
        return 0.15 + 0.25 * u1
    if kind == "tamper_flatline":
        return 0.3 + 0.4 * u1
    if kind == "spike":
        return 10.0 + 10.0 * u1
    if kind == "drift":
        return (1 if u2 < 0.5 else -1) * (0.5 + 0.3 * u1)
    if kind == "voltage_sag":
        return 0.72 + 0.08 * u1
    if kind == "night_load":
        return max(3.0 + 3.0 * u1, 1500.0 / max(typical_w, 1.0) * (1 + u1))
    return 0.0


def _nights(meter_id: str, nights: int, earliest: float, window_end: float, u_start: float, u_mag: float,
            typical_w: float, utc_offset_h: float) -> list[AnomalyEvent]:
    """Consecutive nights of extra load from 01:00 to 04:00 local time, one label per night."""
    magnitude = float(_magnitude("night_load", u_mag, 0.0, typical_w))
    first_day = np.floor((earliest + utc_offset_h * _H) / _DAY) + 1
    last_day = np.floor((window_end + utc_offset_h * _H) / _DAY) - nights
    day0 = first_day + np.floor(u_start * max(0.0, last_day - first_day + 1))
    out = []
    for n in range(nights):
        start = (day0 + n) * _DAY + 1 * _H - utc_offset_h * _H
        if start + 3 * _H > window_end:
            break
        out.append(AnomalyEvent(meter_id, float(start), float(start + 3 * _H), "night_load", magnitude))
    return out


def write_labels_csv(events: Iterable[AnomalyEvent], path: str | Path) -> int:
    """Write ``meter_id,start,end,kind`` (ISO-8601 UTC) sorted by meter and time; returns the count."""
    rows = sorted(events, key=lambda e: (e.meter_id, e.start, e.kind))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["meter_id", "start", "end", "kind"])
        for e in rows:
            w.writerow([e.meter_id, iso_utc(e.start), iso_utc(e.end), e.kind])
    tmp.replace(path)
    return len(rows)


def read_labels_csv(path: str | Path) -> list[AnomalyEvent]:
    """Labels from a CSV written by :func:`write_labels_csv` (or by hand); LabelError names the line."""
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise LabelError(f"{path}: cannot open ({exc.strerror or exc})") from None
    out = []
    with fh:
        reader = csv.DictReader(fh)
        missing = {"meter_id", "start", "end", "kind"} - set(reader.fieldnames or ())
        if missing:
            raise LabelError(f"{path}: header lacks {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                start = parse_time(row["start"], "start")
                end = parse_time(row["end"], "end")
            except ValueError as exc:
                raise LabelError(f"{path}:{line}: {exc}") from None
            kind = (row["kind"] or "").strip()
            if kind not in ALL_KINDS:
                raise LabelError(f"{path}:{line}: kind {kind[:40]!r} is not one of {', '.join(ALL_KINDS)}")
            if not row["meter_id"]:
                raise LabelError(f"{path}:{line}: meter_id is empty")
            if end <= start:
                raise LabelError(f"{path}:{line}: end is not after start")
            out.append(AnomalyEvent(row["meter_id"].strip(), start, end, kind))
    return out
