"""The whole path through real parts: simulator -> agents -> Mosquitto -> collector -> PostgreSQL + S3.

Runs the README's demo command against the suite's own throwaway PostgreSQL, Mosquitto and
S3-protocol server, then accounts for every reading the simulated meters handed over.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict

import asyncpg
import boto3
import numpy as np
import pytest

from collector.archive import decode_object
from edge_agent import wire
from firmware_sim.fleet_model import read_manifest


@pytest.fixture
def demo_run(tmp_path, database_url, mosquitto, s3_bucket):
    endpoint, bucket = s3_bucket
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path), "DATABASE_URL": database_url,
           "MQTT_URL": mosquitto.url, "S3_ENDPOINT_URL": endpoint, "S3_BUCKET": bucket,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    work = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "gridsight", "demo", "--gateways", "2", "--meters-per-gateway", "3",
                          "--seconds", "20", "--work-dir", str(work)],
                         env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res, work, database_url, endpoint, bucket


async def _stored(database_url: str):
    conn = await asyncpg.connect(database_url)
    try:
        readings = await conn.fetch("SELECT meter_id, extract(epoch FROM ts)::float8 AS ts FROM readings")
        summaries = await conn.fetch(
            "SELECT meter_id, extract(epoch FROM interval_start)::float8 AS start FROM interval_summaries")
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        return readings, summaries, dead
    finally:
        await conn.close()


def test_every_simulated_reading_reaches_postgresql_and_the_s3_archive_exactly_once(demo_run):
    res, work, database_url, endpoint, bucket = demo_run
    fleet, run_start, run_end, _ = read_manifest(work / "manifest.json")
    produced = fleet.handed_over(run_start, run_end)
    readings, summaries, dead = asyncio.run(_stored(database_url))

    stored: dict[str, list[float]] = defaultdict(list)
    for r in readings:
        stored[r["meter_id"]].append(r["ts"])
    assert set(stored) == set(produced)
    assert dead == 0
    # Each agent was stopped at its own moment: its meters count up to the gateway's last reading.
    gateway_end: dict[str, float] = defaultdict(float)
    for meter_id, ts in stored.items():
        gw = meter_id.rsplit("-m", 1)[0]
        gateway_end[gw] = max(gateway_end[gw], max(ts))
    handed_over = {gw: fleet.handed_over(run_start, end) for gw, end in gateway_end.items()}
    for meter_id in produced:
        want = np.sort(handed_over[meter_id.rsplit("-m", 1)[0]][meter_id])
        got = np.sort(np.array(stored[meter_id]))
        assert len(got) == len(np.unique(got)), f"{meter_id}: a reading was stored twice"
        assert len(got) == len(want) and np.allclose(got, want), f"{meter_id}: readings missing"
    assert sum(len(v) for v in produced.values()) > 6 * 20 * 60  # the run really covered simulated hours

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    archived: set[tuple[str, float]] = set()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/")
            for o in page.get("Contents", [])]
    assert keys and all(k.startswith("raw/dt=") and "/gateway=gw-" in k for k in keys)
    for key in keys:
        for msg in decode_object(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read()):
            decoded = wire.decode(msg.topic, msg.payload)
            if isinstance(decoded, wire.RawChunk):
                archived.update((r.meter_id, r.ts) for r in decoded.readings)
    assert archived == {(r["meter_id"], r["ts"]) for r in readings}

    # every meter has a summary for each interval its agent closed (end + the demo's 120 s grace
    # before the agent's last reading); still-open intervals are summarised after a restart
    by_meter: dict[str, set[float]] = defaultdict(set)
    for s in summaries:
        by_meter[s["meter_id"]].add(s["start"])
    for meter_id, ts in stored.items():
        end = gateway_end[meter_id.rsplit("-m", 1)[0]]
        closed = {float(t // 900 * 900) for t in ts if t // 900 * 900 + 900 + 120 <= end}
        assert len(closed) > 20
        assert closed <= by_meter[meter_id], f"{meter_id}: closed intervals without a summary"
    assert "what arrived" in res.stdout and "anomaly flags" in res.stdout
