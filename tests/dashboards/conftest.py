"""A migrated database holding a small simulated fleet, as the collector would have stored it.

The fleet comes from the simulator (``firmware_sim.fleet_model.Fleet``): its regions (urban and
rural), feeders, gateway sites with coordinates, meters, their 15-minute energy and the
anomalies injected into them. The registry rows go in with SQL; the 15-minute summaries
(one message per gateway and interval) and anomaly flags go through the wire contract and
the collector's own ingest writer, which keeps the partitions and the hourly/daily rollups,
so the ``tableau`` views are queried exactly as in a deployment. Intervals inside an injected
consumption anomaly get a low score and a flag whose reason ends in ``(kind)``, as the
agent's explanation does. Forecasts come from the collector's forecaster.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from collector.db import migrate

DAY = 86_400
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAYS = 8


def seed_fleet(database_url: str, gateways: int = 8, meters_per_gateway: int = 3, days: int = DAYS) -> dict:
    """Register a simulated fleet and ingest its interval summaries and flags; returns what was sent."""
    import asyncio

    from collector.db.writer import BatchWriter, Received
    from gridsight.wire import AnomalyFlag, IntervalSummary, MeterSummary, encode, topic_for
    from firmware_sim.fleet_model import Fleet

    end = START + days * DAY
    fleet = Fleet(seed=6, gateways=gateways, meters_per_gateway=meters_per_gateway, start=START, end=end,
                  step_s=900, anomaly_rate=0.5, fault_rate=0.0)
    regions, feeders, sites, gws, meters = set(), set(), [], [], []
    messages: list[Received] = []
    summaries = flags = 0
    for g in fleet.gateway_specs():
        regions.add(g.region)
        feeders.add((g.feeder_id, g.region))
        sites.append((g.gateway_id, g.gateway_id, g.region, g.feeder_id, g.lat, g.lon, g.region_kind))
        gws.append((g.gateway_id, g.gateway_id))
        per_interval: dict[float, list[MeterSummary]] = {}
        gateway_flags = []
        for spec in g.meters:
            meters.append((spec.meter_id, g.gateway_id, g.gateway_id))
            meter = fleet.meter(spec)
            events = [e for e in meter.events if e.is_consumption]
            for d in range(fleet.calendar.day_of(START) - 1, fleet.calendar.day_of(end - 1) + 2):
                series = meter.day(d)
                starts = series.ts - 900
                keep = (starts >= START) & (starts < end)
                for t, kwh, p in zip(starts[keep], series.step_kwh[keep], series.power_w[keep]):
                    t, kwh, p = float(t), max(float(kwh), 0.0), float(p)
                    hit = next((e for e in events if e.start < t + 900 and e.end > t), None)
                    score = -0.08 if hit else 0.05 + 0.05 * ((int(t) // 900) % 7) / 7
                    per_interval.setdefault(t, []).append(
                        MeterSummary(spec.meter_id, kwh, 15, p, p, score, hit is not None))
                    if hit:
                        gateway_flags.append((spec.meter_id, t, score, kwh, hit.kind))
        seq = 0
        for t in sorted(per_interval):
            seq += 1
            summaries += len(per_interval[t])
            messages.append(Received(topic_for(g.gateway_id, "summary"), encode(IntervalSummary(
                g.gateway_id, seq, MODEL_VERSION, t + 900, t, 900, tuple(per_interval[t]))), t + 901))
        for meter_id, t, score, kwh, kind in gateway_flags:
            seq += 1
            flags += 1
            messages.append(Received(topic_for(g.gateway_id, "flag"), encode(AnomalyFlag(
                g.gateway_id, seq, MODEL_VERSION, t + 900, meter_id, t, 900, score, 0.0, kwh,
                reason=f"kwh {kwh:.2f} vs profile ({kind})")), t + 901))
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=UTC") as conn, conn.transaction():
        cur = conn.cursor()
        cur.executemany("INSERT INTO regions (id, name) VALUES (%s, %s)", [(r, r.title()) for r in sorted(regions)])
        cur.executemany("INSERT INTO feeders (id, region_id, name) VALUES (%s, %s, %s)",
                        [(f, r, f) for f, r in sorted(feeders)])
        cur.executemany("INSERT INTO sites (id, name, region_id, feeder_id, lat, lon, area_type) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)", sites)
        cur.executemany("INSERT INTO gateways (id, site_id) VALUES (%s, %s)", gws)
        cur.executemany("INSERT INTO meters (id, gateway_id, site_id) VALUES (%s, %s, %s)", meters)
        cur.executemany("INSERT INTO carbon_intensity (area, hour_start, intensity_g_per_kwh, source) "
                        "VALUES (%s, to_timestamp(%s), %s, 'test')", _carbon(end))

    async def ingest() -> None:
        writer = BatchWriter(database_url, archive=False, unknown_gateways="register")
        try:
            for i in range(0, len(messages), 500):
                await writer.write(messages[i:i + 500])
        finally:
            await writer.close()

    asyncio.run(ingest())
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        stored = conn.execute("SELECT (SELECT count(*) FROM interval_summaries), (SELECT count(*) FROM anomaly_flags), "
                              "(SELECT count(*) FROM dead_letters)").fetchone()
        assert stored == (summaries, flags, 0), stored
        forecasts = _forecast(conn, start=START, history_days=days - 2, horizon=72)
    return {"fleet": fleet, "forecasts": forecasts, "carbon_region": CARBON_REGION, "summaries": summaries,
            "flags": flags, "meters": len(meters), "sites": sites, "regions": sorted(regions), "start": START,
            "end": end}


MODEL_VERSION = "if-test-1"
CARBON_REGION = "valley"  # has its own intensity, 100 g/kWh below the system figure


def _carbon(end: float) -> list[tuple]:
    """System-wide intensity for every hour (a daily cycle), and a lower regional series for one region."""
    rows = []
    for t in range(int(START), int(end), 3600):
        system = 300.0 + 120.0 * np.sin(2 * np.pi * ((t // 3600) % 24) / 24)
        rows.append(("system", t, float(system)))
        rows.append((CARBON_REGION, t, float(system - 100.0)))
    return rows


def _forecast(conn, start: float, history_days: int, horizon: int) -> dict[tuple[str, str], int]:
    """Forecast system and regional load with the collector's own forecaster and store it as a run would."""
    import uuid

    import pandas as pd

    from collector.forecasting import forecast_load

    cut = start + history_days * DAY
    rows = conn.execute("""
        SELECT 'system', 'all', h.bucket, sum(h.kwh) FROM readings_hourly h WHERE h.bucket < to_timestamp(%s)
        GROUP BY h.bucket
        UNION ALL
        SELECT 'region', st.region_id, h.bucket, sum(h.kwh) FROM readings_hourly h
        JOIN meters m ON m.id = h.meter_id JOIN sites st ON st.id = m.site_id
        WHERE h.bucket < to_timestamp(%s) GROUP BY st.region_id, h.bucket
        ORDER BY 1, 2, 3""", (cut, cut)).fetchall()
    frame = pd.DataFrame(rows, columns=["kind", "key", "ts", "kwh"])
    written = {}
    with conn.transaction():
        for (kind, key), part in frame.groupby(["kind", "key"]):
            history = pd.Series(part["kwh"].to_numpy(), index=pd.DatetimeIndex(part["ts"]).tz_convert("UTC"))
            fc = forecast_load(history, horizon)
            run = uuid.uuid4()
            conn.cursor().executemany(
                "INSERT INTO forecasts (run_id, series_kind, series_key, model, model_version, interval_s, horizon, "
                "ts, yhat, yhat_lower, yhat_upper) VALUES (%s, %s, %s, %s, %s, 3600, %s, %s, %s, %s, %s)",
                [(run, kind, key, fc.model, fc.model_version, horizon, ts.to_pydatetime(), float(r.yhat),
                  float(r.yhat_lower), float(r.yhat_upper)) for ts, r in fc.frame.iterrows()])
            written[(kind, key)] = len(fc.frame)
    return written


@pytest.fixture(scope="session")
def fleet_db(postgres_server) -> tuple[str, dict]:
    """One migrated database with the simulated fleet, shared by the read-only view tests."""
    name = "tableau_fleet"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_server.dsn(name)
    migrate(url)
    info = seed_fleet(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT gridsight_refresh_tableau_rollups()")   # as the collector's maintenance does
    yield url, info
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fleet_url(fleet_db) -> str:
    return fleet_db[0]


@pytest.fixture
def fleet_info(fleet_db) -> dict:
    return fleet_db[1]


@pytest.fixture
def reader_url(fleet_db) -> str:
    """The fleet database, logged in as the Tableau reader role."""
    return fleet_db[0].replace("postgresql://postgres@", "postgresql://tableau_reader@")


@pytest.fixture
def small_fleet(database_url) -> tuple[str, dict]:
    """A fresh migrated database with a small fleet (4 gateways x 2 meters, 4 days), for tests that write."""
    migrate(database_url)
    return database_url, seed_fleet(database_url, gateways=4, meters_per_gateway=2, days=4)
