"""#15 item 8: the built-in dashboard enforces the API's role policy.

A policymaker gets 403 from /anomalies (single households), and must not learn the same facts
from /dashboard: no site, no per-site flag count or score, no household's position. A region of
fewer than MIN_AGGREGATE_METERS meters is withheld (its totals would be one household's).
Real parts: a migrated PostgreSQL filled through the collector's own batch writer, the real app.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.api.routes.dashboard_page import MIN_AGGREGATE_METERS
from collector.auth import install_identity
from collector.db import migrate
from collector.db.writer import BatchWriter, Received
from collector.settings import CollectorSettings
from gridsight import wire

DAY0 = time.time() // 86400 * 86400 - 3 * 86400
# a lone household far from the town, with a telling position and a strongly anomalous score
LONE = ("farm-1", "hamlet", 40.123456, -77.654321)
TOWN = [(f"town-{i}", "town", 39.95 + 0.01 * i, -75.16 + 0.01 * i) for i in range(MIN_AGGREGATE_METERS + 1)]


def _messages() -> list[wire.Message]:
    out: list[wire.Message] = []
    for site, _, _, _ in [LONE, *TOWN]:
        gw, meter = f"gw-{site}", f"m-{site}"
        seq = 0
        for i in range(2 * 96):
            seq += 1
            t = DAY0 + i * 900
            flagged = site == LONE[0] and i % 10 == 0
            score = -0.31 if flagged else 0.07
            out.append(wire.IntervalSummary(gateway_id=gw, seq=seq, model_version="m1", sent_at=t + 900,
                                            interval_start=t, interval_s=900, meters=(wire.MeterSummary(
                                                meter_id=meter, kwh=0.3, readings=15, power_w_mean=1200.0,
                                                power_w_max=2000.0, score=score, anomalous=flagged),)))
            if flagged:
                seq += 1
                out.append(wire.AnomalyFlag(gateway_id=gw, seq=seq, model_version="m1", sent_at=t + 900,
                                            meter_id=meter, interval_start=t, interval_s=900, score=score,
                                            threshold=0.0, kwh=0.3, reason="kwh 0.30 vs profile 0.05 (theft)"))
    return out


@pytest.fixture
def client(database_url, tmp_path):
    migrate(database_url)
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO regions (id, name) VALUES ('hamlet', 'Hamlet'), ('town', 'Town')")
        for site, region, lat, lon in [LONE, *TOWN]:
            conn.execute("INSERT INTO sites (id, name, region_id, lat, lon) VALUES (%s, %s, %s, %s, %s)",
                         (site, site, region, lat, lon))
            conn.execute("INSERT INTO gateways (id, site_id) VALUES (%s, %s)", (f"gw-{site}", site))
            conn.execute("INSERT INTO meters (id, gateway_id, site_id) VALUES (%s, %s, %s)",
                         (f"m-{site}", f"gw-{site}", site))

    async def load() -> None:
        writer = BatchWriter(database_url, archive=False)
        try:
            msgs = _messages()
            for i in range(0, len(msgs), 500):
                await writer.write([Received(wire.topic_for(m.gateway_id, type(m).KIND), wire.encode(m), time.time())
                                    for m in msgs[i:i + 500]])
        finally:
            await writer.close()

    asyncio.run(load())
    app = create_app(CollectorSettings(database_url=database_url, data_dir=tmp_path), database_url=database_url)
    identity = install_identity(app, database_url, env={"GRIDSIGHT_JWT_SECRET": "dashboard-roles-" + "x" * 40})
    keys = {role: identity.store.create_api_key(f"k-{role}", role)[1] for role in ("analyst", "policymaker")}
    with TestClient(app) as c:
        c.keys = keys
        yield c
    identity.store.engine.dispose()


def _page(client, role: str, **params) -> str:
    answer = client.get("/dashboard", params={"days": 5, **params}, headers={"X-API-Key": client.keys[role]})
    assert answer.status_code == 200, answer.text
    return answer.text


def _household_traces(page: str) -> list[str]:
    lat, lon = LONE[2], LONE[3]
    found = [needle for needle in ("farm-1", "m-farm-1", "gw-farm-1", "-0.310", "data-site", "class=\"site\"",
                                   "data-sites") if needle in page]
    found += [f"lat {lat}" for v in re.findall(r"40\.12\d*", page)]
    found += [f"lon {lon}" for v in re.findall(r"-77\.65\d*", page)]
    return found


def test_the_analyst_sees_the_household_so_the_policymaker_check_below_can_fail(client):
    page = _page(client, "analyst")
    assert 'data-site="farm-1"' in page and "-0.310" in page


def test_a_policymaker_sees_no_site_score_or_position_of_a_single_household(client):
    page = _page(client, "policymaker")
    assert _household_traces(page) == []
    # the town is big enough to be shown as one aggregate, with its totals only
    assert 'class="region-aggregate" data-region="town"' in page
    assert 'data-region="hamlet"' not in page and "withheld" in page


def test_a_policymaker_asking_for_a_one_household_region_gets_no_pattern_of_that_household(client):
    page = _page(client, "policymaker", region="hamlet")
    assert _household_traces(page) == []
    assert 'id="consumption-heatmap"' not in page and "fewer than" in page
    assert 'id="forecast-chart"' not in page or "No forecast" in page
