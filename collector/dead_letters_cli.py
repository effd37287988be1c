"""`gridsight collector dead-letters list | replay`: see refused messages, replay chosen ones.

A plugin of ``collector/cli.py`` (see its ``PLUGINS``); what a replay does is described in
:mod:`collector.dead_letters` and docs/collector.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys

from gridsight.cli import CLIError

__all__ = ["register"]

PROG = "gridsight collector"


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _database_url(settings) -> str:
    from collector.services import embedded_database_url
    from collector.settings import asyncpg_dsn

    url = settings.database_url or embedded_database_url(settings)
    if url is None:
        raise CLIError(f"no database: DATABASE_URL is unset and no embedded PostgreSQL runs in {settings.data_dir}")
    return asyncpg_dsn(url)


async def _guard(work):
    import asyncpg

    try:
        return await work
    except asyncpg.UndefinedColumnError:
        raise CLIError("the database schema is old: run 'gridsight collector migrate'") from None
    except asyncpg.UndefinedTableError:
        raise CLIError("the database is not migrated: run 'gridsight collector migrate'") from None
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        raise CLIError(f"cannot reach the database: {exc}") from None


def cmd_list(args, settings) -> int:
    from collector.db.writer import connect
    from collector.dead_letters import select_dead_letters

    async def work():
        conn = await connect(_database_url(settings))
        try:
            return await select_dead_letters(conn, reason=args.reason, gateway_id=args.gateway, since=args.since,
                                             again=True, limit=args.limit)
        finally:
            await conn.close()

    rows = asyncio.run(_guard(work()))
    for r in rows:
        line = {"id": r["id"], "received_at": r["received_at"], "gateway_id": r["gateway_id"], "reason": r["reason"],
                "topic": r["topic"], "payload_bytes": r["payload_bytes"]}
        print(json.dumps(line) if args.json else
              f"{r['id']:>8}  {r['reason']:<20} {r['gateway_id'] or '-':<20} {r['topic']}  {r['payload_bytes']} bytes")
    print(f"{PROG}: {len(rows)} dead letters", file=sys.stderr)
    return 0


def cmd_replay(args, settings) -> int:
    from collector.dead_letters import replay_dead_letters

    if not (args.id or args.reason or args.gateway):
        raise CLIError("choose the dead letters to replay: --id, --reason and/or --gateway")

    def progress(o) -> None:
        if not args.quiet:
            print(f"{o.id:>8}  {o.reason:<20} {o.gateway_id or '-':<20} {o.result}: {o.detail}", file=sys.stderr)

    report = asyncio.run(_guard(replay_dead_letters(
        _database_url(settings), ids=args.id, reason=args.reason, gateway_id=args.gateway, since=args.since,
        again=args.again, limit=args.limit, dry_run=args.dry_run, replica=f"replay-{settings.replica_id}",
        unknown_gateways=settings.unknown_gateways, progress=progress)))
    counts = report.counts()
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{PROG}: {verb} {report.selected} dead letters: "
          + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none selected"), file=sys.stderr)
    print(json.dumps({"selected": report.selected, "dry_run": report.dry_run, "results": counts}))
    return 1 if counts.get("refused") and not args.dry_run else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dead-letters", help="list refused messages, or replay chosen ones once the cause is fixed",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    dl = p.add_subparsers(dest="dl_command", metavar="ACTION")
    dl.required = True

    q = dl.add_parser("list", help="dead letters, oldest first (replayed ones included)",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--reason", help="only this reason, e.g. seq_conflict, unknown_gateway, malformed")
    q.add_argument("--gateway", help="only this gateway id")
    q.add_argument("--since", type=_date, help="received on or after this day, YYYY-MM-DD (UTC)")
    q.add_argument("--limit", type=int, default=100, help="at most this many")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=cmd_list)

    r = dl.add_parser("replay", help="feed chosen dead letters through ingestion again (see docs/collector.md)",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--id", type=int, action="append", help="a dead letter id (repeat for several)")
    r.add_argument("--reason", help="every dead letter with this reason, e.g. seq_conflict")
    r.add_argument("--gateway", help="every dead letter of this gateway id")
    r.add_argument("--since", type=_date, help="only letters received on or after this day, YYYY-MM-DD (UTC)")
    r.add_argument("--limit", type=int, default=1000, help="at most this many letters per run")
    r.add_argument("--again", action="store_true", help="include letters already replayed")
    r.add_argument("--dry-run", action="store_true", help="say what each letter would do; write nothing")
    r.add_argument("--quiet", action="store_true", help="no line per letter")
    r.set_defaults(func=cmd_replay)
