"""`gridsight sim fleet`: run a scenario through real agents, broker and collector, then score it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gridsight.cli import CLIError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="run a simulated fleet through real agents, the broker and the collector",
                       description="Run a scenario (TOML) with simulated time; faults are applied on the "
                                   "simulated clock. Leaves labels.csv and run.json in --work-dir.")
    p.add_argument("--scenario", help="scenario TOML (see firmware_sim/scenario.py); defaults apply without it")
    p.add_argument("--gateways", type=int, help="override fleet.gateways; default: the scenario's value")
    p.add_argument("--meters-per-gateway", type=int,
        help="override fleet.meters_per_gateway; default: the scenario's value")
    p.add_argument("--speed", type=float,
        help="override run.speed (simulated seconds per real second); default: the scenario's value")
    p.add_argument("--hours", type=float, help="override run.hours; default: the scenario's value")
    p.add_argument("--mode", choices=["auto", "process", "inprocess"],
        help="override fleet.mode; default: the scenario's value")
    p.add_argument("--seed", type=int, help="override fleet.seed; default: the scenario's value")
    p.add_argument("--work-dir", default=".gridsight/sim-fleet", help="where agents, logs, labels and run.json go")
    p.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one (kept after the run)")
    p.add_argument("--mqtt-url", help="use this broker (mqtt://host:port) instead of a local Mosquitto")
    p.add_argument("--no-score", action="store_true", help="do not score the run at the end")
    p.add_argument("--report", help="also write the QA report HTML here")
    p.add_argument("--json", help="write the score figures as JSON here")
    p.add_argument("--min-recall", type=float, default=0.9, help="bar; negative disables")
    p.add_argument("--min-precision", type=float, default=0.8, help="bar; negative disables")
    p.add_argument("--min-completeness", type=float, default=1.0, help="bar; negative disables")
    p.add_argument("--max-duplicates", type=int, default=0, help="bar; negative disables")
    p.set_defaults(func=cmd_fleet)


def mqtt_port_from_url(url: str | None) -> int | None:
    if not url:
        return None
    import re
    m = re.match(r"^mqtt://[^:/]+:(\d+)/?$", url)
    if not m:
        raise CLIError(f"--mqtt-url {url!r} must be mqtt://host:port")
    return int(m.group(1))


def cmd_fleet(ns: argparse.Namespace) -> int:
    from firmware_sim.fleet_run import FleetRun, FleetRunError
    from firmware_sim.qa_score import Bars, missed_bars
    from firmware_sim.scenario import load_scenario

    overrides: dict = {"fleet": {}, "run": {}}
    for key, section, name in (("gateways", "fleet", "gateways"), ("meters_per_gateway", "fleet", "meters_per_gateway"),
                               ("mode", "fleet", "mode"), ("seed", "fleet", "seed"), ("speed", "run", "speed"),
                               ("hours", "run", "hours")):
        if getattr(ns, key) is not None:
            overrides[section][name] = getattr(ns, key)
    scenario = load_scenario(ns.scenario, overrides)
    try:
        run = FleetRun(scenario, ns.work_dir, database_url=ns.database_url, mqtt_port=mqtt_port_from_url(ns.mqtt_url))
    except FleetRunError as exc:
        raise CLIError(str(exc)) from None
    try:
        try:
            result = run.run()
        except FleetRunError as exc:
            raise CLIError(str(exc)) from None
        print(f"fleet: {result.meters} meters simulated in {result.real_seconds:.0f} s; labels {result.labels_path}, "
              f"manifest {result.manifest_path}", file=sys.stderr)
        if ns.no_score:
            return 0
        from firmware_sim.qa_score import print_score
        score, labels = score_run(result.labels_path, result.manifest_path, result.database_url)
        bars = Bars(ns.min_recall, ns.min_precision, ns.min_completeness, ns.max_duplicates)
        missed = missed_bars(score, bars)
        print_score(score, missed)
        if ns.json:
            Path(ns.json).write_text(json.dumps({**score.as_dict(), "missed_bars": missed,
                                                 "faults": result.applied}, indent=2))
        if ns.report:
            write_report(score, labels, result.database_url, ns.report, missed, result.manifest_path)
            print(f"fleet: QA report {ns.report}", file=sys.stderr)
        return 1 if missed else 0
    finally:
        run.close()


def score_run(labels_path, manifest_path, database_url):
    """Score a finished run from its labels, manifest and database."""
    from firmware_sim.anomalies import read_labels_csv
    from firmware_sim.fleet_model import read_manifest
    from firmware_sim.qa_score import completeness, score_detection
    from firmware_sim.qa_store import open_store

    labels = read_labels_csv(labels_path)
    fleet, start, end, body = read_manifest(manifest_path)
    with open_store(database_url) as store:
        flags = store.flags(start, end)
        score = score_detection(labels, flags, meters=fleet.gateways * fleet.meters_per_gateway,
                                span_start=start, span_end=end)
        since = float(body.get("produced_since", start))
        score.completeness = completeness(fleet.handed_over(since, end), store.reading_times(since - 3600, end + 3600))
    return score, labels


def write_report(score, labels, database_url, out, missed, manifest_path=None) -> None:
    from firmware_sim.qa_report import render_report, report_context
    from firmware_sim.qa_store import open_store

    with open_store(database_url) as store:
        context = report_context(store, score, labels, manifest_path)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(render_report(score, labels, missed_bars=missed, **context), encoding="utf-8")
