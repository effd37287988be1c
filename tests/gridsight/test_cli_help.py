"""Every option of every `gridsight` subcommand explains itself: it has help text, and --help
shows its default (or says it is required). The test walks the real argparse parsers of every role."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from gridsight.cli import PARSERS, ROLES


def _walk(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


def _parser(role: str) -> argparse.ArgumentParser:
    module, func = PARSERS[role].split(":")
    return getattr(importlib.import_module(module), func)()


def test_every_role_has_a_parser_listed():
    assert set(PARSERS) == set(ROLES)


@pytest.mark.parametrize("role", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(role):
    thin, silent = [], []
    for path, parser in _walk(_parser(role), f"gridsight {role}"):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if action.help is argparse.SUPPRESS:
                continue
            name = f"{path} {'/'.join(action.option_strings)}"
            if not (action.help or "").strip():
                thin.append(name)
            shown = formatter._get_help_string(action).lower()
            if "default" not in shown and not (action.required and "(required)" in shown):
                silent.append(name)
        parser.format_help()      # every help text formats (no stray % signs)
    assert thin == [], "options without help:\n" + "\n".join(thin)
    assert silent == [], "options whose --help does not show the default:\n" + "\n".join(silent)


def test_fleet_progress_reads_as_a_percentage_with_an_eta_in_warm_up_and_scored_phases():
    from firmware_sim.fleet_run import run_progress

    H = 3600.0
    start, scored, finish = 0.0, 72 * H, 144 * H
    warm = run_progress(18 * H, start, scored, finish, real_elapsed_s=30.0)
    assert warm == "warm-up 25% (18.0 of 72 h), run 12%, ETA 3 min 30 s"
    late = run_progress(108 * H, start, scored, finish, real_elapsed_s=150.0)
    assert late.startswith("scored 50% (36.0 of 72.0 h), run 75%") and late.endswith("ETA 50 s")
    assert not re.search(r"-\d", warm + late)      # never "simulated -73.0 h"


def test_no_library_warning_leaks_when_xdg_runtime_dir_is_unset(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run([sys.executable, "-W", "default", "-c",
                           "from gridsight.local_services import EmbeddedPostgres as E; E(%r)" % str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_the_demo_output_in_the_docs_is_a_block_the_script_rewrites():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "demo_output.py"
    spec = importlib.util.spec_from_file_location("demo_output", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.DOC.read_text()
    block = doc.split("<!-- demo-output -->", 1)[1].split("<!-- /demo-output -->", 1)[0]
    assert block.lstrip("`\n").startswith("gridsight demo: ")     # what `gridsight demo` prints first
    fresh = module.replace_block(doc, "gridsight demo: a new run\nPASS\n")
    assert "gridsight demo: a new run\nPASS\n```\n<!-- /demo-output -->" in fresh
    outside = lambda text: (text.split("<!-- demo-output -->")[0], text.split("<!-- /demo-output -->")[1])
    assert outside(fresh) == outside(doc)
    with pytest.raises(ValueError):
        module.replace_block("no block here", "x")


def test_progress_before_the_clock_starts_reads_zero_not_negative():
    from firmware_sim.fleet_run import run_progress

    assert run_progress(-6840.0, 0.0, 172800.0, 432000.0, 0.5).startswith("warm-up 0% (0.0 of 48 h), run 0%")
