"""SML (Smart Message Language, BSI TR-03109-1 / FNN SML 1.04): German eHZ and Mme meters' optical or wired D0 port.

The meter pushes an SML file every one to four seconds (9600 8N1): ``1B1B1B1B 01010101``, messages
in a TLV encoding, ``1B1B1B1B 1A nn`` and a CRC16/X-25 over everything before it. The reader
cuts files from the stream (:class:`PushStreamReader`), checks the CRC (SML implementations send
its two bytes in either order; both are accepted), decodes the messages and reads each
``SML_GetList.Res`` value list: OBIS code, unit (DLMS unit codes: 30 = Wh, 27 = W, 35 = V, 33 = A),
scaler (power of ten) and value. The values go through the shared OBIS mapping (:mod:`.obis`):
1.8.0/2.8.0 (and tariffs 1.8.1/1.8.2), 16.7.0 net power (negative while exporting), per-phase
36/56/76.7.0 power, 32/52/72.7.0 voltage, 31/51/71.7.0 current.

The meter id is ``meter_id`` if set, else the list's server id (hex, e.g. ``0a01454d480000b12345``).
Readings are stamped with the agent's clock (an eHZ's own seconds counter has no date).

The decoder is written here (about a hundred lines) rather than taken from a library: the
maintained Python SML libraries are GPL-licensed, which this project does not ship.

Options: ``port`` (required: /dev/ttyUSB0, or socket://host:port for a network IR head),
``baudrate`` (9600), ``meter_id``, ``stale_s`` (30), ``name``.
"""

from __future__ import annotations

from typing import Any, Mapping

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from edge_agent.readers.obis import ObisCode, electricity_fields
from edge_agent.readers.stream import PushStreamReader, crc16_x25, open_serial
from gridsight.wire import Reading

__all__ = ["SmlReader", "decode_sml_file", "SmlError", "DLMS_UNITS", "ESCAPE", "START", "END"]

ESCAPE = b"\x1b\x1b\x1b\x1b"
START = ESCAPE + b"\x01\x01\x01\x01"
END = ESCAPE + b"\x1a"
_MAX_FILE = 4096
# DLMS/COSEM unit codes (IEC 62056-62) used by SML value lists
DLMS_UNITS = {27: "W", 30: "Wh", 35: "V", 33: "A", 13: "m3", 44: "Hz", 255: None}
_GET_LIST_RESPONSE = 0x0701


class SmlError(ReaderError):
    """An SML file that cannot be decoded."""


def _tlv(data: bytes, pos: int) -> tuple[Any, int]:
    """One SML element at ``pos``: (value, next position). Lists become Python lists, empties None."""
    if pos >= len(data):
        raise SmlError("SML element runs past the end of the file")
    first = data[pos]
    if first == 0x00:
        return "END", pos + 1
    kind = (first >> 4) & 0x07
    length = first & 0x0F
    tl = 1
    while data[pos + tl - 1] & 0x80:
        if pos + tl >= len(data):
            raise SmlError("SML length runs past the end of the file")
        length = (length << 4) | (data[pos + tl] & 0x0F)
        tl += 1
    if kind == 0x07:  # list: length = number of elements
        items, cur = [], pos + tl
        for _ in range(length):
            item, cur = _tlv(data, cur)
            items.append(item)
        return items, cur
    end = pos + length
    if length < tl or end > len(data):
        raise SmlError(f"SML element of {length} bytes runs past the end of the file")
    body = data[pos + tl : end]
    if kind == 0x00:
        return (body if body else None), end
    if kind == 0x04:
        return bool(body and body[0]), end
    if kind in (0x05, 0x06):
        if not body:
            return None, end
        return int.from_bytes(body, "big", signed=kind == 0x05), end
    raise SmlError(f"unknown SML type {first:#04x}")


def decode_sml_file(frame: bytes) -> list[tuple[bytes | None, dict[ObisCode, tuple[float, str | None]]]]:
    """(server id, {OBIS code: (value, unit)}) of every value list in one SML file (escapes included)."""
    if not frame.startswith(START) or frame[-8:-3] != END or len(frame) < 16:
        raise SmlError("not an SML file (escape sequences missing)")
    body = frame[len(START) : -8]
    lists = []
    pos = 0
    while pos < len(body):
        if body[pos] == 0x00:  # fill bytes before the end escape
            pos += 1
            continue
        message, pos = _tlv(body, pos)
        if (
            not isinstance(message, list)
            or len(message) < 4
            or not isinstance(message[3], list)
            or len(message[3]) != 2
        ):
            raise SmlError("SML message is not a list of 6 with a body")
        tag, content = message[3]
        if tag != _GET_LIST_RESPONSE or not isinstance(content, list) or len(content) < 5:
            continue
        server_id, values = content[1], content[4]
        registers: dict[ObisCode, tuple[float, str | None]] = {}
        for entry in values or []:
            if not isinstance(entry, list) or len(entry) < 6 or not isinstance(entry[0], bytes) or len(entry[0]) != 6:
                continue
            name, unit, scaler, value = entry[0], entry[3], entry[4], entry[5]
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            code = ObisCode(name[0], name[1], name[2], name[3], name[4])
            registers[code] = (
                _scaled(value, scaler or 0),
                DLMS_UNITS.get(unit, f"unit{unit}") if unit is not None else None,
            )
        lists.append((server_id, registers))
    return lists


def _scaled(value: int, scaler: int) -> float:
    """``value * 10**scaler`` without binary dust (2301, -1 -> 230.1, not 230.10000000000002)."""
    return float(value * 10**scaler) if scaler >= 0 else value / 10**-scaler


class SmlReader(PushStreamReader):
    """One SML meter on an optical or wired D0 interface."""

    def __init__(self, port: Any, *, meter_id: str | None, name: str, stale_s: float = 30.0) -> None:
        super().__init__(port, name=name, stale_s=stale_s)
        self.meter_id = meter_id

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "SmlReader":
        reject_unknown(options, {"port", "baudrate", "meter_id", "stale_s", "name"})
        port = open_serial(options, baudrate=9600)
        return cls(
            port,
            meter_id=option(options, "meter_id", str, None),
            stale_s=option(options, "stale_s", float, 30.0, check=lambda v: v > 0, why="must be positive"),
            name=option(options, "name", str, f"sml:{options['port']}"),
        )

    def frames(self, buffer: bytes, now: float, errors: list[str]) -> tuple[list[Reading], bytes]:
        out: list[Reading] = []
        while True:
            start = buffer.find(START)
            if start < 0:
                keep = buffer[-(len(START) - 1) :]
                noise = len(buffer) - len(keep)
                self.skipped_bytes += noise
                if noise > 64 and not out:
                    errors.append(f"{noise} bytes without an SML start sequence (wrong baud rate or not SML?)")
                return out, keep
            if start:
                self.skipped_bytes += start
                buffer = buffer[start:]
            end = buffer.find(END, len(START))
            if end < 0 or len(buffer) < end + 8:
                if len(buffer) > _MAX_FILE:
                    self.bad_frames += 1
                    errors.append("SML file without an end (cut off?)")
                    buffer = buffer[len(START) :]
                    continue
                return out, buffer
            frame, buffer = buffer[: end + 8], buffer[end + 8 :]
            crc = crc16_x25(frame[:-2])
            if frame[-2:] not in (crc.to_bytes(2, "big"), crc.to_bytes(2, "little")):
                self.bad_frames += 1
                errors.append("SML CRC mismatch (dropped)")
                continue
            try:
                for server_id, registers in decode_sml_file(frame):
                    if not registers:
                        continue
                    fields, _ = electricity_fields(registers)
                    meter_id = self.meter_id or (server_id.hex() if server_id else None)
                    if not meter_id:
                        raise SmlError("value list has no server id: set meter_id")
                    out.append(checked_reading(meter_id, now, **fields))
                self.frames_ok += 1
            except ReaderError as exc:
                self.bad_frames += 1
                errors.append(f"unreadable SML file ({exc})")
