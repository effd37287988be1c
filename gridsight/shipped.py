"""The deployment files gridsight ships: the agent's systemd unit, the Mosquitto configuration
and the example agent config. An installed wheel carries them as package data
(``gridsight/_deploy/``, copied from ``deploy/`` at build time, see setup.py); a checkout reads
``deploy/`` itself. Standard library only."""

from __future__ import annotations

from pathlib import Path

from gridsight.errors import GridsightError

__all__ = ["SHIPPED", "shipped_file"]

# name -> path below deploy/ (and below gridsight/_deploy/ in a wheel)
SHIPPED = {
    "gridsight-agent.service": "systemd/gridsight-agent.service",
    "gridsight-collector.service": "systemd/gridsight-collector.service",
    "agent.example.toml": "systemd/agent.example.toml",
    "gridsight.conf": "mosquitto/gridsight.conf",
}


def shipped_file(name: str) -> Path:
    """The path of a shipped deployment file; :class:`GridsightError` when the install lacks it."""
    relative = SHIPPED[name]
    here = Path(__file__).resolve().parent
    for candidate in (here / "_deploy" / relative, here.parent / "deploy" / relative):
        if candidate.is_file():
            return candidate
    raise GridsightError(f"{name} is not in this installation ({here}); reinstall gridsight from its wheel")
