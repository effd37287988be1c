"""`gridsight schema`: export the wire contract as JSON Schema for implementations in other languages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from gridsight import wire
from gridsight.cli import CLIError, explain_defaults, run_cli

PROG = "gridsight schema"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write one ``{kind}.json`` per upward message kind; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, schema in wire.json_schemas().items():
        path = out_dir / f"{kind}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument(
        "--out",
        type=Path,
        help="directory to write one {kind}.json per message kind (default: print all schemas as one JSON object)",
    )
    return explain_defaults(p)


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)

    def body() -> int:
        if ns.out is None:
            print(json.dumps(wire.json_schemas(), indent=2, sort_keys=True))
            return 0
        if ns.out.exists() and not ns.out.is_dir():
            raise CLIError(f"--out {ns.out} exists and is not a directory")
        for path in write_schemas(ns.out):
            print(path)
        return 0

    return run_cli(body, PROG)
