"""Event-level detection on the simulator's ground truth: the default features against the previous ones.

For each seed, the default QA scenario's fleet (firmware_sim/scenarios/default.toml: 48 meters,
72 h warm-up, 72 h scored, 35 % of meters with a consumption anomaly, 10 % with a data fault) is
replayed through the agent's own window stage (edge_agent.window, polled like the agent polls
the simulated meters, so duplicates, late and clock-shifted readings arrive as they do in a
fleet run), then through the feature builder and an Isolation Forest trained as `sim fleet`
trains it (clean history of the scenario's 40 training meters, 14 days, 100 trees x 256 rows).
Flags are scored with firmware_sim.qa_score, the rules `gridsight sim score` applies.

Compared in the same run, on the same intervals and training rows:
  * default      - edge_agent.features.DEFAULT_FEATURES at the default calibration;
  * previous     - the twelve EWMA-profile features that were the default before, same calibration;
  * previous-old - the same twelve at their old calibration (contamination 0.005).

No broker, collector or agent restarts (`sim fleet` measures those); scores come from
scikit-learn, which the exported ONNX model matches within 1e-5 (model_export parity check).

    .venv/bin/python bench/detection.py [--quick] [--seeds 7,8,9,10]

--quick scores seed 7 only (the default scenario's own seed, about 2 minutes). The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.features import DEFAULT_FEATURES, FEATURE_DESCRIPTIONS, FeatureBuilder  # noqa: E402
from edge_agent.window import IntervalWindow  # noqa: E402
from firmware_sim.fleet_model import Fleet  # noqa: E402
from firmware_sim.fleet_run import _MeterSubset  # noqa: E402
from firmware_sim.history import write_readings_csv  # noqa: E402
from firmware_sim.qa_score import FlaggedInterval, score_detection  # noqa: E402
from firmware_sim.scenario import load_scenario  # noqa: E402
from model_export.pipeline import DEFAULT_CONTAMINATION, build_training_rows, fit_forest, load_intervals  # noqa: E402

PREVIOUS = tuple(FEATURE_DESCRIPTIONS)[:12]
CONFIGS = {"default": (DEFAULT_FEATURES, DEFAULT_CONTAMINATION), "previous": (PREVIOUS, DEFAULT_CONTAMINATION),
           "previous-old": (PREVIOUS, 0.005)}
H = 3600.0


def replay(fleet: Fleet, sim_start: float, end: float, interval_s: int, poll_s: float) -> list[list]:
    """Closed-interval stats per gateway, in the order the agent's window closes them."""
    out = []
    for g in range(fleet.gateways):
        meters = fleet.gateway_meters(g)
        window = IntervalWindow(interval_s, min(30.0, interval_s / 2))
        closed, last, now = [], sim_start, sim_start + poll_s
        while now <= end + interval_s + 2 * poll_s:
            window.accept([r for m in meters for r in m.emitted(last, now).readings(m.meter_id)])
            closed.extend(s for c in window.due(now) for s in c.stats)
            last, now = now, now + poll_s
        out.append(closed)
    return out


def training_stats(scenario, seed: int, sim_start: float, work: Path):
    m, f = scenario.model, scenario.fleet
    clean = Fleet(seed, f.gateways, f.meters_per_gateway, step_s=60, anomaly_rate=0.0, fault_rate=0.0)
    specs = list(clean.meter_specs())
    step = max(1, len(specs) // m.train_meters)
    chosen = {s.meter_id for s in specs[::step][: m.train_meters]}
    path = work / f"train-{seed}.csv"
    write_readings_csv(_MeterSubset(clean, chosen), sim_start - m.train_days * 86400, sim_start, 60, path)
    stats, _, _ = load_intervals(path, scenario.run.interval_s)
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seed 7 only")
    ap.add_argument("--seeds", default="7,8,9,10")
    ap.add_argument("--scenario", default=str(Path(__file__).resolve().parent.parent
                                                / "firmware_sim/scenarios/default.toml"))
    args = ap.parse_args()
    seeds = [7] if args.quick else [int(s) for s in args.seeds.split(",")]
    command = "python bench/detection.py " + ("--quick" if args.quick else f"--seeds {','.join(map(str, seeds))}")
    print(f"reproduce: {command}   (load average at start: {os.getloadavg()[0]:.2f})", flush=True)
    scenario = load_scenario(args.scenario)
    r, f = scenario.run, scenario.fleet
    start = r.start_ts
    end, sim_start = start + r.hours * H, start - r.warmup_hours * H
    started = time.monotonic()
    totals = {name: {"events": 0, "found": 0, "true_detections": 0, "false_alarms": 0} for name in CONFIGS}
    per_seed: dict[str, dict] = {name: {} for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            fleet = Fleet(seed, f.gateways, f.meters_per_gateway, start=start, end=end, step_s=r.step_s,
                          anomaly_rate=f.anomaly_rate, fault_rate=f.fault_rate, kinds=f.kinds or None)
            closed = replay(fleet, sim_start, end, r.interval_s, r.poll_s)
            train = training_stats(scenario, seed, sim_start, Path(tmp))
            labels = fleet.labels()
            for name, (features, contamination) in CONFIGS.items():
                X, _ = build_training_rows(train, features, r.interval_s)
                forest = fit_forest(X, contamination)
                flags = []
                for stats in closed:
                    builder = FeatureBuilder(features, r.interval_s)
                    rows = np.stack([builder.features(s) for s in stats])
                    for s, score in zip(stats, forest.decision_function(rows)):
                        if score < 0:
                            flags.append(FlaggedInterval(s.meter_id, s.interval_start, s.interval_start + r.interval_s))
                score = score_detection(labels, flags, meters=fleet.gateways * fleet.meters_per_gateway,
                                        span_start=start, span_end=end)
                o = score.overall
                t = totals[name]
                t["events"] += o.events
                t["found"] += o.detected
                t["true_detections"] += o.true_detections
                t["false_alarms"] += score.false_alarms
                per_seed[name][seed] = {"recall": round(o.recall, 3), "precision": round(o.precision or 0.0, 3),
                                        "events": o.events, "false_alarms": score.false_alarms,
                                        "by_kind": {k: f"{v.detected}/{v.events}" for k, v in sorted(score.kinds.items())}}
                print(f"seed {seed:3d} {name:13s} recall {o.recall:6.1%}  precision {o.precision or 0:6.1%}  "
                      f"false alarms {score.false_alarms:3d}  "
                      + " ".join(f"{k} {v.detected}/{v.events}" for k, v in sorted(score.kinds.items())), flush=True)
    summary = {}
    for name, t in totals.items():
        recall = t["found"] / t["events"] if t["events"] else 0.0
        precision = t["true_detections"] / (t["true_detections"] + t["false_alarms"]) if t["true_detections"] else 0.0
        summary[name] = {"recall": round(recall, 3), "precision": round(precision, 3), **t}
        print(f"all seeds {name:13s} recall {recall:6.1%} ({t['found']}/{t['events']})  precision {precision:6.1%}  "
              f"false alarms {t['false_alarms']}")
    ratio = summary["default"]["recall"] / summary["previous"]["recall"] if summary["previous"]["recall"] else None
    print(f"default vs previous features: recall x{ratio:.2f}" if ratio else "previous features found nothing")
    print(json.dumps({"bench": "detection", "command": command, "seeds": seeds, "summary": summary,
                      "per_seed": per_seed, "seconds": round(time.monotonic() - started, 1),
                      "load_average": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
