"""Read queries behind the query API, beside the schema they read (asyncpg, plain SQL).

Charts get at most ``points`` points: a range is cut into equal buckets (``date_bin``) and
each series is read from the coarsest table that still resolves a bucket — interval
summaries for sub-hour buckets, ``readings_hourly`` for sub-day, ``readings_daily`` beyond.
A region's series comes from ``region_rollups`` (quarter hours, hours, days per region), so a
year of a region is 365 rows whatever its size; while a registry change has left the region
stale (see migration 0005) it is summed from its meters' rollups instead, which is exact too.
A meter's site is its own, or its gateway's when the meter has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg

from gridsight.anomaly_events import MERGE_GAP_S, FlaggedInterval, merge_flags

__all__ = ["Page", "RawJSON", "list_gateways", "get_gateway", "list_meters", "get_meter", "meter_exists",
           "readings_series", "consumption_series", "anomalies", "ingestion_health",
           "dead_letters", "bucket_seconds", "STALE_AFTER_S", "unknown_ids", "anomaly_events"]

STALE_AFTER_S = 3 * 900          # a gateway silent for three intervals is stale
_NICE_BUCKETS = (1, 5, 10, 15, 30, 60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)
_ORIGIN = datetime(2000, 1, 3, tzinfo=timezone.utc)   # a Monday, so weekly buckets start on Mondays

_SITE_JOIN = ("LEFT JOIN gateways g ON g.id = m.gateway_id "
              "LEFT JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id)")


def _region_meters(param: str) -> str:
    """The ids of the meters in region ``param`` (a meter's site, else its gateway's site), as an
    array: the same set as ``_SITE_JOIN`` filtered on the region, found from the region's sites
    instead of joining every meter to its gateway and site first (half the 0.3 ms that took at
    1,000 meters, once for the page and up to twice for its total)."""
    return ("ARRAY(SELECT m.id FROM sites s JOIN meters m ON m.site_id = s.id WHERE s.region_id = " + param +
            " UNION ALL SELECT m.id FROM sites s JOIN gateways g ON g.site_id = s.id "
            "JOIN meters m ON m.gateway_id = g.id AND m.site_id IS NULL WHERE s.region_id = " + param + ")")


class RawJSON(str):
    """JSON text built by PostgreSQL (``json_agg``), embedded in a response as is: a chart's
    points or a map's flags never become Python objects on the way out."""


@dataclass
class Page:
    items: list[dict] | RawJSON
    total: int
    limit: int
    offset: int
    total_cap: int | None = None     # when set and reached, `total` is "at least this many"
    n_items: int | None = None       # how many items a RawJSON page holds
    total_exact: bool = False        # `total` was counted in full: never capped

    def as_dict(self) -> dict:
        n = self.n_items if self.n_items is not None else len(self.items)
        capped = not self.total_exact and self.total_cap is not None and self.total > self.total_cap
        total = self.total_cap if capped else self.total
        more = capped or self.offset + n < self.total
        out = {"items": self.items, "total": total, "limit": self.limit, "offset": self.offset,
               "next_offset": self.offset + self.limit if more and n == self.limit else None}
        if self.total_cap is not None:
            out["total_is_lower_bound"] = capped
        return out


# consumption buckets are the interval itself or whole hours/days, so a rollup table can serve them
_CONSUMPTION_BUCKETS = (900, 3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)
ANOMALY_COUNT_CAP = 10_000


def bucket_seconds(start: datetime, end: datetime, points: int, minimum: int = 1,
                   choices: tuple[int, ...] = _NICE_BUCKETS) -> int:
    """The smallest 'nice' bucket that splits [start, end) into at most ``points`` buckets."""
    need = max(minimum, math.ceil((end - start).total_seconds() / points))
    for b in choices:
        if b >= need:
            return b
    return math.ceil(need / 86400) * 86400


def _row(r: asyncpg.Record) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}


async def list_gateways(conn: asyncpg.Connection, *, limit: int, offset: int, region_id: str | None = None,
                        status: str | None = None, now: datetime | None = None) -> Page:
    now = now or datetime.now(timezone.utc)
    args: list[Any] = [now - timedelta(seconds=STALE_AFTER_S)]
    where = ["TRUE"]
    if region_id is not None:
        args.append(region_id)
        where.append(f"region_id = ${len(args)}")
    if status is not None:
        args.append(status)
        where.append(f"state = ${len(args)}")
    listed = (
        "WITH listed AS (SELECT g.id AS gateway_id, g.name, g.site_id, s.region_id, s.lat, s.lon, "
        "CASE WHEN g.status = 'disabled' THEN 'disabled' WHEN g.last_seen_at IS NULL THEN 'never_seen' "
        "WHEN g.online IS FALSE THEN 'offline' WHEN g.last_seen_at < $1 THEN 'stale' ELSE 'online' END AS state, "
        "g.status, g.auto_registered, g.registered_at, g.last_seen_at, g.last_seq, g.model_version, g.online, "
        "g.queue_depth, g.clock_synced, g.clock_offset_s, g.skew_s, g.agent_version, "
        "NULLIF(g.epoch, '') AS epoch, g.epoch_started_at, g.epochs "
        "FROM gateways g LEFT JOIN sites s ON s.id = g.site_id) ")
    cond = " AND ".join(where)
    total = await conn.fetchval(f"{listed} SELECT count(*) FROM listed WHERE {cond}", *args)
    rows = await conn.fetch(
        f"{listed} SELECT listed.*, (SELECT count(*) FROM meters m WHERE m.gateway_id = listed.gateway_id) AS meters "
        f"FROM listed WHERE {cond} ORDER BY gateway_id LIMIT {int(limit)} OFFSET {int(offset)}", *args)
    return Page([_row(r) for r in rows], total, limit, offset)


async def get_gateway(conn: asyncpg.Connection, gateway_id: str) -> dict | None:
    row = await conn.fetchrow(
        "SELECT g.*, s.region_id, s.lat, s.lon, (SELECT count(*) FROM meters m WHERE m.gateway_id = g.id) AS meters "
        "FROM gateways g LEFT JOIN sites s ON s.id = g.site_id WHERE g.id = $1", gateway_id)
    if row is None:
        return None
    out = _row(row)
    out["gateway_id"] = out.pop("id")
    epochs = await conn.fetch(
        "SELECT epoch, first_seq, last_seq, messages, first_received_at, last_received_at FROM gateway_epochs "
        "WHERE gateway_id = $1 ORDER BY first_received_at DESC LIMIT 2", gateway_id)
    if out.get("epoch") == "":
        out["epoch"] = None        # the legacy epoch (schema-1 messages)
    # the current outbox and the one before it: "started a new outbox at T; the previous ended at seq N"
    out["outbox"] = {"epoch": out.get("epoch"), "started_at": out.get("epoch_started_at"),
                     "epochs": out.get("epochs"),
                     "previous": ({"epoch": epochs[1]["epoch"] or None, "first_seq": epochs[1]["first_seq"],
                                   "last_seq": epochs[1]["last_seq"], "messages": epochs[1]["messages"],
                                   "last_received_at": epochs[1]["last_received_at"].isoformat()}
                                  if len(epochs) > 1 else None)}
    return out


async def list_meters(conn: asyncpg.Connection, *, limit: int, offset: int, gateway_id: str | None = None,
                      region_id: str | None = None) -> Page:
    where, args = ["TRUE"], []
    if gateway_id is not None:
        args.append(gateway_id)
        where.append(f"m.gateway_id = ${len(args)}")
    if region_id is not None:
        args.append(region_id)
        where.append(f"s.region_id = ${len(args)}")
    base = f"FROM meters m {_SITE_JOIN} WHERE {' AND '.join(where)}"
    total = await conn.fetchval(f"SELECT count(*) {base}", *args)
    rows = await conn.fetch(
        "SELECT m.id AS meter_id, m.name, m.gateway_id, s.id AS site_id, s.region_id, s.feeder_id, s.lat, s.lon, "
        f"m.first_seen_at, m.last_seen_at, m.last_interval_start, m.last_reading_ts {base} "
        f"ORDER BY m.id LIMIT {int(limit)} OFFSET {int(offset)}", *args)
    return Page([_row(r) for r in rows], total, limit, offset)


async def get_meter(conn: asyncpg.Connection, meter_id: str) -> dict | None:
    row = await conn.fetchrow(
        "SELECT m.id AS meter_id, m.name, m.gateway_id, s.id AS site_id, s.region_id, s.feeder_id, s.lat, s.lon, "
        f"m.first_seen_at, m.last_seen_at, m.last_interval_start, m.last_reading_ts FROM meters m {_SITE_JOIN} "
        "WHERE m.id = $1", meter_id)
    return _row(row) if row else None


async def meter_exists(conn: asyncpg.Connection, meter_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM meters WHERE id = $1)", meter_id))


async def readings_series(conn: asyncpg.Connection, meter_id: str, start: datetime, end: datetime,
                          points: int) -> dict:
    """Raw readings of one meter, averaged into at most ``points`` buckets (with the export register,
    a gas/water channel's volume and a three-phase meter's lowest phase voltage, null where absent)."""
    bucket = bucket_seconds(start, end, points)
    points_json = await conn.fetchval(
        "SELECT coalesce(json_agg(p ORDER BY p.ts), '[]')::text FROM ("
        "SELECT date_bin($4::interval, ts, $5) AS ts, count(*) AS n, max(energy_kwh) AS energy_kwh, "
        "avg(power_w) AS power_w, max(power_w) AS power_w_max, min(power_w) AS power_w_min, "
        "avg(voltage_v) AS voltage_v, max(export_kwh) AS export_kwh, max(volume_m3) AS volume_m3, "
        "min(LEAST(voltage_l1_v, voltage_l2_v, voltage_l3_v)) AS lowest_phase_v "
        "FROM readings WHERE meter_id = $1 AND ts >= $2 AND ts < $3 "
        "GROUP BY 1) AS p", meter_id, start, end, timedelta(seconds=bucket), _ORIGIN)
    return {"meter_id": meter_id, "start": start.isoformat(), "end": end.isoformat(), "bucket_s": bucket,
            "points": RawJSON(points_json)}


_REGION_RESOLUTIONS = (86400, 3600, 900)


def _region_resolution(bucket: int) -> int:
    return next(r for r in _REGION_RESOLUTIONS if bucket % r == 0)


def _rollup_source(bucket: int) -> str:
    if bucket >= 86400 and bucket % 86400 == 0:
        return "readings_daily"
    if bucket >= 3600 and bucket % 3600 == 0:
        return "readings_hourly"
    return "interval_summaries"


async def consumption_series(conn: asyncpg.Connection, start: datetime, end: datetime, points: int, *,
                             meter_id: str | None = None, region_id: str | None = None,
                             region_stale: bool | None = None) -> dict | None:
    """Energy per bucket for a meter or a whole region, from the coarsest table that fits;
    None when the meter or region does not exist.

    The existence check, the region's staleness and the series travel in one round trip.
    ``meters`` is how many meters have data in the bucket; from ``region_rollups`` it is exact
    when the bucket is one rollup period and, for wider buckets, the most meters of any one
    period in it (a meter missing from every such period's peak is not counted).
    ``region_stale`` forces the choice of source (the benchmark compares both)."""
    bucket = bucket_seconds(start, end, points, minimum=900, choices=_CONSUMPTION_BUCKETS)
    args: list[Any] = [start, end, timedelta(seconds=bucket), _ORIGIN, meter_id if region_id is None else region_id]
    if meter_id is not None:
        source = _rollup_source(bucket)
        found, _, points_json = await conn.fetchrow(
            f"SELECT EXISTS (SELECT 1 FROM meters WHERE id = $5), false, {_meters_series(source, 'meter_id = $5')}",
            *args)
    else:
        found, stale, points_json = await conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM regions WHERE id = $5), "
            "EXISTS (SELECT 1 FROM region_rollups_stale WHERE region_id = $5) AS stale, "
            f"CASE WHEN $7 OR ($8 AND NOT EXISTS (SELECT 1 FROM region_rollups_stale WHERE region_id = $5)) "
            f"THEN {_region_series()} END",
            *args, _region_resolution(bucket), region_stale is False, region_stale is None)
        source = "region_rollups"
        if region_stale or (region_stale is None and stale):
            # a registry change is waiting for its refresh: sum the region's meters instead (exact)
            source = _rollup_source(bucket)
            scope = f"meter_id = ANY({_region_meters('$5')})"
            points_json = await conn.fetchval(f"SELECT {_meters_series(source, scope)}", *args)
    if not found:
        return None
    out = {"start": start.isoformat(), "end": end.isoformat(), "bucket_s": bucket, "source": source,
           "points": RawJSON(points_json)}
    out["meter_id" if meter_id is not None else "region_id"] = meter_id if meter_id is not None else region_id
    return out


def _series(sql: str) -> str:
    return f"(SELECT coalesce(json_agg(p ORDER BY p.ts), '[]')::text FROM ({sql}) AS p)"


def _region_series() -> str:
    """A region's points from region_rollups at resolution $6 ($1..$4: start, end, bucket, origin; $5 region)."""
    return _series("SELECT date_bin($3::interval, bucket, $4) AS ts, sum(kwh) AS kwh, sum(intervals) AS intervals, "
                   "sum(readings) AS readings, sum(power_w_sum) / NULLIF(sum(power_w_n), 0) AS power_w_mean, "
                   "max(power_w_max) AS power_w_max, sum(anomalous_intervals) AS anomalous_intervals, "
                   "max(meters) AS meters FROM region_rollups "
                   "WHERE region_id = $5 AND bucket_s = $6 AND bucket >= $1 AND bucket < $2 GROUP BY 1")


def _meters_series(source: str, scope: str) -> str:
    """Points summed over the meters in ``scope`` from a per-meter table."""
    if source == "interval_summaries":
        time_col = "interval_start"
        cols = ("sum(kwh) AS kwh, count(*) AS intervals, sum(readings) AS readings, "
                "avg(power_w_mean) AS power_w_mean, max(power_w_max) AS power_w_max, "
                "count(*) FILTER (WHERE anomalous) AS anomalous_intervals, count(DISTINCT meter_id) AS meters")
    else:
        time_col = "bucket"
        cols = ("sum(kwh) AS kwh, sum(intervals) AS intervals, sum(readings) AS readings, "
                "sum(power_w_sum) / NULLIF(sum(power_w_n), 0) AS power_w_mean, max(power_w_max) AS power_w_max, "
                "sum(anomalous_intervals) AS anomalous_intervals, count(DISTINCT meter_id) AS meters")
    return _series(f"SELECT date_bin($3::interval, {time_col}, $4) AS ts, {cols} FROM {source} "
                   f"WHERE {scope} AND {time_col} >= $1 AND {time_col} < $2 GROUP BY 1")


_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The first and last UTC midnight of [start, end) that bound whole days, or None without any."""
    first = _EPOCH - ((_EPOCH - start) // _DAY) * _DAY
    last = _EPOCH + ((end - _EPOCH) // _DAY) * _DAY
    return (first, last) if first < last else None


async def _flag_total(conn: asyncpg.Connection, start: datetime, end: datetime, region_id: str | None) -> int | None:
    """How many flags [start, end) holds (of the region's meters, or all), exactly: its whole UTC days
    from ``anomaly_flag_days`` (migration 0014) and its partial edge days counted from the flags.
    None while the region is stale (a registry change waits for its refresh)."""
    days = _whole_days(start, end)
    if region_id is None:
        scope, stale, members = "''", "false", "TRUE"
        args: list[Any] = []
    else:
        args = [region_id]
        scope, stale = "$1", "EXISTS (SELECT 1 FROM region_rollups_stale WHERE region_id = $1)"
        members = f"f.meter_id = ANY({_region_meters('$1')})"

    def counted(lo: int, hi: int) -> str:
        return (f"(SELECT count(*) FROM anomaly_flags f WHERE f.interval_start >= ${lo} "
                f"AND f.interval_start < ${hi} AND {members})")

    n = len(args)
    if days is None:
        return await conn.fetchval(f"SELECT CASE WHEN {stale} THEN NULL ELSE {counted(n + 1, n + 2)} END",
                                   *args, start, end)
    first, last = days
    return await conn.fetchval(
        f"SELECT CASE WHEN {stale} THEN NULL ELSE "
        f"(SELECT coalesce(sum(flags), 0) FROM anomaly_flag_days WHERE region_id = {scope} "
        f"AND day >= ${n + 5} AND day < ${n + 6}) + {counted(n + 1, n + 2)} + {counted(n + 3, n + 4)} END",
        *args, start, first, last, end, first.date(), last.date())


async def anomalies(conn: asyncpg.Connection, start: datetime, end: datetime, *, limit: int, offset: int,
                    region_id: str | None = None, meter_id: str | None = None,
                    max_score: float | None = None) -> Page:
    """Flags in [start, end) with the site's location, newest first, for a map.

    ``total`` is exact for a region or all flags (:func:`_flag_total`); with ``meter_id`` or
    ``max_score``, or while the region is stale, it is counted up to :data:`ANOMALY_COUNT_CAP`
    (``total_is_lower_bound``). The page lies in the newest part of the range, so when the range
    holds many pages only its newest slice is sorted — a slice expected to hold four times what
    the page needs, if flags were spread evenly; a slice that falls short is read again in full,
    so the answer is always that of the whole range."""
    where, args = ["f.interval_start < $2"], [start, end]     # $1: where the slice read starts
    if region_id is not None:
        # the region's meter ids as one array: flags are then read by (meter_id, interval_start)
        # index with the array as its condition, never by a join over every flag
        args.append(region_id)
        where.append(f"f.meter_id = ANY({_region_meters(f'${len(args)}')})")
    if meter_id is not None:
        args.append(meter_id)
        where.append(f"f.meter_id = ${len(args)}")
    if max_score is not None:
        args.append(max_score)
        where.append(f"f.score <= ${len(args)}")
    cond = " AND ".join(where)
    needed = offset + limit
    page = ("SELECT count(*) AS n, coalesce(json_agg(x ORDER BY x.interval_start DESC, x.meter_id), '[]')::text AS items "
            "FROM (SELECT f.meter_id, f.gateway_id, f.interval_start, f.interval_s, f.score, f.threshold, f.kwh, "
            "f.reason, f.model_version, s.id AS site_id, s.region_id, s.feeder_id, s.lat, s.lon "
            "FROM (SELECT * FROM anomaly_flags f WHERE f.interval_start >= {lo} AND " + cond + " "
            f"ORDER BY f.interval_start DESC, f.meter_id LIMIT {int(limit)} OFFSET {int(offset)}) "
            f"AS f LEFT JOIN meters m ON m.id = f.meter_id {_SITE_JOIN}) AS x")
    total = None
    if meter_id is None and max_score is None:
        total = await _flag_total(conn, start, end, region_id)
    exact = total is not None
    if total is None:
        # two statements: a slice bound computed inside one statement is a run-time parameter, and
        # the planner then reads every partition's index instead of the slice's
        total = await conn.fetchval(f"SELECT count(*) FROM (SELECT 1 FROM anomaly_flags f WHERE f.interval_start >= $1 "
                                    f"AND {cond} LIMIT {ANOMALY_COUNT_CAP + 1}) AS c", *args)
    row = None
    if total > 4 * needed:
        row = await conn.fetchrow(page.format(lo="$1"), end - (end - start) * (4 * needed / total), *args[1:])
        if row["n"] < limit:       # the slice held fewer than offset + limit flags
            row = None
    if row is None:
        row = await conn.fetchrow(page.format(lo="$1"), *args)
    n, items = row["n"], row["items"]
    return Page(RawJSON(items), total, limit, offset, total_cap=ANOMALY_COUNT_CAP, n_items=n, total_exact=exact)


async def unknown_ids(conn: asyncpg.Connection, *, region_id: str | None = None, meter_id: str | None = None,
                      gateway_id: str | None = None) -> list[str]:
    """The names of the given ids the registry does not hold (one round trip), so a typo is a 404
    rather than an empty answer that reads as "nothing happened"."""
    given = {"region_id": region_id, "meter_id": meter_id, "gateway_id": gateway_id}
    if all(v is None for v in given.values()):
        return []
    found = await conn.fetchrow(
        "SELECT $1::text IS NULL OR EXISTS (SELECT 1 FROM regions WHERE id = $1) AS region_id, "
        "$2::text IS NULL OR EXISTS (SELECT 1 FROM meters WHERE id = $2) AS meter_id, "
        "$3::text IS NULL OR EXISTS (SELECT 1 FROM gateways WHERE id = $3) AS gateway_id",
        region_id, meter_id, gateway_id)
    return [name for name in given if not found[name]]


async def anomaly_events(conn: asyncpg.Connection, start: datetime, end: datetime, *, limit: int, offset: int,
                         region_id: str | None = None, meter_id: str | None = None, gateway_id: str | None = None,
                         merge_gap_s: float = MERGE_GAP_S) -> dict:
    """Flags of [start, end) merged into events by the QA score's rule
    (:func:`gridsight.anomaly_events.merge_flags`), newest first, with counts per region and meter.

    An interval flagged twice (a gateway re-sending after a restart) counts once, with its newest
    flag. An event is cut where the range cuts it."""
    where, args = ["f.interval_start >= $1", "f.interval_start < $2"], [start, end]
    if region_id is not None:
        args.append(region_id)
        where.append(f"f.meter_id = ANY({_region_meters(f'${len(args)}')})")
    if meter_id is not None:
        args.append(meter_id)
        where.append(f"f.meter_id = ${len(args)}")
    if gateway_id is not None:
        args.append(gateway_id)
        where.append(f"f.gateway_id = ${len(args)}")
    rows = await conn.fetch(
        "SELECT DISTINCT ON (f.meter_id, f.interval_start) f.meter_id, f.gateway_id, "
        "extract(epoch FROM f.interval_start)::float8 AS t, f.interval_s, f.score, f.threshold, f.reason "
        f"FROM anomaly_flags f WHERE {' AND '.join(where)} "
        "ORDER BY f.meter_id, f.interval_start, f.received_at DESC", *args)
    detail = {(r["meter_id"], r["t"]): r for r in rows}
    runs = merge_flags((FlaggedInterval(r["meter_id"], r["t"], r["t"] + r["interval_s"], r["score"], r["reason"])
                        for r in rows), merge_gap_s)
    places = {r["meter_id"]: (r["site_id"], r["region_id"]) for r in await conn.fetch(
        f"SELECT m.id AS meter_id, s.id AS site_id, s.region_id FROM meters m {_SITE_JOIN} WHERE m.id = ANY($1)",
        list({run.meter_id for run in runs}))}
    by_region: dict[str | None, dict] = {}
    by_meter: dict[str, dict] = {}
    for run in runs:
        site, region = places.get(run.meter_id, (None, None))
        r = by_region.setdefault(region, {"region_id": region, "events": 0, "flags": 0, "meters": set()})
        r["events"] += 1
        r["flags"] += run.flags
        r["meters"].add(run.meter_id)
        m = by_meter.setdefault(run.meter_id, {"meter_id": run.meter_id, "region_id": region, "events": 0, "flags": 0})
        m["events"] += 1
        m["flags"] += run.flags
    runs.sort(key=lambda run: (-run.start, run.meter_id))
    page = []
    for run in runs[offset:offset + limit]:
        site, region = places.get(run.meter_id, (None, None))
        first = detail[(run.meter_id, run.start)]
        page.append({"meter_id": run.meter_id, "gateway_id": first["gateway_id"], "site_id": site, "region_id": region,
                     "start": _iso(run.start), "end": _iso(run.end), "flags": run.flags,
                     "min_score": run.min_score, "threshold": first["threshold"], "reason": run.reason})
    more = offset + limit < len(runs)
    return {"start": start.isoformat(), "end": end.isoformat(), "merge_gap_s": merge_gap_s,
            "events": page, "total": len(runs), "flags": len(rows), "limit": limit, "offset": offset,
            "next_offset": offset + limit if more else None,
            "by_region": [{**r, "meters": len(r["meters"])} for _, r in sorted(by_region.items(), key=lambda kv: str(kv[0]))],
            "by_meter": [by_meter[k] for k in sorted(by_meter)]}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


async def ingestion_health(conn: asyncpg.Connection, now: datetime | None = None, skew_warn_s: float = 120.0) -> dict:
    """What ingestion did recently, from the database (shared by every replica).

    A gateway is "skewed" when its newest message arrived more than ``skew_warn_s`` away from its
    own send time: its clock is off (or its uplink badly delayed), so its timestamps need care."""
    now = now or datetime.now(timezone.utc)
    hour_ago = now - timedelta(hours=1)
    msgs = await conn.fetch("SELECT kind, count(*) AS n, sum(rows) AS rows, max(received_at) AS last "
                            "FROM ingest_log WHERE received_at >= $1 GROUP BY kind ORDER BY kind", hour_ago)
    dead = await conn.fetch("SELECT reason, count(*) AS n FROM dead_letters WHERE received_at >= $1 "
                            "GROUP BY reason ORDER BY reason", hour_ago)
    replicas = await conn.fetch("SELECT replica, count(*) AS n FROM ingest_log WHERE received_at >= $1 "
                                "GROUP BY replica ORDER BY replica", hour_ago)
    skew = await conn.fetchrow("SELECT avg(extract(epoch FROM received_at - sent_at)) AS mean_s, "
                               "max(extract(epoch FROM received_at - sent_at)) AS max_s "
                               "FROM ingest_log WHERE received_at >= $1", hour_ago)
    gw = await conn.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE last_seen_at >= $1) AS reporting, "
        "count(*) FILTER (WHERE last_seen_at < $1 OR last_seen_at IS NULL) AS silent, "
        "count(*) FILTER (WHERE abs(skew_s) > $2) AS skewed FROM gateways "
        "WHERE status = 'active'", now - timedelta(seconds=STALE_AFTER_S), skew_warn_s)
    archive = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM archive_outbox) AS pending, "
        "(SELECT min(received_at) FROM archive_outbox) AS oldest_pending, "
        "(SELECT max(uploaded_at) FROM archive_objects) AS last_upload, "
        "(SELECT count(*) FROM archive_objects) AS objects")
    last = await conn.fetchval("SELECT max(received_at) FROM ingest_log WHERE received_at >= $1", hour_ago)
    new_epochs = await recent_new_epochs(conn, since=now - timedelta(hours=24))
    conflicts = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE received_at >= $1) AS last_hour, "
        "count(*) FILTER (WHERE replayed_at IS NULL) AS unreplayed, max(received_at) AS last "
        "FROM dead_letters WHERE reason = 'seq_conflict'", hour_ago)
    return {
        "window_s": 3600,
        "last_message_at": last.isoformat() if last else None,
        "messages": {r["kind"]: {"messages": r["n"], "rows": r["rows"]} for r in msgs},
        "dead_letters": {r["reason"]: r["n"] for r in dead},
        "by_replica": {r["replica"] or "unknown": r["n"] for r in replicas},
        "transit_s": {"mean": float(skew["mean_s"]) if skew["mean_s"] is not None else None,
                      "max": float(skew["max_s"]) if skew["max_s"] is not None else None},
        "gateways": dict(gw),
        "archive": _row(archive),
        # gateways that started a new outbox (wiped data directory) in the last 24 h
        "new_epochs": new_epochs,
        "seq_conflicts": {"last_hour": conflicts["last_hour"], "unreplayed": conflicts["unreplayed"],
                          "last_at": conflicts["last"].isoformat() if conflicts["last"] else None},
    }


async def recent_new_epochs(conn: asyncpg.Connection, *, since: datetime, gateway_id: str | None = None,
                            limit: int = 100) -> list[dict]:
    """Epochs first heard since ``since`` of gateways that had an earlier one, newest first, each
    with where the previous epoch ended: "gw-a started a new outbox at T; the previous one ended
    at seq N"."""
    rows = await conn.fetch(
        "SELECT e.gateway_id, e.epoch, e.first_received_at, e.first_seq, e.last_seq, e.messages, "
        "p.epoch AS previous_epoch, p.last_seq AS previous_last_seq, p.last_received_at AS previous_last_received_at "
        "FROM gateway_epochs e "
        "JOIN LATERAL (SELECT * FROM gateway_epochs p WHERE p.gateway_id = e.gateway_id "
        "  AND p.first_received_at < e.first_received_at ORDER BY p.first_received_at DESC LIMIT 1) p ON TRUE "
        "WHERE e.first_received_at >= $1 AND ($2::text IS NULL OR e.gateway_id = $2) "
        "ORDER BY e.first_received_at DESC LIMIT $3", since, gateway_id, limit)
    out = []
    for r in rows:
        started = r["first_received_at"]
        out.append({"gateway_id": r["gateway_id"], "epoch": r["epoch"] or None, "started_at": started.isoformat(),
                    "first_seq": r["first_seq"], "last_seq": r["last_seq"], "messages": r["messages"],
                    "previous_epoch": r["previous_epoch"] or None, "previous_last_seq": r["previous_last_seq"],
                    "message": f"{r['gateway_id']} started a new outbox at {started.isoformat()}; "
                               f"the previous one ended at seq {r['previous_last_seq']}"})
    return out


async def dead_letters(conn: asyncpg.Connection, *, limit: int, offset: int, reason: str | None = None,
                       gateway_id: str | None = None) -> Page:
    where, args = ["TRUE"], []
    if reason is not None:
        args.append(reason)
        where.append(f"reason = ${len(args)}")
    if gateway_id is not None:
        args.append(gateway_id)
        where.append(f"gateway_id = ${len(args)}")
    base = f"FROM dead_letters WHERE {' AND '.join(where)}"
    total = await conn.fetchval(f"SELECT count(*) {base}", *args)
    rows = await conn.fetch(
        "SELECT id, received_at, topic, gateway_id, reason, field, payload_bytes, replica, replayed_at, replay_result, "
        f"encode(substring(payload FROM 1 FOR 200), 'escape') AS payload_preview {base} "
        f"ORDER BY id DESC LIMIT {int(limit)} OFFSET {int(offset)}", *args)
    return Page([_row(r) for r in rows], total, limit, offset)
