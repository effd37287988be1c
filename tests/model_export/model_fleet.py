"""A small synthetic meter fleet (interval kWh or registers) with known anomalies, for the model tests.
Deliberately simple; the QA figures in the README come from firmware_sim."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DAY = 86_400
T0 = 1_735_689_600  # 2025-01-01T00:00:00Z


@dataclass
class Fleet:
    """Interval energy per meter, with the intervals where an anomaly was injected."""

    interval_s: int
    start: float
    kwh: dict[str, np.ndarray]
    classes: dict[str, str]
    anomalous: dict[str, np.ndarray] = field(default_factory=dict)

    def ts(self, meter: str) -> np.ndarray:
        return self.start + np.arange(self.kwh[meter].size) * self.interval_s

    def write_interval_csv(self, path: Path, with_class: bool = False) -> Path:
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["meter_id", "ts", "kwh"] + (["meter_class"] if with_class else []))
            for m, values in self.kwh.items():
                for t, k in zip(self.ts(m), values):
                    w.writerow([m, int(t), f"{k:.6f}"] + ([self.classes[m]] if with_class else []))
        return path

    def write_register_csv(self, path: Path, readings_per_interval: int = 3) -> Path:
        """Cumulative register readings spread inside each interval, ISO-8601 times."""
        from datetime import datetime, timezone

        step = self.interval_s / readings_per_interval
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["meter_id", "ts", "energy_kwh", "power_w"])
            for m, values in self.kwh.items():
                register = 1000.0
                for t, k in zip(self.ts(m), values):
                    for j in range(readings_per_interval):
                        register += k / readings_per_interval
                        at = datetime.fromtimestamp(t + (j + 1) * step - 1, timezone.utc).isoformat()
                        w.writerow([m, at, f"{register:.6f}", f"{k * 3600_000 / self.interval_s:.1f}"])
        return path


def make_fleet(meters: int = 6, days: int = 14, interval_s: int = 900, seed: int = 0,
               anomalies: bool = True) -> Fleet:
    """Meters of very different sizes with a daily and weekly rhythm; the last week holds anomalies."""
    rng = np.random.default_rng(seed)
    n = days * DAY // interval_s
    t = T0 + np.arange(n) * interval_s
    hour = (t % DAY) / 3600.0
    weekday = ((t // DAY) + 3) % 7  # 1970-01-01 was a Thursday
    kwh, classes, labels = {}, {}, {}
    kinds = ["residential", "commercial"]
    for i in range(meters):
        size = 10 ** rng.uniform(-1.0, 1.5)
        cls = kinds[i % 2]
        if cls == "residential":
            shape = 0.3 + 0.6 * np.exp(-((hour - 19) / 2.5) ** 2) + 0.3 * np.exp(-((hour - 7.5) / 1.5) ** 2)
        else:
            shape = 0.25 + 0.9 * ((hour > 8) & (hour < 18)) * np.where(weekday < 5, 1.0, 0.2)
        values = size * shape * rng.lognormal(0.0, 0.08, n)
        label = np.zeros(n, dtype=bool)
        if anomalies:
            per_day = DAY // interval_s
            for j, kind in enumerate(("drop", "spike", "zero", "flatline")):
                a = (days - 6 + j + (i % 2)) * per_day + rng.integers(8, per_day - 24)
                b = a + 16
                if kind == "drop":
                    values[a:b] *= 0.05
                elif kind == "spike":
                    values[a:b] *= 4.0
                elif kind == "zero":
                    values[a:b] = 0.0
                else:
                    values[a:b] = values[a]
                label[a:b] = True
        kwh[f"m{i:02d}"] = values
        classes[f"m{i:02d}"] = cls
        labels[f"m{i:02d}"] = label
    return Fleet(interval_s, float(T0), kwh, classes, labels)
