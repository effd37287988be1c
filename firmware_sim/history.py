"""History files for training and replay: a fleet's readings over a period, plus its labels.

The CSV has the columns of :class:`gridsight.wire.Reading` (``meter_id, ts, energy_kwh,
power_w, voltage_v, current_a, power_factor``) with ``ts`` in Unix seconds, which is what
``gridsight model train --readings`` and the agent's replay reader take. Rows are what the
meters handed over, in delivery order per day, data faults included (pass
``faults=False`` for a clean training set).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

from firmware_sim.anomalies import write_labels_csv
from firmware_sim.fleet_model import Fleet

__all__ = ["write_readings_csv", "READING_COLUMNS"]

READING_COLUMNS = ("meter_id", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "power_factor")
_DAY = 86400.0


def write_readings_csv(fleet: Fleet, start: float, end: float, step_s: int, path: str | Path, *,
                       labels_path: str | Path | None = None, faults: bool = True,
                       progress: Callable[[str], None] | None = None) -> int:
    """Write every reading of ``fleet`` in ``(start, end]`` every ``step_s`` seconds; returns the row count.

    ``labels_path`` also writes the ground-truth labels of the events inside the period.
    """
    if end <= start:
        raise ValueError("end must be after start")
    if step_s != fleet.step_s:
        fleet = fleet.with_step(step_s)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    rows = 0
    labels = []
    specs = list(fleet.meter_specs())
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(READING_COLUMNS)
        for n, spec in enumerate(specs, start=1):
            meter = fleet.meter(spec)
            if not faults:
                meter = type(meter)(meter.profile, [e for e in meter.events if e.is_consumption])
            labels.extend(e for e in meter.events if e.end > start and e.start < end)
            t = start
            while t < end:
                until = min(t + _DAY, end)
                for r in meter.emitted(t, until).readings(spec.meter_id):
                    w.writerow((r.meter_id, f"{r.ts:.0f}" if r.ts == int(r.ts) else r.ts, r.energy_kwh,
                                r.power_w, r.voltage_v, r.current_a, r.power_factor))
                    rows += 1
                t = until
            if progress and (n % 50 == 0 or n == len(specs)):
                progress(f"history: {n}/{len(specs)} meters, {rows} readings")
    tmp.replace(path)
    if labels_path is not None:
        write_labels_csv(labels, labels_path)
    return rows
