"""OBIS codes (IEC 62056-61) to reading fields: the one mapping DSMR, IEC 62056-21, SML and DLMS share.

Every European meter protocol names its values with OBIS codes ``A-B:C.D.E``: ``1-0:1.8.0`` is
total imported active energy, ``1-0:52.7.0`` the voltage of phase 2, ``0-1:24.2.1`` the reading of
M-Bus sub-meter 1 (gas, water). A reader collects ``{code: (value, unit)}`` from its frames and
:func:`electricity_fields` turns them into the fields of a :class:`gridsight.wire.Reading`,
converting units (Wh or kWh, W or kW) by the unit the meter sent, never by assumption.

Also here: the data-line syntax shared by DSMR P1 and IEC 62056-21 (``1-0:1.8.1(001234.567*kWh)``),
:func:`parse_data_lines`, and meter timestamps ``YYMMDDhhmmssW`` (:func:`local_timestamp`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.readers.base import ReaderError
from gridsight.wire import PHASE_FIELDS

__all__ = [
    "ObisCode",
    "DataLine",
    "parse_obis",
    "parse_data_lines",
    "electricity_fields",
    "local_timestamp",
    "decode_identifier",
    "ENERGY_UNITS",
    "POWER_UNITS",
]

ENERGY_UNITS = {"wh": 0.001, "kwh": 1.0, "mwh": 1000.0}
POWER_UNITS = {"w": 1.0, "kw": 1000.0, "mw": 1e6}
_PLAIN_UNITS = {"voltage": {"v": 1.0, "kv": 1000.0}, "current": {"a": 1.0, "ma": 0.001}, "pf": {None: 1.0}}

# (C, D, E) of channel 0 -> (field, unit family). Tariffs 3 and 4 count toward the totals only.
_REGISTERS: dict[tuple[int, int, int], tuple[str, str]] = {
    (1, 8, 0): ("import_total", "energy"),
    (2, 8, 0): ("export_total", "energy"),
    **{(1, 8, t): (f"import_t{t}", "energy") for t in range(1, 10)},
    **{(2, 8, t): (f"export_t{t}", "energy") for t in range(1, 10)},
    (1, 7, 0): ("power_import", "power"),
    (2, 7, 0): ("power_export", "power"),
    (16, 7, 0): ("power_net", "power"),  # SML eHZ: signed sum of active power
    (21, 7, 0): ("p1_import", "power"),
    (22, 7, 0): ("p1_export", "power"),
    (41, 7, 0): ("p2_import", "power"),
    (42, 7, 0): ("p2_export", "power"),
    (61, 7, 0): ("p3_import", "power"),
    (62, 7, 0): ("p3_export", "power"),
    (36, 7, 0): ("p1_net", "power"),
    (56, 7, 0): ("p2_net", "power"),
    (76, 7, 0): ("p3_net", "power"),
    (32, 7, 0): ("voltage_l1_v", "voltage"),
    (52, 7, 0): ("voltage_l2_v", "voltage"),
    (72, 7, 0): ("voltage_l3_v", "voltage"),
    (31, 7, 0): ("current_l1_a", "current"),
    (51, 7, 0): ("current_l2_a", "current"),
    (71, 7, 0): ("current_l3_a", "current"),
    (13, 7, 0): ("power_factor", "pf"),
    (1, 4, 0): ("demand_w", "power"),
    (1, 6, 0): ("demand_peak_w", "power"),
}
_CODE = re.compile(r"^(?:(\d+)-(\d+):)?(\d+|[A-Z])\.(\d+)\.(\d+)(?:\*(\d+))?$")
_GROUP = re.compile(r"\(([^()]*)\)")
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d*)?$")
_TIME = re.compile(r"^(\d{12})([WSws]?)$")


@dataclass(frozen=True, slots=True)
class ObisCode:
    a: int
    b: int
    c: int | str
    d: int
    e: int

    def __str__(self) -> str:
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}"


def parse_obis(text: str, default_a: int = 1) -> ObisCode | None:
    """``1-0:1.8.0``, ``1.8.0`` or ``1-0:1.8.0*255`` as an :class:`ObisCode`; None if not a code."""
    m = _CODE.match(text.strip())
    if m is None:
        return None
    a, b, c, d, e, _ = m.groups()
    c_val: int | str = int(c) if c.isdigit() else c
    if a is None:
        a_val = default_a if isinstance(c_val, int) and c_val not in (0, 96) else 0
        return ObisCode(a_val, 0, c_val, int(d), int(e))
    return ObisCode(int(a), int(b), c_val, int(d), int(e))


@dataclass(slots=True)
class DataLine:
    code: ObisCode
    groups: list[str] = field(default_factory=list)

    def number(self) -> tuple[float, str | None] | None:
        """The last ``(value*unit)`` group that holds a number (1.6.0 and 24.2.1 lead with a time)."""
        for g in reversed(self.groups):
            value, _, unit = g.partition("*")
            if _NUMBER.match(value.strip()):
                return float(value), (unit.strip() or None)
        return None

    def times(self) -> list[str]:
        return [g for g in self.groups if _TIME.match(g.strip())]


def parse_data_lines(text: str) -> list[DataLine]:
    """The OBIS data lines of a telegram or IEC 62056-21 data block, in order.

    A line that starts with ``(`` continues the previous one (DSMR 2.2/3 put the gas value on
    its own line). Lines that are not data (header, blank, ``!``) are skipped.
    """
    out: list[DataLine] = []
    for raw in text.replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("(") and out:
            out[-1].groups.extend(_GROUP.findall(line))
            continue
        head, paren, _ = line.partition("(")
        if not paren:
            continue
        code = parse_obis(head)
        if code is None:
            continue
        out.append(DataLine(code, _GROUP.findall(line[len(head) :])))
    return out


def local_timestamp(text: str, zone: ZoneInfo) -> float | None:
    """``YYMMDDhhmmss`` + ``W``/``S`` (winter/summer) local time as Unix seconds; None if not a time.

    The flag settles the hour that occurs twice when clocks go back.
    """
    m = _TIME.match(text.strip())
    if m is None:
        return None
    digits, flag = m.groups()
    try:
        naive = datetime.strptime(digits, "%y%m%d%H%M%S")
    except ValueError:
        return None
    candidates = [naive.replace(tzinfo=zone, fold=f) for f in (0, 1)]
    if flag:
        summer = flag.upper() == "S"
        for c in candidates:
            if bool(c.dst()) == summer:
                return c.timestamp()
    return candidates[0].timestamp()


def decode_identifier(raw: str, hex_ascii: bool = True) -> str:
    """An equipment id as text: DSMR sends ASCII as hex (``4B38...`` -> ``K8...``); others send it plain
    (``hex_ascii=False``: IEC 62056-21 serials such as ``71234567`` are digits, not hex)."""
    raw = raw.strip()
    if hex_ascii and raw and len(raw) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", raw):
        try:
            text = bytes.fromhex(raw).decode("ascii")
            if text.isprintable() and text.strip():
                return text.strip()
        except ValueError:
            pass
    return raw


def _convert(code: str, value: float, unit: str | None, family: str, default_units: dict[str, str]) -> float:
    units: dict[str | None, float] = (
        ENERGY_UNITS
        if family == "energy"
        else POWER_UNITS
        if family == "power"  # type: ignore[assignment]
        else _PLAIN_UNITS[family]
    )
    key = unit.lower() if unit else None
    if key is None and family in default_units:
        key = default_units[family]
    if key not in units:
        raise ReaderError(f"{code}: unit {unit!r} is not one of {', '.join(str(u) for u in units if u)}")
    factor = units[key]
    # registers carry at most 7 decimals: rounding to 9 removes binary dust (7345678.9 Wh -> 7345.6789 kWh)
    return round(value * factor if factor >= 1 else value / round(1 / factor), 9)


def electricity_fields(
    registers: dict[ObisCode, tuple[float, str | None]], default_units: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Reading fields from a meter's channel-0 registers, and notes on values left out.

    ``energy_kwh`` is 1.8.0 when the meter sends it, else the sum of its tariff registers; the
    same for export. ``power_w`` is net active power (import minus export, or 16.7.0), negative
    while exporting; per-phase power likewise. ``default_units`` applies only where a protocol
    sends no unit at all (e.g. ``{"energy": "kwh"}``). Raises :class:`ReaderError` when no
    import register is present or a unit does not fit its register.
    """
    raw: dict[str, float] = {}
    notes: list[str] = []
    for code, (value, unit) in registers.items():
        if code.a != 1 or code.b not in (0, 1) or not isinstance(code.c, int):
            continue
        spec = _REGISTERS.get((code.c, code.d, code.e))
        if spec is None or spec[0] in raw:
            continue
        name, family = spec
        if not math.isfinite(value):
            notes.append(f"{code}: {value} is not a number")
            continue
        raw[name] = _convert(str(code), value, unit, family, default_units or {})
    tariffs_in = [raw[f"import_t{t}"] for t in range(1, 10) if f"import_t{t}" in raw]
    tariffs_out = [raw[f"export_t{t}"] for t in range(1, 10) if f"export_t{t}" in raw]
    if "import_total" in raw:
        energy = raw["import_total"]
    elif tariffs_in:
        energy = sum(tariffs_in)
    else:
        raise ReaderError("no import energy register (1.8.0 or 1.8.1/1.8.2)")
    out: dict[str, Any] = {"energy_kwh": energy}
    export = raw.get("export_total", sum(tariffs_out) if tariffs_out else None)
    if export is not None:
        out["export_kwh"] = export
    for t in (1, 2):
        for side in ("import", "export"):
            if f"{side}_t{t}" in raw:
                out[f"{side}_t{t}_kwh"] = raw[f"{side}_t{t}"]
    if "power_net" in raw:
        out["power_w"] = raw["power_net"]
    elif "power_import" in raw or "power_export" in raw:
        out["power_w"] = raw.get("power_import", 0.0) - raw.get("power_export", 0.0)
    for p in (1, 2, 3):
        if f"p{p}_net" in raw:
            out[f"power_l{p}_w"] = raw[f"p{p}_net"]
        elif f"p{p}_import" in raw or f"p{p}_export" in raw:
            out[f"power_l{p}_w"] = raw.get(f"p{p}_import", 0.0) - raw.get(f"p{p}_export", 0.0)
    for name in (*PHASE_FIELDS[:6], "demand_w", "demand_peak_w"):
        if name in raw:
            out[name] = raw[name]
    if "power_factor" in raw:
        if -1.0 <= raw["power_factor"] <= 1.0:
            out["power_factor"] = raw["power_factor"]
        else:
            notes.append(f"1-0:13.7.0: power factor {raw['power_factor']} is outside -1..1 (left out)")
    if "voltage_l1_v" in out:
        out["voltage_v"] = out["voltage_l1_v"]
    if "current_l1_a" in out:
        out["current_a"] = out["current_l1_a"]
    return out, notes
