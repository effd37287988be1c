"""Modbus TCP and RTU meters (pymodbus), described by register maps shipped as data.

A register map (``register_maps/<name>.toml`` or any TOML file via ``map_file``) says which
function reads the meter (``input`` = 04 or ``holding`` = 03), the word order of multi-register
values (``big``: high word first, as Eastron meters do; ``little``: low word first), and for
each reading field (``energy_kwh`` required; ``power_w``, ``voltage_v``, ``current_a``,
``power_factor``, ``export_kwh``, ``import_t1_kwh``/``import_t2_kwh`` and the per-phase
``voltage_l1_v`` .. ``power_l3_w`` optional) its 0-based ``address``, ``type`` (float32, float64, int16,
uint16, int32, uint32, int64, uint64) and ``scale`` (multiplier to the field's unit, e.g.
0.01 for a register in 10 Wh steps and kWh wanted). Fields are fetched in as few requests as
possible (contiguous blocks of at most 120 registers).

One reader serves one TCP gateway or serial bus with one or more units::

    [[readers]]
    type = "modbus_tcp"          # or "modbus_rtu" with port = "/dev/ttyUSB0", baudrate, parity, stopbits
    host = "192.168.1.50"
    port = 502
    map = "sdm630"               # or map_file = "/etc/gridsight/meter.toml"
    timeout_s = 1.0
    units = [{ unit = 1, meter_id = "flat-12" }, { unit = 2, meter_id = "flat-14" }]

Readings are stamped with the agent's clock at the poll. A unit that does not answer or
answers with an exception code raises :class:`ReaderError` naming the unit, after the units
that did answer have been handed over on the previous call, so one dead meter on a bus never
hides the others: their readings are returned and the failure is reported on the next poll.
"""

from __future__ import annotations

import math
import struct
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from gridsight.settings import ConfigError
from gridsight.wire import PHASE_FIELDS, Reading

__all__ = [
    "RegisterMap",
    "RegisterField",
    "ModbusTcpReader",
    "ModbusRtuReader",
    "load_register_map",
    "decode_value",
    "SHIPPED_MAPS",
]

SHIPPED_MAPS = ("sdm630", "sdm120", "sdm72", "em24")
_TYPES = {
    "float32": (">f", 2),
    "float64": (">d", 4),
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
}
_READING_FIELDS = (
    "energy_kwh",
    "power_w",
    "voltage_v",
    "current_a",
    "power_factor",
    "export_kwh",
    "import_t1_kwh",
    "import_t2_kwh",
    *PHASE_FIELDS,
)
_MAX_BLOCK = 120


@dataclass(frozen=True, slots=True)
class RegisterField:
    name: str
    address: int
    type: str
    scale: float = 1.0

    @property
    def count(self) -> int:
        return _TYPES[self.type][1]


@dataclass(frozen=True, slots=True)
class RegisterMap:
    name: str
    function: str  # "input" | "holding"
    word_order: str  # "big" | "little"
    fields: tuple[RegisterField, ...]

    def blocks(self) -> list[tuple[int, int, list[RegisterField]]]:
        """Contiguous ``(start, count, fields)`` requests covering every field."""
        out: list[tuple[int, int, list[RegisterField]]] = []
        for f in sorted(self.fields, key=lambda f: f.address):
            if out and f.address + f.count - out[-1][0] <= _MAX_BLOCK:
                start, count, fields = out[-1]
                out[-1] = (start, max(count, f.address + f.count - start), fields + [f])
            else:
                out.append((f.address, f.count, [f]))
        return out


def decode_value(registers: list[int], type_name: str, word_order: str) -> float:
    """A value from its 16-bit registers (each register big-endian, as Modbus sends them)."""
    fmt, count = _TYPES[type_name]
    regs = list(registers[:count])
    if word_order == "little":
        regs.reverse()
    return float(struct.unpack(fmt, struct.pack(f">{count}H", *regs))[0])


def load_register_map(name: str | None = None, path: str | Path | None = None, key: str = "map") -> RegisterMap:
    """A shipped map by name, or a map file; ConfigError naming ``key`` if it is unusable."""
    try:
        if path is not None:
            text = Path(path).expanduser().read_text()
            source = str(path)
        else:
            if name not in SHIPPED_MAPS:
                raise ConfigError(key, f"unknown register map {name!r}; shipped: {', '.join(SHIPPED_MAPS)}")
            text = resources.files("edge_agent.readers.register_maps").joinpath(f"{name}.toml").read_text()
            source = name
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(key, f"cannot read register map {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"register map {path or name} is not valid TOML ({exc})") from None
    function = data.get("function", "input")
    word_order = data.get("word_order", "big")
    if function not in ("input", "holding"):
        raise ConfigError(key, f"{source}: function must be input or holding, got {function!r}")
    if word_order not in ("big", "little"):
        raise ConfigError(key, f"{source}: word_order must be big or little, got {word_order!r}")
    fields_table = data.get("fields")
    if not isinstance(fields_table, dict) or "energy_kwh" not in fields_table:
        raise ConfigError(key, f"{source}: needs a [fields.energy_kwh] table")
    fields = []
    for fname, spec in fields_table.items():
        where = f"{source}: fields.{fname}"
        if fname not in _READING_FIELDS:
            raise ConfigError(key, f"{where}: not a reading field ({', '.join(_READING_FIELDS)})")
        if not isinstance(spec, dict):
            raise ConfigError(key, f"{where}: expected a table")
        address, type_name, scale = spec.get("address"), spec.get("type", "float32"), spec.get("scale", 1.0)
        if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 65535:
            raise ConfigError(key, f"{where}.address must be 0..65535, got {address!r}")
        if type_name not in _TYPES:
            raise ConfigError(key, f"{where}.type must be one of {', '.join(_TYPES)}, got {type_name!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
            raise ConfigError(key, f"{where}.scale must be a non-zero number, got {scale!r}")
        fields.append(RegisterField(fname, address, type_name, float(scale)))
    return RegisterMap(str(data.get("name", source)), function, word_order, tuple(fields))


def _units(options: Mapping[str, Any]) -> list[tuple[int, str]]:
    if "units" in options:
        raw = option(options, "units", list, check=lambda v: len(v) > 0, why="must list at least one unit")
        out = []
        for i, u in enumerate(raw):
            if not isinstance(u, dict):
                raise ConfigError(f"units[{i}]", "expected a table with unit and meter_id")
            reject_unknown(u, {"unit", "meter_id"})
            try:
                unit = option(u, "unit", int, check=lambda v: 0 <= v <= 247, why="must be 0..247")
                meter_id = option(u, "meter_id", str)
            except ConfigError as exc:
                raise ConfigError(f"units[{i}].{exc.key}", exc.reason) from None
            out.append((unit, meter_id))
        return out
    unit = option(options, "unit", int, 1, check=lambda v: 0 <= v <= 247, why="must be 0..247")
    return [(unit, option(options, "meter_id", str))]


class _ModbusReader:
    """What TCP and RTU share: the register map, the units, decoding and error handling."""

    def __init__(self, client: Any, register_map: RegisterMap, units: list[tuple[int, str]], name: str) -> None:
        self.client = client
        self.map = register_map
        self.units = units
        self.name = name
        self._deferred: ReaderError | None = None

    @staticmethod
    def _common(options: Mapping[str, Any]) -> tuple[RegisterMap, list[tuple[int, str]], float]:
        if "map" in options and "map_file" in options:
            raise ConfigError("map_file", "give either map or map_file, not both")
        if "map_file" in options:
            register_map = load_register_map(path=option(options, "map_file", str), key="map_file")
        else:
            register_map = load_register_map(option(options, "map", str, "sdm630"))
        timeout = option(options, "timeout_s", float, 1.0, check=lambda v: 0 < v <= 60, why="must be 0..60 s")
        return register_map, _units(options), timeout

    def _read_unit(self, unit: int) -> dict[str, float]:
        from pymodbus.exceptions import ModbusException

        values: dict[str, float] = {}
        reader = (
            self.client.read_input_registers if self.map.function == "input" else self.client.read_holding_registers
        )
        for start, count, fields in self.map.blocks():
            try:
                if not self.client.connected and not self.client.connect():
                    raise ReaderError(f"{self.name}: cannot connect")
                result = reader(start, count=count, device_id=unit)
            except ModbusException as exc:
                raise ReaderError(f"{self.name} unit {unit}: {exc}") from None
            except OSError as exc:
                raise ReaderError(f"{self.name} unit {unit}: {exc}") from None
            if result.isError():
                raise ReaderError(f"{self.name} unit {unit}: exception response {result}")
            registers = list(result.registers)
            if len(registers) < count:
                raise ReaderError(f"{self.name} unit {unit}: {len(registers)} registers, expected {count}")
            for f in fields:
                offset = f.address - start
                values[f.name] = (
                    decode_value(registers[offset : offset + f.count], f.type, self.map.word_order) * f.scale
                )
        return values

    def read(self, now: float) -> list[Reading]:
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        out: list[Reading] = []
        failures: list[str] = []
        for unit, meter_id in self.units:
            try:
                values = self._read_unit(unit)
                if "voltage_v" not in values and "voltage_l1_v" in values:
                    values["voltage_v"] = values["voltage_l1_v"]
                if "current_a" not in values and "current_l1_a" in values:
                    values["current_a"] = values["current_l1_a"]
                out.append(checked_reading(meter_id, now, **values))
            except ReaderError as exc:
                failures.append(f"{meter_id}: {exc}")
        if failures:
            error = ReaderError("; ".join(failures)[:500])
            if not out:
                raise error
            self._deferred = error  # hand over the good units now, report the bad ones next poll
        return out

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


class ModbusTcpReader(_ModbusReader):
    """Meters behind a Modbus TCP gateway (or meters with Ethernet)."""

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "ModbusTcpReader":
        from pymodbus.client import ModbusTcpClient

        reject_unknown(options, {"host", "port", "map", "map_file", "timeout_s", "units", "unit", "meter_id", "name"})
        register_map, units, timeout = cls._common(options)
        host = option(options, "host", str)
        port = option(options, "port", int, 502, check=lambda v: 0 < v < 65536, why="must be 1..65535")
        client = ModbusTcpClient(host, port=port, timeout=timeout, retries=0, reconnect_delay=0)
        return cls(client, register_map, units, option(options, "name", str, f"modbus_tcp:{host}:{port}"))


class ModbusRtuReader(_ModbusReader):
    """Meters on an RS-485 bus through a serial adapter (Modbus RTU)."""

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "ModbusRtuReader":
        from pymodbus.client import ModbusSerialClient

        reject_unknown(
            options,
            {
                "port",
                "baudrate",
                "parity",
                "stopbits",
                "bytesize",
                "map",
                "map_file",
                "timeout_s",
                "units",
                "unit",
                "meter_id",
                "name",
            },
        )
        register_map, units, timeout = cls._common(options)
        port = option(options, "port", str)
        client = ModbusSerialClient(
            port,
            baudrate=option(options, "baudrate", int, 9600, check=lambda v: v > 0, why="must be positive"),
            parity=option(options, "parity", str, "N", check=lambda v: v in ("N", "E", "O"), why="must be N, E or O"),
            stopbits=option(options, "stopbits", int, 1, check=lambda v: v in (1, 2), why="must be 1 or 2"),
            bytesize=option(options, "bytesize", int, 8, check=lambda v: v in (7, 8), why="must be 7 or 8"),
            timeout=timeout,
            retries=0,
            reconnect_delay=0,
        )
        return cls(client, register_map, units, option(options, "name", str, f"modbus_rtu:{port}"))
