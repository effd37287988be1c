"""Clocks: the one source of time for the agent, passed in so tests and simulations drive it.

``SystemClock`` is wall time on a gateway. ``SimulatedClock`` runs ``speed`` times faster than
real time from a chosen start, so the fleet simulator and the benchmark can push hours of
readings through real agents in minutes. ``ManualClock`` only moves when a test says so.

Besides ``now`` and ``sleep`` every clock here has ``wait(event, seconds)``: a sleep of clock
seconds that ends early when ``event`` is set, which is how the agent stays responsive to
SIGTERM while it idles between polls.

``clock_health()`` reads the kernel's NTP discipline state (``adjtimex``) so the agent can
report whether the gateway clock is synchronised and by how much it may be off, without any
dependency or daemon-specific command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "SimulatedClock", "ManualClock", "ClockHealth", "clock_health"]


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Current time, Unix seconds UTC."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of this clock's time pass."""


class SystemClock:
    """Wall-clock time of the machine."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds``; True if ``event`` was set."""
        return event.wait(max(0.0, seconds))

    def real_seconds(self, seconds: float) -> float:
        return seconds


class SimulatedClock:
    """Time that starts at ``start`` and runs ``speed`` times faster than real time.

    With ``anchor`` (a wall-clock Unix time at which simulated time was ``start``) the clock
    is a pure function of wall time, so a process that restarts (after a crash, in a fault
    test or a long fleet simulation) continues the same simulated timeline instead of
    starting over.
    """

    def __init__(self, start: float, speed: float = 1.0, anchor: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start = float(start)
        self.speed = float(speed)
        self.anchor = anchor
        self._t0 = time.monotonic()

    def now(self) -> float:
        if self.anchor is not None:
            return self.start + (time.time() - self.anchor) * self.speed
        return self.start + (time.monotonic() - self._t0) * self.speed

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.speed)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds) / self.speed)

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.speed


class ManualClock:
    """A clock that moves only through :meth:`advance` (or :meth:`sleep`), for tests."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, t: float) -> None:
        with self._lock:
            self._now = float(t)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.sleep(seconds)
        # yield the GIL so other threads (publisher, test driver) make progress
        time.sleep(0)
        return event.is_set()

    def real_seconds(self, seconds: float) -> float:
        return 0.0


# --------------------------------------------------------------------------- clock health


@dataclass(frozen=True, slots=True)
class ClockHealth:
    """Kernel NTP state: ``synced`` None when unknown; offsets/errors in seconds."""

    synced: bool | None
    offset_s: float | None
    max_error_s: float | None


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (glibc); trailing padding keeps the kernel's size.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


_TIME_ERROR = 5
_STA_NANO = 0x2000
_libc = None


def clock_health() -> ClockHealth:
    """Ask the kernel (read-only ``adjtimex``) whether NTP disciplines the clock.

    ``TIME_ERROR`` means no time daemon has synchronised the clock (typical right after a
    power cut on a gateway without an RTC). Unknown platforms report ``synced=None``.
    """
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        tx.modes = 0
        state = _libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return ClockHealth(None, None, None)
    if state < 0:
        return ClockHealth(None, None, None)
    scale = 1e-9 if tx.status & _STA_NANO else 1e-6
    return ClockHealth(synced=state != _TIME_ERROR, offset_s=tx.offset * scale, max_error_s=tx.maxerror * 1e-6)


def parse_utc_time(text: str) -> float:
    """Unix seconds from ``"1767225600"`` or ISO-8601 (``Z``/offset; a naive time means UTC).

    The one parser for times in readings files, labels and scenarios; ValueError when it is
    neither."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is neither Unix seconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
