"""Training data from where the collector keeps it: PostgreSQL ``readings`` or the raw S3 archive.

Both give the same :class:`~model_export.readings.ReadingTable` (cumulative registers) that a
readings CSV gives, so the rest of the pipeline does not know where readings came from.
Meter classes, which the collector does not store, come from a small CSV ``meter_id,meter_class``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path
from typing import Callable

import numpy as np

from gridsight import wire
from model_export.readings import ReadingsError, ReadingTable
from gridsight.errors import GridsightError

__all__ = ["SourceError", "table_from_database", "table_from_archive", "read_meter_classes"]

_FETCH_ROWS = 50_000


class SourceError(GridsightError, ValueError):
    """A training source that cannot be read; the message names it and says why."""


def _table(meters: list[str], ts: list[float], energy: list[float], power: list[float], voltage: list[float],
           source: str, classes: dict[str, str] | None) -> ReadingTable:
    if not meters:
        raise SourceError(f"{source}: no readings in the requested period")
    p = np.asarray(power, dtype=np.float64)
    v = np.asarray(voltage, dtype=np.float64)
    return ReadingTable("register", meters, np.asarray(ts, dtype=np.float64), np.asarray(energy, dtype=np.float64),
                        p if np.isfinite(p).any() else None, dict(classes or {}), source,
                        voltage_v=v if np.isfinite(v).any() else None)


def table_from_database(database_url: str, since: float | None = None, until: float | None = None,
                        meter_classes: dict[str, str] | None = None,
                        progress: Callable[[str], None] | None = None) -> ReadingTable:
    """Registers from the collector's ``readings`` table in ``[since, until)`` (Unix seconds), streamed."""
    import psycopg

    url = database_url.replace("postgresql+asyncpg://", "postgresql://").replace("postgresql+psycopg://",
                                                                                 "postgresql://")
    # electricity only: gas and water sub-meters (layout-2 channels) have volume, not energy
    clauses, params = ["energy_kwh IS NOT NULL"], []
    if since is not None:
        clauses.append("ts >= to_timestamp(%s)")
        params.append(since)
    if until is not None:
        clauses.append("ts < to_timestamp(%s)")
        params.append(until)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    meters: list[str] = []
    ts: list[float] = []
    energy: list[float] = []
    power: list[float] = []
    voltage: list[float] = []
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor(name="gridsight_training") as cur:
            cur.itersize = _FETCH_ROWS
            cur.execute(f"SELECT meter_id, extract(epoch FROM ts)::float8, energy_kwh, power_w, voltage_v "
                        f"FROM readings {where} ORDER BY meter_id, ts", params)
            for i, (meter, t, e, p, v) in enumerate(cur, start=1):
                meters.append(meter)
                ts.append(t)
                energy.append(e)
                power.append(math.nan if p is None else p)
                voltage.append(math.nan if v is None else v)
                if progress and i % 500_000 == 0:
                    progress(f"read {i} readings from the database")
    except psycopg.Error as exc:
        raise SourceError(f"database: {str(exc).strip().splitlines()[0]}") from None
    return _table(meters, ts, energy, power, voltage, "database readings", meter_classes)


def table_from_archive(store, since: dt.date, until: dt.date, meter_classes: dict[str, str] | None = None,
                       progress: Callable[[str], None] | None = None) -> ReadingTable:
    """Registers from raw chunks archived under ``raw/dt=YYYY-MM-DD/`` for receive dates since..until.

    ``store`` is a ``collector.archive`` object store (``LocalDirStore`` or ``S3Store``). Objects
    and messages that fail their checksum or the wire contract are skipped and counted.
    """
    from gridsight.archive_format import ArchiveError, StoreUnavailable, decode_object

    meters: list[str] = []
    ts: list[float] = []
    energy: list[float] = []
    power: list[float] = []
    voltage: list[float] = []
    bad = 0
    day = since
    while day <= until:
        for key in store.list(f"raw/dt={day.isoformat()}/"):
            try:
                messages = decode_object(key, store.get(key))
            except StoreUnavailable as exc:
                raise SourceError(f"archive: {exc}") from None
            except ArchiveError:
                bad += 1
                continue
            for m in messages:
                if not m.topic.endswith("/raw"):
                    continue
                try:
                    chunk = wire.decode(m.topic, m.payload)
                except wire.WireError:
                    bad += 1
                    continue
                for r in chunk.readings:
                    meters.append(r.meter_id)
                    ts.append(r.ts)
                    energy.append(r.energy_kwh)
                    power.append(math.nan if r.power_w is None else r.power_w)
                    voltage.append(math.nan if r.voltage_v is None else r.voltage_v)
        if progress:
            progress(f"archive {day.isoformat()}: {len(meters)} readings so far")
        day += dt.timedelta(days=1)
    if bad and progress:
        progress(f"archive: skipped {bad} unreadable objects or messages")
    return _table(meters, ts, energy, power, voltage, f"archive {since}..{until}", meter_classes)


def read_meter_classes(path: str | Path) -> dict[str, str]:
    """``meter_id,meter_class`` CSV as a dict; :class:`ReadingsError` names a bad line."""
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ReadingsError(str(p), 0, f"cannot read meter classes ({exc.strerror})") from None
    out: dict[str, str] = {}
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"meter_id", "meter_class"} <= set(reader.fieldnames):
            raise ReadingsError(str(p), 1, "meter classes need the columns meter_id,meter_class")
        for row in reader:
            meter, cls = (row.get("meter_id") or "").strip(), (row.get("meter_class") or "").strip().lower()
            if not meter or not cls:
                raise ReadingsError(str(p), reader.line_num, "empty meter_id or meter_class")
            out[meter] = cls
    return out
