"""DLMS/COSEM push from HAN ports (Norway, Sweden, Austria, Switzerland): HDLC frames on M-Bus or RJ-12.

The meter pushes a DataNotification every 1 to 10 seconds (2400 8E1 in Norway, 115200 elsewhere;
set ``baudrate``). Each HDLC frame (IEC 62056-46: ``7E``, frame format with an 11-bit length and
the segmentation bit, addresses, control, HCS, information, FCS, ``7E``) has its HCS and FCS
(CRC16/X-25) checked; segmented frames are joined. The information field is the LLC header
``E6 E7 00`` and an APDU: a DataNotification (0x0F), or a general-global-cipher frame (0xDB) that
is decrypted with ``decryption_key`` (and ``authentication_key`` when the meter authenticates) into
one. The APDU and its A-XDR body are decoded by the dlms-cosem library (MIT).

Values are read the self-describing way Aidon, EVN and Landis+Gyr lists are built: wherever an
octet string of 6 bytes (an OBIS code) is followed by a value and optionally a ``{scaler, unit}``
structure, that is one register. Lists that carry values by position only (Kaifa's Norwegian
lists) name no OBIS codes and are reported as unreadable rather than guessed.

Meter id: ``meter_id``, else the list's 0-0:96.1.0 / 96.1.1 / 42.0.0 value.
Readings are stamped with the agent's clock, ``period_s`` apart when several arrive in one poll.

Options: ``port`` (required), ``baudrate`` (2400), ``parity`` ("E"), ``meter_id``,
``decryption_key``, ``authentication_key``, ``period_s`` (2.5), ``stale_s`` (30), ``name``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from edge_agent.readers.cosem_cipher import decrypt_general_glo_cipher, parse_hex_key
from edge_agent.readers.obis import ObisCode, decode_identifier, electricity_fields
from edge_agent.readers.sml import DLMS_UNITS
from edge_agent.readers.stream import PushStreamReader, crc16_x25, open_serial
from gridsight.wire import Reading

__all__ = ["DlmsPushReader", "hdlc_frames", "registers_from_data"]

_FLAG = 0x7E
_LLC = b"\xe6\xe7\x00"
_ID_CODES = ("0-0:96.1.0", "0-0:96.1.1", "0-0:42.0.0")
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def hdlc_frames(buffer: bytes, errors: list[str]) -> tuple[list[tuple[bytes, bool]], bytes, int]:
    """Complete HDLC frames in ``buffer`` as (information field, segmented?), the rest, skipped bytes."""
    out: list[tuple[bytes, bool]] = []
    skipped = 0
    pos = 0
    while True:
        start = buffer.find(bytes([_FLAG]), pos)
        if start < 0:
            skipped += len(buffer) - pos
            return out, b"", skipped
        skipped += start - pos
        if len(buffer) < start + 3:
            return out, buffer[start:], skipped
        fmt = int.from_bytes(buffer[start + 1 : start + 3], "big")
        if fmt >> 12 != 0xA:  # not a type-3 frame format: a closing flag or noise
            pos = start + 1
            continue
        length = fmt & 0x7FF
        segmented = bool(fmt & 0x0800)
        end = start + 1 + length
        if len(buffer) < end + 1:
            return out, buffer[start:], skipped
        frame = buffer[start + 1 : end]  # format .. FCS
        if buffer[end] != _FLAG or length < 7:
            errors.append("HDLC frame with a wrong length (dropped)")
            pos = start + 1
            continue
        if crc16_x25(frame[:-2]).to_bytes(2, "little") != frame[-2:]:
            errors.append("HDLC FCS mismatch (dropped)")
            pos = end
            continue
        # addresses: bytes until one with the low bit set, twice
        i = 2
        for _ in range(2):
            while i < len(frame) - 2 and not frame[i] & 1:
                i += 1
            i += 1
        i += 1  # control
        info = b""
        if i + 2 < len(frame) - 2:
            if crc16_x25(frame[:i]).to_bytes(2, "little") != frame[i : i + 2]:
                errors.append("HDLC HCS mismatch (dropped)")
                pos = end
                continue
            info = frame[i + 2 : -2]
        out.append((info, segmented))
        pos = end  # the closing flag may also open the next frame
        if pos == len(buffer) - 1:
            return out, b"", skipped


def registers_from_data(data: Any) -> tuple[dict[ObisCode, tuple[float, str | None]], dict[str, str]]:
    """OBIS registers (value, unit) and text values (ids) found in a decoded push body."""
    registers: dict[ObisCode, tuple[float, str | None]] = {}
    texts: dict[str, str] = {}

    def walk(items: list) -> None:
        i = 0
        while i < len(items):
            item = items[i]
            if isinstance(item, (bytes, bytearray)) and len(item) == 6 and i + 1 < len(items):
                code = ObisCode(item[0], item[1], item[2], item[3], item[4])
                value = items[i + 1]
                scaler, unit = 0, None
                nxt = items[i + 2] if i + 2 < len(items) else None
                consumed = 2
                if isinstance(nxt, list) and len(nxt) == 2 and all(isinstance(x, int) for x in nxt):
                    scaler, unit_code = nxt
                    unit = DLMS_UNITS.get(unit_code, f"unit{unit_code}")
                    consumed = 3
                if isinstance(value, bool):
                    pass
                elif isinstance(value, int):
                    registers[code] = (value * 10**scaler if scaler >= 0 else value / 10**-scaler, unit)
                elif isinstance(value, float):
                    registers[code] = (value * 10.0**scaler, unit)
                elif isinstance(value, (bytes, bytearray, str)):
                    text = value.decode("ascii", errors="replace") if isinstance(value, (bytes, bytearray)) else value
                    texts[str(code)] = text
                i += consumed
                continue
            if isinstance(item, list):
                walk(item)
            i += 1

    walk(data if isinstance(data, list) else [data])
    return registers, texts


class DlmsPushReader(PushStreamReader):
    """One meter's HAN port pushing DLMS/COSEM DataNotifications."""

    def __init__(
        self,
        port: Any,
        *,
        name: str,
        meter_id: str | None = None,
        key: bytes | None = None,
        auth_key: bytes | None = None,
        period_s: float = 2.5,
        stale_s: float = 30.0,
    ) -> None:
        super().__init__(port, name=name, stale_s=stale_s, period_s=period_s)
        self.meter_id = meter_id
        self.key = key
        self.auth_key = auth_key
        self._segments = b""

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "DlmsPushReader":
        reject_unknown(
            options,
            {
                "port",
                "baudrate",
                "parity",
                "meter_id",
                "decryption_key",
                "authentication_key",
                "period_s",
                "stale_s",
                "name",
            },
        )
        parity = option(options, "parity", str, "E", check=lambda v: v in ("N", "E", "O"), why="must be N, E or O")
        port = open_serial(options, baudrate=2400, parity=parity)
        return cls(
            port,
            name=option(options, "name", str, f"dlms_push:{options['port']}"),
            meter_id=option(options, "meter_id", str, None),
            key=parse_hex_key(option(options, "decryption_key", str, None), "decryption_key"),
            auth_key=parse_hex_key(option(options, "authentication_key", str, None), "authentication_key"),
            period_s=option(options, "period_s", float, 2.5, check=lambda v: 0 < v <= 3600, why="must be 0..3600 s"),
            stale_s=option(options, "stale_s", float, 30.0, check=lambda v: v > 0, why="must be positive"),
        )

    def frames(self, buffer: bytes, now: float, errors: list[str]) -> tuple[list[Reading], bytes]:
        found, rest, skipped = hdlc_frames(buffer, errors)
        self.skipped_bytes += skipped
        self.bad_frames += sum(1 for e in errors if "HDLC" in e)
        out: list[Reading] = []
        for info, segmented in found:
            self._segments += info
            if segmented:
                continue
            apdu, self._segments = self._segments, b""
            try:
                out.append(self._reading(apdu, now))
                self.frames_ok += 1
            except ReaderError as exc:
                self.bad_frames += 1
                errors.append(str(exc))
        return out, rest

    def _reading(self, apdu: bytes, now: float) -> Reading:
        from dlms_cosem.dlms_data import DlmsDataParser
        from dlms_cosem.protocol.xdlms import DataNotification

        if apdu.startswith(_LLC):
            apdu = apdu[len(_LLC) :]
        if apdu[:1] == b"\xdb":
            if self.key is None:
                raise ReaderError(
                    "encrypted frame: set the key (decryption_key, 32 hex digits from your grid operator)"
                )
            apdu = decrypt_general_glo_cipher(apdu, self.key, self.auth_key)
        if apdu[:1] != b"\x0f":
            raise ReaderError(f"not a DataNotification (APDU tag {apdu[:1].hex() or 'none'})")
        try:
            note = DataNotification.from_bytes(apdu)
            data = [d.to_python() for d in DlmsDataParser().parse(note.body)]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ReaderError(f"unreadable DataNotification ({exc})") from None
        registers, texts = registers_from_data(data)
        if not registers:
            raise ReaderError("push list names no OBIS codes (a positional list, e.g. Kaifa's): not supported")
        meter_id = self.meter_id
        if meter_id is None:
            for code in _ID_CODES:
                if code in texts:
                    meter_id = _ID_SAFE.sub("", decode_identifier(texts[code], hex_ascii=False))[:64] or None
                    if meter_id:
                        break
        if meter_id is None:
            raise ReaderError("push list carries no meter id (0-0:96.1.0): set meter_id")
        fields, _ = electricity_fields(registers)
        return checked_reading(meter_id, now, **fields)
