"""GET /anomalies and /consumption answer the same, byte for byte, with and without the
shortcut that skips FastAPI's per-request machinery (collector/api/hot_routes.py), for
well-formed requests, malformed ones, unknown ids and every kind of caller."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.auth import install_identity
from collector.auth.tokens import split_api_key
from collector.db.writer import BatchWriter, Received
from collector.settings import CollectorSettings
from collector_kit import NOW, flag, message, sql, summary
from gridsight.settings import ConfigError

DAY0 = NOW - NOW % 86400 - 3 * 86400
SECRET = {"GRIDSIGHT_JWT_SECRET": "hot-routes-tests-" + "x" * 32}
PASSWORD = "correct horse battery staple"


def _iso(ts: float, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return time.strftime(fmt, time.gmtime(ts))


@pytest.fixture
def both(collector_db, tmp_path):
    """(hot, plain): two apps on one database, with and without the shortcut, and the credentials."""
    sql(collector_db, "INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South'), ('east', 'East')")
    sql(collector_db, "INSERT INTO sites (id, name, region_id, lat, lon) VALUES "
                      "('s-1', 'Site 1', 'north', 52.1, 5.1), ('s-2', 'Site 2', 'south', 51.5, 4.9)")
    sql(collector_db, "INSERT INTO gateways (id, site_id) VALUES ('gw-1', 's-1'), ('gw-2', 's-2')")
    items, seq = [], 0
    for gw in ("gw-1", "gw-2"):
        for i in range(2 * 96):
            seq += 1
            items.append(summary(gw, seq, interval_start=DAY0 + i * 900, anomalous_meter=i % 4 if i % 7 == 0 else None))
            if i % 7 == 0:
                seq += 1
                items.append(flag(gw, seq, meter=i % 4, interval_start=DAY0 + i * 900))

    async def load():
        writer = BatchWriter(collector_db, unknown_gateways="register")
        await writer.write([Received(*message(m), time.time()) for m in items])
        await writer.close()
    asyncio.run(load())
    settings = CollectorSettings(database_url=collector_db, data_dir=tmp_path, api_max_page=50, api_max_points=1000)
    hot, plain = create_app(settings), create_app(settings, hot_routes=False)
    ids = [install_identity(app, collector_db, env=SECRET) for app in (hot, plain)]
    store = ids[0].store
    store.check_ttl_s = 3600     # remembered checks do not lapse while a slow machine runs the comparisons
    for role in ("analyst", "policymaker", "technician", "admin"):
        store.create_user(role, PASSWORD, role)
    keys = {role: store.create_api_key(f"k-{role}", role)[1] for role in ("admin", "analyst", "policymaker")}
    with TestClient(hot) as hot_client, TestClient(plain) as plain_client:
        tokens = {role: hot_client.post("/auth/token", data={"username": role, "password": PASSWORD}).json()["access_token"]
                  for role in ("analyst", "policymaker", "technician", "admin")}
        yield hot_client, plain_client, keys, tokens
    for ctx in ids:
        ctx.store.engine.dispose()


def _span(days: float = 1, offset: float = 0) -> dict:
    return {"start": _iso(DAY0 + offset), "end": _iso(DAY0 + offset + days * 86400)}


VALID = [
    ("/anomalies", _span(2)),
    ("/anomalies", {**_span(2), "region_id": "north"}),
    ("/anomalies", {**_span(2), "region_id": "south", "limit": 3}),
    ("/anomalies", {**_span(2), "limit": 5, "offset": 5}),
    ("/anomalies", {**_span(2), "meter_id": "gw-1-m0"}),
    ("/anomalies", {**_span(2), "meter_id": "gw-1-m0", "region_id": "north"}),
    ("/anomalies", {**_span(0.5, 3600 * 7 + 900)}),
    ("/anomalies", {**_span(2), "region_id": "east"}),            # known region without flags: 200, empty
    ("/anomalies", {"start": _iso(DAY0, "%Y-%m-%dT%H:%M:%S"), "end": _iso(DAY0 + 86400, "%Y-%m-%dT%H:%M:%S.250000+02:00")}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m1"}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m1", "points": 24}),
    ("/consumption", {**_span(1), "meter_id": "gw-2-m3", "points": 2}),
    ("/consumption", {**_span(2), "region_id": "north"}),
    ("/consumption", {**_span(2), "region_id": "south", "points": 5}),
    ("/consumption", {**_span(0.25, 1800), "region_id": "north", "points": 1000}),
    ("/consumption", {**_span(3000), "region_id": "north"}),
    ("/consumption", {**_span(0), "meter_id": "gw-1-m0"}),
]

ODD = [   # answered by the application: errors, and forms the shortcut leaves to it
    ("/anomalies", {**_span(2), "region_id": "nope"}),
    ("/anomalies", {**_span(2), "meter_id": "gw-9-m0"}),
    ("/anomalies", {**_span(2), "limit": 51}),
    ("/anomalies", {**_span(2), "limit": 0}),
    ("/anomalies", {**_span(2), "offset": -1}),
    ("/anomalies", {**_span(2), "limit": "05"}),
    ("/anomalies", {**_span(2), "max_score": -0.1}),
    ("/anomalies", {**_span(2), "unknown": "x"}),
    ("/anomalies", {"start": DAY0, "end": DAY0 + 86400}),                      # Unix seconds
    ("/anomalies", {"start": _iso(DAY0), "end": _iso(DAY0 - 60)}),
    ("/anomalies", {"start": _iso(DAY0), "end": "2999-01-01T00:00:00Z"}),
    ("/anomalies", {"start": "yesterday", "end": _iso(DAY0)}),
    ("/anomalies", {"start": _iso(DAY0).lower(), "end": _iso(DAY0 + 86400)}),
    ("/anomalies", {"start": "2026-02-30T00:00:00Z", "end": _iso(DAY0)}),
    ("/anomalies", {"end": _iso(DAY0)}),
    ("/anomalies", {**_span(2), "region_id": "bad id!"}),
    ("/anomalies", {**_span(2), "region_id": ""}),
    ("/anomalies", [("start", _iso(DAY0)), ("end", _iso(DAY0 + 86400)), ("region_id", "north"), ("region_id", "south")]),
    ("/consumption", {**_span(2)}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m1", "region_id": "north"}),
    ("/consumption", {**_span(2), "region_id": "mars"}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m9"}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m1", "points": 1}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m1", "points": 1001}),
    ("/consumption", {**_span(2), "meter_id": "gw-1-m1", "points": "1e2"}),
    ("/consumption", {"start": _iso(DAY0), "end": _iso(DAY0 + 3661 * 86400), "region_id": "north"}),
]


def _answer(client, path, params, headers) -> tuple:
    r = client.get(path, params=params, headers=headers)
    return r.status_code, r.headers.get("content-type"), r.headers.get("content-length"), r.content


def test_well_formed_requests_take_the_shortcut_and_answer_exactly_as_the_application(both):
    hot, plain, keys, tokens = both
    for who in ({"X-API-Key": keys["admin"]}, {"X-API-Key": keys["analyst"]},
                {"Authorization": f"Bearer {tokens['analyst']}"}, {"Authorization": f"bearer {tokens['admin']}"}):
        _answer(hot, *VALID[0], who)     # a credential's first check reads the database, in the application
        before = hot.app.state.hot_routes.answered
        for path, params in VALID:
            got, want = _answer(hot, path, params, who), _answer(plain, path, params, who)
            assert got[0] == 200, (path, params, got)
            assert got == want, (path, params)
        assert hot.app.state.hot_routes.answered - before == len(VALID)


def test_errors_and_unusual_forms_are_the_applications_own_answers(both):
    hot, plain, keys, _ = both
    _answer(hot, *VALID[0], {"X-API-Key": keys["analyst"]})
    before = hot.app.state.hot_routes.answered
    for path, params in ODD:
        got, want = _answer(hot, path, params, {"X-API-Key": keys["analyst"]}), _answer(plain, path, params, {"X-API-Key": keys["analyst"]})
        assert got == want, (path, params, got[:2], want[:2])
    # the unusual but valid forms (Unix seconds, limit 05, max_score) are answered, by the application
    assert sum(_answer(hot, p, q, {"X-API-Key": keys["analyst"]})[0] == 200 for p, q in ODD) >= 3
    assert hot.app.state.hot_routes.answered == before


def test_other_callers_get_the_applications_answer(both):
    hot, plain, keys, tokens = both
    callers = [{}, {"X-API-Key": "gsk_nope_nope"}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"},
               {"X-API-Key": keys["policymaker"]}, {"Authorization": f"Bearer {tokens['policymaker']}"},
               {"Authorization": f"Bearer {tokens['technician']}"}]
    before = hot.app.state.hot_routes.answered
    statuses = set()
    for who in callers:
        for path, params in VALID[:2] + VALID[-5:-3]:
            got, want = _answer(hot, path, params, who), _answer(plain, path, params, who)
            assert got == want, (who, path, params, got[:2], want[:2])
            statuses.add(got[0])
    assert statuses == {200, 401, 403}          # policymakers may read a region's consumption only
    assert hot.app.state.hot_routes.answered == before


def test_a_revoked_key_and_a_deleted_account_are_refused_by_the_shortcut_too(both):
    hot, _, keys, tokens = both
    store = hot.app.state.identity.store
    path, params = VALID[0]
    key, token = {"X-API-Key": keys["analyst"]}, {"Authorization": f"Bearer {tokens['analyst']}"}
    assert _answer(hot, path, params, key)[0] == 200 and _answer(hot, path, params, token)[0] == 200
    key_id = split_api_key(keys["analyst"])[0]
    assert store.revoke_api_key(key_id)
    assert store.delete_user("analyst")
    assert _answer(hot, path, params, key)[0] == 401
    assert _answer(hot, path, params, token)[0] == 401


def test_the_short_path_has_its_own_few_connections_with_plans_made_once(collector_db, tmp_path):
    with pytest.raises(ConfigError, match="api_hot_connections"):
        CollectorSettings(database_url=collector_db, data_dir=tmp_path, api_hot_connections=0)
    app = create_app(CollectorSettings(database_url=collector_db, data_dir=tmp_path, api_hot_connections=2))

    async def plan_mode(pool) -> tuple[str, int]:
        async with pool.acquire() as conn:
            return await conn.fetchval("SHOW plan_cache_mode"), pool.pool.get_max_size()

    with TestClient(app) as client:
        assert client.portal.call(plan_mode, app.state.hot_pool) == ("force_generic_plan", 2)
        assert client.portal.call(plan_mode, app.state.pool) == ("auto", 10)
