"""Readings files and reading lists into meter-intervals, with every bad row counted.

A readings file (CSV, or Parquet with the same column names) has at least ``meter_id``, ``ts`` and ONE energy column:

* ``kwh``        — energy consumed in the interval that *starts* at ``ts`` (interval data,
                   as utilities export it, any regular interval from 10 s to 1 h), or
* ``energy_kwh`` — the cumulative import register read at ``ts`` (as a gateway reads it).

``ts`` is ISO-8601 (a value without a zone is taken as UTC) or Unix seconds. Optional
columns: ``power_w`` (instantaneous power, register files), ``voltage_v`` (volts, register
files) and ``meter_class`` (residential,
commercial, industrial, pv, …) for per-class models. Rows that cannot be parsed make the
file unusable: :class:`ReadingsError` names the line. Rows that parse but are wrong —
duplicates, negative or absurd energy, empty values, registers going backwards — are
counted in :class:`DataQuality` and left out; gaps stay gaps (the feature builder knows
an interval that does not follow its predecessor).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from edge_agent.clock import parse_utc_time
from edge_agent.features import IntervalStats
from gridsight.wire import Reading
from gridsight.errors import GridsightError

__all__ = ["ReadingsError", "DataQuality", "ReadingTable", "read_readings", "read_readings_csv",
           "read_readings_parquet", "table_from_readings",
           "interval_series", "MAX_KW"]

# A meter drawing more than 100 MW is a broken export, not a building.
MAX_KW = 100_000.0
_TS_MIN, _TS_MAX = 946_684_800.0, 4_102_444_800.0  # 2000 .. 2100, as on the wire


class ReadingsError(GridsightError, ValueError):
    """A readings file that cannot be used; ``line`` is the 1-based line at fault (0: the whole file)."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        where = f"{source} line {line}" if line else source
        super().__init__(f"{where}: {reason}")
        self.source, self.line, self.reason = source, line, reason


@dataclass
class DataQuality:
    """What was wrong with the input, counted rather than silently dropped."""

    rows: int = 0
    meters: int = 0
    intervals: int = 0
    duplicates: int = 0
    empty_values: int = 0
    negative: int = 0
    absurd: int = 0
    register_resets: int = 0
    gap_intervals: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in asdict(self).items())


@dataclass
class ReadingTable:
    """Parsed rows, column-wise. ``kind`` says what ``value`` holds: interval kWh or a register."""

    kind: str  # "interval" | "register"
    meter_ids: list[str]
    ts: np.ndarray
    value: np.ndarray
    power_w: np.ndarray | None
    meter_classes: dict[str, str] = field(default_factory=dict)
    source: str = "<readings>"
    lines: np.ndarray | None = None
    voltage_v: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.meter_ids)


def parse_ts(text: str) -> float:
    value = parse_utc_time(text)
    if not math.isfinite(value) or not _TS_MIN <= value <= _TS_MAX:
        raise ValueError(f"time {text[:40]!r} is outside 2000..2100 (milliseconds instead of seconds?)")
    return value


def _parse_number(text: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "null", "na"):
        return math.nan
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def read_readings_csv(path: str | Path) -> ReadingTable:
    """Parse a readings CSV (see the module docstring); :class:`ReadingsError` names a bad line."""
    p = Path(path)
    source = str(p)
    try:
        fh = p.open("r", newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReadingsError(source, 0, "file does not exist") from None
    except OSError as exc:
        raise ReadingsError(source, 0, f"cannot read ({exc.strerror})") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ReadingsError(source, 1, "empty file, expected a header meter_id,ts,kwh") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ReadingsError(source, 1, f"not a CSV file ({exc})") from None
        cols = {name.strip().lower(): i for i, name in enumerate(header)}
        for required in ("meter_id", "ts"):
            if required not in cols:
                raise ReadingsError(source, 1, f"header has no {required!r} column (got {', '.join(header)[:120]})")
        if "kwh" in cols and "energy_kwh" in cols:
            raise ReadingsError(source, 1, "give either kwh (interval energy) or energy_kwh (register), not both")
        if "kwh" not in cols and "energy_kwh" not in cols:
            raise ReadingsError(source, 1, "header needs a kwh (interval energy) or energy_kwh (register) column")
        kind = "interval" if "kwh" in cols else "register"
        i_meter, i_ts = cols["meter_id"], cols["ts"]
        i_val = cols["kwh" if kind == "interval" else "energy_kwh"]
        i_pow, i_volt, i_cls = cols.get("power_w"), cols.get("voltage_v"), cols.get("meter_class")
        width = max(i for i in (i_meter, i_ts, i_val, i_pow, i_volt, i_cls) if i is not None) + 1

        meters: list[str] = []
        ts: list[float] = []
        values: list[float] = []
        power: list[float] = []
        volts: list[float] = []
        lines: list[int] = []
        classes: dict[str, str] = {}
        line = 1
        try:
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) < width:
                    raise ReadingsError(source, line, f"expected at least {width} fields, got {len(row)}")
                meter = row[i_meter].strip()
                if not meter or len(meter) > 64:
                    raise ReadingsError(source, line, "meter_id must be 1 to 64 characters")
                try:
                    t = parse_ts(row[i_ts])
                except ValueError as exc:
                    raise ReadingsError(source, line, f"bad ts {row[i_ts][:40]!r} ({exc})") from None
                try:
                    v = _parse_number(row[i_val])
                    pw = _parse_number(row[i_pow]) if i_pow is not None else math.nan
                    vv = _parse_number(row[i_volt]) if i_volt is not None else math.nan
                except ValueError:
                    col = "/".join(header[i] for i in (i_val, i_pow, i_volt) if i is not None)
                    raise ReadingsError(source, line, f"{col} is not a number") from None
                meters.append(meter)
                ts.append(t)
                values.append(v)
                power.append(pw)
                volts.append(vv)
                lines.append(line)
                if i_cls is not None and row[i_cls].strip():
                    classes.setdefault(meter, row[i_cls].strip().lower())
        except csv.Error as exc:
            raise ReadingsError(source, reader.line_num, f"malformed CSV ({exc})") from None
        except UnicodeDecodeError:
            raise ReadingsError(source, line + 1, "not UTF-8 text") from None
    if not meters:
        raise ReadingsError(source, 0, "no readings after the header")
    power_arr = np.asarray(power, dtype=np.float64) if i_pow is not None else None
    volt_arr = np.asarray(volts, dtype=np.float64) if i_volt is not None else None
    return ReadingTable(kind, meters, np.asarray(ts, dtype=np.float64), np.asarray(values, dtype=np.float64),
                        power_arr, classes, source, np.asarray(lines, dtype=np.int64), volt_arr)


def read_readings(path: str | Path) -> ReadingTable:
    """A readings file by its suffix: ``.parquet``/``.pq`` as Parquet, anything else as CSV."""
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        return read_readings_parquet(path)
    return read_readings_csv(path)


def read_readings_parquet(path: str | Path) -> ReadingTable:
    """Parse a Parquet readings file (columns as in a CSV); :class:`ReadingsError` names a bad row."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ReadingsError(str(path), 0, "reading Parquet needs pyarrow: pip install 'gridsight[train]'") from None
    source = str(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ReadingsError(source, 0, "file does not exist") from None
    except (OSError, pa.ArrowException) as exc:
        raise ReadingsError(source, 0, f"not a Parquet file ({str(exc)[:120]})") from None
    cols = {name.lower(): name for name in table.column_names}
    for required in ("meter_id", "ts"):
        if required not in cols:
            raise ReadingsError(source, 0, f"no {required!r} column (got {', '.join(table.column_names)[:120]})")
    if ("kwh" in cols) == ("energy_kwh" in cols):
        raise ReadingsError(source, 0, "needs exactly one of kwh (interval energy) or energy_kwh (register)")
    kind = "interval" if "kwh" in cols else "register"
    if table.num_rows == 0:
        raise ReadingsError(source, 0, "no readings")
    meters = table.column(cols["meter_id"]).cast(pa.string()).to_pylist()
    for i, m in enumerate(meters):
        if not m or len(m) > 64:
            raise ReadingsError(source, 0, f"row {i + 1}: meter_id must be 1 to 64 characters")
    ts_col = table.column(cols["ts"])
    if pa.types.is_timestamp(ts_col.type):
        ts = pc.cast(ts_col, pa.timestamp("us", tz=ts_col.type.tz)).cast(pa.int64()).to_numpy(
            zero_copy_only=False).astype(np.float64) / 1e6
    elif pa.types.is_integer(ts_col.type) or pa.types.is_floating(ts_col.type):
        ts = ts_col.to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        values = ts_col.cast(pa.string()).to_pylist()
        ts = np.empty(len(values))
        for i, text in enumerate(values):
            try:
                ts[i] = parse_ts(text or "")
            except ValueError as exc:
                raise ReadingsError(source, 0, f"row {i + 1}: bad ts {str(text)[:40]!r} ({exc})") from None
    bad = ~np.isfinite(ts) | (ts < _TS_MIN) | (ts > _TS_MAX)
    if bad.any():
        raise ReadingsError(source, 0, f"row {int(np.argmax(bad)) + 1}: ts is missing or outside 2000..2100")

    def numbers(name: str) -> np.ndarray:
        col = table.column(cols[name])
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
            raise ReadingsError(source, 0, f"column {name} is {col.type}, not a number")
        return col.cast(pa.float64()).fill_null(float("nan")).to_numpy(zero_copy_only=False)

    value = numbers("kwh" if kind == "interval" else "energy_kwh")
    power = numbers("power_w") if "power_w" in cols else None
    volts = numbers("voltage_v") if "voltage_v" in cols else None
    classes: dict[str, str] = {}
    if "meter_class" in cols:
        for m, c in zip(meters, table.column(cols["meter_class"]).cast(pa.string()).to_pylist()):
            if c:
                classes.setdefault(m, c.strip().lower())
    return ReadingTable(kind, meters, ts, value, power, classes, source, voltage_v=volts)


def table_from_readings(readings: Iterable[Reading], meter_classes: dict[str, str] | None = None) -> ReadingTable:
    """Wire readings (cumulative registers, as a gateway reads them) as a table."""
    rows = list(readings)
    if not rows:
        raise ReadingsError("<readings>", 0, "no readings")
    power = np.array([math.nan if r.power_w is None else r.power_w for r in rows], dtype=np.float64)
    volts = np.array([math.nan if r.voltage_v is None else r.voltage_v for r in rows], dtype=np.float64)
    return ReadingTable("register", [r.meter_id for r in rows], np.array([r.ts for r in rows], dtype=np.float64),
                        np.array([r.energy_kwh for r in rows], dtype=np.float64),
                        power if np.isfinite(power).any() else None, dict(meter_classes or {}),
                        voltage_v=volts if np.isfinite(volts).any() else None)


def _group_rows(table: ReadingTable) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(table.meter_ids):
        groups[m].append(i)
    return {m: np.asarray(idx, dtype=np.int64) for m, idx in groups.items()}


def data_interval_s(table: ReadingTable) -> float | None:
    """Median spacing of one meter's rows (the data's native interval), or None with one row each."""
    spacings = []
    for idx in _group_rows(table).values():
        t = np.unique(table.ts[idx])
        if t.size > 1:
            spacings.append(float(np.median(np.diff(t))))
    return float(np.median(spacings)) if spacings else None


def interval_series(table: ReadingTable, interval_s: int,
                    quality: DataQuality | None = None) -> tuple[list[IntervalStats], DataQuality]:
    """Reduce a table to per-meter interval stats on ``interval_s`` boundaries, counting bad rows."""
    q = quality if quality is not None else DataQuality()
    q.rows += len(table)
    native = data_interval_s(table)
    if native is not None and native > interval_s * 1.01:
        raise ReadingsError(table.source, 0, f"data arrive every {native:.0f} s, coarser than the "
                                             f"{interval_s} s interval; use --interval-s {int(native)} or more")
    out: list[IntervalStats] = []
    groups = _group_rows(table)
    q.meters += len(groups)
    for meter, idx in groups.items():
        order = idx[np.argsort(table.ts[idx], kind="stable")]
        t, v = table.ts[order], table.value[order]
        p = table.power_w[order] if table.power_w is not None else None
        volt = table.voltage_v[order] if table.voltage_v is not None else None
        dup = np.concatenate(([False], np.diff(t) == 0))
        q.duplicates += int(dup.sum())
        keep = ~dup
        empty = ~np.isfinite(v)
        q.empty_values += int((empty & keep).sum())
        keep &= ~empty
        t, v = t[keep], v[keep]
        p = p[keep] if p is not None else None
        volt = volt[keep] if volt is not None else None
        if t.size == 0:
            continue
        bins = np.floor(t / interval_s) * interval_s
        if table.kind == "interval":
            series = _interval_rows(meter, t, v, bins, interval_s, q)
        else:
            series = _register_rows(meter, t, v, p, volt, bins, interval_s, q)
        if series:
            starts = np.array([s.interval_start for s in series])
            q.gap_intervals += int(np.sum(np.round(np.diff(starts) / interval_s) - 1))
        q.intervals += len(series)
        out.extend(series)
    return out, q


def _interval_rows(meter: str, t: np.ndarray, v: np.ndarray, bins: np.ndarray, interval_s: int,
                   q: DataQuality) -> list[IntervalStats]:
    native = np.median(np.diff(t)) if t.size > 1 else interval_s
    limit = MAX_KW * max(float(native), 1.0) / 3600.0
    negative, absurd = v < 0, v > limit
    q.negative += int(negative.sum())
    q.absurd += int(absurd.sum())
    ok = ~(negative | absurd)
    t, v, bins = t[ok], v[ok], bins[ok]
    starts, first = np.unique(bins, return_index=True)
    sums = np.add.reduceat(v, first) if v.size else np.empty(0)
    counts = np.diff(np.append(first, v.size))
    return [IntervalStats(meter, float(s), interval_s, float(k), int(c), None, None, None, None)
            for s, k, c in zip(starts, sums, counts)]


def _register_rows(meter: str, t: np.ndarray, v: np.ndarray, p: np.ndarray | None, volt: np.ndarray | None,
                   bins: np.ndarray, interval_s: int, q: DataQuality) -> list[IntervalStats]:
    negative = v < 0
    q.negative += int(negative.sum())
    t, v, bins = t[~negative], v[~negative], bins[~negative]
    p = p[~negative] if p is not None else None
    volt = volt[~negative] if volt is not None else None
    if v.size == 0:
        return []
    # A register step implying more than MAX_KW is a glitch: count it and do not let it count as energy.
    steps = np.diff(v)
    dt = np.maximum(np.diff(t), 1.0)
    absurd = steps > MAX_KW * dt / 3600.0
    q.absurd += int(absurd.sum())
    q.register_resets += int((steps < 0).sum())
    if absurd.any():
        # Re-base everything after the glitch so the jump itself contributes nothing.
        v = v - np.concatenate(([0.0], np.cumsum(np.where(absurd, steps, 0.0))))
    return _register_intervals(meter, t, v, p, bins, interval_s, volt)


def _register_intervals(meter: str, t: np.ndarray, v: np.ndarray, p: np.ndarray | None, bins: np.ndarray,
                        interval_s: int, volt: np.ndarray | None = None) -> list[IntervalStats]:
    """:func:`edge_agent.features.interval_stats` for every interval at once (same rules, vectorised).

    Each register step is credited to the interval of its later reading, negative steps
    (resets) count as nothing, and an interval's first step comes from the previous
    interval's last reading, as the agent chains ``prev_energy_kwh``. A step across a gap
    longer than one interval is not credited (the agent passes ``prev_energy_kwh=None``
    then): the energy of a gap is unknown in time, and crediting it to one interval would
    fake a spike.
    """
    steps = np.concatenate(([0.0], np.maximum(np.diff(v), 0.0)))
    steps[1:][np.diff(t) > interval_s] = 0.0
    starts, first = np.unique(bins, return_index=True)
    counts = np.diff(np.append(first, v.size))
    kwh = np.add.reduceat(steps, first)
    stats = [None] * 4
    if p is not None:
        finite = np.isfinite(p)
        n = np.add.reduceat(finite.astype(np.int64), first)
        total = np.add.reduceat(np.where(finite, p, 0.0), first)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / n
            sq = np.add.reduceat(np.where(finite, (p - np.repeat(mean, counts)) ** 2, 0.0), first)
            std = np.sqrt(sq / n)
        stats = [mean, np.fmax.reduceat(p, first), np.fmin.reduceat(p, first), std]
        stats = [[None if c == 0 else float(x) for x, c in zip(arr, n)] for arr in stats]
    v_stats = [None, None]
    if volt is not None:
        ok = np.isfinite(volt) & (volt > 0)
        n = np.add.reduceat(ok.astype(np.int64), first)
        with np.errstate(invalid="ignore", divide="ignore"):
            v_mean = np.add.reduceat(np.where(ok, volt, 0.0), first) / n
        v_min = np.fmin.reduceat(np.where(ok, volt, np.nan), first)
        v_stats = [[None if c == 0 else float(x) for x, c in zip(arr, n)] for arr in (v_min, v_mean)]
    return [IntervalStats(meter, float(starts[i]), interval_s, float(kwh[i]), int(counts[i]),
                          *(None if col is None else col[i] for col in stats),
                          *(None if col is None else col[i] for col in v_stats))
            for i in range(starts.size)]
