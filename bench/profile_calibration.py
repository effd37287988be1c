"""How close are the simulated load shapes to real ones? Daily, weekly and seasonal profiles.

Compares, side by side in one run:
  * a simulated system load against PJM East hourly system load
    (bench/data/pjm_east_PJME_hourly_2002_2018.csv.gz, US Eastern local time): the
    residential, commercial and industrial classes are simulated separately and weighted by
    typical US retail energy shares (38 %, 36 %, 26 %), as a utility builds a system load
    from class load shapes;
  * simulated residential meters (Paris time, French holidays) against the UCI household
    series (bench/data/uci_household_power_hourly_2006_2010.csv.gz);
  * and, as the obvious alternative, a textbook sine-wave daily profile (peak 18:00, +-30%)
    with no weekly or seasonal structure.

Each profile is normalised to mean 1: the daily profile is 24 hourly means (weekdays),
the weekly profile 168 hour-of-week means, the seasonal profile 12 monthly means. Figures:
Pearson correlation r and mean absolute percentage error (MAPE) between simulated and real.

    .venv/bin/python bench/profile_calibration.py [--quick] [--data-dir bench/data]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_sim.fleet_model import Fleet  # noqa: E402

PJM = "pjm_east_PJME_hourly_2002_2018.csv.gz"
UCI = "uci_household_power_hourly_2006_2010.csv.gz"


def load_real(path: Path, hour_ending: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hour, weekday, month, value) of an hourly local-time series, skipping blanks.

    ``hour_ending``: the timestamp closes the hour (PJM's convention), so the hour starts one earlier.
    """
    hours, wds, months, vals = [], [], [], []
    with gzip.open(path, "rt") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            try:
                v = float(row[1])
                t = datetime.fromisoformat(row[0]) - timedelta(hours=1 if hour_ending else 0)
            except (ValueError, IndexError):
                continue
            hours.append(t.hour)
            wds.append(t.weekday())
            months.append(t.month)
            vals.append(v)
    return np.array(hours), np.array(wds), np.array(months), np.array(vals)


CLASS_SHARES = {"residential": 0.38, "commercial": 0.36, "industrial": 0.26}


def simulate_system(meters_per_class: int, year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """System load: each class's simulated hourly energy, normalised, weighted by its energy share."""
    total = None
    for cls, share in CLASS_SHARES.items():
        h, wd, month, v = simulate([cls], meters_per_class, "America/New_York", "US", year)
        part = share * v / v.mean()
        total = part if total is None else total[: part.size] + part[: total.size]
    n = total.size
    return h[:n], wd[:n], month[:n], total


def simulate(classes: list[str] | None, meters: int, tz: str, country: str, year: int,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hourly local-time energy of ``meters`` simulated meters summed, over one year."""
    per_gw = 10
    per_gw = min(per_gw, meters)
    fleet = Fleet(2024, max(1, meters // per_gw), per_gw, step_s=900, anomaly_rate=0, fault_rate=0,
                  classes=classes, tz=tz, country=country)
    start = datetime(year, 1, 1).timestamp()
    end = datetime(year + 1, 1, 1).timestamp()
    hourly = None
    for spec in fleet.meter_specs():
        ts, reg, *_ = fleet.meter(spec).series(start, end)
        e = np.diff(reg[3::4])                  # energy of each whole hour
        hourly = e if hourly is None else hourly[: e.size] + e[: hourly.size]
        hour_ends = ts[3::4][1:]
    hour_starts = hour_ends[: hourly.size] - 3600
    local_h = np.floor(fleet.calendar.local_hours(hour_starts)).astype(int) % 24
    days = np.array([fleet.calendar.day_of(t) for t in hour_starts[::24]])
    day_idx = np.repeat(days, 24)[: hour_starts.size]
    # local day of each hour (DST shifts by an hour at most; good enough for profiles)
    wd = fleet.calendar.weekdays(day_idx)
    month = np.array([datetime.fromtimestamp(t).month for t in hour_starts[::24]])
    month = np.repeat(month, 24)[: hour_starts.size]
    return local_h, wd, month, hourly


def profiles(h: np.ndarray, wd: np.ndarray, month: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    weekday = np.array([v[(wd < 5) & (h == k)].mean() for k in range(24)])
    weekly = np.array([v[(wd == d) & (h == k)].mean() for d in range(7) for k in range(24)])
    seasonal = np.array([v[month == m].mean() for m in range(1, 13)])
    return {k: a / a.mean() for k, a in (("daily", weekday), ("weekly", weekly), ("seasonal", seasonal))}


def sine_baseline() -> dict[str, np.ndarray]:
    daily = 1 + 0.3 * np.cos(2 * np.pi * (np.arange(24) - 18) / 24)
    return {"daily": daily, "weekly": np.tile(daily, 7), "seasonal": np.ones(12)}


def compare(sim: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for k in ("daily", "weekly", "seasonal"):
        a, b = sim[k], real[k]
        r = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 else 0.0
        out[k] = {"r": round(r, 3), "mape_pct": round(float(np.mean(np.abs(a - b) / b) * 100), 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer simulated meters (about a minute)")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"),
                    help="folder with the vendored PJM and UCI series (default: bench/data)")
    ap.add_argument("--year", type=int, default=2025)
    args = ap.parse_args()
    data = Path(args.data_dir)
    for name in (PJM, UCI):
        if not (data / name).exists():
            print(f"profile_calibration: {data / name} not found (pass --data-dir)", file=sys.stderr)
            return 2
    per_class = 8 if args.quick else 40
    t0 = time.perf_counter()
    results: dict = {"meters_per_class_system": per_class, "meters_residential": per_class * 2, "year": args.year}
    real_pjm = profiles(*load_real(data / PJM, hour_ending=True))
    real_uci = profiles(*load_real(data / UCI))
    sim_mix = profiles(*simulate_system(per_class, args.year))
    sim_res = profiles(*simulate(["residential"], results["meters_residential"], "Europe/Paris", "FR", args.year))
    base = sine_baseline()
    results["pjm_vs_simulated_system"] = compare(sim_mix, real_pjm)
    results["pjm_vs_sine_baseline"] = compare(base, real_pjm)
    results["uci_vs_simulated_residential"] = compare(sim_res, real_uci)
    results["uci_vs_sine_baseline"] = compare(base, real_uci)
    for series in ("pjm", "uci"):
        ours = results[f"{series}_vs_simulated_{'system' if series == 'pjm' else 'residential'}"]
        theirs = results[f"{series}_vs_sine_baseline"]
        results[f"{series}_mape_ratio_sine_over_simulated"] = {
            k: round(theirs[k]["mape_pct"] / max(ours[k]["mape_pct"], 1e-9), 2) for k in ours}
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"command: .venv/bin/python bench/profile_calibration.py{' --quick' if args.quick else ''} "
          f"--data-dir {data}")
    print(f"{'comparison':<34}{'profile':<10}{'r':>7}{'MAPE %':>9}")
    for key in ("pjm_vs_simulated_system", "pjm_vs_sine_baseline", "uci_vs_simulated_residential",
                "uci_vs_sine_baseline"):
        for k, v in results[key].items():
            print(f"{key:<34}{k:<10}{v['r']:>7.3f}{v['mape_pct']:>9.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
