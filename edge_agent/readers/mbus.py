"""Wired M-Bus (EN 13757-2/-3): electricity, gas, water and heat meters on a two-wire bus.

Each poll the reader asks every configured primary address for its data with ``REQ_UD2``
(``10 5B|7B A CS 16``, the frame count bit toggled each time), answered by an ``RSP_UD`` long frame ``68 L L 68 C A CI ... CS 16``. Start bytes, the repeated length, the
checksum (sum of C through the data, mod 256) and the stop byte are checked; a unit that does not
answer or answers a broken frame is asked again up to ``retries`` times, then reported as a
:class:`ReaderError` on the next poll after the other units' readings were handed over.

The variable data structure (CI 0x72, 12-byte header: id, manufacturer, version, medium) is
decoded for the records a reading needs, by their VIF (EN 13757-3 table 10): energy in Wh
(VIF 0x00-0x07), volume in m3 (0x10-0x17), power in W (0x28-0x2F), and, behind the 0xFD
extension, voltage (0x40-0x4F) and current (0x50-0x5F); BCD and binary integers and 32-bit reals.
Only current values (storage 0, tariff 0) are taken. The medium decides what the unit is:
electricity (0x02) gives electricity readings; gas (0x03), water (0x06, 0x07) and heat (0x04,
0x0C, 0x0D) give a channel reading under the unit's meter id.

The bus is slow (2400 baud) and the agent's poll loop waits for it, so the units are read every
``every_s`` (60 s), and a unit that stays silent is skipped for a growing number of rounds (up to
``every_s`` x 16) while it keeps being reported, so one dead meter never stalls the gateway.

Options: ``port`` (required; serial adapter, 2400 8E1 by default, or socket://host:port of an
M-Bus gateway), ``baudrate`` (2400), ``units`` (list of ``{address, meter_id}``, address 0..250),
``every_s`` (60), ``timeout_s`` (1.0), ``retries`` (2), ``name``.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Callable, Mapping

from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from gridsight.settings import ConfigError
from gridsight.wire import Reading

__all__ = ["MbusReader", "parse_rsp_ud", "checksum", "ACK"]

ACK = 0xE5
_MEDIA = {0x02: None, 0x03: "gas", 0x06: "water", 0x07: "water", 0x04: "heat", 0x0C: "heat", 0x0D: "heat"}
_BCD = {0x09: 1, 0x0A: 2, 0x0B: 3, 0x0C: 4, 0x0E: 6}
_INT = {0x01: 1, 0x02: 2, 0x03: 3, 0x04: 4, 0x06: 6, 0x07: 8}


def _pow10(value: float, exp: int) -> float:
    """``value * 10**exp`` without binary dust for negative exponents (2301, -1 -> 230.1)."""
    return value * 10**exp if exp >= 0 else value / 10**-exp


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def _bcd(raw: bytes) -> int:
    digits = raw[::-1].hex()
    if not digits.isdigit():
        raise ReaderError(f"invalid BCD value {raw.hex()}")
    return int(digits)


def parse_rsp_ud(frame: bytes) -> tuple[int, int, dict[str, float]]:
    """(secondary id, medium, values) of a long frame; values keyed energy_wh, volume_m3, power_w,
    voltage_v, current_a. :class:`ReaderError` on any framing or checksum fault."""
    if len(frame) < 9 or frame[0] != 0x68 or frame[3] != 0x68 or frame[1] != frame[2]:
        raise ReaderError("not an M-Bus long frame")
    length = frame[1]
    if len(frame) != length + 6 or frame[-1] != 0x16:
        raise ReaderError(f"M-Bus frame of {len(frame)} bytes, header says {length + 6}")
    user = frame[4 : 4 + length]
    if checksum(user) != frame[-2]:
        raise ReaderError("M-Bus checksum mismatch")
    ci = user[2]
    if ci != 0x72 or len(user) < 15:
        raise ReaderError(f"unsupported M-Bus CI field {ci:#04x} (variable data, 0x72, expected)")
    ident = _bcd(user[3:7])
    medium = user[10]
    pos = 15
    values: dict[str, float] = {}
    data = user
    while pos < len(data):
        dif = data[pos]
        pos += 1
        if dif in (0x0F, 0x1F):  # manufacturer data follows / more records in the next frame
            break
        if dif == 0x2F:  # idle filler
            continue
        coding = dif & 0x0F
        storage = (dif >> 6) & 1
        tariff = 0
        more = dif & 0x80
        while more and pos < len(data):  # DIFEs: storage number, tariff, subunit
            dife = data[pos]
            pos += 1
            storage |= (dife & 0x0F) << 1
            tariff |= (dife >> 4) & 0x03
            more = dife & 0x80
        if pos >= len(data):
            raise ReaderError("M-Bus record without a VIF")
        vif = data[pos]
        pos += 1
        ext = None
        if vif == 0xFD and pos < len(data):
            ext = data[pos]
            pos += 1
            more = ext & 0x80
        else:
            more = vif & 0x80
        while more and pos < len(data):  # VIFEs this reader does not interpret
            more = data[pos] & 0x80
            pos += 1
        if coding in _BCD:
            size = _BCD[coding]
        elif coding in _INT:
            size = _INT[coding]
        elif coding == 0x05:
            size = 4
        elif coding == 0x00:
            size = 0
        elif coding == 0x0D and pos < len(data):  # variable length: LVAR byte then data
            size = data[pos] & 0x3F
            pos += 1
        else:
            raise ReaderError(f"unsupported M-Bus data coding {coding:#x}")
        raw = data[pos : pos + size]
        pos += size
        if len(raw) < size:
            raise ReaderError("M-Bus record runs past the end of the frame")
        if storage or tariff or size == 0 or coding == 0x0D:
            continue
        if coding in _BCD:
            value = float(_bcd(raw))
        elif coding == 0x05:
            value = struct.unpack("<f", raw)[0]
        else:
            value = float(int.from_bytes(raw, "little", signed=True))
        base = vif & 0x7F
        if ext is None:
            if base <= 0x07:
                values.setdefault("energy_wh", _pow10(value, base - 3))
            elif 0x10 <= base <= 0x17:
                values.setdefault("volume_m3", _pow10(value, base - 0x10 - 6))
            elif 0x28 <= base <= 0x2F:
                values.setdefault("power_w", _pow10(value, base - 0x28 - 3))
        else:
            e = ext & 0x7F
            if 0x40 <= e <= 0x4F:
                values.setdefault("voltage_v", _pow10(value, e - 0x40 - 9))
            elif 0x50 <= e <= 0x5F:
                values.setdefault("current_a", _pow10(value, e - 0x50 - 12))
    return ident, medium, values


class MbusReader:
    """The meters on one M-Bus master (serial level converter or TCP gateway)."""

    def __init__(
        self,
        port: Any,
        units: list[tuple[int, str]],
        *,
        name: str,
        timeout_s: float = 1.0,
        retries: int = 2,
        every_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.units = units
        self.name = name
        self.timeout_s = timeout_s
        self.retries = retries
        self._monotonic = monotonic
        self._fcb: dict[int, bool] = {}
        self._deferred: ReaderError | None = None
        self.every_s = every_s
        self._next_round: float | None = None
        self._skip: dict[int, tuple[int, int]] = {}  # address -> (rounds left to skip, failures in a row)
        self.frames_ok = 0
        self.bad_frames = 0
        self.retried = 0

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "MbusReader":
        from edge_agent.readers.stream import open_serial

        reject_unknown(options, {"port", "baudrate", "units", "every_s", "timeout_s", "retries", "name"})
        raw = option(options, "units", list, check=lambda v: len(v) > 0, why="must list at least one unit")
        units = []
        for i, u in enumerate(raw):
            if not isinstance(u, dict):
                raise ConfigError(f"units[{i}]", "expected a table with address and meter_id")
            reject_unknown(u, {"address", "meter_id"})
            try:
                units.append(
                    (
                        option(u, "address", int, check=lambda v: 0 <= v <= 250, why="must be 0..250"),
                        option(u, "meter_id", str),
                    )
                )
            except ConfigError as exc:
                raise ConfigError(f"units[{i}].{exc.key}", exc.reason) from None
        port = open_serial(options, baudrate=2400, parity="E", timeout=0.05)
        return cls(
            port,
            units,
            name=option(options, "name", str, f"mbus:{options['port']}"),
            timeout_s=option(options, "timeout_s", float, 1.0, check=lambda v: 0 < v <= 30, why="must be 0..30 s"),
            retries=option(options, "retries", int, 2, check=lambda v: 0 <= v <= 10, why="must be 0..10"),
            every_s=option(options, "every_s", float, 60.0, check=lambda v: v >= 0, why="must be >= 0"),
        )

    def _exchange(self, request: bytes, want: Callable[[bytes], int | None]) -> bytes:
        """Send ``request``; read until ``want(data)`` gives the frame length, or time out."""
        import serial

        try:
            self.port.reset_input_buffer()
            self.port.write(request)
            data = b""
            deadline = self._monotonic() + self.timeout_s
            while True:
                size = want(data)
                if size is not None and len(data) >= size:
                    return data[:size]
                if self._monotonic() > deadline:
                    raise ReaderError(f"no answer within {self.timeout_s:g} s ({len(data)} bytes)")
                data += self.port.read(max(1, self.port.in_waiting or 1))
        except (serial.SerialException, OSError) as exc:
            raise ReaderError(f"port error: {exc}") from None

    @staticmethod
    def _long_frame_size(data: bytes) -> int | None:
        start = data.find(b"\x68")
        if start > 0:
            return None if len(data) < start + 2 else start + data[start + 1] + 6
        return None if len(data) < 2 else data[1] + 6

    def _read_unit(self, address: int) -> tuple[int, dict[str, float]]:
        fcb = self._fcb.get(address, True)
        c = 0x7B if fcb else 0x5B
        request = bytes([0x10, c, address, checksum(bytes([c, address])), 0x16])
        frame = self._exchange(request, self._long_frame_size)
        frame = frame[frame.find(b"\x68") :] if b"\x68" in frame else frame
        ident, medium, values = parse_rsp_ud(frame)
        self._fcb[address] = not fcb
        return medium, values

    def read(self, now: float) -> list[Reading]:
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            raise err
        if self._next_round is not None and now < self._next_round:
            return []
        self._next_round = now + self.every_s
        out: list[Reading] = []
        failures: list[str] = []
        for address, meter_id in self.units:
            left, streak = self._skip.get(address, (0, 0))
            if left:
                self._skip[address] = (left - 1, streak)
                failures.append(
                    f"{meter_id} (address {address}): silent for {streak} rounds, asked again in {left} rounds"
                )
                continue
            last: ReaderError | None = None
            for attempt in range(self.retries + 1):
                try:
                    medium, values = self._read_unit(address)
                    out.append(self._reading(meter_id, now, medium, values))
                    self.frames_ok += 1
                    last = None
                    break
                except ReaderError as exc:
                    self.bad_frames += 1
                    if attempt < self.retries:
                        self.retried += 1
                    last = exc
            if last is not None:
                failures.append(f"{meter_id} (address {address}): {last}")
                streak += 1
                self._skip[address] = (min(2 ** (streak - 1), 16) - 1, streak)  # skip 0, 1, 3, 7, 15 rounds
            else:
                self._skip.pop(address, None)
        if failures:
            error = ReaderError(f"{self.name}: " + "; ".join(failures)[:450])
            if not out:
                raise error
            self._deferred = error
        return out

    @staticmethod
    def _reading(meter_id: str, now: float, medium: int, values: dict[str, float]) -> Reading:
        channel = _MEDIA.get(medium, "unknown")
        if channel == "unknown":
            raise ReaderError(f"medium {medium:#04x} is not electricity, gas, water or heat")
        if channel in ("gas", "water"):
            if "volume_m3" not in values:
                raise ReaderError(f"{channel} meter sent no volume record")
            return checked_reading(meter_id, now, None, channel=channel, volume_m3=values["volume_m3"])
        if "energy_wh" not in values:
            raise ReaderError("meter sent no energy record")
        kwh = values["energy_wh"] / 1000.0
        if channel == "heat":
            return checked_reading(meter_id, now, kwh, channel="heat")
        return checked_reading(
            meter_id, now, kwh, values.get("power_w"), values.get("voltage_v"), values.get("current_a")
        )

    def counters(self) -> dict[str, float]:
        return {"frames": self.frames_ok, "bad_frames": self.bad_frames, "retried": self.retried}

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
