"""Hyper extracts of the ``tableau`` views, for Tableau Public and analysts working offline.

Each view goes PostgreSQL ``COPY ... TO STDOUT`` -> a CSV spool -> pyarrow's typed CSV reader
-> a Parquet file -> Hyper's ``external()`` table function in one ``INSERT ... SELECT``. Every
step is columnar C++ streaming in bounded memory, so a year of 15-minute data for a fleet
takes seconds to minutes instead of the hours row-by-row inserts would. Hyper runs with
telemetry off and without a log file.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .catalog import SCHEMA, VIEWS, View

__all__ = ["ExtractError", "ViewExtract", "HYPER_SCHEMA", "write_extract", "hyper_process", "sql_type"]

HYPER_SCHEMA = "Extract"  # the schema Tableau looks in for extract tables

_ARROW = {"string": pa.string(), "integer": pa.int64(), "real": pa.float64(), "boolean": pa.bool_(),
          "date": pa.date32(), "datetime": pa.timestamp("us")}
_HYPER = {"string": "TEXT", "integer": "BIGINT", "real": "DOUBLE PRECISION", "boolean": "BOOL",
          "date": "DATE", "datetime": "TIMESTAMP"}


class ExtractError(RuntimeError):
    """The extract could not be written: the database, a view or the output file is at fault."""


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


def _to_parquet(conn, view: View, spool: Path, parquet: Path) -> int:
    with conn.cursor() as cur, open(spool, "wb") as fh:
        with cur.copy(f"COPY ({_select(view)}) TO STDOUT (FORMAT csv, HEADER false)") as copy:
            for chunk in copy:
                fh.write(chunk)
    schema = pa.schema([(c.name, _ARROW[c.datatype]) for c in view.columns])
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


def write_extract(database_url: str, out: Path, views: Sequence[View] = VIEWS,
                  progress: Callable[[str], None] | None = None) -> list[ViewExtract]:
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
                    parquet = tmpdir / f"{view.name}.parquet"
                    try:
                        _to_parquet(pg, view, tmpdir / f"{view.name}.csv", parquet)
                    except (psycopg.Error, pa.ArrowInvalid) as exc:
                        raise ExtractError(f"{view.qualified}: {str(exc).strip().splitlines()[0]}") from None
                    table = f"{escape_name(HYPER_SCHEMA)}.{escape_name(view.name)}"
                    columns = ", ".join(f"{escape_name(c.name)} {_HYPER[c.datatype]}" for c in view.columns)
                    hconn.execute_command(f"CREATE TABLE {table} ({columns})")
                    rows = hconn.execute_command(
                        f"INSERT INTO {table} SELECT * FROM external({escape_string_literal(str(parquet))}, "
                        f"FORMAT => 'parquet')")
                    parquet.unlink()
                    results.append(ViewExtract(view.name, rows, time.perf_counter() - t0))
                    say(f"extract {view.qualified}: {rows} rows in {results[-1].seconds:.1f} s")
        except HyperException as exc:
            raise ExtractError(f"Hyper: {str(exc).strip().splitlines()[0]}") from None
        finally:
            pg.close()
        os.replace(building, out)
    return results
