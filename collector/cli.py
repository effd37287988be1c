"""`gridsight collector ...`: serve (API + ingest), ingest, migrate, rebuild, status, maintain.

Every command takes ``--config FILE`` (TOML) on top of the environment; see the README (The collector).
Other collector areas add their own subcommands by appending a module to :data:`PLUGINS`;
each exposes ``register(subparsers)`` and sets ``func(args, settings) -> int`` on its parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import logging
import signal
import sys
import threading
from typing import Sequence

from gridsight.cli import CLIError, run_cli, explain_defaults
from gridsight.logs import setup_logging

__all__ = ["main", "PLUGINS"]

PROG = "gridsight collector"
PLUGINS: list[str] = [
    "collector.forecasting.cli",   # forecast, backtest, policy, weather, carbon
    "collector.registry_cli",      # registry import/export (grid topology)
    "collector.dead_letters_cli",  # dead-letters list/replay
]


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _settings(args: argparse.Namespace):
    from collector.settings import load_collector_settings

    overrides = {"data_dir": args.data_dir, "replica_id": getattr(args, "replica_id", None)}
    return load_collector_settings(args.config, overrides=overrides)


def cmd_migrate(args, settings) -> int:
    from collector.db import current_revision
    from collector.services import open_services

    with open_services(settings, mqtt=False, migrate=False) as services:
        from collector.db import migrate

        migrate(services.database_url, args.revision)
        print(f"database at revision {current_revision(services.database_url)}")
    return 0


def cmd_ingest(args, settings) -> int:
    from collector.ingest import IngestWorker

    stop = _stop_on_signals()
    worker = IngestWorker(settings)
    print(f"{PROG}: ingesting as {settings.client_id} (group {settings.shared_group}); Ctrl-C stops",
          file=sys.stderr)
    worker.run(stop)
    return 0


def cmd_serve(args, settings) -> int:
    import uvicorn

    from collector.api.app import create_app
    from collector.ingest import IngestWorker
    from collector.metrics import Metrics
    from collector.services import open_services

    if args.workers < 1 or (args.workers > 1 and not args.no_ingest):
        raise CLIError("--workers above 1 needs --no-ingest (run ingest as its own process)")
    services = open_services(settings, mqtt=not args.no_ingest)
    try:
        for line in services.embedded:
            print(f"{PROG}: embedded {line}", file=sys.stderr)
        metrics = Metrics()
        worker = None
        # uvicorn handles SIGTERM/SIGINT while serving, then re-raises them to the handlers found
        # at start: ours, so the process still ends cleanly with exit code 0
        stop = _stop_on_signals()
        thread = None
        if not args.no_ingest:
            worker = IngestWorker(settings, services=services, metrics=metrics)
            thread = threading.Thread(target=worker.run, args=(stop,), name="gridsight-ingest", daemon=True)
            thread.start()
        host = args.host or settings.api_host
        port = args.port or settings.api_port
        print(f"{PROG}: API on http://{host}:{port} (OpenAPI at /docs)", file=sys.stderr)
        if args.workers > 1:
            from collector.api.workers import serve_workers

            # separate API processes: each builds its app from these settings and listens on
            # its own SO_REUSEPORT socket, so connections spread evenly over them
            serve_workers(host, port, args.workers, stop, settings, services.database_url)
        else:
            app = create_app(settings, database_url=services.database_url, metrics=metrics, worker=worker)
            uvicorn.run(app, host=host, port=port, log_level="warning")
        stop.set()
        if thread is not None:
            thread.join(30)
    finally:
        services.close()
    return 0


def cmd_rebuild(args, settings) -> int:
    from collector.archive import LocalDirStore, S3Store, rebuild
    from collector.services import open_services

    if args.from_s3 and not settings.s3_bucket:
        raise CLIError("--from-s3 needs S3_BUCKET (and S3_ENDPOINT_URL for a non-AWS endpoint)")
    with open_services(settings, mqtt=False) as services:
        if args.from_dir:
            store = LocalDirStore(args.from_dir)
        elif args.from_s3:
            store = S3Store(settings.s3_endpoint_url, settings.s3_bucket)
        else:
            store = services.store
        print(f"{PROG}: rebuilding from {store.describe()} since {args.since}", file=sys.stderr)
        progress = (lambda line: print(f"  {line}", file=sys.stderr)) if not args.quiet else None
        result = asyncio.run(rebuild(services.database_url, store, args.since, replica=f"rebuild-{settings.replica_id}",
                                     progress=progress))
    print(json.dumps(result.__dict__))
    return 0


def cmd_status(args, settings) -> int:
    from collector.db import current_revision
    from collector.db.queries import ingestion_health
    from collector.services import embedded_database_url
    from collector.settings import asyncpg_dsn

    url = settings.database_url or embedded_database_url(settings)
    if url is None:
        raise CLIError(f"no database: DATABASE_URL is unset and no embedded PostgreSQL runs in {settings.data_dir}")

    async def gather() -> dict:
        import asyncpg

        try:
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise CLIError(f"cannot reach the database: {exc}") from None
        try:
            counts = {}
            for table in ("gateways", "meters", "readings", "interval_summaries", "anomaly_flags", "dead_letters",
                          "archive_objects"):
                counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
            return {"counts": counts, "ingestion": await ingestion_health(conn)}
        finally:
            await conn.close()

    revision = current_revision(url)
    if revision is None:
        raise CLIError("the database is not migrated: run 'gridsight collector migrate'")
    report = asyncio.run(gather())
    report["revision"] = revision
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(f"schema revision {revision}")
    for table, n in report["counts"].items():
        print(f"{table:>20}: {n}")
    ing = report["ingestion"]
    print(f"last message: {ing['last_message_at']}; archive pending: {ing['archive']['pending']}; "
          f"dead letters (1 h): {sum(ing['dead_letters'].values())}")
    conflicts = ing.get("seq_conflicts") or {}
    if conflicts.get("unreplayed"):
        print(f"seq conflicts not replayed: {conflicts['unreplayed']} "
              "(see 'gridsight collector dead-letters list --reason seq_conflict')")
    for event in ing.get("new_epochs", [])[:10]:
        print(event["message"])
    return 0


def cmd_maintain(args, settings) -> int:
    from collector.services import open_services
    from collector.settings import asyncpg_dsn

    async def run(url: str) -> list:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch("SELECT * FROM gridsight_maintain_partitions($1, $2, $3, $4)",
                                    settings.partition_months_ahead, settings.retention_days,
                                    settings.dedupe_days, settings.dead_letter_days)
            await conn.execute("SELECT gridsight_refresh_tableau_rollups()")   # the Tableau rollups (0009)
            return rows
        finally:
            await conn.close()

    with open_services(settings, mqtt=False) as services:
        for row in asyncio.run(run(services.database_url)):
            print(f"{row['action']} {row['target']}")
    print("partitions ensured; retention applied")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The gridsight collector: ingest, query API, archive.")
    parser.add_argument("--config", help="TOML settings file (environment variables override it)")
    parser.add_argument("--data-dir", help="where embedded PostgreSQL, broker and archive live (GRIDSIGHT_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("serve", help="run the query API and the ingest worker")
    p.add_argument("--host", help="listen address (default api_host)")
    p.add_argument("--port", type=int, help="listen port (default api_port)")
    p.add_argument("--no-ingest", action="store_true", help="API only (e.g. API replicas separate from ingest)")
    p.add_argument("--workers", type=int, default=1, help="API worker processes (needs --no-ingest; default 1)")
    p.add_argument("--replica-id", help="this replica's stable id (MQTT session)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ingest", help="run the ingest worker only")
    p.add_argument("--replica-id", help="this replica's stable id (MQTT session)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.add_argument("--revision", default="head", help="target revision (default head)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("rebuild", help="reload PostgreSQL from the raw archive (idempotent)")
    p.add_argument("--since", type=_date, required=True, help="first archive day to load, YYYY-MM-DD (UTC)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from-s3", action="store_true", help="read the S3 bucket of S3_BUCKET/S3_ENDPOINT_URL")
    source.add_argument("--from-dir", help="read a local archive directory")
    p.add_argument("--quiet", action="store_true", help="no per-object progress")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("status", help="what the database holds and how ingestion is doing")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("maintain", help="create partitions ahead, apply retention, prune dedupe keys")
    p.set_defaults(func=cmd_maintain)

    for name in PLUGINS:
        importlib.import_module(name).register(sub)
    return explain_defaults(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging("info", stream=sys.stderr, everything=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run_cli(lambda: args.func(args, _settings(args)), PROG)
