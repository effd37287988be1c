"""What push-protocol readers share: a serial (or socket) stream drained without blocking.

SML meters and DLMS/COSEM HAN ports push a frame every one to ten seconds. A reader built on
:class:`PushStreamReader` takes whatever bytes the port holds at each poll, hands them to its
``frames(buffer)`` method (which returns readings and the unconsumed tail), and reports errors
like the DSMR reader: good frames first, errors on the next poll, a silent port after ``stale_s``
and line noise beyond ``max_buffer`` bytes as :class:`ReaderError`. Counters (frames, bad frames,
skipped bytes) appear in the agent's status as ``reader.<name>.<counter>``.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from edge_agent.readers.base import ReaderError, option
from gridsight.settings import ConfigError
from gridsight.wire import Reading


def drain_port(port: Any, error_prefix: str) -> Iterator[bytes]:
    """The bytes a serial port holds now, chunk by chunk, without waiting; a port error is a
    ReaderError (chunks read before it have been handed out already)."""
    import serial

    try:
        while True:
            waiting = port.in_waiting
            if not waiting:
                return
            yield port.read(waiting)
    except (serial.SerialException, OSError) as exc:
        raise ReaderError(f"{error_prefix}: {exc}") from None


__all__ = ["PushStreamReader", "crc16_x25", "drain_port", "open_serial"]


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25 (poly 0x1021 reflected, init and xorout 0xFFFF): SML, HDLC (IEC 62056-46), M-Bus wM-Bus."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def open_serial(
    options: Mapping[str, Any], *, baudrate: int, bytesize: int = 8, parity: str = "N", timeout: float = 0
) -> Any:
    """The port named by ``port`` (a device or a pyserial URL such as socket://host:port)."""
    import serial

    port = option(options, "port", str)
    try:
        return serial.serial_for_url(
            port,
            baudrate=option(options, "baudrate", int, baudrate, check=lambda v: v > 0, why="must be positive"),
            bytesize=bytesize,
            parity=parity,
            stopbits=1,
            timeout=timeout,
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ConfigError("port", f"cannot open {port}: {exc}") from None


class PushStreamReader:
    """Base of a reader whose meter pushes frames; subclasses implement :meth:`frames`."""

    max_buffer = 8 * 1024

    def __init__(self, port: Any, *, name: str, stale_s: float = 30.0, period_s: float = 1.0) -> None:
        self.port = port
        self.name = name
        self.stale_s = stale_s
        self.period_s = period_s
        self._last_ts: dict[str, float] = {}
        self._buffer = b""
        self._first_poll: float | None = None
        self._last_frame: float | None = None
        self._deferred: list[str] = []
        self.frames_ok = 0
        self.bad_frames = 0
        self.skipped_bytes = 0

    def frames(self, buffer: bytes, now: float, errors: list[str]) -> tuple[list[Reading], bytes]:
        """Readings from the complete frames in ``buffer`` and the bytes to keep for the next poll."""
        raise NotImplementedError

    def _drain(self) -> None:
        for chunk in drain_port(self.port, f"{self.name}: port error"):
            self._buffer += chunk

    def read(self, now: float) -> list[Reading]:
        if self._first_poll is None:
            self._first_poll = now
        if self._deferred:
            deferred, self._deferred = self._deferred, []
            raise ReaderError(f"{self.name}: " + "; ".join(deferred)[:400])
        self._drain()
        errors: list[str] = []
        out, self._buffer = self.frames(self._buffer, now, errors)
        out = self._spread(out, now)
        if len(self._buffer) > self.max_buffer:
            self.skipped_bytes += len(self._buffer) - self.max_buffer // 2
            errors.append(f"{len(self._buffer)} bytes without a complete frame (wrong baud rate or protocol?)")
            self._buffer = self._buffer[-self.max_buffer // 2 :]
        if out:
            self._last_frame = now
        elif now - (self._last_frame or self._first_poll) > self.stale_s:
            errors.append(f"no frame for {now - (self._last_frame or self._first_poll):.0f} s (cable or meter?)")
        if errors:
            if not out:
                raise ReaderError(f"{self.name}: " + "; ".join(errors)[:400])
            self._deferred = errors
        return out

    def _spread(self, readings: list[Reading], now: float) -> list[Reading]:
        """Frames that arrived in one poll without a time of their own: ``period_s`` apart, newest at
        ``now``, never at or before the meter's previous reading, so none is taken for a duplicate."""
        import dataclasses

        left: dict[str, int] = {}
        for r in readings:
            if r.ts == now:
                left[r.meter_id] = left.get(r.meter_id, 0) + 1
        out = []
        for r in readings:
            if r.ts == now:
                left[r.meter_id] -= 1
                ts = max(now - left[r.meter_id] * self.period_s, self._last_ts.get(r.meter_id, -1.0) + 0.001)
                r = dataclasses.replace(r, ts=ts) if ts != r.ts else r
            self._last_ts[r.meter_id] = max(r.ts, self._last_ts.get(r.meter_id, r.ts))
            out.append(r)
        return out

    def counters(self) -> dict[str, float]:
        return {"frames": self.frames_ok, "bad_frames": self.bad_frames, "skipped_bytes": self.skipped_bytes}

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
