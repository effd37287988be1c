"""The `gridsight` command: help for each role, one-line errors, non-zero exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gridsight.cli import ROLES


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", *args], capture_output=True, text=True, timeout=120)


def test_no_arguments_prints_usage_and_fails():
    res = run()
    assert res.returncode == 2 and "usage: gridsight" in res.stderr


def test_unknown_role_is_a_one_line_error():
    res = run("frobnicate")
    assert res.returncode == 2
    assert "invalid choice" in res.stderr and "Traceback" not in res.stderr


def test_version_names_the_installed_distribution():
    from importlib.metadata import version
    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"gridsight {version('gridsight')}"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_role_has_help(role):
    res = run(role, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_role_rejects_an_unknown_option_with_one_line(role):
    res = run(role, "--no-such-option")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("role, args, blocked, extra", [
    ("model", ["keygen", "--private-key", "k.pem", "--public-key", "k.pub"], "cryptography", "train"),
    ("sim", ["history", "--start", "2026-01-05T00:00:00Z", "--days", "1", "--out", "h.csv"], "holidays", "sim"),
    ("collector", ["status"], "asyncpg", "collector"),
    ("dashboards", ["validate"], "lxml", "tableau"),
])
def test_a_role_whose_extra_is_missing_says_which_extra_in_one_line(tmp_path, role, args, blocked, extra):
    # a library of the extra cannot be imported, as on an install without that extra
    # (scripts/extras-matrix.sh checks the same on real single-extra installs)
    code = (f"import sys; sys.modules[{blocked!r}] = None; from gridsight.cli import main; "
            f"sys.exit(main({[role, *args]!r}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr == f"gridsight {role}: needs the [{extra}] extra: pip install 'gridsight[{extra}]'\n"
