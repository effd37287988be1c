"""Detection on real load with injected, labelled anomalies: the default features against the
previous default and a plain hour-of-day profile baseline, on a tuning split and a held-out split.

Base series (vendored in bench/data, provenance in bench/data/README.md):
  * PJM East hourly system load (US Eastern local time, hour ending; DST gaps and repeats as
    published), cut into one pseudo-meter per calendar year and scaled to building sizes
    (20-800 kWh an hour), read in 0.25 kWh steps like a coarse commercial meter;
  * the UCI household in Sceaux (France, local time), one pseudo-meter per year (Dec-Nov).
Each meter-year gets labelled anomalies at realistic sizes, away from each other and from its
first two weeks: dips to 0.3-0.6x for 2-12 h, level shifts of 0.67-0.85x or 1.2-1.5x for 1-10
days, outages logged as a small constant (0.3 % of the meter's mean) for 3-48 h, stuck at the
last value for 24-125 h, spikes of 2.5-4x for 1-3 h, and night-time loads (+60-150 % of the
meter's mean between 00:00 and 05:00 local) for 1-5 nights. Weekly patterns, holidays, DST and
the resolution steps are the series' own.

Splits (tune on one, report both): "tune" = PJM 2002-2009 and the UCI household's first year;
"held-out" = PJM 2010-2017 and its other three years. As an analyst runs the CLI, each split's
model is trained on all of that split's meters (anomalies included) at the default calibration,
then scores the same meters.

Compared in the same run, each an Isolation Forest of the default size and calibration:
  * default  - edge_agent.features.DEFAULT_FEATURES with the site's time zone and holidays;
  * by-class - the same features, one forest per meter class (PJM buildings commercial, the UCI
               household residential), each calibrated on its own meters, as `model train --by-class`;
  * legacy   - LEGACY_DEFAULT_FEATURES, the previous default (previous 7 days, UTC), same calibration;
  * legacy-old - the same features at the previous default calibration (contamination 0.0014);
  * profile  - five plain features: local hour, weekend, kWh over the meter's mean, kWh over the
               meter's mean at that hour and weekend flag, change from the previous hour over the mean.
Figures per split: mean per-meter ROC-AUC (hour-level labels), event recall at the default
threshold (an event is found when one of its hours is flagged), flags outside events per
meter-month (30 days), and hour-level precision.

    .venv/bin/python bench/detection_real.py [--quick] [--seed 1]

--quick uses four PJM years and one household year per split (about a minute). The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.features import DEFAULT_FEATURES, LEGACY_DEFAULT_FEATURES, IntervalStats, batch_features  # noqa: E402
from edge_agent.site_calendar import SiteCalendar, holiday_ordinals  # noqa: E402
from model_export.pipeline import (DEFAULT_CONTAMINATION, DEFAULT_FALSE_ALARMS_PER_METER_MONTH,  # noqa: E402
                                   DEFAULT_MAX_SAMPLES,
                                   DEFAULT_N_ESTIMATORS, calibration_contamination, fit_calibrated_forest,
                                   usable_features)

DATA = Path(__file__).resolve().parent / "data"
H = 3600
KINDS = ("dip", "level_shift", "outage", "stuck", "spike", "night_load")


@dataclass
class Meter:
    meter_id: str
    ts: np.ndarray  # interval start, UTC seconds
    kwh: np.ndarray
    zone: str
    country: str
    events: list  # (start_ts, end_ts, kind)
    labels: np.ndarray | None = None  # bool per interval


def _read(name: str, zone: str, hour_ending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Hourly local-time rows as UTC interval starts; a repeated local hour (DST) counted once."""
    tz = ZoneInfo(zone)
    ts, vals = [], []
    with gzip.open(DATA / name, "rt") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            if not row[1]:
                continue
            local = datetime.strptime(row[0], "%Y-%m-%d %H:%M:%S")
            if hour_ending:
                local -= timedelta(hours=1)
            ts.append(local.replace(tzinfo=tz).timestamp())
            vals.append(float(row[1]))
    t, v = np.asarray(ts), np.asarray(vals)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    keep = np.concatenate(([True], np.diff(t) > 0))
    return t[keep], v[keep]


def _year_slice(t: np.ndarray, zone: str, start: datetime, end: datetime) -> np.ndarray:
    tz = ZoneInfo(zone)
    return (t >= start.replace(tzinfo=tz).timestamp()) & (t < end.replace(tzinfo=tz).timestamp())


def base_meters(quick: bool) -> dict[str, list[Meter]]:
    pjm_t, pjm_v = _read("pjm_east_PJME_hourly_2002_2018.csv.gz", "America/New_York", True)
    uci_t, uci_v = _read("uci_household_power_hourly_2006_2010.csv.gz", "Europe/Paris", False)
    sizes = (20.0, 50.0, 150.0, 300.0, 800.0, 80.0, 400.0, 35.0)
    splits = {"tune": ([*range(2002, 2010)], [2007]), "held-out": ([*range(2010, 2018)], [2008, 2009, 2010])}
    out: dict[str, list[Meter]] = {}
    for split, (pjm_years, uci_years) in splits.items():
        if quick:
            pjm_years, uci_years = pjm_years[::2], uci_years[:1]
        meters = []
        for i, year in enumerate(pjm_years):
            sel = _year_slice(pjm_t, "America/New_York", datetime(year, 1, 1), datetime(year + 1, 1, 1))
            v = pjm_v[sel] / pjm_v[sel].mean() * sizes[i % len(sizes)]
            meters.append(Meter(f"pjm-{year}", pjm_t[sel], v, "America/New_York", "US", []))
        for year in uci_years:
            sel = _year_slice(uci_t, "Europe/Paris", datetime(year - 1, 12, 1), datetime(year, 12, 1))
            meters.append(Meter(f"uci-{year}", uci_t[sel], uci_v[sel].copy(), "Europe/Paris", "FR", []))
        out[split] = meters
    return out


def inject(m: Meter, rng: np.random.Generator) -> None:
    """Labelled anomalies, one of each kind and two more of random kinds, never overlapping."""
    n = m.kwh.size
    mean = float(np.mean(m.kwh))
    labels = np.zeros(n, dtype=bool)
    busy = np.zeros(n, dtype=bool)
    busy[: 14 * 24] = True  # the first two weeks are history
    tz = ZoneInfo(m.zone)
    kinds = list(KINDS) + list(rng.choice(KINDS, 2))
    rng.shuffle(kinds)
    for kind in kinds:
        length = {"dip": rng.integers(2, 13), "level_shift": 24 * rng.integers(1, 11),
                  "outage": rng.integers(3, 49), "stuck": rng.integers(24, 126), "spike": rng.integers(1, 4),
                  "night_load": 24 * rng.integers(1, 6)}[kind]
        for _ in range(200):
            i = int(rng.integers(0, n - length))
            if not busy[max(0, i - 72): i + length + 72].any():
                break
        else:
            continue
        span = slice(i, i + length)
        seg = m.kwh[span]
        hit = np.ones(length, dtype=bool)
        if kind == "dip":
            seg *= rng.uniform(0.3, 0.6)
        elif kind == "level_shift":
            seg *= rng.uniform(0.67, 0.85) if rng.random() < 0.5 else rng.uniform(1.2, 1.5)
        elif kind == "outage":
            seg[:] = 0.003 * mean
        elif kind == "stuck":
            seg[:] = m.kwh[i - 1]
        elif kind == "spike":
            seg *= rng.uniform(2.5, 4.0)
        else:
            hours = np.array([datetime.fromtimestamp(t, tz).hour for t in m.ts[span]])
            hit = hours < 5
            seg[hit] += rng.uniform(0.6, 1.5) * mean
        m.kwh[span] = seg
        labels[i: i + length] |= hit
        busy[max(0, i - 24): i + length + 24] = True
        # an event is a run of labelled hours
        idx = np.flatnonzero(hit) + i
        for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
            m.events.append((float(m.ts[run[0]]), float(m.ts[run[-1]] + H), kind))
    m.labels = labels


def quantise(m: Meter) -> None:
    if m.meter_id.startswith("pjm"):
        m.kwh = np.round(m.kwh / 0.25) * 0.25  # a coarse commercial register


def stats_of(m: Meter) -> list[IntervalStats]:
    return [IntervalStats(m.meter_id, float(t), H, float(k), 1, None, None, None, None)
            for t, k in zip(m.ts, m.kwh)]


def feature_rows(meters: list[Meter], names, local: bool) -> list[np.ndarray]:
    rows = []
    for m in meters:
        years = range(int(datetime.fromtimestamp(m.ts[0]).year) - 1, int(datetime.fromtimestamp(m.ts[-1]).year) + 2)
        calendar = SiteCalendar(m.zone, holiday_ordinals(m.country, years)) if local else None
        X, ordered = batch_features(stats_of(m), names, H, calendar)
        rows.append(X)
    return rows


def profile_rows(meters: list[Meter]) -> list[np.ndarray]:
    """The plain baseline: local hour, weekend, level, level over the hour/weekend mean, step."""
    rows = []
    for m in meters:
        tz = ZoneInfo(m.zone)
        local = [datetime.fromtimestamp(t, tz) for t in m.ts]
        hour = np.array([d.hour for d in local])
        weekend = np.array([d.weekday() >= 5 for d in local])
        mean = m.kwh.mean()
        prof = np.zeros((24, 2))
        for hh in range(24):
            for w in (0, 1):
                sel = (hour == hh) & (weekend == w)
                prof[hh, w] = m.kwh[sel].mean() if sel.any() else mean
        expected = prof[hour, weekend.astype(int)]
        step = np.concatenate(([0.0], np.diff(m.kwh)))
        rows.append(np.column_stack([hour, weekend, m.kwh / mean, m.kwh / np.maximum(expected, 1e-9),
                                     step / mean]).astype(np.float32))
    return rows


def meter_class(m: Meter) -> str:
    """PJM pseudo-meters are commercial buildings, the UCI series a household."""
    return "residential" if m.meter_id.startswith("uci") else "commercial"


def evaluate(meters: list[Meter], rows: list[np.ndarray], names, seed: int, contamination: float | None = None,
             by_class: bool = False) -> dict:
    """Train (one forest, or one per meter class as `model train --by-class` does) and score."""
    from sklearn.metrics import roc_auc_score

    X = np.vstack([r[24:] for r in rows])  # each meter's first day is warm-up, as in training
    keep = usable_features(names, X) if names else list(range(X.shape[1]))
    groups = sorted({meter_class(m) for m in meters}) if by_class else [None]
    forests = {}
    for group in groups:
        members = [i for i, m in enumerate(meters) if group is None or meter_class(m) == group]
        Xg = np.vstack([rows[i][24:] for i in members])
        ids = np.concatenate([[meters[i].meter_id] * (meters[i].ts.size - 24) for i in members])
        starts = np.concatenate([meters[i].ts[24:] for i in members])
        forests[group], _ = fit_calibrated_forest(Xg[:, keep], ids, starts, H,
                                                  contamination or calibration_contamination(H),
                                                  None if contamination else DEFAULT_FALSE_ALARMS_PER_METER_MONTH,
                                                  DEFAULT_N_ESTIMATORS, DEFAULT_MAX_SAMPLES, seed)
    aucs, events, found, false_flags, true_flags, months = [], 0, 0, 0, 0, 0.0
    by_kind = {k: [0, 0] for k in KINDS}
    for m, r in zip(meters, rows):
        forest = forests[meter_class(m) if by_class else None]
        score = forest.decision_function(r[:, keep])
        flags = score < 0
        labels = m.labels
        aucs.append(roc_auc_score(labels, -score))
        false_flags += int((flags & ~labels).sum())
        true_flags += int((flags & labels).sum())
        months += m.ts.size / (30 * 24)
        for start, end, kind in m.events:
            inside = (m.ts >= start) & (m.ts < end)
            hit = bool(flags[inside].any())
            events += 1
            found += hit
            by_kind[kind][0] += hit
            by_kind[kind][1] += 1
    by_series = {src: [a for m, a in zip(meters, aucs) if m.meter_id.startswith(src)] for src in ("pjm", "uci")}
    return {"auc_mean": round(float(np.mean(aucs)), 3), "auc_min": round(float(np.min(aucs)), 3),
            **{f"auc_mean_{src}": round(float(np.mean(a)), 3) for src, a in by_series.items() if a},
            "event_recall": round(found / max(1, events), 3), "events": events,
            "false_alarms_per_meter_month": round(false_flags / months, 2),
            "hour_precision": round(true_flags / max(1, true_flags + false_flags), 3),
            "features_used": [names[i] for i in keep] if names else ["profile x5"],
            "recall_by_kind": {k: f"{a}/{b}" for k, (a, b) in by_kind.items()},
            "auc_by_meter": {m.meter_id: round(float(a), 3) for m, a in zip(meters, aucs)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four PJM years and one household year per split")
    ap.add_argument("--seed", type=int, default=1, help="seed of the injected anomalies (default %(default)s)")
    ap.add_argument("--features", help="comma-separated feature names for 'default' instead of DEFAULT_FEATURES")
    ap.add_argument("--configs", default="default,by-class,legacy,legacy-old,profile",
                    help="which to run (default %(default)s)")
    args = ap.parse_args()
    command = "python bench/detection_real.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    print(f"reproduce: {command}   (load average at start: {os.getloadavg()[0]:.2f})", flush=True)
    started = time.monotonic()
    rng = np.random.default_rng(args.seed)
    splits = base_meters(args.quick)
    for meters in splits.values():
        for m in meters:
            inject(m, rng)
            quantise(m)
    results: dict[str, dict] = {}
    for split, meters in splits.items():
        results[split] = {}
        for config in args.configs.split(","):
            if config == "profile":
                rows, names = profile_rows(meters), None
            elif config == "by-class" and "default" in results[split]:
                rows, names = default_rows, default_names
            elif config == "legacy-old" and "legacy" in results[split]:
                rows, names = legacy_rows, LEGACY_DEFAULT_FEATURES
            else:
                names = DEFAULT_FEATURES if config in ("default", "by-class") else LEGACY_DEFAULT_FEATURES
                if config in ("default", "by-class") and args.features:
                    names = tuple(args.features.split(","))
                rows = feature_rows(meters, names, local=config in ("default", "by-class"))
            if config == "legacy":
                legacy_rows = rows
            if config == "default":
                default_rows, default_names = rows, names
            r = evaluate(meters, rows, list(names) if names else None, args.seed,
                         DEFAULT_CONTAMINATION if config == "legacy-old" else None, by_class=config == "by-class")
            results[split][config] = r
            print(f"{split:9s} {config:10s} meters {len(meters):2d}  ROC-AUC mean {r['auc_mean']:.3f} "
                  f"(PJM {r.get('auc_mean_pjm', 0):.3f}, UCI {r.get('auc_mean_uci', 0):.3f}, "
                  f"min {r['auc_min']:.3f})  event recall {r['event_recall']:6.1%} of {r['events']}  "
                  f"false alarms/meter-month {r['false_alarms_per_meter_month']:5.2f}  "
                  f"hour precision {r['hour_precision']:.2f}  by kind: "
                  + " ".join(f"{k} {v}" for k, v in r["recall_by_kind"].items()), flush=True)
    summary = {s: {c: {k: v for k, v in r.items() if k != "auc_by_meter"} for c, r in res.items()}
               for s, res in results.items()}
    per_meter = {s: res.get("default", {}).get("auc_by_meter") for s, res in results.items()}
    print(json.dumps({"bench": "detection_real", "command": command, "summary": summary,
                      "default_auc_by_meter": per_meter, "seconds": round(time.monotonic() - started, 1),
                      "load_average": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
