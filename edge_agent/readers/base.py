"""The one small interface every meter reader implements, and the checks readers share.

A reader turns whatever a meter speaks (Modbus registers, DSMR telegrams, a CSV file, a
simulator) into :class:`gridsight.wire.Reading` values. It never sleeps, retries or
buffers on its own: the agent polls it, retries it with backoff when it raises
:class:`ReaderError`, and reports the failure in status, so one broken meter never stops
the others.

A reader type is built from its ``[[readers]]`` config table (minus ``type``) with
``Class.from_config(options)``, which raises :class:`gridsight.settings.ConfigError`
naming the key at fault. ``name`` is an optional key every reader accepts.

A reader that can hand readings over again (a meter's load-profile log read by index, the
simulator's meters) may also have ``commit()``: the agent calls it after the outbox transaction
holding everything the reader has handed over so far has committed, never before, so the reader
moves its persisted cursor only past readings that are stored. A reading is then either in the
outbox or handed over again after a crash, whatever instant the agent is killed at.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol, runtime_checkable

from gridsight.settings import ConfigError
from gridsight.wire import Reading, WireError, reading_field_checks
from gridsight.errors import GridsightError

__all__ = ["ReaderError", "MeterReader", "checked_reading", "option", "reject_unknown"]


class ReaderError(GridsightError):
    """A meter could not be read right now: timeout, CRC error, garbage frame, unplugged."""


@runtime_checkable
class MeterReader(Protocol):
    name: str

    def read(self, now: float) -> list[Reading]:
        """Readings available at clock time ``now`` (possibly several per meter)."""

    def close(self) -> None:
        """Release the port, socket or file."""


_MISSING = object()


def option(
    options: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    default: Any = _MISSING,
    *,
    check: Any = None,
    why: str = "",
) -> Any:
    """One typed value of a reader's config table, or a ConfigError naming ``key``.

    ``check`` is an optional predicate on the value; ``why`` says what it requires.
    """
    if key not in options:
        if default is _MISSING:
            raise ConfigError(key, "missing")
        return default
    value = options[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(key, f"expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(key, f"expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    if check is not None and not check(value):
        raise ConfigError(key, f"{value!r}: {why or 'invalid value'}")
    return value


def reject_unknown(options: Mapping[str, Any], known: set[str]) -> None:
    """Raise ConfigError for the first key a reader does not understand (typos fail loudly)."""
    for key in sorted(options):
        if key not in known:
            raise ConfigError(key, "unknown key")


def checked_reading(
    meter_id: Any,
    ts: Any,
    energy_kwh: Any,
    power_w: Any = None,
    voltage_v: Any = None,
    current_a: Any = None,
    power_factor: Any = None,
    **extensions: Any,
) -> Reading:
    """A :class:`Reading` whose every field obeys the wire contract, else :class:`ReaderError`.

    Readers call this so a garbage value from a meter is refused at the edge, before it
    could make a whole batch undeliverable. ``extensions`` are the layout-2 fields
    (``export_kwh``, ``voltage_l2_v``, ``channel``, ...; see :data:`gridsight.wire.READING_EXTENSIONS`).
    """
    checks = _CHECKS
    values = []
    for key, value in (
        ("meter_id", meter_id),
        ("ts", ts),
        ("energy_kwh", energy_kwh),
        ("power_w", power_w),
        ("voltage_v", voltage_v),
        ("current_a", current_a),
        ("power_factor", power_factor),
    ):
        values.append(_checked(checks, key, value))
    try:
        if not extensions:  # the common case: positional, and only energy can break the channel rule
            if energy_kwh is None:
                raise WireError("energy_kwh", "missing")
            return Reading(*values)
        for key in extensions:
            if key not in checks:
                raise TypeError(f"checked_reading: unknown field {key}")
        more = {key: _checked(checks, key, value) for key, value in extensions.items()}
        return Reading(*values, **more).check_channel()
    except WireError as exc:
        raise ReaderError(str(exc)) from None


_CHECKS = reading_field_checks()  # built once: checked_reading runs for every reading


def _checked(checks: dict, key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ReaderError(f"{key}: {value} is not a finite number")
    try:
        return checks[key](key, value)
    except WireError as exc:
        raise ReaderError(str(exc)) from None
