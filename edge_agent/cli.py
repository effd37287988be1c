"""``gridsight agent``: run the gateway agent, check its config, show its status.

    gridsight agent run --config /etc/gridsight/agent.toml
    gridsight agent check-config --config agent.toml
    gridsight agent status --config agent.toml        (or --data-dir DIR)

``run`` stops gracefully on SIGTERM or SIGINT (seal staged readings, wait for PUBACKs,
publish offline status). Configuration errors stop start-up with one line naming the key.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from edge_agent.config import AgentSettings
from gridsight.settings import load_settings
from gridsight.cli import CLIError, run_cli, explain_defaults

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridsight agent",
        description="The gateway agent: read meters, score intervals, keep a durable outbox, publish over MQTT.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent until SIGTERM")
    check = sub.add_parser("check-config", help="validate a config file (readers, model, broker URL) and print it")
    status = sub.add_parser("status", help="show the outbox depth and the last status of an agent")
    for sp in (run, check, status):
        sp.add_argument("--config", "-c", type=Path, help="agent TOML file (environment GRIDSIGHT_* overrides it)")
        sp.add_argument("--gateway-id", help="override gateway_id; default: the config file's value")
        sp.add_argument(
            "--data-dir",
            type=Path,
            help="override data_dir (where outbox.sqlite lives); default: the config file's value",
        )
    run.add_argument("--mqtt-url", help="override mqtt.url; default: the config file's value")
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override log_level; default: the config file's value",
    )
    run.add_argument("--no-publish", action="store_true", help="keep everything in the outbox (no MQTT)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    return explain_defaults(p)


def _settings(args: argparse.Namespace, require_gateway: bool = True) -> AgentSettings:
    overrides = {
        "gateway_id": args.gateway_id,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "log_level": getattr(args, "log_level", None),
    }
    if getattr(args, "mqtt_url", None):
        overrides["mqtt"] = {"url": args.mqtt_url}
    if not require_gateway and not args.gateway_id:
        overrides["gateway_id"] = overrides["gateway_id"] or "status-reader"
    return load_settings(AgentSettings, args.config, overrides=overrides)


def _run(args: argparse.Namespace) -> int:
    from edge_agent import footprint

    # before numpy is imported (by the runtime) and before any thread starts
    footprint.limit_thread_pools()
    footprint.tune_allocator()
    from gridsight.logs import setup_logging
    from edge_agent.runtime import Agent, NullTransport

    settings = _settings(args)
    setup_logging(settings.log_level)
    log = logging.getLogger("gridsight.agent")
    if os.environ.get("GRIDSIGHT_DATA_DIR") and "GRIDSIGHT_AGENT_DATA_DIR" not in os.environ:
        log.warning(
            "GRIDSIGHT_DATA_DIR is the collector's setting and is ignored here; the agent's data dir is "
            "%s (set data_dir or GRIDSIGHT_AGENT_DATA_DIR)",
            settings.data_dir,
        )
    agent = Agent(settings, transport=NullTransport() if args.no_publish else None)
    released = footprint.release_startup_memory()
    logging.getLogger("gridsight.agent").info(
        "start-up memory released: %.1f MB heap, %.1f MB library pages", released.heap / 1e6, released.file_pages / 1e6
    )
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    now = agent.clock.now()
    first_end = (int(now // settings.interval_s) + 1) * settings.interval_s
    sealed_at = first_end + settings.grace_s
    wall_wait = (sealed_at - now) / settings.clock.speed
    log.info(
        "gridsight agent %s running: %d readers, model %s, scorer %s, outbox %s; the first interval "
        "(%s to %s) is sealed and sent at %s, in %.0f s",
        settings.gateway_id,
        len(agent.slots),
        agent.model_version or "none",
        (agent.scoring.scorer.kind if agent.scoring.scorer else "none"),
        settings.outbox_path,
        _utc(first_end - settings.interval_s),
        _utc(first_end),
        _utc(sealed_at),
        wall_wait,
        extra={
            "fields": {
                "event": "started",
                "gateway_id": settings.gateway_id,
                "first_interval_sealed_at": _utc(sealed_at),
                "first_summary_in_s": round(wall_wait),
            }
        },
    )
    try:
        agent.run(stop)
    except Exception as exc:  # a bug must not leave a half-alive agent: exit, let systemd restart it
        logging.getLogger("gridsight.agent").exception("agent stopped after an internal error")
        raise CLIError(
            f"stopped after an internal error ({type(exc).__name__}: {exc}); a restart resumes from the outbox", code=1
        ) from None
    return 0


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _check(args: argparse.Namespace) -> int:
    from edge_agent.readers.registry import build_reader
    from edge_agent.runtime import load_scorer

    settings = _settings(args)
    scorer = load_scorer(settings)
    for i, table in enumerate(settings.readers):
        build_reader(table, f"readers[{i}]").close()
    print(json.dumps(settings.describe(), indent=2))
    print(
        f"config OK: gateway {settings.gateway_id}, {len(settings.readers)} readers, "
        f"model {scorer.name + ' ' + scorer.version if scorer else 'none'}",
        file=sys.stderr,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    if args.config is None and args.data_dir is None:
        raise CLIError("give --config or --data-dir")
    settings = _settings(args, require_gateway=False)
    data_dir = Path(settings.data_dir)
    db_path = data_dir / "outbox.sqlite"
    if not db_path.exists():
        raise CLIError(f"no outbox at {db_path} (has the agent run with this data_dir?)")
    from edge_agent.outbox import read_snapshot

    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
        snap = read_snapshot(db)
        db.close()
    except sqlite3.DatabaseError as exc:
        raise CLIError(f"cannot read {db_path}: {exc}") from None
    last = None
    status_file = data_dir / "status.json"
    if status_file.exists():
        try:
            last = json.loads(status_file.read_text())
        except (OSError, ValueError):
            last = None
    depth, size, staged, oldest = (
        snap["queue"],
        snap["queue_bytes"],
        snap["unsealed_readings"],
        snap["oldest_queued_at"],
    )
    report = {
        "outbox": str(db_path),
        "epoch": snap["epoch"],
        "queue": {k: depth.get(k, 0) for k in ("flag", "summary", "raw", "status")},
        "queue_depth": snap["queue_depth"],
        "queue_bytes": size,
        "unsealed_readings": staged,
        "oldest_queued_age_s": round(time.time() - oldest, 1) if oldest else None,
        "next_seq": snap["next_seq"],
        "evicted": snap["evicted"],
        "last_status": last,
    }
    file_outbox = (last or {}).get("outbox") or {}
    # status.json is rewritten within one poll cycle of any queue change while the agent runs;
    # when it disagrees with the outbox, the agent is not running (or has just changed it)
    report["status_file_agrees"] = (
        bool(file_outbox)
        and file_outbox.get("queue_depth") == snap["queue_depth"]
        and file_outbox.get("next_seq") == snap["next_seq"]
        and file_outbox.get("epoch") == snap["epoch"]
    )
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(f"outbox        {db_path}")
    print(
        f"queue depth   {report['queue_depth']} messages ({size} bytes): "
        + ", ".join(f"{k} {v}" for k, v in report["queue"].items())
    )
    print(f"unsealed      {staged} readings; epoch {report['epoch']}, next seq {report['next_seq']}")
    if oldest:
        print(f"oldest queued {report['oldest_queued_age_s']} s ago")
    print("evicted       " + (", ".join(f"{k[8:]} {v}" for k, v in report["evicted"].items() if v) or "nothing"))
    if last:
        c = last.get("counters", {})
        age = time.time() - last.get("written_at", 0)
        print(
            f"last status   {age:.0f} s ago: uptime {last.get('uptime_s')} s, model {last.get('model_version')} "
            f"(scorer {last.get('scorer') or 'none'}), "
            f"mqtt {'connected' if c.get('mqtt_connected') else 'disconnected'}, readings {c.get('readings')}, "
            f"reader errors {c.get('reader_errors')}, rss {c.get('rss_mb')} MB"
        )
        if not report["status_file_agrees"]:
            print(
                f"status.json   written {age:.0f} s ago says queue depth {file_outbox.get('queue_depth')}, "
                f"next seq {file_outbox.get('next_seq')}: the agent is not running, or changed the outbox "
                "since (it rewrites the file within one poll cycle)"
            )
        for r in last.get("readers", []):
            state = f"FAILING ({r['failures']}x): {r['last_error']}" if r.get("failures") else "ok"
            print(f"  reader {r['name']}: {r['readings']} readings, {r['errors']} errors, {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    body = {"run": _run, "check-config": _check, "status": _status}[args.command]

    def guarded() -> int:
        from edge_agent.outbox import OutboxError

        try:
            return body(args)
        except OutboxError as exc:
            raise CLIError(str(exc)) from None

    if args.command == "run":
        # the service's every line is JSON, its start-up refusal included (journald keeps stderr too)
        from gridsight.errors import GridsightError
        from gridsight.logs import json_line

        try:
            return guarded()
        except GridsightError as exc:
            print(json_line("error", f"gridsight agent run: {exc}", "gridsight.agent"), file=sys.stderr)
            return exc.exit_code
    return run_cli(guarded, f"gridsight agent {args.command}")
