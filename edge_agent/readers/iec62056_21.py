"""IEC 62056-21 mode C (formerly IEC 1107): an optical D0 head asks the meter for its data readout.

The exchange (IEC 62056-21:2002, 6.3 and annex A), started by the reader every ``every_s`` seconds:

1. reader -> ``/?!\\r\\n`` (or ``/?ADDRESS!\\r\\n``) at 300 baud, 7E1;
2. meter -> ``/XXXZident\\r\\n``: manufacturer, the baud rate it offers (Z = 0..6 for 300..19200 baud);
3. reader -> ACK ``0Z0\\r\\n`` (protocol mode C, data readout) and switches to that baud rate;
4. meter -> STX, data lines ``1.8.0(012345.678*kWh)``, ``!\\r\\n``, ETX, BCC (XOR of every byte
   after STX up to and including ETX).

The data lines are OBIS data sets, read by the same mapping as DSMR telegrams (:mod:`.obis`):
units honoured, import/export, tariffs, per-phase values. A missing or wrong BCC, an echo-less
silence or a cut-off block is a :class:`ReaderError` naming the step; the agent retries with
backoff. Each readout takes a few seconds at 300 baud start-up, so a readout happens at most every
``every_s`` (default 60 s) and polls in between return nothing.

Meter id: ``meter_id``, else the readout's 0.0.0 / C.1.0 (meter serial), else the identification
line. Readings are stamped with the agent's clock.

Options: ``port`` (required), ``address`` (device address for a bus of meters, default none),
``baudrate`` (start rate, 300), ``max_baudrate`` (19200: never switch above it), ``every_s`` (60),
``timeout_s`` (5: per step), ``meter_id``, ``name``.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Mapping

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from edge_agent.readers.obis import decode_identifier, electricity_fields, parse_data_lines
from edge_agent.readers.stream import open_serial
from gridsight.wire import Reading

__all__ = ["Iec62056ModeCReader", "BAUD_RATES", "bcc"]

BAUD_RATES = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
STX, ETX, ACK = b"\x02", b"\x03", b"\x06"
_IDENT = re.compile(rb"/([A-Za-z]{3})([0-9A-Z])\\?[0-9]?(.*?)\r\n", re.DOTALL)
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_BLOCK = 32 * 1024


def bcc(data: bytes) -> int:
    """The block check character: XOR of ``data`` (every byte after STX through ETX)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


class Iec62056ModeCReader:
    """One meter behind an optical D0 head (or an RS-485 bus of addressed meters)."""

    def __init__(
        self,
        port: Any,
        *,
        name: str,
        meter_id: str | None = None,
        address: str = "",
        every_s: float = 60.0,
        timeout_s: float = 5.0,
        max_baudrate: int = 19200,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.name = name
        self.meter_id = meter_id
        self.address = address
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.max_baudrate = max_baudrate
        self.start_baudrate = getattr(port, "baudrate", 300)
        self._monotonic = monotonic
        self._next: float | None = None
        self.readouts = 0
        self.bad_readouts = 0

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "Iec62056ModeCReader":
        reject_unknown(
            options, {"port", "address", "baudrate", "max_baudrate", "every_s", "timeout_s", "meter_id", "name"}
        )
        port = open_serial(options, baudrate=300, bytesize=7, parity="E", timeout=0.2)
        return cls(
            port,
            name=option(options, "name", str, f"iec62056_21:{options['port']}"),
            meter_id=option(options, "meter_id", str, None),
            address=option(
                options,
                "address",
                str,
                "",
                check=lambda v: re.fullmatch(r"[0-9A-Za-z ]{0,32}", v),
                why="must be up to 32 letters or digits",
            ),
            every_s=option(options, "every_s", float, 60.0, check=lambda v: v > 0, why="must be positive"),
            timeout_s=option(options, "timeout_s", float, 5.0, check=lambda v: 0 < v <= 60, why="must be 0..60 s"),
            max_baudrate=option(
                options,
                "max_baudrate",
                int,
                19200,
                check=lambda v: v in BAUD_RATES.values(),
                why="must be one of 300, 600, ... 19200",
            ),
        )

    # ------------------------------------------------------------------ the exchange

    def _read_until(self, done: Callable[[bytes], bool], what: str) -> bytes:
        import serial

        data = b""
        deadline = self._monotonic() + self.timeout_s
        try:
            while not done(data):
                if self._monotonic() > deadline:
                    raise ReaderError(
                        f"{self.name}: no {what} within {self.timeout_s:g} s "
                        f"({len(data)} bytes; optical head aligned, meter awake?)"
                    )
                if len(data) > _MAX_BLOCK:
                    raise ReaderError(f"{self.name}: {what} longer than {_MAX_BLOCK} bytes (line noise?)")
                chunk = self.port.read(max(1, self.port.in_waiting or 1))
                data += chunk
        except (serial.SerialException, OSError) as exc:
            raise ReaderError(f"{self.name}: port error: {exc}") from None
        return data

    def _set_baudrate(self, baud: int) -> None:
        import termios

        if getattr(self.port, "baudrate", baud) == baud:
            return
        try:
            self.port.baudrate = baud
        except (OSError, ValueError, termios.error) as exc:
            raise ReaderError(f"{self.name}: cannot switch to {baud} baud: {exc}") from None

    def readout(self) -> tuple[str, bytes]:
        """One mode C data readout: (identification, data block between STX and '!')."""
        self._set_baudrate(self.start_baudrate)
        self.port.reset_input_buffer()
        self.port.write(b"/?" + self.address.encode("ascii") + b"!\r\n")
        raw = self._read_until(lambda d: _IDENT.search(d) is not None, "identification")
        match = _IDENT.search(raw)
        assert match is not None
        if raw.startswith(b"/?"):  # a half-duplex head echoes what it sends
            raw = raw[raw.index(b"\r\n") + 2 :]
            match = _IDENT.search(raw) or match
        ident = match.group(0).decode("ascii", errors="replace").strip()
        z = match.group(2).decode("ascii")
        baud = BAUD_RATES.get(z, self.start_baudrate)
        baud = max(b for b in BAUD_RATES.values() if b <= min(baud, self.max_baudrate))
        offered = next((k for k, v in BAUD_RATES.items() if v == baud), "0")
        self.port.write(ACK + f"0{offered}0\r\n".encode("ascii"))
        self.port.flush()
        self._set_baudrate(baud)
        block = self._read_until(lambda d: ETX in d and len(d) > d.index(ETX) + 1, "data block")
        start = block.find(STX)
        end = block.index(ETX)
        if start < 0 or start > end:
            raise ReaderError(f"{self.name}: data block without STX")
        body = block[start + 1 : end + 1]
        if bcc(body) != block[end + 1]:
            raise ReaderError(f"{self.name}: data block BCC mismatch (dropped)")
        return ident, body[:-1]

    def read(self, now: float) -> list[Reading]:
        if self._next is not None and now < self._next:
            return []
        self._next = now + self.every_s
        try:
            ident, data = self.readout()
            reading = self._reading(ident, data, now)
        except ReaderError:
            self.bad_readouts += 1
            self._next = now  # a failed readout is retried at the agent's backoff, not after every_s
            raise
        self.readouts += 1
        return [reading]

    def _reading(self, ident: str, data: bytes, now: float) -> Reading:
        lines = parse_data_lines(data.decode("ascii", errors="replace"))
        registers: dict[Any, Any] = {}
        serial_no = None
        for line in lines:
            code = str(line.code)
            if code in ("0-0:0.0.0", "0-0:C.1.0", "1-0:0.0.0", "0-0:96.1.0") and line.groups and serial_no is None:
                serial_no = _ID_SAFE.sub("", decode_identifier(line.groups[0], hex_ascii=False))[:64] or None
            if line.code.a == 1:
                number = line.number()
                if number is not None:
                    registers.setdefault(line.code, number)
        try:
            fields, _ = electricity_fields(registers)
        except ReaderError as exc:
            raise ReaderError(f"{self.name}: {exc}") from None
        meter_id = self.meter_id or serial_no or _ID_SAFE.sub("", ident.lstrip("/"))[:64]
        return checked_reading(meter_id, now, **fields)

    def counters(self) -> dict[str, float]:
        return {"readouts": self.readouts, "bad_readouts": self.bad_readouts}

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
