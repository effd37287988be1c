"""DSMR P1 telegrams (Dutch/Belgian smart meters) from a serial port, parsed by dsmr-parser.

The meter pushes a telegram every second (DSMR 5) or ten seconds (DSMR 4). Each poll takes
whatever bytes the port holds without blocking, cuts complete ``/...!CRC`` telegrams out of
the stream, checks their CRC16 and turns each good one into a :class:`Reading`:

* ``energy_kwh`` = import tariff 1 + tariff 2 registers (1.8.1 + 1.8.2),
* ``power_w`` = 1.7.0 (kW) x 1000, ``voltage_v`` = 32.7.0, ``current_a`` = 31.7.0 when present.

Readings are stamped with the agent's clock (the meter's own clock drifts and has no time
zone). A telegram with a bad CRC or garbage on the line is reported as :class:`ReaderError`
on the next poll, after the good telegrams are handed over; no telegram for ``stale_s``
seconds (cable pulled, meter without power) is a ReaderError too.

Options: ``port`` (required; a device such as /dev/ttyUSB0 or a pyserial URL), ``meter_id``
(default: the telegram's equipment identifier), ``baudrate`` (115200; 9600 for DSMR 2.2),
``version`` ("5" | "4" | "2.2"), ``stale_s`` (30), ``name``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from gridsight.settings import ConfigError
from gridsight.wire import Reading

__all__ = ["DsmrP1Reader"]

_MAX_BUFFER = 16 * 1024  # the largest real telegram is ~2 kB; more without a frame is line noise
_FRAME = re.compile(r"/[^/]+?![A-F0-9]{0,4}\0?\r\n", re.DOTALL)
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class DsmrP1Reader:
    """One smart meter's P1 port."""

    def __init__(self, serial_port: Any, *, meter_id: str | None, version: str = "5", stale_s: float = 30.0,
                 name: str = "dsmr_p1") -> None:
        from dsmr_parser import telegram_specifications
        from dsmr_parser.parsers import TelegramParser

        spec = {"5": telegram_specifications.V5, "4": telegram_specifications.V4,
                "2.2": telegram_specifications.V2_2}[version]
        self.port = serial_port
        self.meter_id = meter_id
        self.name = name
        self.stale_s = stale_s
        self._parser = TelegramParser(spec, apply_checksum_validation=True)
        self._buffer = ""
        self._last_telegram: float | None = None
        self._first_poll: float | None = None
        self._deferred: list[str] = []
        self.telegrams = 0
        self.bad_telegrams = 0

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "DsmrP1Reader":
        import serial

        reject_unknown(options, {"port", "meter_id", "baudrate", "version", "stale_s", "name"})
        port = option(options, "port", str)
        version = option(options, "version", str, "5", check=lambda v: v in ("5", "4", "2.2"), why="must be 5, 4 or 2.2")
        baudrate = option(options, "baudrate", int, 9600 if version == "2.2" else 115200,
                          check=lambda v: v > 0, why="must be positive")
        meter_id = option(options, "meter_id", str, None)
        try:
            handle = serial.serial_for_url(port, baudrate=baudrate, bytesize=7 if version == "2.2" else 8,
                                           parity="E" if version == "2.2" else "N", stopbits=1, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConfigError("port", f"cannot open {port}: {exc}") from None
        return cls(handle, meter_id=meter_id, version=version,
                   stale_s=option(options, "stale_s", float, 30.0, check=lambda v: v > 0, why="must be positive"),
                   name=option(options, "name", str, f"dsmr_p1:{port}"))

    def _drain_port(self) -> None:
        import serial

        try:
            while True:
                waiting = self.port.in_waiting
                if not waiting:
                    break
                self._buffer += self.port.read(waiting).decode("ascii", errors="replace")
        except (serial.SerialException, OSError) as exc:
            raise ReaderError(f"{self.name}: serial port error: {exc}") from None

    def read(self, now: float) -> list[Reading]:
        from dsmr_parser.exceptions import InvalidChecksumError, ParseError

        if self._first_poll is None:
            self._first_poll = now
        if self._deferred:
            errors, self._deferred = self._deferred, []
            raise ReaderError(f"{self.name}: " + "; ".join(errors)[:400])
        self._drain_port()
        out: list[Reading] = []
        errors: list[str] = []
        end = 0
        for match in _FRAME.finditer(self._buffer):
            if self._buffer[end:match.start()].strip():
                errors.append(f"{len(self._buffer[end:match.start()].strip())} bytes of garbage before a telegram")
            end = match.end()
            try:
                telegram = self._parser.parse(match.group(0))
                out.append(self._reading(telegram, now))
                self.telegrams += 1
            except InvalidChecksumError:
                self.bad_telegrams += 1
                errors.append("telegram CRC mismatch (dropped)")
            except (ParseError, ReaderError, ValueError, KeyError, IndexError) as exc:
                self.bad_telegrams += 1
                errors.append(f"unreadable telegram ({exc})")
        self._buffer = self._buffer[end:]
        if len(self._buffer) > _MAX_BUFFER:
            errors.append(f"{len(self._buffer)} bytes without a complete telegram (wrong baud rate?)")
            self._buffer = self._buffer[-_MAX_BUFFER // 2:]
        if out:
            self._last_telegram = now
        elif now - (self._last_telegram or self._first_poll) > self.stale_s:
            errors.append(f"no telegram for {now - (self._last_telegram or self._first_poll):.0f} s (cable or meter?)")
        if errors:
            if not out:
                raise ReaderError(f"{self.name}: " + "; ".join(errors)[:400])
            self._deferred = errors
        return out

    def _reading(self, telegram: Any, now: float) -> Reading:
        from dsmr_parser import obis_references as obis

        def value(ref: str) -> float | None:
            obj = telegram.get(ref)
            return None if obj is None or obj.value is None else float(obj.value)

        t1, t2 = value(obis.ELECTRICITY_USED_TARIFF_1), value(obis.ELECTRICITY_USED_TARIFF_2)
        if t1 is None and t2 is None:
            raise ReaderError("telegram has no import energy register (1.8.1/1.8.2)")
        meter_id = self.meter_id
        if meter_id is None:
            ident = telegram.get(obis.EQUIPMENT_IDENTIFIER)
            raw = str(ident.value) if ident is not None and ident.value else ""
            try:
                raw = bytes.fromhex(raw).decode("ascii") if raw and len(raw) % 2 == 0 else raw
            except ValueError:
                pass
            meter_id = _ID_SAFE.sub("", raw)[:64] or "p1-meter"
        kw = value(obis.CURRENT_ELECTRICITY_USAGE)
        return checked_reading(meter_id, now, (t1 or 0.0) + (t2 or 0.0), None if kw is None else kw * 1000.0,
                               value(obis.INSTANTANEOUS_VOLTAGE_L1), value(obis.INSTANTANEOUS_CURRENT_L1))

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
