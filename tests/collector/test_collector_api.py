"""The query API over a real database filled through the real batch writer."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.auth import install_identity
from collector.db.writer import BatchWriter, Received
from collector.metrics import Metrics
from collector.settings import CollectorSettings
from collector_kit import NOW, flag, message, raw_chunk, sql, summary

DAY0 = NOW - NOW % 86400 - 2 * 86400   # midnight UTC two days ago


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@pytest.fixture
def filled_db(collector_db) -> str:
    sql(collector_db, "INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South')")
    sql(collector_db, "INSERT INTO sites (id, name, region_id, lat, lon) VALUES "
                      "('s-1', 'Site 1', 'north', 52.1, 5.1), ('s-2', 'Site 2', 'south', 51.5, 4.9)")
    sql(collector_db, "INSERT INTO gateways (id, site_id) VALUES ('gw-1', 's-1'), ('gw-2', 's-2')")
    items = []
    seq = 0
    for gw in ("gw-1", "gw-2"):
        for i in range(96):   # one day of 15-minute intervals, 4 meters each, 0.25 kWh per interval
            seq += 1
            items.append(summary(gw, seq, interval_start=DAY0 + i * 900, anomalous_meter=1 if i == 40 else None))
        seq += 1
        items.append(flag(gw, seq, meter=1, interval_start=DAY0 + 40 * 900))
        seq += 1
        items.append(raw_chunk(gw, seq, per_meter=100, start=DAY0, step=60))

    async def load():
        writer = BatchWriter(collector_db, unknown_gateways="register")
        await writer.write([Received(*message(m), time.time()) for m in items]
                           + [Received("gridsight/v1/gw-1/raw", b"nonsense", time.time())])
        await writer.close()
    asyncio.run(load())
    return collector_db


@pytest.fixture
def client(filled_db, tmp_path):
    settings = CollectorSettings(database_url=filled_db, data_dir=tmp_path, api_max_page=50)
    metrics = Metrics()
    metrics.inc("gridsight_collector_messages_received_total", 3, kind="summary")
    app = create_app(settings, metrics=metrics)
    identity = install_identity(app, filled_db, env={"GRIDSIGHT_JWT_SECRET": "collector-api-tests-" + "x" * 32})
    with TestClient(app, headers={"X-API-Key": identity.store.create_api_key("tests", "admin")[1]}) as c:
        yield c
    identity.store.engine.dispose()


def _loc(response) -> list:
    return response.json()["detail"][0]["loc"]


def test_gateways_list_with_state_meter_count_and_pagination(client):
    first = client.get("/gateways", params={"limit": 1}).json()
    second = client.get("/gateways", params={"limit": 1, "offset": first["next_offset"]}).json()

    assert first["total"] == 2 and first["next_offset"] == 1 and second["next_offset"] is None
    assert [first["items"][0]["gateway_id"], second["items"][0]["gateway_id"]] == ["gw-1", "gw-2"]
    assert first["items"][0]["meters"] == 4
    assert first["items"][0]["region_id"] == "north"
    assert first["items"][0]["state"] in ("online", "stale")
    assert client.get("/gateways", params={"region_id": "south"}).json()["total"] == 1


def test_meter_and_gateway_lookups_answer_404_naming_the_id(client):
    assert client.get("/meters/gw-1-m0").json()["lat"] == 52.1
    missing = client.get("/meters/nope")
    assert missing.status_code == 404 and _loc(missing) == ["path", "meter_id"]
    assert _loc(client.get("/gateways/nope")) == ["path", "gateway_id"]
    assert client.get("/meters", params={"gateway_id": "gw-2"}).json()["total"] == 4


def test_consumption_of_a_meter_is_downsampled_and_sums_exactly(client):
    span = {"start": _iso(DAY0), "end": _iso(DAY0 + 86400)}
    fine = client.get("/consumption", params={**span, "meter_id": "gw-1-m0", "points": 200}).json()
    hourly = client.get("/consumption", params={**span, "meter_id": "gw-1-m0", "points": 24}).json()

    assert fine["bucket_s"] == 900 and len(fine["points"]) == 96
    assert hourly["bucket_s"] == 3600 and hourly["source"] == "readings_hourly" and len(hourly["points"]) == 24
    assert sum(p["kwh"] for p in fine["points"]) == pytest.approx(24.0)
    assert sum(p["kwh"] for p in hourly["points"]) == pytest.approx(24.0)
    assert sum(p["anomalous_intervals"] for p in hourly["points"]) == 0


def test_consumption_of_a_region_adds_up_its_meters_only(client):
    span = {"start": _iso(DAY0), "end": _iso(DAY0 + 10 * 86400)}
    daily = client.get("/consumption", params={**span, "region_id": "north", "points": 10}).json()
    assert daily["source"] == "region_rollups"
    assert [round(p["kwh"], 6) for p in daily["points"]] == [96.0]
    assert daily["points"][0]["meters"] == 4
    assert daily["points"][0]["anomalous_intervals"] == 1


def test_raw_readings_are_bucketed_to_at_most_the_requested_points(client):
    span = {"start": _iso(DAY0), "end": _iso(DAY0 + 86400)}
    body = client.get("/readings", params={**span, "meter_id": "gw-1-m2", "points": 20}).json()
    assert len(body["points"]) <= 20
    assert sum(p["n"] for p in body["points"]) == 100


def test_anomalies_come_with_location_score_and_reason(client):
    span = {"start": _iso(DAY0), "end": _iso(DAY0 + 86400)}
    body = client.get("/anomalies", params=span).json()
    assert body["total"] == 2
    north = client.get("/anomalies", params={**span, "region_id": "north"}).json()["items"]
    assert [(a["meter_id"], a["lat"], a["lon"], a["score"]) for a in north] == [("gw-1-m1", 52.1, 5.1, -0.2)]
    assert "drop" in north[0]["reason"]


def test_anomaly_events_merge_flags_by_the_qa_rule_with_counts_per_region_and_meter(client, filled_db):
    more = [flag("gw-1", 1000 + i, meter=1, interval_start=DAY0 + k * 900) for i, k in enumerate((41, 45))]
    more.append(flag("gw-2", 1000, meter=3, interval_start=DAY0 + 50 * 900))

    async def load():
        writer = BatchWriter(filled_db, unknown_gateways="register")
        await writer.write([Received(*message(m), time.time()) for m in more])
        await writer.close()
    asyncio.run(load())
    span = {"start": _iso(DAY0), "end": _iso(DAY0 + 86400)}
    body = client.get("/anomalies/events", params=span).json()
    # gw-1-m1: intervals 40+41 are one event; 45 starts 2,700 s after 41 ends, beyond the 1,800 s gap: a second
    assert body["total"] == 4 and body["flags"] == 5
    m1 = [e for e in body["events"] if e["meter_id"] == "gw-1-m1"]
    assert [(e["start"], e["end"], e["flags"]) for e in m1] == [
        (_iso(DAY0 + 45 * 900).replace("Z", "+00:00"), _iso(DAY0 + 46 * 900).replace("Z", "+00:00"), 1),
        (_iso(DAY0 + 40 * 900).replace("Z", "+00:00"), _iso(DAY0 + 42 * 900).replace("Z", "+00:00"), 2)]
    assert m1[0]["min_score"] == -0.2 and "drop" in m1[0]["reason"] and m1[0]["region_id"] == "north"
    assert {r["region_id"]: (r["events"], r["flags"], r["meters"]) for r in body["by_region"]} == {
        "north": (2, 3, 1), "south": (2, 2, 2)}
    assert {m["meter_id"]: m["events"] for m in body["by_meter"]} == {"gw-1-m1": 2, "gw-2-m1": 1, "gw-2-m3": 1}
    paged = client.get("/anomalies/events", params={**span, "limit": 3}).json()
    assert len(paged["events"]) == 3 and paged["next_offset"] == 3 and paged["total"] == 4
    only = client.get("/anomalies/events", params={**span, "gateway_id": "gw-2", "merge_gap_s": 0}).json()
    assert only["total"] == 2 and {e["gateway_id"] for e in only["events"]} == {"gw-2"}


@pytest.mark.parametrize("path, params, name", [
    ("/anomalies", {"region_id": "nope"}, "region_id"),
    ("/anomalies", {"meter_id": "gw-9-m0"}, "meter_id"),
    ("/anomalies/events", {"region_id": "nope"}, "region_id"),
    ("/anomalies/events", {"meter_id": "gw-9-m0"}, "meter_id"),
    ("/anomalies/events", {"gateway_id": "gw-9"}, "gateway_id"),
    ("/gateways", {"region_id": "nope"}, "region_id"),
    ("/meters", {"region_id": "nope"}, "region_id"),
    ("/meters", {"gateway_id": "gw-9"}, "gateway_id"),
    ("/consumption", {"region_id": "nope"}, "region_id"),
    ("/consumption", {"meter_id": "gw-9-m0"}, "meter_id"),
    ("/readings", {"meter_id": "gw-9-m0"}, "meter_id"),
    ("/ingestion/dead-letters", {"gateway_id": "gw-9"}, "gateway_id"),
    ("/carbon/intensity", {"area": "nope"}, "area"),
])
def test_an_unknown_id_answers_404_naming_it_rather_than_an_empty_result(client, path, params, name):
    span = {"start": _iso(DAY0), "end": _iso(DAY0 + 86400)}
    response = client.get(path, params={**span, **params})
    assert response.status_code == 404, response.text
    assert _loc(response)[-1] == name
    assert client.get(path, params={**span, **{k: v.replace("nope", "north").replace("gw-9", "gw-1")
                                                for k, v in params.items()}}).status_code == (
        200)


@pytest.mark.parametrize("path, params, name", [
    ("/consumption", {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z", "meter_id": "gw-1-m0"}, "end"),
    ("/consumption", {"start": "yesterday", "end": "2026-01-01T00:00:00Z", "meter_id": "gw-1-m0"}, "start"),
    ("/consumption", {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}, "meter_id"),
    ("/consumption", {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "region_id": "mars"}, "region_id"),
    ("/readings", {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "meter_id": "gw-1-m0",
                   "points": 100000}, "points"),
    ("/anomalies", {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "limit": 51}, "limit"),
    ("/anomalies", {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "offset": -1}, "offset"),
    ("/gateways", {"state": "sleepy"}, "state"),
    ("/meters", {"gateway_id": "bad id!"}, "gateway_id"),
])
def test_invalid_parameters_answer_4xx_naming_the_parameter(client, path, params, name):
    response = client.get(path, params=params)
    assert 400 <= response.status_code < 500
    assert _loc(response)[-1] == name


def test_ingestion_health_and_dead_letters(client, filled_db):
    sql(filled_db, "UPDATE gateways SET skew_s = CASE id WHEN 'gw-1' THEN 0.4 ELSE -3600 END")
    health = client.get("/ingestion/health").json()
    assert health["messages"]["summary"]["messages"] == 192
    assert health["dead_letters"] == {"malformed": 1}
    assert health["archive"]["pending"] == 196
    assert health["gateways"]["skewed"] == 1
    letters = client.get("/ingestion/dead-letters").json()
    assert letters["total"] == 1 and letters["items"][0]["payload_preview"] == "nonsense"


def test_health_readiness_and_prometheus_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "checks": {"database": "ok"}}
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert 'gridsight_collector_messages_received_total{kind="summary"} 3' in lines
    for name in ("rows_written_total", "dead_letters_total", "ack_lag_seconds_bucket", "batch_seconds_count"):
        assert any(line.startswith(f"gridsight_collector_{name}") for line in lines)
    assert all(line.startswith("#") or len(line.rsplit(" ", 1)) == 2 for line in lines)


def test_readiness_fails_when_the_database_is_gone(tmp_path, filled_db):
    settings = CollectorSettings(database_url=filled_db, data_dir=tmp_path)
    server_db, name = filled_db.rsplit("/", 1)
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").status_code == 200
        sql(f"{server_db}/postgres", f'DROP DATABASE "{name}" WITH (FORCE)')
        response = c.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("unavailable")
        assert c.get("/healthz").status_code == 200


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/gateways", "/meters/{meter_id}", "/consumption", "/readings", "/anomalies", "/ingestion/health",
                 "/healthz", "/readyz", "/metrics"):
        assert path in paths


def test_request_auth_answers_remembered_checks_from_memory_and_only_misses_need_the_database(filled_db):
    from collector.auth.store import IdentityStore, NotRemembered, engine_for

    store = IdentityStore(engine_for(filled_db))
    known, other = store.create_api_key("a", "analyst")[1], store.create_api_key("b", "analyst")[1]
    store.authenticate_api_key(known)                   # a miss: read from the database and remembered
    with store.from_memory():
        assert store.authenticate_api_key(known).role == "analyst"
        with pytest.raises(NotRemembered):
            store.authenticate_api_key(other)            # never checked: would need the database
        with pytest.raises(NotRemembered):
            store.meters_of("c-1")
    assert store.authenticate_api_key(other).role == "analyst"
    store.engine.dispose()
