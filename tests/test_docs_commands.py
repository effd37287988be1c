"""Every `gridsight ...` command shown in docs/ names a subcommand path that exists.

A reader copies commands from the docs verbatim; a renamed or removed subcommand must fail
here, not on a user's machine. Each command's leading words (the role and its subcommands) are
run with `--help`, which parses them without doing any work."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from gridsight.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
# `gridsight` as a command (not the `gridsight/v1/...` topic or `gridsight-agent` unit), then its words.
COMMAND = re.compile(r"(?:^|[\s/`$(])(?<!-g )gridsight((?:[ \t]+[a-z][a-z0-9_-]*(?=[\s`;|&)]|$))+)")
WORD = re.compile(r"[a-z][a-z0-9_-]*\Z")


def _code_spans(text: str) -> list[str]:
    """Lines of fenced code blocks plus inline `code` spans."""
    spans, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            spans.append(line)
        else:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


def documented_commands() -> dict[tuple[str, ...], str]:
    """Subcommand paths shown in docs/*.md, each with the first place it is shown."""
    found: dict[tuple[str, ...], str] = {}
    for page in sorted(DOCS.glob("*.md")):
        for span in _code_spans(page.read_text(encoding="utf-8")):
            for match in COMMAND.finditer(span):
                words = tuple(w for w in match.group(1).split() if WORD.match(w))
                found.setdefault(words, f"{page.name}: {span.strip()}")
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_role():
    roles = {words[0] for words in COMMANDS}
    assert {"agent", "collector", "model", "sim", "dashboards", "provision", "accounts"} <= roles, roles


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_documented_command_parses_with_help(words):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*words, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"{COMMANDS[words]}\n`gridsight {' '.join(words)} --help` exited {code}: {err.getvalue()[-500:]}"
    assert "usage:" in out.getvalue()
