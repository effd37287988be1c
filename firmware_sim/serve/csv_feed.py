"""Simulated meters as a CSV file, the format the agent's replay reader takes.

Columns are those of :class:`gridsight.wire.Reading` with ``ts`` in Unix seconds.
``malformed_every = N`` writes a broken line after every Nth reading (a number that is
not a number, a missing column), as a half-written export from a data logger would.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from firmware_sim.history import READING_COLUMNS
from firmware_sim.meter import SimulatedMeter

__all__ = ["write_csv_feed", "MALFORMED_LINES"]

MALFORMED_LINES = ("{meter},{ts},twelve,100,230,0.4,0.95", "{meter},{ts}")


def write_csv_feed(meters: Sequence[SimulatedMeter], after: float, until: float, path: str | Path, *,
                   malformed_every: int = 0, append: bool = False) -> tuple[int, int]:
    """Write the readings handed over in ``(after, until]``; returns (readings, malformed lines)."""
    path = Path(path)
    new = not append or not path.exists()
    good = bad = 0
    with path.open("w" if new else "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(READING_COLUMNS)
        rows = []
        for meter in meters:
            rows.extend(meter.emitted(after, until).readings(meter.meter_id))
        rows.sort(key=lambda r: r.ts)
        for r in rows:
            w.writerow((r.meter_id, f"{r.ts:.0f}" if r.ts == int(r.ts) else r.ts, r.energy_kwh, r.power_w,
                        r.voltage_v, r.current_a, r.power_factor))
            good += 1
            if malformed_every and good % malformed_every == 0:
                fh.write(MALFORMED_LINES[bad % len(MALFORMED_LINES)].format(meter=r.meter_id, ts=int(r.ts)) + "\r\n")
                bad += 1
    return good, bad
