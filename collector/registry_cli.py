"""`gridsight collector registry import FILE... | export [--out FILE]`: the grid topology in and out.

A plugin of ``collector/cli.py`` (see its ``PLUGINS``); the document format and the rules are
in :mod:`collector.registry`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from gridsight.cli import CLIError

__all__ = ["register"]


async def _with_connection(url: str, work):
    import asyncpg

    from collector.settings import asyncpg_dsn

    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10, server_settings={"timezone": "UTC"})
    except (OSError, asyncpg.PostgresError) as exc:
        raise CLIError(f"cannot reach the database: {exc}") from None
    try:
        return await work(conn)
    except asyncpg.UndefinedTableError:
        raise CLIError("the database is not migrated: run 'gridsight collector migrate'") from None
    except asyncpg.PostgresError as exc:
        raise CLIError(f"the database refused the registry: {exc}") from None
    finally:
        await conn.close()


def cmd_import(args, settings) -> int:
    from collector.registry import RegistryError, import_registry, load_document
    from collector.services import open_services

    try:
        doc = load_document(*args.files)
    except RegistryError as exc:
        raise CLIError(str(exc)) from None
    print(f"gridsight collector: importing {len(doc.regions)} regions, {len(doc.feeders)} feeders, "
          f"{len(doc.sites)} sites, {len(doc.gateways)} gateways, {len(doc.meters)} meters", file=sys.stderr)
    with open_services(settings, mqtt=False, migrate=False) as services:
        try:
            result = asyncio.run(_with_connection(services.database_url, lambda c: import_registry(c, doc)))
        except RegistryError as exc:
            raise CLIError(str(exc)) from None
    print(result.summary(), file=sys.stderr)
    print(json.dumps(result.as_dict()))
    return 0


def cmd_export(args, settings) -> int:
    from collector.registry import export_registry
    from collector.services import open_services

    with open_services(settings, mqtt=False, migrate=False) as services:
        doc = asyncio.run(_with_connection(services.database_url, export_registry))
    text = doc.to_json()
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            raise CLIError(f"{args.out}: cannot write ({exc.strerror})") from None
        print(f"gridsight collector: wrote {len(doc.sites)} sites, {len(doc.meters)} meters to {args.out}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="import or export the grid topology (regions, feeders, sites, gateways, "
                                        "meters)",
                       description="The registry document (JSON, format gridsight-registry/1) places gateways and "
                                   "meters on sites with coordinates, feeders and regions; see the README (The collector).")
    actions = p.add_subparsers(dest="registry_command", metavar="ACTION")
    actions.required = True
    q = actions.add_parser("import", help="validate a registry document and upsert it (idempotent, all or nothing)")
    q.add_argument("files", nargs="+", metavar="FILE",
                   help="registry document (JSON), or CSV files named after their section (regions.csv, "
                        "feeders.csv, sites.csv, gateways.csv, meters.csv), imported together")
    q.set_defaults(func=cmd_import)
    q = actions.add_parser("export", help="write the database's topology as a registry document")
    q.add_argument("--out", help="file to write (default stdout)")
    q.set_defaults(func=cmd_export)
