"""`gridsight sim`: simulate meters and fleets, score QA runs, write QA reports.

Subcommands:
  history  write a fleet's readings (CSV) and labels for training or replay
  labels   write only the ground-truth labels of a fleet
  fleet    run a simulated fleet through real agents, the broker and the collector
  serve    serve one simulated meter over a real protocol (Modbus TCP, DSMR P1, MQTT, CSV)
  score    score what the collector stored against labels; non-zero exit when a bar is missed
  report   write the QA report (HTML with inline plots)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from gridsight.cli import CLIError, run_cli, explain_defaults

__all__ = ["main"]

PROG = "gridsight sim"


def _time(value: str) -> float:
    from firmware_sim.anomalies import parse_time
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fleet_args(p: argparse.ArgumentParser, *, window: bool = True) -> None:
    p.add_argument("--seed", type=int, default=1, help="fleet seed (same seed, same data)")
    p.add_argument("--gateways", type=int, default=2, help="gateways in the fleet")
    p.add_argument("--meters-per-gateway", type=int, default=4, help="meters behind each gateway")
    p.add_argument("--step-s", type=int, default=60, help="seconds between readings (must divide 900)")
    p.add_argument("--anomaly-rate", type=float, default=0.1, help="share of meters with a consumption anomaly")
    p.add_argument("--fault-rate", type=float, default=0.05, help="share of meters with a data fault")
    p.add_argument("--kinds", default=None, help="comma-separated kinds to inject (default: all)")
    p.add_argument("--tz", default="America/New_York", help="the meters' local time zone (daily rhythm, DST)")
    p.add_argument("--country", default="US", help="country of the public holidays")
    if window:
        p.add_argument("--start", type=_time, required=True, help="ISO-8601 UTC start, e.g. 2026-01-05T00:00:00Z")
        p.add_argument("--days", type=float, default=14.0, help="days to simulate from --start")


def _fleet(ns: argparse.Namespace):
    from firmware_sim.fleet_model import Fleet
    try:
        return Fleet(ns.seed, ns.gateways, ns.meters_per_gateway, start=ns.start, end=ns.start + ns.days * 86400,
                     step_s=ns.step_s, anomaly_rate=ns.anomaly_rate, fault_rate=ns.fault_rate,
                     kinds=ns.kinds.split(",") if ns.kinds else None, tz=ns.tz, country=ns.country)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_history(ns: argparse.Namespace) -> int:
    from firmware_sim.history import write_readings_csv
    fleet = _fleet(ns)
    rows = write_readings_csv(fleet, fleet.start, fleet.end, ns.step_s, ns.out, labels_path=ns.labels,
                              faults=not ns.no_faults, progress=_progress)
    print(f"wrote {rows} readings of {fleet.gateways * fleet.meters_per_gateway} meters to {ns.out}"
          + (f" and labels to {ns.labels}" if ns.labels else ""))
    return 0


def cmd_labels(ns: argparse.Namespace) -> int:
    n = _fleet(ns).write_labels(ns.out)
    print(f"wrote {n} labels to {ns.out}")
    return 0


def _bars(ns: argparse.Namespace):
    from firmware_sim.qa_score import Bars
    none_if_negative = lambda v: None if v is not None and v < 0 else v
    return Bars(none_if_negative(ns.min_recall), none_if_negative(ns.min_precision),
                none_if_negative(ns.min_completeness), none_if_negative(ns.max_duplicates),
                ns.max_false_alarms_per_meter_month)


def _score(ns: argparse.Namespace):
    """Load labels, manifest and stored data; return (score, labels, the open store)."""
    from firmware_sim.anomalies import LabelError, read_labels_csv
    from firmware_sim.fleet_model import ManifestError, read_manifest
    from firmware_sim.qa_score import completeness, score_detection
    from firmware_sim.qa_store import QaStoreError, open_store
    try:
        labels = read_labels_csv(ns.labels)
    except LabelError as exc:
        raise CLIError(str(exc)) from None
    fleet = None
    span = None
    if ns.manifest:
        try:
            fleet, run_start, run_end, body = read_manifest(ns.manifest)
        except ManifestError as exc:
            raise CLIError(str(exc)) from None
        span = (run_start, run_end)
        produced_since = float(body.get("produced_since", run_start))
    try:
        store = open_store(ns.database_url)
    except QaStoreError as exc:
        raise CLIError(str(exc)) from None
    try:
        if span is None:
            span = store.span()
            if span is None:
                raise CLIError("the database holds no interval summaries to score")
            span = (span[0], span[1] + 900)
        flags = store.flags(*span)
        meters = len(store.summarised_meters(*span)) if fleet is None else fleet.gateways * fleet.meters_per_gateway
        score = score_detection(labels, flags, meters=meters, span_start=span[0], span_end=span[1],
                                tolerance_s=ns.tolerance_s, merge_gap_s=ns.merge_gap_s)
        if fleet is not None:
            _progress("score: regenerating the readings the meters handed over")
            produced = fleet.handed_over(produced_since, span[1])
            stored = store.reading_times(produced_since - 3600, span[1] + 3600)
            score.completeness = completeness(produced, stored)
    except QaStoreError as exc:
        raise CLIError(str(exc)) from None
    return score, labels, store


def cmd_score(ns: argparse.Namespace) -> int:
    from firmware_sim.qa_score import missed_bars, print_score
    score, _, store = _score(ns)
    store.close()
    missed = missed_bars(score, _bars(ns))
    print_score(score, missed)
    if ns.json:
        body = json.dumps({**score.as_dict(), "missed_bars": missed}, indent=2)
        if ns.json == "-":
            print(body)
        else:
            Path(ns.json).write_text(body)
    for m in missed:
        print(f"{PROG} score: bar missed: {m}", file=sys.stderr)
    return 1 if missed else 0


def cmd_report(ns: argparse.Namespace) -> int:
    from firmware_sim.qa_report import render_report, report_context
    from firmware_sim.qa_score import missed_bars
    score, labels, store = _score(ns)
    with store:
        context = report_context(store, score, labels, ns.manifest, ns.meters)
    missed = missed_bars(score, _bars(ns))
    html = render_report(score, labels, missed_bars=missed, command="gridsight sim report " + " ".join(ns.argv),
                         **context)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(html, encoding="utf-8")
    print(f"wrote {ns.out} ({len(html) // 1024} KiB): recall {score.overall.recall}, precision {score.overall.precision}")
    return 0


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="labels CSV (meter_id,start,end,kind)")
    p.add_argument("--database-url", required=True, help="the collector's PostgreSQL URL")
    p.add_argument("--manifest", help="run manifest written by 'sim fleet' (enables completeness)")
    p.add_argument("--tolerance-s", type=float, default=3600.0, help="a flag this long after an event still counts")
    p.add_argument("--merge-gap-s", type=float, default=1800.0, help="flags closer than this form one detection")
    p.add_argument("--min-recall", type=float, default=0.9, help="bar; negative disables")
    p.add_argument("--min-precision", type=float, default=0.8, help="bar; negative disables")
    p.add_argument("--min-completeness", type=float, default=1.0, help="bar; negative disables")
    p.add_argument("--max-duplicates", type=int, default=0, help="bar; negative disables")
    p.add_argument("--max-false-alarms-per-meter-month", type=float, default=None,
                   help="bar on false alarms per meter per month")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Simulate meters and fleets, score QA runs, write QA reports.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("history", help="write a fleet's readings CSV (and labels) for training or replay")
    _fleet_args(p)
    p.add_argument("--out", required=True, help="readings CSV to write")
    p.add_argument("--labels", help="labels CSV to write")
    p.add_argument("--no-faults", action="store_true", help="leave out data faults (a clean training set)")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("labels", help="write only the ground-truth labels of a fleet")
    _fleet_args(p)
    p.add_argument("--out", required=True, help="labels CSV to write")
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("score", help="score stored flags and readings against labels (exit 1 when a bar is missed)")
    _score_args(p)
    p.add_argument("--json", help="also write the figures as JSON to this file ('-' for stdout)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="write the QA report as one self-contained HTML page")
    _score_args(p)
    p.add_argument("--out", default="qa-report.html", help="HTML file to write")
    p.add_argument("--meters", type=int, default=6, help="meters to plot")
    p.set_defaults(func=cmd_report)

    from firmware_sim import registry as registry_cli   # grid topology for the collector registry
    registry_cli.add_parser(sub)

    try:
        from firmware_sim import fleet_cli
        fleet_cli.add_parser(sub)
    except ImportError:
        pass
    try:
        from firmware_sim.serve import cli as serve_cli
        serve_cli.add_parser(sub)
    except ImportError:
        pass
    return explain_defaults(parser)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.argv = argv
    return run_cli(lambda: ns.func(ns), f"{PROG} {ns.command}")
