"""`gridsight dashboards`: Tableau files for a deployment, Hyper extracts and TabPy endpoints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from gridsight.cli import CLIError, run_cli, explain_defaults

PROG = "gridsight dashboards"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("render", help="write copies of the shipped .tds/.twb pointed at a deployment's PostgreSQL "
                                      "(--server, --db) or at a Hyper extract (--hyper)")
    p.add_argument("--server", help="PostgreSQL host name Tableau connects to")
    p.add_argument("--db", help="database name")
    p.add_argument("--hyper", type=Path, help="a .hyper file from 'gridsight dashboards extract' instead of a database")
    p.add_argument("--port", type=int, default=5432, help="PostgreSQL port (default 5432)")
    p.add_argument("--user", default="tableau_reader", help="database user (default tableau_reader)")
    p.add_argument("--sslmode", default="require", choices=["disable", "allow", "prefer", "require"],
                   help="TLS mode Tableau uses (default require)")
    p.add_argument("--out", type=Path, default=Path("tableau-deployment"), help="output directory")

    p = sub.add_parser("validate", help="check .twb/.tds files against Tableau's workbook schema")
    p.add_argument("files", nargs="*", type=Path, help="files to check (default: the shipped ones)")

    sub.add_parser("generate", help="regenerate the shipped .tds/.twb files from dashboards/catalog.py")

    p = sub.add_parser("extract", help="write the tableau views into a Hyper extract")
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. gridsight.hyper")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL URL (default: $DATABASE_URL, else the running embedded collector's database)")
    p.add_argument("--config", type=Path, help="collector TOML settings to find the database in")
    p.add_argument("--views", default="", help="comma-separated view names (default: all)")

    p = sub.add_parser("tabpy-deploy", help="deploy the scoring, forecast and policy endpoints to TabPy")
    p.add_argument("--tabpy-url", default=os.environ.get("TABPY_URL", "http://localhost:9004"),
                   help="TabPy server URL (default: $TABPY_URL or http://localhost:9004)")
    p.add_argument("--username", default=os.environ.get("TABPY_USERNAME"), help="TabPy user (default $TABPY_USERNAME)")
    p.add_argument("--password-env", default="TABPY_PASSWORD",
                   help="environment variable holding the TabPy password (default TABPY_PASSWORD)")
    p.add_argument("--model", type=Path, help="ONNX anomaly model the scoring endpoint uses")
    p.add_argument("--endpoints", default="", help="comma-separated subset of endpoints (default: all)")
    p = sub.add_parser("screenshot", help="PNG of a page (e.g. the collector's /dashboard) in headless Chromium")
    p.add_argument("--url", required=True, help="page to load, e.g. http://127.0.0.1:8000/dashboard")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--api-key-env", default="GRIDSIGHT_API_KEY",
                   help="environment variable holding an API key sent as X-API-Key (default GRIDSIGHT_API_KEY)")
    p.add_argument("--width", type=int, default=1240, help="window width in pixels (default 1240)")
    return explain_defaults(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args), PROG)


def _run(args: argparse.Namespace) -> int:
    from .xsd import TableauFileError

    try:
        if args.command == "render":
            return _render(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "generate":
            return _generate()
        if args.command == "extract":
            return _extract(args)
        if args.command == "tabpy-deploy":
            return _tabpy_deploy(args)
        if args.command == "screenshot":
            return _screenshot(args)
    except TableauFileError as exc:
        raise CLIError(str(exc)) from None
    raise CLIError(f"unknown command {args.command}")


def _render(args: argparse.Namespace) -> int:
    from .files import render
    from .tableau_xml import Connection

    if args.hyper is not None:
        if args.server or args.db:
            raise CLIError("--hyper replaces the database: give either --hyper or --server and --db")
        if args.hyper.suffix != ".hyper":
            raise CLIError(f"--hyper {args.hyper}: expected a .hyper file")
        target: Connection | Path = args.hyper.resolve()
    else:
        if not 0 < args.port < 65536:
            raise CLIError(f"--port {args.port} is not a TCP port")
        for flag, value in (("--server", args.server), ("--db", args.db), ("--user", args.user)):
            if value is None or not value.strip():
                raise CLIError(f"{flag} is required (or --hyper for an extract)" if value is None
                               else f"{flag} must not be empty")
        target = Connection(args.server, args.port, args.db, args.user, args.sslmode)
    for path in render(target, args.out):
        print(path)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .files import shipped_files
    from .xsd import validate_file

    files = args.files or shipped_files()
    for path in files:
        validate_file(path)
        print(f"{path}: valid", file=sys.stderr)
    return 0


def _generate() -> int:
    from .files import write_shipped

    for path in write_shipped():
        print(path)
    return 0


def _extract(args: argparse.Namespace) -> int:
    from .catalog import VIEWS, view
    from .extract import ExtractError, write_extract

    url = args.database_url
    if not url:
        from collector.services import embedded_database_url
        from collector.settings import load_collector_settings

        settings = load_collector_settings(args.config)
        url = settings.database_url or embedded_database_url(settings)
    if not url:
        raise CLIError("no database: pass --database-url, set DATABASE_URL, or start 'gridsight collector serve'")
    try:
        views = [view(v.strip()) for v in args.views.split(",") if v.strip()] or list(VIEWS)
    except KeyError as exc:
        raise CLIError(f"--views: {exc.args[0]}") from None
    try:
        results = write_extract(url, args.out, views,
                                progress=lambda m: print(m, file=sys.stderr, flush=True))
    except ExtractError as exc:
        raise CLIError(str(exc)) from None
    print(f"{args.out}: {sum(r.rows for r in results)} rows in {len(results)} tables")
    return 0


def _tabpy_deploy(args: argparse.Namespace) -> int:
    from .tabpy_endpoints import ENDPOINTS, TabPyError, deploy

    names = [e.strip() for e in args.endpoints.split(",") if e.strip()] or list(ENDPOINTS)
    unknown = [n for n in names if n not in ENDPOINTS]
    if unknown:
        raise CLIError(f"--endpoints: unknown {', '.join(unknown)}; choose from {', '.join(ENDPOINTS)}")
    password = os.environ.get(args.password_env) if args.username else None
    if args.username and password is None:
        raise CLIError(f"--username given but ${args.password_env} is not set")
    try:
        deployed = deploy(args.tabpy_url, names, model_path=args.model, username=args.username, password=password,
                          progress=lambda m: print(m, file=sys.stderr, flush=True))
    except TabPyError as exc:
        raise CLIError(str(exc)) from None
    for name in deployed:
        print(name)
    return 0


def _screenshot(args: argparse.Namespace) -> int:
    from .browser import BrowserError, HeadlessChromium

    key = os.environ.get(args.api_key_env)
    headers = {"X-API-Key": key} if key else {}
    if not 320 <= args.width <= 4000:
        raise CLIError(f"--width {args.width} is not between 320 and 4000")
    try:
        with HeadlessChromium(width=args.width) as browser:
            status = browser.open(args.url, headers)
            if status != 200:
                raise CLIError(f"{args.url} answered HTTP {status}"
                               + ("" if key else f" (no API key: ${args.api_key_env} is not set)"))
            print(browser.screenshot(args.out))
    except BrowserError as exc:
        raise CLIError(str(exc)) from None
    return 0
