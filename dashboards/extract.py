"""Hyper extracts of the ``tableau`` views, for Tableau Public and analysts working offline.

Each view goes PostgreSQL ``COPY ... TO STDOUT`` -> a CSV spool -> pyarrow's typed CSV reader
-> Parquet parts of ``rows_per_part`` rows -> Hyper's ``external()`` table function, one
``INSERT ... SELECT`` per part. The conversion runs in a thread while Hyper loads the previous
part, and at most two parts wait on disk, so memory and temporary space stay bounded however
long the history is; every heavy step is columnar C++, not a Python loop over rows as
row-by-row inserts would be. Hyper runs with telemetry off and without a log file.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .catalog import SCHEMA, VIEWS, View
from gridsight.errors import GridsightError

__all__ = ["ExtractError", "ViewExtract", "HYPER_SCHEMA", "write_extract", "hyper_process", "sql_type"]

HYPER_SCHEMA = "Extract"  # the schema Tableau looks in for extract tables

_ARROW = {"string": pa.string(), "integer": pa.int64(), "real": pa.float64(), "boolean": pa.bool_(),
          "date": pa.date32(), "datetime": pa.timestamp("us")}
_HYPER = {"string": "TEXT", "integer": "BIGINT", "real": "DOUBLE PRECISION", "boolean": "BOOL",
          "date": "DATE", "datetime": "TIMESTAMP"}


class ExtractError(GridsightError, RuntimeError):
    """The extract could not be written: the database, a view or the output file is at fault."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class ViewExtract:
    view: str
    rows: int
    seconds: float


def sql_type(datatype: str) -> str:
    return _HYPER[datatype]


def hyper_process():
    """A Hyper server for this process: no usage data sent to Tableau, no log file written."""
    from tableauhyperapi import HyperProcess, Telemetry

    return HyperProcess(telemetry=Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU,
                        parameters={"log_config": ""})


def _select(view: View) -> str:
    cols = []
    for c in view.columns:
        if c.datatype == "datetime":
            # naive UTC: Tableau shows datetimes without a zone, and every gridsight time is UTC
            cols.append(f"to_char({c.name} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS {c.name}")
        elif c.datatype == "boolean":
            cols.append(f"CASE WHEN {c.name} THEN 'true' WHEN NOT {c.name} THEN 'false' END AS {c.name}")
        else:
            cols.append(c.name)
    return f"SELECT {', '.join(cols)} FROM {SCHEMA}.{view.name}"


def _csv_to_parquet(view: View, spool: Path, parquet: Path) -> int:
    schema = pa.schema([(c.name, _ARROW[c.datatype]) for c in view.columns])
    if spool.stat().st_size == 0:     # an empty view: Arrow's CSV reader refuses an empty file
        pq.write_table(schema.empty_table(), parquet, compression="snappy")
        spool.unlink()
        return 0
    reader = pacsv.open_csv(
        spool,
        read_options=pacsv.ReadOptions(column_names=[c.name for c in view.columns], block_size=8 << 20),
        convert_options=pacsv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True,
                                             quoted_strings_can_be_null=False,
                                             true_values=["true"], false_values=["false"]))
    rows = 0
    with pq.ParquetWriter(parquet, schema, compression="snappy") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
        if rows == 0:
            writer.write_table(schema.empty_table())
    spool.unlink()
    return rows


def _parquet_parts(conn, view: View, tmpdir: Path, rows_per_part: int, parts: "queue.Queue") -> None:
    """Stream the view with COPY and hand over a Parquet file every ``rows_per_part`` rows.

    libpq delivers COPY data a row at a time, so every chunk ends on a row boundary and a part
    can end after any chunk. Puts each part's path on ``parts``, then None; an error instead.
    """
    try:
        number, rows, fh = 0, 0, None
        spool = tmpdir / f"{view.name}.csv"

        def finish() -> None:
            nonlocal number
            fh.close()
            part = tmpdir / f"{view.name}-{number:05d}.parquet"
            _csv_to_parquet(view, spool, part)
            parts.put(part)
            number += 1

        with conn.cursor() as cur:
            with cur.copy(f"COPY ({_select(view)}) TO STDOUT (FORMAT csv, HEADER false)") as copy:
                fh = open(spool, "wb")
                for chunk in copy:
                    fh.write(chunk)
                    rows += 1
                    if rows == rows_per_part:
                        finish()
                        rows, fh = 0, open(spool, "wb")
        if rows or number == 0:
            finish()
        else:
            fh.close()
            spool.unlink()
        parts.put(None)
    except BaseException as exc:  # handed to the loading thread, which raises it
        if fh is not None and not fh.closed:
            fh.close()
        parts.put(exc)


def _drain(parts: "queue.Queue", producer: threading.Thread) -> None:
    """Let a producer that is still running (after a load error) finish instead of blocking on put()."""
    while producer.is_alive():
        try:
            parts.get(timeout=0.1)
        except queue.Empty:
            pass
    producer.join()


def write_extract(database_url: str, out: Path, views: Sequence[View] = VIEWS,
                  progress: Callable[[str], None] | None = None,
                  rows_per_part: int = 500_000) -> list[ViewExtract]:
    """Write ``views`` from ``database_url`` into the Hyper file ``out`` (replaced if present).

    The file is built beside ``out`` and renamed into place, so a failed run never leaves a
    truncated extract where Tableau would open it.
    """
    import psycopg
    from tableauhyperapi import Connection, CreateMode, HyperException, escape_name, escape_string_literal

    say = progress or (lambda msg: None)
    out = Path(out)
    if out.suffix != ".hyper":
        raise ExtractError(f"{out}: the output file must end in .hyper")
    if not out.parent.exists():
        raise ExtractError(f"{out.parent}: directory does not exist")
    results: list[ViewExtract] = []
    with tempfile.TemporaryDirectory(prefix="gridsight-extract-", dir=out.parent) as tmp:
        tmpdir = Path(tmp)
        building = tmpdir / out.name
        try:
            pg = psycopg.connect(database_url, options="-c TimeZone=UTC -c default_transaction_read_only=on")
        except psycopg.Error as exc:
            raise ExtractError(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
        try:
            with pg, hyper_process() as hyper, \
                    Connection(hyper.endpoint, building, CreateMode.CREATE_AND_REPLACE) as hconn:
                hconn.execute_command(f"CREATE SCHEMA {escape_name(HYPER_SCHEMA)}")
                for view in views:
                    t0 = time.perf_counter()
                    say(f"extract {view.qualified}: reading from PostgreSQL")
                    table = f"{escape_name(HYPER_SCHEMA)}.{escape_name(view.name)}"
                    columns = ", ".join(f"{escape_name(c.name)} {_HYPER[c.datatype]}" for c in view.columns)
                    hconn.execute_command(f"CREATE TABLE {table} ({columns})")
                    # PostgreSQL -> Parquet runs in a thread while Hyper loads the previous part;
                    # two parts at most wait on disk, so temporary space stays bounded.
                    parts: queue.Queue = queue.Queue(maxsize=2)
                    producer = threading.Thread(target=_parquet_parts, args=(pg, view, tmpdir, rows_per_part, parts),
                                                daemon=True)
                    producer.start()
                    rows = 0
                    try:
                        while (part := parts.get()) is not None:
                            if isinstance(part, BaseException):
                                raise part
                            rows += hconn.execute_command(
                                f"INSERT INTO {table} SELECT * FROM external("
                                f"{escape_string_literal(str(part))}, FORMAT => 'parquet')")
                            part.unlink()
                            say(f"extract {view.qualified}: {rows} rows")
                    except (psycopg.Error, pa.ArrowInvalid) as exc:
                        raise ExtractError(f"{view.qualified}: {str(exc).strip().splitlines()[0]}") from None
                    finally:
                        _drain(parts, producer)
                    results.append(ViewExtract(view.name, rows, time.perf_counter() - t0))
                    say(f"extract {view.qualified}: {rows} rows in {results[-1].seconds:.1f} s")
        except HyperException as exc:
            raise ExtractError(f"Hyper: {str(exc).strip().splitlines()[0]}") from None
        finally:
            pg.close()
        os.replace(building, out)
    return results
