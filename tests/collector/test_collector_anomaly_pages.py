"""Anomaly map pages over ranges holding many pages: the API reads only the newest slice of the
range when it can, and every page must be exactly the whole range's, however flags are spread."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.auth import install_identity
from collector.settings import CollectorSettings
from collector_kit import NOW, sql

DAY0 = NOW - NOW % 86400 - 40 * 86400
SPAN = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DAY0)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(DAY0 + 40 * 86400))}


def _flags(url: str, rows: list[tuple[str, float]]) -> None:
    sql(url, "SELECT gridsight_ensure_partitions('anomaly_flags', to_timestamp(%s), to_timestamp(%s))",
        DAY0, DAY0 + 41 * 86400)
    sql(url, "INSERT INTO anomaly_flags (meter_id, interval_start, interval_s, score, threshold, kwh, features, "
             "model_version, gateway_id, seq, sent_at, received_at) "
             "SELECT u.m, to_timestamp(u.t), 900, -0.2, -0.1, 0.01, '{}', 'v1', 'gw-' || split_part(u.m, '-', 2), "
             "row_number() OVER (), now(), now() FROM unnest(%s::text[], %s::float8[]) AS u(m, t)",
        [m for m, _ in rows], [t for _, t in rows])


@pytest.fixture
def api(collector_db, tmp_path):
    sql(collector_db, "INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South')")
    sql(collector_db, "INSERT INTO sites (id, name, region_id) VALUES ('s-1', 'S1', 'north'), ('s-2', 'S2', 'south')")
    sql(collector_db, "INSERT INTO gateways (id, site_id) VALUES ('gw-1', 's-1'), ('gw-2', 's-2')")
    sql(collector_db, "INSERT INTO meters (id, gateway_id) SELECT 'm-' || g || '-' || i, 'gw-' || g "
                      "FROM generate_series(1, 2) g, generate_series(0, 9) i")
    settings = CollectorSettings(database_url=collector_db, data_dir=tmp_path, api_max_page=100)
    app = create_app(settings)
    identity = install_identity(app, collector_db, env={"GRIDSIGHT_JWT_SECRET": "anomaly-page-tests-" + "x" * 32})
    with TestClient(app, headers={"X-API-Key": identity.store.create_api_key("tests", "analyst")[1]}) as c:
        yield c, collector_db
    identity.store.engine.dispose()


def _expected(url: str, region: str | None, limit: int, offset: int) -> list[tuple[str, str]]:
    rows = sql(url, "SELECT f.meter_id, f.interval_start FROM anomaly_flags f JOIN meters m ON m.id = f.meter_id "
                    "JOIN gateways g ON g.id = m.gateway_id JOIN sites s ON s.id = g.site_id "
                    "WHERE (%s::text IS NULL OR s.region_id = %s) ORDER BY f.interval_start DESC, f.meter_id "
                    "LIMIT %s OFFSET %s", region, region, limit, offset)
    return [(m, t.timestamp()) for m, t in rows]


def _page(client, region: str | None, limit: int, offset: int) -> tuple[list[tuple[str, float]], dict]:
    params = {**SPAN, "limit": limit, "offset": offset, **({"region_id": region} if region else {})}
    body = client.get("/anomalies", params=params).json()
    from datetime import datetime
    return [(a["meter_id"], datetime.fromisoformat(a["interval_start"]).timestamp()) for a in body["items"]], body


@pytest.mark.parametrize("region", [None, "north"])
def test_pages_of_evenly_spread_flags_equal_the_whole_ranges(api, region):
    client, url = api
    # 40 days x 20 meters, one flag every 6 hours: 3,200 flags, many pages of 20
    _flags(url, [(f"m-{g}-{i}", DAY0 + h * 21600 + i * 900) for h in range(160) for g in (1, 2) for i in range(10)])

    for offset in (0, 20, 200):
        items, body = _page(client, region, 20, offset)
        assert items == _expected(url, region, 20, offset)
    assert body["total"] == (3200 if region is None else 1600)


def test_a_burst_of_old_flags_behind_a_few_new_ones_still_gives_the_true_page(api):
    client, url = api
    # 3,000 flags on the first day, 5 on the last: the newest slice holds too few, so the range is read in full
    old = [(f"m-1-{i % 10}", DAY0 + (i // 10) * 60.0) for i in range(3000)]
    new = [(f"m-1-{i}", DAY0 + 39 * 86400 + i * 900.0) for i in range(5)]
    _flags(url, old + new)

    items, body = _page(client, "north", 50, 0)
    assert items == _expected(url, "north", 50, 0)
    assert items[:5] == sorted(((m, t) for m, t in new), key=lambda x: -x[1])
    assert body["total"] == 3005 and body["next_offset"] == 50
