"""ruff and mypy find nothing in the kernel (gridsight/) and the gateway (edge_agent/), and both
are ruff-formatted.

Their configuration is in pyproject.toml; this is how `make test` runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKED = ["gridsight", "edge_agent"]
FORMATTED = ["gridsight", "edge_agent"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_ruff_lint_finds_nothing_in_the_kernel_and_edge_agent():
    res = _run("ruff", "check", "--no-fix", *CHECKED)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-1000:]


@pytest.mark.slow
def test_mypy_finds_nothing_in_the_kernel_and_edge_agent():
    res = _run("mypy", *CHECKED)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-1000:]


def test_the_kernel_and_edge_agent_are_ruff_formatted():
    res = _run("ruff", "format", "--check", "--diff", *FORMATTED)
    assert res.returncode == 0, f"run `ruff format {' '.join(FORMATTED)}`:\n" + res.stdout[-4000:] + res.stderr[-1000:]
