"""Region rollups (migration 0005): maintained by the batch writer, equal to the raw summaries,
marked stale by registry moves and recomputed by maintenance; regional charts read them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.archive import Archiver, LocalDirStore, rebuild
from collector.auth import install_identity
from collector.db import migrate
from collector.db.writer import BatchWriter, Received
from collector.settings import CollectorSettings
from collector_kit import NOW, message, scalar, sql, summary

DAY0 = NOW - NOW % 86400 - 3 * 86400   # midnight UTC three days ago
MEASURES = ("kwh", "intervals", "readings", "anomalous_intervals", "meters")

# What region_rollups must hold, straight from interval_summaries and today's registry.
EXPECTED = """
SELECT s.region_id, r.bucket_s, date_bin(make_interval(secs => r.bucket_s), i.interval_start,
                                         '2000-01-03T00:00:00Z') AS bucket,
       round(sum(i.kwh)::numeric, 9) AS kwh, count(*) AS intervals, sum(i.readings) AS readings,
       count(*) FILTER (WHERE i.anomalous) AS anomalous_intervals, count(DISTINCT i.meter_id) AS meters
FROM interval_summaries i JOIN meters m ON m.id = i.meter_id LEFT JOIN gateways g ON g.id = m.gateway_id
JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id)
CROSS JOIN (VALUES (900), (3600), (86400)) AS r(bucket_s)
WHERE s.region_id IS NOT NULL
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
STORED = """
SELECT region_id, bucket_s, bucket, round(kwh::numeric, 9), intervals, readings, anomalous_intervals, meters
FROM region_rollups ORDER BY 1, 2, 3
"""


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _write(url: str, msgs) -> None:
    async def go():
        writer = BatchWriter(url, unknown_gateways="register")
        await writer.write([Received(*message(m), time.time()) for m in msgs])
        await writer.close()
    asyncio.run(go())


def grid_of(url: str) -> str:
    sql(url, "INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South')")
    sql(url, "INSERT INTO sites (id, name, region_id) VALUES ('s-1', 'Site 1', 'north'), "
             "('s-2', 'Site 2', 'south'), ('s-3', 'Site 3', 'north')")
    sql(url, "INSERT INTO gateways (id, site_id) VALUES ('gw-1', 's-1'), ('gw-2', 's-2'), ('gw-3', 's-3')")
    return url


@pytest.fixture
def grid(collector_db) -> str:
    return grid_of(collector_db)


def _day_of_summaries(gateway: str, first_seq: int, *, meters: int = 4, every: int = 1, kwh: float = 0.25) -> list:
    return [summary(gateway, first_seq + i, meters=meters, interval_start=DAY0 + i * 900, kwh=kwh,
                    anomalous_meter=1 if i % 17 == 0 else None) for i in range(0, 96, every)]


def test_region_rollups_equal_the_summaries_across_batches_and_redeliveries(grid):
    # one day of gw-1 and gw-3 (both north) and gw-2 (south), written in three batches so hours,
    # days and quarter hours are added to over several transactions; a batch is redelivered
    _write(grid, _day_of_summaries("gw-1", 1, every=2))                         # even quarters
    _write(grid, _day_of_summaries("gw-2", 1, meters=3) + _day_of_summaries("gw-3", 1, meters=2, kwh=0.5))
    odd = [summary("gw-1", 1000 + i, interval_start=DAY0 + i * 900) for i in range(1, 96, 2)]
    _write(grid, odd)
    _write(grid, odd)                                                           # redelivered: stored once

    assert scalar(grid, "SELECT count(*) FROM interval_summaries") == 96 * 4 + 96 * 3 + 96 * 2
    assert sql(grid, STORED) == sql(grid, EXPECTED)
    day = sql(grid, "SELECT region_id, kwh, meters FROM region_rollups WHERE bucket_s = 86400 ORDER BY 1")
    assert [(r, round(k, 6), m) for r, k, m in day] == [("north", 96 * (4 * 0.25 + 2 * 0.5), 6), ("south", 72.0, 3)]


def test_a_late_summary_for_a_quarter_already_stored_adds_energy_not_meters(grid):
    _write(grid, [summary("gw-1", 1, interval_start=DAY0)])
    _write(grid, [summary("gw-1", 2, interval_start=DAY0, kwh=0.5)])    # same meters, same quarter, new seq

    rows = sql(grid, "SELECT bucket_s, kwh, intervals, meters FROM region_rollups WHERE region_id = 'north' "
                     "ORDER BY bucket_s")
    assert rows == [(900, 3.0, 8, 4), (3600, 3.0, 8, 4), (86400, 3.0, 8, 4)]
    assert sql(grid, STORED) == sql(grid, EXPECTED)


def test_meters_without_a_region_are_left_out(grid):
    sql(grid, "INSERT INTO sites (id, name) VALUES ('s-x', 'Nowhere')")
    sql(grid, "INSERT INTO gateways (id, site_id) VALUES ('gw-x', 's-x')")
    _write(grid, _day_of_summaries("gw-x", 1) + _day_of_summaries("gw-2", 1))

    assert sql(grid, "SELECT DISTINCT region_id FROM region_rollups") == [("south",)]


def test_a_site_moving_region_marks_both_stale_until_maintenance_recomputes_them(grid):
    _write(grid, _day_of_summaries("gw-1", 1) + _day_of_summaries("gw-2", 1))
    sql(grid, "UPDATE sites SET region_id = 'south' WHERE id = 's-1'")

    assert sql(grid, "SELECT region_id FROM region_rollups_stale ORDER BY 1") == [("north",), ("south",)]
    assert sql(grid, STORED) != sql(grid, EXPECTED)
    done = sql(grid, "SELECT target FROM gridsight_maintain_partitions(2, 0, 0, 0) WHERE action = 'refreshed region'")
    assert sorted(done) == [("north",), ("south",)]
    assert scalar(grid, "SELECT count(*) FROM region_rollups_stale") == 0
    assert sql(grid, STORED) == sql(grid, EXPECTED)


def test_meter_and_gateway_moves_mark_regions_stale_only_when_the_region_changes(grid):
    _write(grid, _day_of_summaries("gw-1", 1) + _day_of_summaries("gw-2", 1))
    sql(grid, "UPDATE meters SET site_id = 's-3' WHERE id = 'gw-1-m0'")       # north to north
    sql(grid, "UPDATE meters SET last_seen_at = now()")                        # what every batch does
    assert scalar(grid, "SELECT count(*) FROM region_rollups_stale") == 0

    sql(grid, "UPDATE meters SET site_id = NULL WHERE id = 'gw-2-m0'")        # still its gateway's: south
    sql(grid, "UPDATE gateways SET site_id = 's-1' WHERE id = 'gw-2'")        # gw-2-m0 follows to north
    assert sql(grid, "SELECT region_id FROM region_rollups_stale ORDER BY 1") == [("north",), ("south",)]
    sql(grid, "SELECT gridsight_refresh_region_rollups()")
    assert sql(grid, STORED) == sql(grid, EXPECTED)


def test_refresh_rebuilds_what_ingest_maintained(grid):
    _write(grid, _day_of_summaries("gw-1", 1, every=3) + _day_of_summaries("gw-2", 1))
    _write(grid, [summary("gw-1", 500 + i, interval_start=DAY0 + i * 900) for i in range(1, 96, 3)])
    incremental = sql(grid, STORED)

    sql(grid, "DELETE FROM region_rollups")
    sql(grid, "INSERT INTO region_rollups_stale (region_id) SELECT id FROM regions")
    sql(grid, "SELECT gridsight_refresh_region_rollups()")

    assert sql(grid, STORED) == incremental == sql(grid, EXPECTED)


def test_rebuild_from_the_archive_restores_region_rollups_once(grid, postgres_server, tmp_path):
    _write(grid, _day_of_summaries("gw-1", 1) + _day_of_summaries("gw-2", 1, meters=3))
    store = LocalDirStore(tmp_path / "archive")

    async def archive() -> None:
        archiver = Archiver(grid, store)
        await archiver.drain()
        await archiver.close()
    asyncio.run(archive())
    name = f"regions_rebuilt_{int(time.time() * 1000) % 10**9}"
    sql(postgres_server.dsn("postgres"), f'CREATE DATABASE "{name}"')
    fresh = postgres_server.dsn(name)
    try:
        migrate(fresh)
        grid_of(fresh)     # the registry comes from its own import, not from the archive
        since = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
        asyncio.run(rebuild(fresh, store, since))
        asyncio.run(rebuild(fresh, store, since))       # idempotent: nothing counted twice

        assert sql(fresh, STORED) == sql(grid, STORED) == sql(fresh, EXPECTED)
    finally:
        sql(postgres_server.dsn("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def api(grid, tmp_path):
    _write(grid, _day_of_summaries("gw-1", 1) + _day_of_summaries("gw-3", 1, meters=2, kwh=0.5)
           + _day_of_summaries("gw-2", 1, meters=3))
    app = create_app(CollectorSettings(database_url=grid, data_dir=tmp_path))
    identity = install_identity(app, grid, env={"GRIDSIGHT_JWT_SECRET": "region-rollup-tests-" + "x" * 32})
    with TestClient(app, headers={"X-API-Key": identity.store.create_api_key("tests", "analyst")[1]}) as c:
        yield c
    identity.store.engine.dispose()


@pytest.mark.parametrize("days, points, bucket_s", [(1, 96, 900), (1, 24, 3600), (1, 12, 7200), (1, 2, 43200),
                                                    (3, 3, 86400), (3, 2, 172800)])
def test_regional_chart_reads_region_rollups_and_agrees_with_the_meters_rollups(api, grid, days, points, bucket_s):
    params = {"start": _iso(DAY0), "end": _iso(DAY0 + days * 86400), "region_id": "north", "points": points}
    fast = api.get("/consumption", params=params).json()
    sql(grid, "INSERT INTO region_rollups_stale (region_id) VALUES ('north')")
    exact = api.get("/consumption", params=params).json()

    assert fast["source"] == "region_rollups" and exact["source"] != "region_rollups"
    assert fast["bucket_s"] == exact["bucket_s"] == bucket_s
    assert [p["ts"] for p in fast["points"]] == [p["ts"] for p in exact["points"]]
    for mine, theirs in zip(fast["points"], exact["points"]):
        for name in MEASURES:
            assert mine[name] == pytest.approx(theirs[name]), name
        assert mine["power_w_mean"] == pytest.approx(theirs["power_w_mean"])
        assert mine["power_w_max"] == theirs["power_w_max"]
    assert sum(p["kwh"] for p in fast["points"]) == pytest.approx(96 * (4 * 0.25 + 2 * 0.5))
