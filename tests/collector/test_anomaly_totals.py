"""The anomaly map's ``total`` is exact: whole UTC days come from ``anomaly_flag_days`` (migration
0014), the partial edge days from the flags. Random windows (starting and ending mid-day) are
compared with a plain count after every kind of change: ingest, a meter moved to another
region, a refresh, deleted flags, a meter registered after its flags, retention."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.auth import install_identity
from collector.db.writer import BatchWriter, Received
from collector.settings import CollectorSettings
from collector_kit import NOW, flag, message, scalar, sql

DAY0 = NOW - NOW % 86400 - 40 * 86400
SPAN_S = 40 * 86400


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.fixture
def api(collector_db, tmp_path):
    url = collector_db
    sql(url, "INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South')")
    sql(url, "INSERT INTO sites (id, name, region_id) VALUES ('s-1', 'S1', 'north'), ('s-2', 'S2', 'south'), "
             "('s-3', 'S3', NULL)")
    sql(url, "INSERT INTO gateways (id, site_id) VALUES ('gw-1', 's-1'), ('gw-2', 's-2'), ('gw-3', 's-3')")
    sql(url, "INSERT INTO meters (id, gateway_id) SELECT 'm-' || g || '-' || i, 'gw-' || g "
             "FROM generate_series(1, 2) g, generate_series(0, 9) i")
    sql(url, "INSERT INTO meters (id, gateway_id) VALUES ('m-3-0', 'gw-3')")       # in no region
    sql(url, "SELECT gridsight_ensure_partitions('anomaly_flags', to_timestamp(%s), to_timestamp(%s))",
        DAY0 - 86400, NOW + 86400)
    # 12,000 flags at random quarter hours of 40 days, some of a meter in no region or none registered
    sql(url, "SELECT setseed(0.19)")
    sql(url, "INSERT INTO anomaly_flags (meter_id, interval_start, interval_s, score, threshold, kwh, model_version, "
             "gateway_id, seq, sent_at, received_at) "
             "SELECT (ARRAY['m-1-0', 'm-1-1', 'm-1-2', 'm-1-3', 'm-1-4', 'm-1-5', 'm-1-6', 'm-1-7', 'm-1-8', 'm-1-9', "
             "'m-2-0', 'm-2-1', 'm-2-2', 'm-2-3', 'm-2-4', 'm-2-5', 'm-2-6', 'm-2-7', 'm-2-8', 'm-2-9', 'm-3-0', "
             "'m-9-0'])[1 + (k %% 22)], to_timestamp(%s + 900 * floor(random() * 3840)), 900, -0.2, -0.1, 0.01, "
             "'v1', 'gw-1', k, now(), now() FROM generate_series(1, 12000) k", DAY0)
    settings = CollectorSettings(database_url=url, data_dir=tmp_path, api_max_page=100)
    app = create_app(settings)
    identity = install_identity(app, url, env={"GRIDSIGHT_JWT_SECRET": "anomaly-total-tests-" + "x" * 32})
    with TestClient(app, headers={"X-API-Key": identity.store.create_api_key("tests", "analyst")[1]}) as c:
        yield c, url
    identity.store.engine.dispose()


def _plain_count(url: str, start: float, end: float, region: str | None) -> int:
    if region is None:
        return scalar(url, "SELECT count(*) FROM anomaly_flags WHERE interval_start >= to_timestamp(%s) "
                           "AND interval_start < to_timestamp(%s)", start, end)
    return scalar(url, "SELECT count(*) FROM anomaly_flags f JOIN meters m ON m.id = f.meter_id "
                       "LEFT JOIN gateways g ON g.id = m.gateway_id LEFT JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id) "
                       "WHERE s.region_id = %s AND f.interval_start >= to_timestamp(%s) "
                       "AND f.interval_start < to_timestamp(%s)", region, start, end)


def _check_windows(client, url: str, seed: int, n: int = 30) -> int:
    """``total`` of random windows against a plain count; returns the largest total seen."""
    rng = random.Random(seed)
    largest = 0
    windows = [(DAY0 - 3600, DAY0 + SPAN_S + 3600, None), (DAY0, DAY0 + 86400, "north")]   # all; one whole day
    for _ in range(n):
        start = DAY0 - 86400 + rng.randrange(0, SPAN_S + 86400)
        length = rng.choice([0, rng.randrange(1, 86400), rng.randrange(86400, 3 * 86400),
                             rng.randrange(86400, SPAN_S + 2 * 86400)])
        windows.append((start, start + length, rng.choice([None, "north", "south"])))
    for start, end, region in windows:
        params = {"start": _iso(start), "end": _iso(end), "limit": 5, **({"region_id": region} if region else {})}
        body = client.get("/anomalies", params=params).json()
        expected = _plain_count(url, start, end, region)
        assert (body["total"], body["total_is_lower_bound"]) == (expected, False), (params, body)
        largest = max(largest, body["total"])
    return largest


def _stale(url: str) -> set[str]:
    return {r[0] for r in sql(url, "SELECT region_id FROM region_rollups_stale")}


def _day_rows_match_a_recount(url: str) -> None:
    """After a refresh: one row per region and day, each what a count from scratch gives."""
    assert scalar(url, "SELECT count(*) FROM (SELECT 1 FROM anomaly_flag_days GROUP BY region_id, day "
                       "HAVING count(*) > 1) d") == 0
    stored = {(r, d): n for r, d, n in sql(url, "SELECT region_id, day, flags FROM anomaly_flag_days")}
    recount = {(r, d): n for r, d, n in sql(
        url, "SELECT s.region_id, (f.interval_start AT TIME ZONE 'UTC')::date, count(*) FROM anomaly_flags f "
             "JOIN meters m ON m.id = f.meter_id LEFT JOIN gateways g ON g.id = m.gateway_id "
             "JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id) WHERE s.region_id IS NOT NULL GROUP BY 1, 2 "
             "UNION ALL SELECT '', (interval_start AT TIME ZONE 'UTC')::date, count(*) FROM anomaly_flags GROUP BY 2")}
    assert stored == recount


def test_totals_equal_a_plain_count_through_every_kind_of_change(api):
    client, url = api
    # more than the 10,000 the count used to stop at: the whole range is counted exactly
    assert _check_windows(client, url, seed=1) > 10_000

    # ingest: new flags, one of a meter the batch registers; the writer stores the meters first,
    # so the new meter's flags count in its region at once and nothing goes stale
    items = [flag("gw-1", 100 + i, meter=i % 3, interval_start=DAY0 + 86400 * (i % 40) + 900 * (i % 96))
             for i in range(120)]
    items += [flag("gw-2", 500 + i, meter=7, interval_start=DAY0 + 3 * 86400 + 900 * i) for i in range(50)]

    async def ingest() -> None:
        writer = BatchWriter(url, unknown_gateways="register")
        await writer.write([Received(*message(m), time.time()) for m in items])
        await writer.close()

    asyncio.run(ingest())
    assert scalar(url, "SELECT count(*) FROM anomaly_flags WHERE meter_id = 'gw-1-m2'") == 40
    assert _stale(url) == set()
    _check_windows(client, url, seed=2)

    # a meter moved to another region: both go stale and are counted from the flags until the refresh
    sql(url, "UPDATE meters SET site_id = 's-2' WHERE id = 'm-1-4'")
    assert _stale(url) == {"north", "south"}
    _check_windows(client, url, seed=3)
    sql(url, "SELECT count(*) FROM gridsight_refresh_region_rollups()")
    assert _stale(url) == set()
    _day_rows_match_a_recount(url)
    _check_windows(client, url, seed=4)

    # deleted flags
    sql(url, "DELETE FROM anomaly_flags WHERE meter_id = 'm-2-3' AND interval_start < to_timestamp(%s)",
        DAY0 + 20 * 86400 + 1234)
    _check_windows(client, url, seed=5)

    # flags stored before their meter was registered: its region is stale until the refresh
    sql(url, "INSERT INTO anomaly_flags (meter_id, interval_start, interval_s, score, threshold, kwh, model_version, "
             "gateway_id, seq, sent_at, received_at) SELECT 'm-2-99', to_timestamp(%s + 3600 * k), 900, -0.2, -0.1, "
             "0.01, 'v1', 'gw-2', k, now(), now() FROM generate_series(0, 200) k", DAY0 + 1800)
    sql(url, "INSERT INTO meters (id, gateway_id) VALUES ('m-2-99', 'gw-2')")
    assert _stale(url) == {"south"}
    _check_windows(client, url, seed=6)
    sql(url, "SELECT count(*) FROM gridsight_refresh_region_rollups()")
    _day_rows_match_a_recount(url)
    _check_windows(client, url, seed=7)

    # retention drops whole partitions (no trigger fires): the maintenance step drops and refreshes at once
    sql(url, "SELECT count(*) FROM gridsight_maintain_partitions(1, 25)")
    _day_rows_match_a_recount(url)
    _check_windows(client, url, seed=8)


def test_a_meter_or_a_score_filter_keeps_the_capped_count(api):
    client, url = api
    params = {"start": _iso(DAY0), "end": _iso(DAY0 + SPAN_S), "limit": 5}
    body = client.get("/anomalies", params={**params, "meter_id": "m-1-0"}).json()
    assert (body["total"], body["total_is_lower_bound"]) == (_plain_count_meter(url, "m-1-0"), False)
    body = client.get("/anomalies", params={**params, "max_score": -0.1}).json()
    assert (body["total"], body["total_is_lower_bound"]) == (10_000, True)


def _plain_count_meter(url: str, meter: str) -> int:
    return scalar(url, "SELECT count(*) FROM anomaly_flags WHERE meter_id = %s", meter)
