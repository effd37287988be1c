"""Tableau live-connection benchmark: the shipped workbooks' queries against the ``tableau`` views.

Tableau Desktop/Server on a live PostgreSQL connection sends, per worksheet, one aggregate
query: the worksheet's dimensions in GROUP BY, its measures aggregated (SUM/AVG/MIN/COUNT, a
calculated field expanded into its aggregates), and the dashboard's filters in WHERE. This
builds exactly that SQL for every worksheet of every workbook in ``dashboards/workbooks.py``
(each with the dashboard filters below), runs it against a year of data for 1,000 meters
(35 million interval summaries; --quick: 50 meters) in a fresh embedded PostgreSQL, and reports
p50/p95 per worksheet. Goal: p95 at most 1 s per view. The views that aggregate every hour of
every meter read materialised rollups (migrations 0009, 0011), refreshed here once after the build
as the collector's hourly maintenance does; the refresh is timed too. The anomaly map reads
``tableau.anomaly_daily`` (migration 0012), whose changed days are computed from the facts when
read: the run marks the newest two days changed before timing, as in a deployment where today
is being ingested and yesterday waits for the hourly refresh (the worst case), and it times the
refresh of one changed day.

Side by side in the same run: the anomaly map's worksheets as shipped before 0012 (the same
aggregates over ``tableau.anomaly_map``, one row per meter and interval), and the alternative
Tableau offers: a Hyper extract of the same views (``gridsight dashboards extract``), timed as it
is built, then the same worksheet queries run against it.

Dashboard filters (what an analyst opening each dashboard sees): time filters the last 30 days
(``interval_start``, ``hour_start``, the anomaly map's ``day``; the regional comparison's ``day``: the year), every region,
kind and area type (Tableau sends no predicate for "All"), flags only (``is_anomaly``), the system
forecast (``scope = 'system'``). TabPy calculations (SCRIPT_REAL) are timed up to the query that
feeds them; TabPy's own time is not included.

    python bench/tableau_views.py            # 1,000 meters x 1 year (the build takes a while)
    python bench/tableau_views.py --quick    # 50 meters x 1 year
Prints p50/p95 per worksheet, the command to reproduce, and ONE JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gridsight.local_services import EmbeddedPostgres  # noqa: E402

NEWEST = "2025-12-31T00:00:00Z"   # the data's last day (bench/query.py builds 2025)
GOAL_P95_S = 1.0

# calculated fields -> the aggregates Tableau sends for them
CALCULATIONS = {
    "flagged_intervals": ["SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END)"],
    "load_after_policy_kwh": ["SUM(avg_kwh)", "SUM(meters)"],            # then TabPy
    "efficiency_only_kwh": ["SUM(avg_kwh)"],
    "co2_after_policy_kg": ["SUM(avg_kwh)", "SUM(meters)", "AVG(intensity_g_per_kwh)"],
}
# column -> the dashboard filter's predicate ("All" sends none)
FILTERS = {
    "interval_start": f"interval_start >= TIMESTAMPTZ '{NEWEST}' - INTERVAL '30 days'",
    "hour_start": f"hour_start >= TIMESTAMPTZ '{NEWEST}' - INTERVAL '30 days'",
    "day": f"day >= DATE '{NEWEST[:10]}' - 365",
    "is_anomaly": "is_anomaly",
    "scope": "scope = 'system'",
    "scope_id": "scope_id = 'all'",
    "anomaly_daily.day": f"day >= DATE '{NEWEST[:10]}' - 30",
}
CHANGED_DAYS = 2     # today (being ingested) and yesterday (until the hourly refresh)
_AGG = {"Avg": "AVG", "Sum": "SUM", "Min": "MIN", "Max": "MAX", "Count": "COUNT"}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def worksheet_sql(ws, table: str) -> str:
    """The aggregate query Tableau's live connection sends for worksheet ``ws``."""
    dims, measures = [], []
    for shelf in (*ws.rows, *ws.cols, *((ws.color,) if ws.color else ()), *((ws.size,) if ws.size else ()),
                  *ws.detail):
        d = shelf.derivation
        if d == "User":
            measures += CALCULATIONS[shelf.column]
        elif d in _AGG:
            measures.append(f"{_AGG[d]}({shelf.column})")
        elif d == "Hour-Trunc":
            dims.append(f"date_trunc('hour', {shelf.column})")
        else:
            dims.append(shelf.column)
    dims = list(dict.fromkeys(dims))
    where = [FILTERS.get(f"{ws.view}.{f.column}", FILTERS.get(f.column)) for f in ws.filters
             if f"{ws.view}.{f.column}" in FILTERS or f.column in FILTERS]
    sql = f"SELECT {', '.join(dims + measures) or 'count(*)'} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if dims:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(dims)))
    return sql


def add_forecasts_and_carbon(dsn: str) -> None:
    """A stored hourly forecast for the system and each region, and a year of system carbon intensity."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO forecasts (run_id, series_kind, series_key, model, model_version, interval_s, horizon, ts,
                                   yhat, yhat_lower, yhat_upper)
            SELECT gen_random_uuid(), k.kind, k.key, 'prophet', '1.1', 3600, 48, t,
                   100 + 20 * sin(extract(epoch FROM t) / 13751.0), 80, 120
            FROM (SELECT 'system' AS kind, 'all' AS key UNION ALL SELECT 'region', id FROM regions) k,
                 generate_series(TIMESTAMPTZ '2025-01-01', TIMESTAMPTZ '2025-12-31 23:00', INTERVAL '1 hour') t""")
        conn.execute("""
            INSERT INTO carbon_intensity (area, hour_start, intensity_g_per_kwh, source)
            SELECT 'system', t, 300 + 120 * sin(extract(epoch FROM t) / 13751.0), 'bench'
            FROM generate_series(TIMESTAMPTZ '2025-01-01', TIMESTAMPTZ '2025-12-31 23:00', INTERVAL '1 hour') t""")
        conn.execute("ANALYZE forecasts; ANALYZE carbon_intensity")


def previous_anomaly_worksheets() -> list:
    """The anomaly map's worksheets as shipped before migration 0012: over ``tableau.anomaly_map``."""
    from dashboards.workbooks import Shelf, Worksheet

    return [Worksheet("Sites by score", "anomaly_map", "Circle",
                      rows=(Shelf("latitude", "Avg", "qk"),), cols=(Shelf("longitude", "Avg", "qk"),),
                      color=Shelf("score", "Min", "qk"), size=Shelf("flagged_intervals", "User", "qk"),
                      detail=(Shelf("site_id"), Shelf("feeder")),
                      filters=(Shelf("interval_start", "None", "qk"), Shelf("region"), Shelf("anomaly_kind"))),
            Worksheet("Flags by kind", "anomaly_map", "Bar",
                      rows=(Shelf("anomaly_kind"),), cols=(Shelf("meter_id", "Count", "qk"),),
                      color=Shelf("region"),
                      filters=(Shelf("is_anomaly"), Shelf("interval_start", "None", "qk"), Shelf("region")))]


# what gridsight_refresh_tableau_rollups() runs (migrations 0009, 0011, 0012), step by step
REFRESH_STEPS = (
    ("mv_regional_hourly", "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_hourly"),
    ("mv_consumption_pattern", "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_consumption_pattern"),
    ("mv_regional_comparison", "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_regional_comparison"),
    ("anomaly_daily (every day changed)", "SELECT gridsight_refresh_anomaly_daily()"),
)


def refresh_rollups(dsn: str) -> dict[str, float]:
    """Refresh the rollups the heavy views read, as the collector's maintenance does; seconds per step."""
    import psycopg

    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET work_mem = '256MB'")
        for name, sql in REFRESH_STEPS:
            t0 = time.perf_counter()
            conn.execute(sql)
            out[name] = round(time.perf_counter() - t0, 2)
    return out


def mark_newest_days_changed(dsn: str) -> float:
    """Refresh one changed day (timed), then leave the newest days changed, as ingest leaves them."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO anomaly_daily_changes (day) VALUES (%s::date)", (NEWEST[:10],))
        t0 = time.perf_counter()
        (days,) = conn.execute("SELECT gridsight_refresh_anomaly_daily()").fetchone()
        one_day_s = time.perf_counter() - t0
        assert days == 1, days
        conn.execute("INSERT INTO anomaly_daily_changes (day) SELECT %s::date - k FROM generate_series(0, %s) k",
                     (NEWEST[:10], CHANGED_DAYS - 1))
        return one_day_s


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_live(dsn: str, queries: dict[str, str], repeats: int) -> dict[str, list[float]]:
    import psycopg

    out: dict[str, list[float]] = {}
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        for name, sql in queries.items():
            conn.execute(sql).fetchall()          # Tableau's first open warms the cache too
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                rows = conn.execute(sql).fetchall()
                times.append(time.perf_counter() - t0)
            out[name] = times
            say(f"  live  {name:<42} p50 {statistics.median(times) * 1000:8.1f} ms  rows {len(rows)}")
    return out


def time_extract(path: Path, queries: dict[str, str], repeats: int) -> dict[str, list[float]]:
    from tableauhyperapi import Connection

    from dashboards.extract import hyper_process

    out: dict[str, list[float]] = {}
    with hyper_process() as hyper, Connection(hyper.endpoint, path) as conn:
        for name, sql in queries.items():
            conn.execute_list_query(sql)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                rows = conn.execute_list_query(sql)
                times.append(time.perf_counter() - t0)
            out[name] = times
            say(f"  hyper {name:<42} p50 {statistics.median(times) * 1000:8.1f} ms  rows {len(rows)}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 meters instead of 1,000")
    parser.add_argument("--meters", type=int, help="meters (default 1000, quick 50)")
    parser.add_argument("--repeats", type=int, help="timed runs per worksheet (default 7, quick 9)")
    parser.add_argument("--no-extract", action="store_true", help="skip the Hyper extract and its queries")
    args = parser.parse_args()
    meters = args.meters or (50 if args.quick else 1000)
    repeats = args.repeats or (9 if args.quick else 7)
    cmd = "python bench/tableau_views.py" + (" --quick" if args.quick else "") + \
        (f" --meters {args.meters}" if args.meters else "")

    from dashboards.workbooks import WORKBOOKS
    from query import build_data

    live_q = {f"{wb.file_stem}/{ws.name}": worksheet_sql(ws, f"tableau.{ws.view}")
              for wb in WORKBOOKS for ws in wb.worksheets}
    before_q = {f"before 0012: anomaly_map/{ws.name}": worksheet_sql(ws, f"tableau.{ws.view}")
                for ws in previous_anomaly_worksheets()}
    hyper_q = {f"{wb.file_stem}/{ws.name}": worksheet_sql(ws, f'"Extract"."{ws.view}"')
               for wb in WORKBOOKS for ws in wb.worksheets}
    work = Path(tempfile.mkdtemp(prefix="gridsight-bench-tableau-"))
    pg = EmbeddedPostgres(work / "pg", durable=False).start()
    load_start = os.getloadavg()[0]
    extract_s = extract_rows = None
    hyper = {}
    try:
        from collector.db import migrate

        migrate(pg.url)
        say(f"building one year of data for {meters} meters")
        started = time.perf_counter()
        counts = build_data(pg.url, meters)
        add_forecasts_and_carbon(pg.url)
        build_s = time.perf_counter() - started
        say(f"  {counts} in {build_s:.0f} s")
        refresh_steps = refresh_rollups(pg.url)
        refresh_s = sum(refresh_steps.values())
        say(f"  Tableau rollups refreshed (as collector maintenance does hourly) in {refresh_s:.1f} s: {refresh_steps}")
        one_day_s = mark_newest_days_changed(pg.url)
        say(f"  anomaly_daily: one changed day refreshed in {one_day_s:.2f} s; the newest {CHANGED_DAYS} days "
            "left changed (computed when read)")
        say(f"live connection: {len(live_q)} worksheet queries x {repeats}, and the anomaly map before 0012")
        live = time_live(pg.url, {**live_q, **before_q}, repeats)
        if not args.no_extract:
            from dashboards.extract import write_extract

            say("Hyper extract of every tableau view")
            t0 = time.perf_counter()
            parts = write_extract(pg.url, work / "gridsight.hyper")
            extract_s = time.perf_counter() - t0
            extract_rows = sum(p.rows for p in parts)
            say(f"  {extract_rows} rows in {extract_s:.1f} s")
            hyper = time_extract(work / "gridsight.hyper", hyper_q, repeats)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"reproduce: {cmd}")
    print(f"{'worksheet (workbook/sheet)':<44}{'live p50':>10}{'live p95':>10}{'hyper p50':>11}{'hyper p95':>11}")
    per_view = {}
    for name, times in live.items():
        row = {"live_p50_ms": round(_pct(times, 0.5) * 1000, 1), "live_p95_ms": round(_pct(times, 0.95) * 1000, 1)}
        if name in hyper:
            row.update(hyper_p50_ms=round(_pct(hyper[name], 0.5) * 1000, 1),
                       hyper_p95_ms=round(_pct(hyper[name], 0.95) * 1000, 1))
        per_view[name] = row
        hyper_cols = (f"{row['hyper_p50_ms']:>11.1f}{row['hyper_p95_ms']:>11.1f}" if "hyper_p50_ms" in row
                      else f"{'-':>11}{'-':>11}")
        print(f"{name:<44}{row['live_p50_ms']:>10.1f}{row['live_p95_ms']:>10.1f}{hyper_cols}")
    over = [n for n, r in per_view.items() if r["live_p95_ms"] > GOAL_P95_S * 1000 and n in live_q]
    print(f"live p95 over {GOAL_P95_S:g} s: {', '.join(over) if over else 'none'}")
    print(f"refreshing every Tableau rollup after the build (collector maintenance, hourly): {refresh_s:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in refresh_steps.items())
          + f"); anomaly_daily, one changed day: {one_day_s:.2f} s")
    if extract_s is not None:
        print(f"Hyper extract of every view: {extract_rows} rows in {extract_s:.1f} s")
    result = {"bench": "tableau_views", "quick": args.quick, "command": cmd, "cpus": os.cpu_count(),
              "load_avg_1m_at_start": round(load_start, 1), "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
              "meters": meters, "interval_summaries": counts["interval_summaries"], "build_s": round(build_s),
              "rollup_refresh_s": round(refresh_s, 1), "rollup_refresh_steps_s": refresh_steps, "anomaly_daily_one_day_refresh_s": round(one_day_s, 2),
              "changed_days_computed_when_read": CHANGED_DAYS,
              "repeats": repeats, "views": per_view, "over_goal": over, "goal_p95_ms": GOAL_P95_S * 1000,
              "extract_s": None if extract_s is None else round(extract_s, 1), "extract_rows": extract_rows,
              "target_met": not over}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
