"""Replay recorded readings from a CSV or NDJSON file as if the meters were live.

Columns (CSV header or NDJSON keys): ``meter_id, ts, energy_kwh`` and optionally
``power_w, voltage_v, current_a, power_factor``. ``ts`` is Unix seconds or ISO 8601
(naive times are UTC). The file is streamed, never loaded whole, and each reading is
released once the clock reaches its timestamp, so a replay under a simulated clock behaves
like meters polled in real time. With ``align_to_clock = true`` the recording is shifted so
its first reading happens at the first poll (replaying last year's data "now").

A malformed line is never silently dropped: the readings before it are returned, the next
poll raises :class:`ReaderError` naming the file and line, and replay continues after it.

Options: ``path`` (required), ``name``, ``format`` ("csv" | "ndjson"; default from the file
suffix), ``align_to_clock`` (default false), ``max_per_read`` (default 20000).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from edge_agent.clock import parse_utc_time
from edge_agent.readers.base import ReaderError, checked_reading, option, reject_unknown
from gridsight.settings import ConfigError
from gridsight.wire import Reading

__all__ = ["ReplayReader"]

_FIELDS = ("meter_id", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "power_factor")


def _parse_ts(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_utc_time(value)
        except ValueError as exc:
            raise ReaderError(f"ts: {exc}") from None
    return value


def _parse_number(key: str, value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        try:
            return float(text)
        except ValueError:
            raise ReaderError(f"{key}: {text[:40]!r} is not a number") from None
    return value


class ReplayReader:
    """Readings from a recorded file, released as the clock passes their timestamps."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        fmt: str | None = None,
        align_to_clock: bool = False,
        max_per_read: int = 20_000,
    ) -> None:
        self.path = Path(path)
        self.name = name or f"replay:{self.path.name}"
        self.format = fmt or ("ndjson" if self.path.suffix.lower() in (".ndjson", ".jsonl") else "csv")
        if self.format not in ("csv", "ndjson"):
            raise ConfigError("format", f"{self.format!r} is not csv or ndjson")
        self.align_to_clock = align_to_clock
        self.max_per_read = max_per_read
        try:
            self._fh = self.path.open("r", encoding="utf-8", newline="")
        except OSError as exc:
            raise ConfigError("path", f"cannot open {self.path}: {exc.strerror or exc}") from None
        self._rows = self._iter_rows()
        self._pending: tuple[int, Any] | None = None  # (line number, row or exception)
        self._shift: float | None = None if align_to_clock else 0.0
        self.exhausted = False

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> "ReplayReader":
        reject_unknown(options, {"path", "name", "format", "align_to_clock", "max_per_read"})
        return cls(
            option(options, "path", str),
            name=option(options, "name", str, None),
            fmt=option(
                options, "format", str, None, check=lambda v: v in ("csv", "ndjson"), why="must be csv or ndjson"
            ),
            align_to_clock=option(options, "align_to_clock", bool, False),
            max_per_read=option(options, "max_per_read", int, 20_000, check=lambda v: v > 0, why="must be positive"),
        )

    def _iter_rows(self) -> Iterator[tuple[int, Any]]:
        if self.format == "csv":
            reader = csv.reader(self._fh)
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            missing = [f for f in ("meter_id", "ts", "energy_kwh") if f not in header]
            unknown = [h for h in header if h not in _FIELDS]
            if missing or unknown:
                yield (
                    1,
                    ReaderError(
                        f"{self.path}:1: header must have meter_id, ts, energy_kwh "
                        f"(missing {missing}, unknown {unknown})"
                    ),
                )
                return
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    yield line, ReaderError(f"{self.path}:{line}: expected {len(header)} fields, got {len(row)}")
                    continue
                yield line, dict(zip(header, row))
        else:
            for line, text in enumerate(self._fh, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    yield line, ReaderError(f"{self.path}:{line}: not JSON ({exc})")
                    continue
                if not isinstance(obj, dict):
                    yield line, ReaderError(f"{self.path}:{line}: expected a JSON object")
                    continue
                unknown = sorted(set(obj) - set(_FIELDS))
                if unknown:
                    yield line, ReaderError(f"{self.path}:{line}: unknown field {unknown[0]!r}")
                    continue
                yield line, obj

    def _to_reading(self, line: int, row: dict) -> Reading:
        try:
            values = {k: row.get(k) for k in _FIELDS}
            values["ts"] = _parse_ts(values["ts"])
            for key in ("energy_kwh", "power_w", "voltage_v", "current_a", "power_factor"):
                values[key] = _parse_number(key, values[key])
            if isinstance(values["ts"], (int, float)) and not isinstance(values["ts"], bool):
                values["ts"] = float(values["ts"]) + (self._shift or 0.0)
            return checked_reading(**values)
        except ReaderError as exc:
            raise ReaderError(f"{self.path}:{line}: {exc}") from None

    def _next(self) -> tuple[int, Any] | None:
        if self._pending is None:
            self._pending = next(self._rows, None)
        return self._pending

    def read(self, now: float) -> list[Reading]:
        out: list[Reading] = []
        while len(out) < self.max_per_read:
            item = self._next()
            if item is None:
                self.exhausted = True
                break
            line, row = item
            if isinstance(row, ReaderError):
                if out:
                    break  # hand over what we have; the error is raised on the next poll
                self._pending = None
                raise row
            if self._shift is None:
                try:
                    self._shift = now - float(_parse_ts(row.get("ts")))
                except (ReaderError, TypeError, ValueError):
                    pass  # this row is refused below; the next good row sets the shift
            try:
                reading = self._to_reading(line, row)
            except ReaderError as exc:
                if out:
                    self._pending = (line, exc)
                    break
                self._pending = None
                raise
            if reading.ts > now:
                break
            out.append(reading)
            self._pending = None
        return out

    def close(self) -> None:
        self._fh.close()
