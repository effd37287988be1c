"""DSMR P1 telegrams (NL, BE, LU, SE, AT, HU, IE, CH and EasyMeter D0) from a serial port.

The meter pushes a telegram every second (DSMR 5) or ten seconds (DSMR 2.2-4). Each poll takes
whatever bytes the port holds without blocking, cuts complete ``/...!CRC`` telegrams out of the
stream and turns each into readings. The telegram is read generically, line by line, by OBIS
code (:mod:`.obis`), so every country's variant gives every value it carries:

* import and export energy (1.8.0/2.8.0, or the sum of the tariff registers 1.8.x/2.8.x), the
  tariff registers 1 and 2 and the active tariff (96.14.0); units are honoured (Wh or kWh);
* net power (1.7.0 - 2.7.0, in W whatever the meter's unit), per-phase power, voltage and
  current, Belgian demand (1.4.0, 1.6.0);
* M-Bus sub-meters (gas, water, heat on 0-n:24.x) as separate meters with their own id and
  capture time, sent only when their value or capture time changes.

Integrity: a telegram that carries a CRC16 is checked (upper or lower case hex, CRLF or
LF-only line endings). DSMR 2.2/3 meters send none; their telegrams are checked for
plausibility instead (no register may go backwards, vanish or jump faster than ``max_power_kw``).
Luxembourg Smarty meters send AES-128-GCM frames; with ``decryption_key`` they are decrypted
and authenticated (the Luxmetering P1 specification's public authentication key unless
``authentication_key`` is given).

Time: a telegram is stamped with its own 0-0:1.0.0 time (local time in ``timezone`` with the
W/S flag) unless ``timestamps = "agent"``; telegrams without one are stamped with the agent's
clock, spaced ``period_s`` apart when several arrive in one poll, so none is lost as a duplicate.

Meter ids: the equipment id (0-0:96.1.1, else 96.1.0, 42.0.0 or EasyMeter's 1-0:0.0.0), or
``meter_id``. A telegram without any id is refused until ``meter_id`` is set: a made-up id could
collide with another meter's.

Errors (CRC, garbage, an encrypted frame without a key, a silent port for ``stale_s``) are
raised as :class:`ReaderError` on the poll after the good telegrams were handed over.

Options: ``port`` (required: /dev/ttyUSB0 or a pyserial URL such as socket://host:2001),
``version`` (5, 4, 3 or 2.2, number or string; sets serial defaults 115200 8N1 or 9600 7E1),
``baudrate``, ``meter_id``, ``decryption_key``, ``authentication_key``, ``timezone``
("Europe/Amsterdam"), ``timestamps`` ("meter"), ``max_skew_s`` (86400: a meter time further
off the gateway clock is not used; 0: always used), ``period_s``, ``max_power_kw`` (1000),
``stale_s`` (30), ``name``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from edge_agent.readers.cosem_cipher import LUXEMBOURG_AUTH_KEY, decrypt_general_glo_cipher, frame_length, parse_hex_key
from edge_agent.readers.stream import drain_port
from edge_agent.readers.obis import (
    DataLine,
    ObisCode,
    decode_identifier,
    electricity_fields,
    local_timestamp,
    parse_data_lines,
)
from gridsight.settings import ConfigError
from gridsight.wire import Reading

__all__ = ["DsmrP1Reader", "crc16_arc", "normalise_version", "LUXEMBOURG_AUTH_KEY"]

log = logging.getLogger(__name__)

_MAX_BUFFER = 16 * 1024  # the largest real telegram is ~2 kB; more without a frame is line noise
_FRAME = re.compile(rb"/[^/]*?!([0-9A-Za-z]{0,4})[ \t]*\r?\n", re.DOTALL)
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_VERSIONS = {
    "5": "5",
    "5.0": "5",
    "5.0.2": "5",
    "4": "4",
    "4.0": "4",
    "4.2": "4",
    "4.2.2": "4",
    "3": "3",
    "3.0": "3",
    "2.2": "2.2",
    "2": "2.2",
}
_ID_CODES = ("0-0:96.1.1", "0-0:96.1.0", "0-0:42.0.0", "1-0:0.0.0", "0-0:96.1.255")
# EN 13757-3 device types of M-Bus sub-meters
_CHANNEL_TYPES = {3: "gas", 6: "water", 7: "water", 4: "heat", 12: "heat", 13: "heat"}
_GJ_KWH = 1e9 / 3.6e6


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0): the P1 telegram checksum (DSMR 5.0.2, 6.4.1)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def normalise_version(value: Any) -> str:
    """``5``, ``"5"``, ``4.2``, ``"3"``, ``2.2`` ... as one of "5", "4", "3", "2.2"; ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError("version", f'expected a number or string such as 5 or "2.2", got {value!r}')
    text = str(value).strip().lower().removeprefix("dsmr").strip()
    if text not in _VERSIONS:
        raise ConfigError("version", f"{value!r}: must be 5, 4, 3 or 2.2")
    return _VERSIONS[text]


class DsmrP1Reader:
    """One smart meter's P1 port."""

    def __init__(
        self,
        serial_port: Any,
        *,
        meter_id: str | None,
        version: str = "5",
        stale_s: float = 30.0,
        name: str = "dsmr_p1",
        key: bytes | None = None,
        auth_key: bytes | None = None,
        zone: ZoneInfo | None = None,
        meter_time: bool = True,
        period_s: float | None = None,
        max_power_kw: float = 1000.0,
        max_skew_s: float = 86400.0,
    ) -> None:
        self.port = serial_port
        self.meter_id = meter_id
        self.version = version
        self.name = name
        self.stale_s = stale_s
        self.key = key
        self.auth_key = auth_key if auth_key is not None else bytes.fromhex(LUXEMBOURG_AUTH_KEY)
        self.zone = zone or ZoneInfo("Europe/Amsterdam")
        self.meter_time = meter_time
        self.period_s = period_s if period_s is not None else (1.0 if version == "5" else 10.0)
        self.max_power_kw = max_power_kw
        self._buffer = b""
        self._last_telegram: float | None = None
        self._first_poll: float | None = None
        self._deferred: list[str] = []
        self._last: dict[str, Reading] = {}  # per meter id: the previous reading
        self._channel_seen: dict[str, tuple[float, float | None]] = {}
        self._noted: set[str] = set()
        self.telegrams = 0
        self.bad_telegrams = 0
        self.skipped_bytes = 0
        self.left_out_values = 0
        self.meter_clock_off = 0
        self.max_skew_s = max_skew_s
        self._meter_clock_ok = True
        self._frames_seen = 0

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "DsmrP1Reader":
        import serial

        reject_unknown(
            options,
            {
                "port",
                "meter_id",
                "baudrate",
                "version",
                "stale_s",
                "name",
                "decryption_key",
                "authentication_key",
                "timezone",
                "timestamps",
                "period_s",
                "max_power_kw",
                "max_skew_s",
            },
        )
        port = option(options, "port", str)
        version = normalise_version(options.get("version", "5"))
        old = version in ("2.2", "3")
        baudrate = option(
            options, "baudrate", int, 9600 if old else 115200, check=lambda v: v > 0, why="must be positive"
        )
        meter_id = option(options, "meter_id", str, None)
        key = parse_hex_key(option(options, "decryption_key", str, None), "decryption_key")
        auth = parse_hex_key(option(options, "authentication_key", str, None), "authentication_key")
        zone_name = option(options, "timezone", str, "Europe/Amsterdam")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("timezone", f"{zone_name!r} is not a known time zone (e.g. Europe/Brussels)") from None
        stamps = option(
            options, "timestamps", str, "meter", check=lambda v: v in ("meter", "agent"), why="must be meter or agent"
        )
        try:
            handle = serial.serial_for_url(
                port, baudrate=baudrate, bytesize=7 if old else 8, parity="E" if old else "N", stopbits=1, timeout=0
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConfigError("port", f"cannot open {port}: {exc}") from None
        return cls(
            handle,
            meter_id=meter_id,
            version=version,
            key=key,
            auth_key=auth,
            zone=zone,
            meter_time=stamps == "meter",
            period_s=option(options, "period_s", float, None, check=lambda v: 0 < v <= 3600, why="must be 0..3600 s"),
            max_power_kw=option(options, "max_power_kw", float, 1000.0, check=lambda v: v > 0, why="must be positive"),
            max_skew_s=option(
                options,
                "max_skew_s",
                float,
                86400.0,
                check=lambda v: v >= 0,
                why="must be >= 0 (0: always trust the meter's clock)",
            ),
            stale_s=option(options, "stale_s", float, 30.0, check=lambda v: v > 0, why="must be positive"),
            name=option(options, "name", str, f"dsmr_p1:{port}"),
        )

    # ------------------------------------------------------------------ the serial stream

    def _drain_port(self) -> None:
        for chunk in drain_port(self.port, f"{self.name}: serial port error"):
            self._buffer += chunk

    def _frames(self, errors: list[str]) -> list[tuple[bytes, bool]]:
        """Complete telegrams in the buffer as (bytes, crc_checked); consumed bytes leave the buffer."""
        out: list[tuple[bytes, bool]] = []
        buf = self._buffer
        pos = 0
        while pos < len(buf):
            slash, cipher = buf.find(b"/", pos), buf.find(b"\xdb", pos)
            starts = [s for s in (slash, cipher) if s >= 0]
            if not starts:
                break
            start = min(starts)
            self._skip(buf[pos:start], errors)
            if start == cipher:
                length = frame_length(buf[start:])
                if length == 0:  # a stray 0xDB in line noise, not a cipher frame
                    self._skip(buf[start : start + 1], errors)
                    pos = start + 1
                    continue
                if length is None or len(buf) < start + length:
                    pos = start
                    break
                frame = buf[start : start + length]
                pos = start + length
                if self.key is None:
                    self.bad_telegrams += 1
                    errors.append(
                        "encrypted frame: set the key (decryption_key, 32 hex digits from your grid operator)"
                    )
                    continue
                try:
                    plain = decrypt_general_glo_cipher(frame, self.key, self.auth_key)
                except ReaderError as exc:
                    self.bad_telegrams += 1
                    errors.append(str(exc))
                    continue
                match = _FRAME.search(plain)
                if match is None:
                    self.bad_telegrams += 1
                    errors.append("decrypted frame holds no telegram")
                    continue
                checked = self._crc_ok(match, errors)
                if checked is not None:
                    out.append((match.group(0), checked))
                continue
            match = _FRAME.match(buf, start)
            if match is None:
                nxt = buf.find(b"/", start + 1)
                if nxt < 0 or buf.find(b"!", start, nxt) < 0:
                    pos = start  # incomplete: wait for more bytes
                    break
                self.bad_telegrams += 1
                errors.append("telegram cut off (no end before the next one)")
                pos = nxt
                continue
            pos = match.end()
            self._frames_seen += 1
            checked = self._crc_ok(match, errors)
            if checked is not None:
                out.append((match.group(0), checked))
        self._buffer = buf[pos:]
        return out

    def _skip(self, data: bytes, errors: list[str]) -> None:
        stripped = data.strip(b" \t\r\n\x00\xff")
        if not stripped:
            return
        self.skipped_bytes += len(stripped)
        if (
            self._frames_seen
            and len(stripped) <= 96
            and stripped.isascii()
            and stripped.replace(b"\r\n", b"").isalnum()
        ):
            # a trailer some D0 gateways add after the telegram (EasyMeter COM-1): counted, logged once
            if "trailer" not in self._noted:
                self._noted.add("trailer")
                log.info(
                    "%s: skipping %d bytes after telegrams (gateway trailer), counted in skipped_bytes",
                    self.name,
                    len(stripped),
                )
            return
        errors.append(f"{len(stripped)} bytes of garbage before a telegram")

    def _crc_ok(self, match: re.Match, errors: list[str]) -> bool | None:
        """True if the CRC matched, False if the telegram carries none, None (error noted) if it failed."""
        crc_text = match.group(1).decode("ascii")
        if not crc_text:
            return False
        telegram = match.group(0)
        body = telegram[: telegram.rindex(b"!") + 1]
        try:
            expected = int(crc_text, 16)
        except ValueError:
            expected = -1
        if len(crc_text) == 4 and expected in (crc16_arc(body), crc16_arc(re.sub(rb"(?<!\r)\n", b"\r\n", body))):
            return True
        self.bad_telegrams += 1
        errors.append("telegram CRC mismatch (dropped)")
        return None

    # ------------------------------------------------------------------ polling

    def read(self, now: float) -> list[Reading]:
        if self._first_poll is None:
            self._first_poll = now
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            raise ReaderError(f"{self.name}: " + "; ".join(deferred)[:400])
        self._drain_port()
        errors: list[str] = []
        frames = self._frames(errors)
        out: list[Reading] = []
        parsed = []
        for data, checked in frames:
            try:
                parsed.append((parse_data_lines(data.decode("ascii", errors="replace")), checked))
            except ReaderError as exc:
                self.bad_telegrams += 1
                errors.append(f"unreadable telegram ({exc})")
        times = [self._own_time(lines, now) for lines, _ in parsed]
        untimed = sum(1 for t in times if t is None)
        for (lines, checked), own in zip(parsed, times):
            self._meter_clock_ok = own is not None
            if own is None:
                untimed -= 1
                ts = now - untimed * self.period_s
            else:
                ts = own
            try:
                out.extend(self._readings(lines, ts, checked))
                self.telegrams += 1
            except ReaderError as exc:
                self.bad_telegrams += 1
                errors.append(f"unreadable telegram ({exc})")
        if len(self._buffer) > _MAX_BUFFER:
            hint = ' (version 2.2/3 meters need version = "2.2": 9600 baud 7E1)' if self.version in ("4", "5") else ""
            errors.append(f"{len(self._buffer)} bytes without a complete telegram (wrong baud rate?{hint})")
            self._buffer = self._buffer[-_MAX_BUFFER // 2 :]
        if out:
            self._last_telegram = now
        elif now - (self._last_telegram or self._first_poll) > self.stale_s:
            errors.append(f"no telegram for {now - (self._last_telegram or self._first_poll):.0f} s (cable or meter?)")
        if errors:
            if not out:
                raise ReaderError(f"{self.name}: " + "; ".join(errors)[:400])
            self._deferred = errors
        return out

    def _own_time(self, lines: list[DataLine], now: float) -> float | None:
        """The telegram's 0-0:1.0.0 time, unless absent, unwanted or off the agent's clock by more
        than ``max_skew_s`` (a meter whose clock was reset): then None, and the agent's clock is used."""
        if not self.meter_time:
            return None
        for line in lines:
            if str(line.code) == "0-0:1.0.0" and line.groups:
                own = local_timestamp(line.groups[0], self.zone)
                if own is not None and self.max_skew_s and abs(own - now) > self.max_skew_s:
                    self.meter_clock_off += 1
                    if "clock" not in self._noted:
                        self._noted.add("clock")
                        log.warning(
                            "%s: the meter's clock is %.0f s off the gateway's (more than max_skew_s "
                            "%g): using the gateway clock, counted in meter_clock_off",
                            self.name,
                            own - now,
                            self.max_skew_s,
                        )
                    return None
                return own
        return None

    # ------------------------------------------------------------------ telegram -> readings

    def _readings(self, lines: list[DataLine], ts: float, crc_checked: bool) -> list[Reading]:
        by_code: dict[Any, Any] = {}
        for line in lines:
            by_code.setdefault(str(line.code), line)
        meter_id = self.meter_id or self._identifier(by_code)
        registers: dict[ObisCode, tuple[float, str | None]] = {}
        for line in lines:
            if line.code.a == 1:
                number = line.number()
                if number is not None:
                    registers.setdefault(line.code, number)
        fields, notes = electricity_fields(registers)
        for note in notes:
            self.left_out_values += 1
            if note not in self._noted:
                self._noted.add(note)
                log.warning("%s: %s (counted in left_out_values)", self.name, note)
        tariff = by_code.get("0-0:96.14.0")
        if tariff is not None and tariff.groups and tariff.groups[0].strip().isdigit():
            fields["tariff"] = int(tariff.groups[0])
        last = self._last.get(meter_id)
        if last is not None and ts <= last.ts and not self.meter_time:
            ts = last.ts + 0.001
        reading = checked_reading(meter_id, ts, **fields)
        if not crc_checked:
            self._plausible(reading, last)
        self._last[meter_id] = reading
        return [reading, *self._channels(lines, meter_id, ts)]

    def _identifier(self, by_code: dict[str, DataLine]) -> str:
        for code in _ID_CODES:
            line = by_code.get(code)
            if line is None or not line.groups:
                continue
            text = _ID_SAFE.sub("", decode_identifier(line.groups[0]))[:64].lstrip("._-")
            if text and text.strip("0"):
                return text
        raise ReaderError(
            "telegram carries no equipment identifier (0-0:96.1.1, 96.1.0 or 42.0.0): "
            "set meter_id for this port, so meters cannot collide"
        )

    def _plausible(self, reading: Reading, last: Reading | None) -> None:
        """Without a CRC a lost line or a flipped digit is caught here: registers only grow, plausibly."""
        if last is None:
            return
        hours = max(reading.ts - last.ts, 1.0) / 3600.0
        names = ("import_t1_kwh", "import_t2_kwh", "export_t1_kwh", "export_t2_kwh", "energy_kwh", "export_kwh")
        for name in names:
            if getattr(last, name) is not None and getattr(reading, name) is None:
                raise ReaderError(f"{name} missing, earlier telegrams had it (line lost?); no CRC to check")
        for name in names:
            before, now = getattr(last, name), getattr(reading, name)
            if before is None:
                continue
            if now < before - 1e-9:
                raise ReaderError(f"{name} went backwards {before} -> {now} (corrupted line?); no CRC to check")
            if now - before > self.max_power_kw * hours + 0.01:
                raise ReaderError(
                    f"{name} jumped {before} -> {now} in {hours * 3600:.0f} s, above max_power_kw "
                    f"{self.max_power_kw:g} (corrupted line?); no CRC to check"
                )

    def _channels(self, lines: list[DataLine], meter_id: str, ts: float) -> list[Reading]:
        out = []
        by_channel: dict[int, dict[str, DataLine]] = {}
        for line in lines:
            if line.code.a == 0 and line.code.b >= 1:
                by_channel.setdefault(line.code.b, {}).setdefault(f"{line.code.c}.{line.code.d}.{line.code.e}", line)
        for n, codes in sorted(by_channel.items()):
            value_line = codes.get("24.2.1") or codes.get("24.2.3") or codes.get("24.3.0")
            if value_line is None:
                continue
            number = value_line.number()
            unit = None
            if str(value_line.code).endswith("24.3.0"):  # DSMR 2.2/3: (time)(..)(..)(..)(obis)(unit) then (value)
                groups = value_line.groups
                unit = groups[5] if len(groups) > 6 else None
                number = (float(groups[-1]), unit) if len(groups) > 6 and re.fullmatch(r"[\d.]+", groups[-1]) else None
            if number is None:
                continue
            value, unit = number[0], (number[1] or unit or "").lower()
            kind_line = codes.get("24.1.0")
            kind_code = (
                int(kind_line.groups[0]) if kind_line and kind_line.groups and kind_line.groups[0].isdigit() else 3
            )
            channel = _CHANNEL_TYPES.get(kind_code, "gas")
            if unit in ("gj", "kwh", "mwh"):
                channel = "heat"
            times = value_line.times()
            captured = local_timestamp(times[0], self.zone) if times else None
            ident_line = codes.get("96.1.0") or codes.get("96.1.1")
            ident = (
                _ID_SAFE.sub("", decode_identifier(ident_line.groups[0]))[:64]
                if ident_line and ident_line.groups
                else ""
            )
            cid = ident if ident.strip("0") else f"{meter_id}-{channel}" + (str(n) if n > 1 else "")
            stamp = captured if captured is not None and self._meter_clock_ok else ts
            if self._channel_seen.get(cid) == (stamp, value):
                continue
            self._channel_seen[cid] = (stamp, value)
            if channel == "heat":
                kwh = value * (_GJ_KWH if unit == "gj" else 1000.0 if unit == "mwh" else 1.0)
                out.append(checked_reading(cid, stamp, kwh, channel="heat"))
            else:
                if unit not in ("m3", ""):
                    raise ReaderError(
                        f"0-{n}:{value_line.code.c}.{value_line.code.d}.{value_line.code.e}: unit {unit!r} is not m3"
                    )
                out.append(checked_reading(cid, stamp, None, channel=channel, volume_m3=value))
        return out

    def counters(self) -> dict[str, float]:
        return {
            "telegrams": self.telegrams,
            "bad_telegrams": self.bad_telegrams,
            "skipped_bytes": self.skipped_bytes,
            "left_out_values": self.left_out_values,
            "meter_clock_off": self.meter_clock_off,
        }

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
