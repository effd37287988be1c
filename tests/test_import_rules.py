"""The layer rules of docs/development.md hold: imports only run downward, the gateway and the
cloud never import each other, no file cycles, no private names taken from another module.

The package rules are import-linter contracts in pyproject.toml (`lint-imports` prints the
same report); private names are checked here with `ast`, which import-linter cannot see."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gridsight", "edge_agent", "collector", "provisioning", "model_export", "firmware_sim", "dashboards")
SCANNED = (*PACKAGES, "bench")


def test_import_linter_contracts_are_kept():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def private_imports(path: Path, source: str | None = None) -> list[str]:
    """`from project.module import _name`, and `Imported._name` / `module._name` on a name bound
    by an import of a project module other than this file."""
    me = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, str(path))
    bound: dict[str, str] = {}   # local name -> dotted project name it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in SCANNED:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {alias.name}")
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in SCANNED:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                target = ".".join([bound[value.id], *reversed(chain)])
                if target != me:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {target}.{node.attr}")
    return found


def test_no_module_uses_private_names_of_another_module():
    found = [hit for root in SCANNED for path in sorted((REPO / root).rglob("*.py")) for hit in private_imports(path)]
    assert found == [], "private names used across modules (make them public or move the code):\n" + "\n".join(found)


def test_the_private_name_check_catches_both_forms():
    source = "from gridsight.wire import _build\nfrom gridsight.wire import Reading\nx = Reading._RULES\n"
    assert [h.split(": ", 1)[1] for h in private_imports(REPO / "bench" / "probe.py", source)] == [
        "from gridsight.wire import _build", "gridsight.wire.Reading._RULES"]
