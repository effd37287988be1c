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
import pytest

from collector.archive import decode_object
from gridsight import wire
from firmware_sim.fleet_cli import score_run
from firmware_sim.fleet_model import read_manifest

pytestmark = pytest.mark.slow  # make test-fast leaves it out


@pytest.fixture
def demo_run(tmp_path, database_url, mosquitto, s3_bucket):
    endpoint, bucket = s3_bucket
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path), "DATABASE_URL": database_url,
           "MQTT_URL": mosquitto.url, "S3_ENDPOINT_URL": endpoint, "S3_BUCKET": bucket,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    work = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "gridsight", "demo", "--gateways", "2", "--meters-per-gateway", "3",
                          "--seconds", "40", "--work-dir", str(work)],
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
    score, _ = score_run(work / "labels.csv", work / "run.json", database_url)
    c = score.completeness
    assert c.produced >= 6 * 60 * 60          # six meters, at least 60 simulated hours of minute readings
    assert c.stored == c.produced, f"missing readings: {c.missing_by_meter}"
    assert c.duplicates == 0
    fleet, run_start, run_end, manifest = read_manifest(work / "run.json")
    readings, summaries, dead = asyncio.run(_stored(database_url))
    assert dead == 0

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

    # every meter has a summary for every interval of the scored window
    by_meter: dict[str, set[float]] = defaultdict(set)
    for s in summaries:
        by_meter[s["meter_id"]].add(s["start"])
    expected = {run_start + i * 900.0 for i in range(int((run_end - run_start) // 900))}
    assert len(by_meter) == 6
    for meter_id, starts in by_meter.items():
        assert expected <= starts, f"{meter_id}: intervals without a summary"
    assert "anomaly flags" in res.stdout and "completeness" in res.stdout
