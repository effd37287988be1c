"""Read what the collector stored (see ``collector/db/SCHEMA.md``) for QA scoring and reports.

Only reads: ``anomaly_flags``, ``interval_summaries`` and ``readings``. Uses psycopg (sync);
a URL with a driver suffix (``postgresql+asyncpg://``) is accepted.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from firmware_sim.qa_score import FlaggedInterval
from gridsight.errors import GridsightError

__all__ = ["QaStoreError", "StoredRun", "open_store"]


class QaStoreError(GridsightError, RuntimeError):
    """The database cannot be read: unreachable, or not a gridsight collector database."""

    exit_code = 1


def _plain_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


class StoredRun:
    """Queries over one collector database for the span ``[start, end]`` (Unix seconds)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _rows(self, sql: str, params: tuple) -> list[tuple]:
        import psycopg
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg.errors.UndefinedTable as exc:
            self.conn.rollback()
            raise QaStoreError(f"not a gridsight collector database ({exc.diag.message_primary}); "
                               "run 'gridsight collector migrate' first") from None
        except psycopg.Error as exc:
            self.conn.rollback()
            raise QaStoreError(f"query failed: {str(exc).strip().splitlines()[0]}") from None

    def flags(self, start: float, end: float) -> list[FlaggedInterval]:
        rows = self._rows(
            "SELECT meter_id, extract(epoch FROM interval_start)::float8, interval_s FROM anomaly_flags "
            "WHERE interval_start >= to_timestamp(%s) AND interval_start <= to_timestamp(%s)", (start, end))
        unique = {(m, s, s + i) for m, s, i in rows}
        return [FlaggedInterval(m, s, e) for m, s, e in sorted(unique)]

    def summarised_meters(self, start: float, end: float) -> list[str]:
        rows = self._rows("SELECT DISTINCT meter_id FROM interval_summaries WHERE interval_start >= to_timestamp(%s) "
                          "AND interval_start <= to_timestamp(%s) ORDER BY 1", (start, end))
        return [r[0] for r in rows]

    def reading_times(self, start: float, end: float) -> dict[str, np.ndarray]:
        """Stored reading timestamps per meter (repeats kept, so duplicates can be counted)."""
        rows = self._rows("SELECT meter_id, array_agg(extract(epoch FROM ts)::float8) FROM readings "
                          "WHERE ts > to_timestamp(%s) AND ts <= to_timestamp(%s) GROUP BY meter_id",
                          (start, end))
        return {m: np.asarray(ts, dtype=float) for m, ts in rows}

    def meter_intervals(self, meter_id: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(interval_start, kWh, anomalous) of one meter's summaries, in time order, one per interval."""
        rows = self._rows("SELECT DISTINCT ON (interval_start) extract(epoch FROM interval_start)::float8, kwh, "
                          "coalesce(anomalous, false) FROM interval_summaries WHERE meter_id = %s AND "
                          "interval_start >= to_timestamp(%s) AND interval_start <= to_timestamp(%s) "
                          "ORDER BY interval_start", (meter_id, start, end))
        if not rows:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
        a = np.asarray(rows, dtype=object)
        return a[:, 0].astype(float), a[:, 1].astype(float), a[:, 2].astype(bool)

    def meter_voltages(self, meter_id: str, start: float, end: float,
                       bucket_s: int = 900) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Mean voltage per ``bucket_s`` of one meter: the single-phase value and each phase (NaN when not sent)."""
        rows = self._rows(
            "SELECT extract(epoch FROM date_bin(make_interval(secs => %s), ts, 'epoch'))::float8 AS t, "
            "avg(voltage_v), avg(voltage_l1_v), avg(voltage_l2_v), avg(voltage_l3_v) FROM readings "
            "WHERE meter_id = %s AND ts >= to_timestamp(%s) AND ts <= to_timestamp(%s) GROUP BY 1 ORDER BY 1",
            (bucket_s, meter_id, start, end))
        names = ("voltage_v", "voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
        if not rows:
            return np.zeros(0), {n: np.zeros(0) for n in names}
        a = np.asarray([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float)
        return a[:, 0], {n: a[:, i + 1] for i, n in enumerate(names)}

    def span(self) -> tuple[float, float] | None:
        rows = self._rows("SELECT extract(epoch FROM min(interval_start))::float8, "
                          "extract(epoch FROM max(interval_start))::float8 FROM interval_summaries", ())
        if not rows or rows[0][0] is None:
            return None
        return float(rows[0][0]), float(rows[0][1])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "StoredRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_store(database_url: str) -> StoredRun:
    """Connect read-only to the collector database; QaStoreError with one line when that fails."""
    import psycopg
    try:
        conn = psycopg.connect(_plain_url(database_url), connect_timeout=10)
    except psycopg.Error as exc:
        raise QaStoreError(f"cannot connect to the database: {str(exc).strip().splitlines()[0]}") from None
    conn.read_only = True
    return StoredRun(conn)


