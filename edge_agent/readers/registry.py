"""Which module implements each ``[[readers]] type``; imported only when configured.

Adding a meter protocol is one new module plus one line here. Types are imported lazily,
so a gateway without the simulator (or a serial library) fails only if it configures them.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from edge_agent.readers.base import MeterReader
from gridsight.settings import ConfigError

__all__ = ["READER_TYPES", "build_reader", "reader_class"]

READER_TYPES: dict[str, str] = {
    "modbus_tcp": "edge_agent.readers.modbus:ModbusTcpReader",
    "modbus_rtu": "edge_agent.readers.modbus:ModbusRtuReader",
    "dsmr_p1": "edge_agent.readers.dsmr:DsmrP1Reader",
    "sml": "edge_agent.readers.sml:SmlReader",
    "iec62056_21": "edge_agent.readers.iec62056_21:Iec62056ModeCReader",
    "mbus": "edge_agent.readers.mbus:MbusReader",
    "dlms_push": "edge_agent.readers.dlms_push:DlmsPushReader",
    "replay": "edge_agent.readers.replay:ReplayReader",
    "sim": "firmware_sim.reader:SimulatedMeterReader",
}


def reader_class(type_name: str, key: str = "type") -> type:
    """The class registered for ``type_name``; ConfigError if unknown or not installed."""
    target = READER_TYPES.get(type_name)
    if target is None:
        raise ConfigError(key, f"unknown reader type {type_name!r}; one of {', '.join(READER_TYPES)}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install gridsight[sim])" if type_name == "sim" else ""
        raise ConfigError(key, f"reader type {type_name!r} is not available: {exc}{hint}") from None
    return getattr(module, attr)


def build_reader(options: Mapping[str, Any], where: str = "readers[0]") -> MeterReader:
    """Build one reader from its config table; errors name the full key, e.g. ``readers[1].port``."""
    if not isinstance(options, Mapping):
        raise ConfigError(where, f"expected a table, got {options!r}")
    type_name = options.get("type")
    if not isinstance(type_name, str):
        raise ConfigError(f"{where}.type", "missing" if type_name is None else f"expected a string, got {type_name!r}")
    cls = reader_class(type_name, f"{where}.type")
    rest = {k: v for k, v in options.items() if k != "type"}
    try:
        return cls.from_config(rest)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.key}", exc.reason) from None
