"""`gridsight`: one command, a subcommand per role. Each role's CLI lives in its own package
and is imported only when asked for, so a gateway with just the ``[edge]`` extra can run
``gridsight agent`` without the collector's dependencies."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Any, Callable, Sequence

from gridsight.errors import GridsightError

__all__ = [
    "CLIError",
    "main",
    "needs_extra_message",
    "positive_int",
    "run_cli",
    "version",
    "explain_defaults",
    "PARSERS",
]

# role -> (module with main(argv) -> int, one-line help, extra that provides it)
ROLES: dict[str, tuple[str, str, str]] = {
    "agent": ("edge_agent.cli", "run and inspect the gateway agent", "edge"),
    "provision": ("provisioning.cli", "create gateway identities and flashable bundles; check a gateway", "edge"),
    "collector": ("collector.cli", "run the ingest worker and API, migrations, rebuilds, forecasts", "collector"),
    "model": ("model_export.cli", "train, export, verify, score, sign and publish anomaly models", "train"),
    "sim": ("firmware_sim.cli", "simulate meters and fleets, score QA runs, write QA reports", "sim"),
    "dashboards": (
        "dashboards.cli",
        "render Tableau workbooks, write Hyper extracts, deploy TabPy endpoints",
        "tableau",
    ),
    "accounts": ("collector.auth.cli", "create API accounts (the first admin) and service API keys", "collector"),
    "demo": ("firmware_sim.demo", "run a small simulated fleet end to end on the embedded stack", "dev"),
    "schema": ("gridsight.schema_cli", "export the wire contract as JSON Schema", "edge"),
}


# role -> "module:function" building that role's argparse parser (for --help and the test that
# checks every option of every subcommand has help and shows its default)
PARSERS: dict[str, str] = {
    "agent": "edge_agent.cli:build_parser",
    "provision": "provisioning.cli:build_parser",
    "collector": "collector.cli:build_parser",
    "model": "model_export.cli:build_parser",
    "sim": "firmware_sim.cli:build_parser",
    "dashboards": "dashboards.cli:build_parser",
    "accounts": "collector.auth.cli:build_parser",
    "demo": "firmware_sim.demo:build_parser",
    "schema": "gridsight.schema_cli:build_parser",
}


class _ShowsDefaults:
    """Mixed into a parser's help formatter: every option's help ends with its default, unless the
    help already says it. Flags read "(default: off)", options without a value "(default: none)"."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is argparse.SUPPRESS
            or "default" in text.lower()
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        if action.required:
            return f"{text} (required)" if text else "(required)"
        if action.nargs == 0 and isinstance(action.default, bool):
            shown = "on" if action.default else "off"
        elif action.default is None or action.default == []:
            shown = "none"
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def explain_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` and all its subcommands' parsers show every option's default in --help."""
    base: Any = parser.formatter_class
    if not (isinstance(base, type) and issubclass(base, _ShowsDefaults)):
        parser.formatter_class = type(f"ShowsDefaults{base.__name__}", (_ShowsDefaults, base), {})  # type: ignore[assignment]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                explain_defaults(sub)
    return parser


class CLIError(GridsightError):
    """An error a person can act on: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = code


def version() -> str:
    """The installed distribution's version, or the source tree's when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("gridsight")
    except PackageNotFoundError:
        return "0+unknown"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked: importlib.metadata would otherwise be imported
    by every command and stay in memory for its life (the gateway agent's too, ~0.7 MB)."""

    def __init__(
        self,
        option_strings,
        dest=argparse.SUPPRESS,
        default=argparse.SUPPRESS,
        help="show program's version number and exit",
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"gridsight {version()}")
        parser.exit()


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_cli(body: Callable[[], int | None], prog: str) -> int:
    """Run a CLI body, turning known errors into one line on stderr and a non-zero exit code."""
    try:
        return body() or 0
    except GridsightError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (FileNotFoundError, PermissionError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="gridsight",
        description="gridsight: edge anomaly detection for electricity consumption.",
        epilog="Run 'gridsight ROLE --help' for a role's commands.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument(
        "role", choices=list(ROLES), metavar="ROLE", help="; ".join(f"{k}: {v[1]}" for k, v in ROLES.items())
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    ns = parser.parse_args(argv[:1])
    module_name, _, extra = ROLES[ns.role]
    if any(importlib.util.find_spec(name) is None for name in EXTRA_PROBES.get(ns.role, ())):
        # checked before the role's parser runs: even its --help is no promise the role can run
        print(needs_extra_message(ns.role, extra), file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name)
        return int(module.main(argv[1:]) or 0)
    except ModuleNotFoundError as exc:
        if not _is_third_party(exc.name):
            raise
        # a library of the role's extra is not installed: the role (or this command) cannot run
        print(needs_extra_message(ns.role, extra), file=sys.stderr)
        return 2


# role -> libraries only its extra brings (found without importing them): with one missing, the
# role says which extra to install instead of failing later, or printing help it cannot honour
EXTRA_PROBES: dict[str, tuple[str, ...]] = {
    "agent": ("numpy", "paho"),
    "provision": ("cryptography",),
    "collector": ("fastapi", "asyncpg"),
    "accounts": ("fastapi", "asyncpg"),
    "model": ("sklearn", "skl2onnx"),
    "sim": ("sklearn", "fastapi"),
    "demo": ("sklearn", "fastapi"),
    "dashboards": ("lxml", "tableauhyperapi"),
}


# the distribution's own top-level packages: a missing one of these is a broken install, not an extra
_OWN_PACKAGES = frozenset(
    {"gridsight", "edge_agent", "collector", "provisioning", "model_export", "firmware_sim", "dashboards"}
)


def _is_third_party(module_name: str | None) -> bool:
    if not module_name:
        return False
    return module_name.split(".")[0] not in _OWN_PACKAGES


def needs_extra_message(role: str, extra: str) -> str:
    """The one line a role prints when a library of its extra is missing."""
    return f"gridsight {role}: needs the [{extra}] extra: pip install 'gridsight[{extra}]'"


if __name__ == "__main__":
    sys.exit(main())
