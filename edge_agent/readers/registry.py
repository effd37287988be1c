"""Which class implements each ``[[readers]] type``: the ``gridsight.readers`` entry points.

A reader registers itself in its distribution's metadata, so adding a meter protocol is one
module plus one line in ``pyproject.toml``::

    [project.entry-points."gridsight.readers"]
    modbus_tcp = "edge_agent.readers.modbus:ModbusTcpReader"
    mbus = "edge_agent.readers.mbus:MbusReader [mbus]"     # [extra]: what to install for it

Another distribution can add readers the same way. Types are imported only when configured,
so a gateway without a reader's libraries fails only if it configures that reader. Run from a
source checkout whose installed metadata predates a new entry, the checkout's own
``pyproject.toml`` is read too, so a reader added there is found without reinstalling.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from edge_agent.readers.base import MeterReader
from gridsight.settings import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "ReaderEntry", "build_reader", "reader_class", "reader_types"]

ENTRY_POINT_GROUP = "gridsight.readers"
_CHECKOUT_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_VALUE = re.compile(r"^\s*(?P<target>[\w.]+:[\w.]+)\s*(?:\[(?P<extras>[^\]]*)\])?\s*$")


class ReaderEntry(NamedTuple):
    """One registered reader type: ``module:Class`` and the extras that provide its libraries."""

    target: str
    extras: tuple[str, ...] = ()


def _parse(value: str) -> ReaderEntry | None:
    match = _VALUE.match(value)
    if match is None:
        return None
    extras = tuple(e.strip() for e in (match.group("extras") or "").split(",") if e.strip())
    return ReaderEntry(match.group("target"), extras)


def _checkout_entries(pyproject: Path) -> dict[str, ReaderEntry]:
    try:
        with pyproject.open("rb") as fh:
            project = tomllib.load(fh).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    if project.get("name") != "gridsight":
        return {}
    declared = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    return {name: entry for name, value in declared.items() if (entry := _parse(str(value))) is not None}


def _section(text: str, group: str) -> list[tuple[str, str]]:
    """``name = value`` pairs of one ``[group]`` of an ``entry_points.txt``."""
    pairs, inside = [], False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            pairs.append((name.strip(), value.strip()))
    return pairs


def _installed_entry_points(group: str) -> list[tuple[str, str]]:
    """The ``group`` entry points of the distributions on ``sys.path``, as
    ``importlib.metadata.entry_points(group=...)`` lists them (each distribution name once, the
    first on the path), read from their ``entry_points.txt`` directly: importlib.metadata would
    stay in the agent's memory with the email, zipfile and csv modules it imports (~0.7 MB)."""
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if not dot or suffix not in ("dist-info", "egg-info"):
                continue
            dist = re.sub(r"[-_.]+", "-", stem.partition("-")[0]).lower()
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), encoding="utf-8") as fh:
                    pairs += _section(fh.read(), group)
            except OSError:
                continue
    return pairs


@functools.cache
def reader_types() -> dict[str, ReaderEntry]:
    """Every registered reader type: installed entry points, then this checkout's declarations."""
    found: dict[str, ReaderEntry] = {}
    for name, value in _installed_entry_points(ENTRY_POINT_GROUP):
        entry = _parse(value)
        if entry is not None:
            found[name] = entry
    found.update(_checkout_entries(_CHECKOUT_PYPROJECT))
    return found


def reader_class(type_name: str, key: str = "type") -> type:
    """The class registered for ``type_name``; ConfigError if unknown or not installed."""
    types = reader_types()
    entry = types.get(type_name)
    if entry is None:
        raise ConfigError(key, f"unknown reader type {type_name!r}; one of {', '.join(types)}")
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = "".join(f" (install gridsight[{extra}])" for extra in entry.extras)
        raise ConfigError(key, f"reader type {type_name!r} is not available: {exc}{hint}") from None
    return getattr(module, attr)


def build_reader(options: Mapping[str, Any], where: str = "readers[0]") -> MeterReader:
    """Build one reader from its config table; errors name the full key, e.g. ``readers[1].port``."""
    if not isinstance(options, Mapping):
        raise ConfigError(where, f"expected a table, got {options!r}")
    type_name = options.get("type")
    if not isinstance(type_name, str):
        raise ConfigError(f"{where}.type", "missing" if type_name is None else f"expected a string, got {type_name!r}")
    cls: Any = reader_class(type_name, f"{where}.type")
    rest = {k: v for k, v in options.items() if k != "type"}
    try:
        return cls.from_config(rest)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.key}", exc.reason) from None
