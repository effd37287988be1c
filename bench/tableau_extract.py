"""Hyper extract speed: gridsight's COPY -> Parquet -> Hyper external() against row-by-row inserts.

Builds a throwaway embedded PostgreSQL with 15-minute interval summaries for a fleet (a year
for 100 meters by default, 30 days for 40 meters with --quick), then extracts the biggest view,
``tableau.anomaly_map``, into a .hyper file twice in the same run:

  (a) gridsight: ``dashboards.extract.write_extract`` (COPY -> pyarrow -> Parquet -> external());
  (b) the obvious way: fetch rows with psycopg and add them one by one with Hyper's Inserter.

Both files are read back with Hyper SQL to check they hold the same rows. Prints rows/s for
each and the ratio (a)/(b); the last line is one JSON object of the figures.

    python bench/tableau_extract.py [--quick] [--meters N] [--days D]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _seed(url: str, meters: int, days: int) -> int:
    import psycopg

    start = "2025-01-01"
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        conn.execute("SELECT gridsight_ensure_partitions('interval_summaries', %s::timestamptz, "
                     "%s::timestamptz + make_interval(days => %s + 1))", (start, start, days))
        conn.execute("SELECT gridsight_ensure_partitions('anomaly_flags', %s::timestamptz, "
                     "%s::timestamptz + make_interval(days => %s + 1))", (start, start, days))
        conn.execute("INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South')")
        conn.execute("""INSERT INTO sites (id, name, region_id, lat, lon, area_type)
                        SELECT 's' || i, 'site ' || i, CASE WHEN i %% 2 = 0 THEN 'north' ELSE 'south' END,
                               40 + (i %% 17) * 0.01, -75 - (i %% 13) * 0.01,
                               CASE WHEN i %% 3 = 0 THEN 'rural' ELSE 'urban' END
                        FROM generate_series(1, %s) i""", (meters,))
        conn.execute("INSERT INTO gateways (id, site_id) SELECT 'g' || i, 's' || i FROM generate_series(1, %s) i",
                     (meters,))
        conn.execute("INSERT INTO meters (id, gateway_id, site_id) SELECT 'm' || i, 'g' || i, 's' || i "
                     "FROM generate_series(1, %s) i", (meters,))
        conn.execute("""
            INSERT INTO interval_summaries (meter_id, interval_start, interval_s, kwh, readings, power_w_mean,
                                            power_w_max, score, anomalous, model_version, gateway_id, seq, received_at)
            SELECT 'm' || i, t, 900, 0.1 + 0.2 * random(), 15, 800 * random(), 2000 * random(),
                   0.1 - 0.2 * random() ^ 8, random() < 0.002, 'bench-1', 'g' || i,
                   (extract(epoch FROM t)::bigint / 900) * 10000 + i, t + interval '15 minutes'
            FROM generate_series(1, %s) i,
                 generate_series(%s::timestamptz, %s::timestamptz + make_interval(days => %s) - interval '15 minutes',
                                 interval '15 minutes') t""", (meters, start, start, days))
        return conn.execute("SELECT count(*) FROM interval_summaries").fetchone()[0]


def _row_by_row(url: str, out: Path) -> int:
    """The obvious approach: a server-side cursor and one Inserter.add_row per row."""
    import psycopg
    from tableauhyperapi import (Connection, CreateMode, Inserter, Nullability, SqlType, TableDefinition,
                                 TableName)

    from dashboards.catalog import view
    from dashboards.extract import hyper_process

    v = view("anomaly_map")
    types = {"string": SqlType.text(), "integer": SqlType.big_int(), "real": SqlType.double(),
             "boolean": SqlType.bool(), "date": SqlType.date(), "datetime": SqlType.timestamp()}
    table = TableDefinition(TableName("Extract", v.name),
                            [TableDefinition.Column(c.name, types[c.datatype], Nullability.NULLABLE) for c in v.columns])
    rows = 0
    with psycopg.connect(url, options="-c TimeZone=UTC") as pg, hyper_process() as hyper, \
            Connection(hyper.endpoint, out, CreateMode.CREATE_AND_REPLACE) as hconn:
        hconn.catalog.create_schema("Extract")
        hconn.catalog.create_table(table)
        cols = ", ".join(f"{c.name} AT TIME ZONE 'UTC'" if c.datatype == "datetime" else c.name for c in v.columns)
        with pg.cursor(name="rows") as cur, Inserter(hconn, table) as inserter:
            cur.itersize = 10_000
            cur.execute(f"SELECT {cols} FROM {v.qualified}")
            for row in cur:
                inserter.add_row(row)
                rows += 1
            inserter.execute()
    return rows


def _hyper_count(path: Path) -> tuple[int, float]:
    from tableauhyperapi import Connection

    from dashboards.extract import hyper_process

    with hyper_process() as hyper, Connection(hyper.endpoint, path) as conn:
        return tuple(conn.execute_list_query('SELECT count(*), sum("kwh") FROM "Extract"."anomaly_map"')[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 days x 40 meters (about a minute)")
    parser.add_argument("--meters", type=int)
    parser.add_argument("--days", type=int)
    args = parser.parse_args()
    meters = args.meters or (40 if args.quick else 100)
    days = args.days or (30 if args.quick else 365)
    cmd = "python bench/tableau_extract.py" + (" --quick" if args.quick else "") + \
        (f" --meters {args.meters}" if args.meters else "") + (f" --days {args.days}" if args.days else "")
    print(f"reproduce: {cmd}")

    from collector.db import migrate
    from dashboards.catalog import view
    from dashboards.extract import write_extract
    from gridsight.local_services import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="gridsight-bench-") as tmp:
        tmpdir = Path(tmp)
        pg = EmbeddedPostgres(tmpdir / "pg", durable=False).start()
        try:
            url = pg.dsn("postgres")
            migrate(url)
            _log(f"seeding {meters} meters x {days} days of 15-minute summaries")
            rows = _seed(url, meters, days)
            _log(f"{rows} interval summaries")

            t0 = time.perf_counter()
            write_extract(url, tmpdir / "parquet.hyper", [view("anomaly_map")], progress=_log)
            fast_s = time.perf_counter() - t0
            _log(f"(a) gridsight COPY -> Parquet -> external(): {fast_s:.1f} s")

            t0 = time.perf_counter()
            slow_rows = _row_by_row(url, tmpdir / "rows.hyper")
            slow_s = time.perf_counter() - t0
            _log(f"(b) row-by-row Inserter: {slow_s:.1f} s")

            fast_check, slow_check = _hyper_count(tmpdir / "parquet.hyper"), _hyper_count(tmpdir / "rows.hyper")
            same = fast_check[0] == slow_check[0] == slow_rows == rows and \
                abs(fast_check[1] - slow_check[1]) <= 1e-6 * abs(slow_check[1])
        finally:
            pg.close()
    figures = {"bench": "tableau_extract", "rows": rows, "meters": meters, "days": days,
               "parquet_external_s": round(fast_s, 2), "row_by_row_s": round(slow_s, 2),
               "parquet_external_rows_per_s": round(rows / fast_s), "row_by_row_rows_per_s": round(rows / slow_s),
               "speedup": round(slow_s / fast_s, 2), "same_rows_and_sums": same}
    print(f"(a) gridsight   {figures['parquet_external_rows_per_s']:>12,} rows/s")
    print(f"(b) row-by-row  {figures['row_by_row_rows_per_s']:>12,} rows/s")
    print(f"(a)/(b) speedup {figures['speedup']:.2f}x; same rows and sums: {same}")
    print(json.dumps(figures))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
