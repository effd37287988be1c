"""The raw archive: object stores, the outbox-draining archiver through an S3 outage, and rebuilds."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time

import boto3
import pytest

from gridsight.local_services import LocalS3Server

from collector.archive import (ArchiveError, Archiver, LocalDirStore, S3Store, StoreUnavailable, decode_object,
                               rebuild)
from collector.db import migrate
from collector.db.writer import BatchWriter, Received
from collector_kit import flag, message, raw_chunk, scalar, sql, summary, wait_until


def _store_messages(url: str, count: int) -> None:
    async def go():
        writer = BatchWriter(url, unknown_gateways="register")
        items = []
        for s in range(1, count + 1):
            msg = [raw_chunk, summary, flag][s % 3](f"gw-{s % 2}", s)
            items.append(Received(*message(msg), time.time()))
        await writer.write(items)
        await writer.close()
    asyncio.run(go())


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_objects_round_trip_and_corruption_is_detected(kind, tmp_path, s3_bucket):
    store = LocalDirStore(tmp_path / "a") if kind == "local" else S3Store(*s3_bucket)
    data = b"gzip bytes"
    store.put("raw/dt=2026-01-02/gateway=gw-1/1-2-abc.jsonl.gz", data, hashlib.sha256(data).hexdigest())
    store.put("raw/dt=2026-01-01/gateway=gw-1/1-2-abc.jsonl.gz", data, "0" * 64)

    assert list(store.list("raw/")) == ["raw/dt=2026-01-01/gateway=gw-1/1-2-abc.jsonl.gz",
                                        "raw/dt=2026-01-02/gateway=gw-1/1-2-abc.jsonl.gz"]
    assert list(store.list("raw/", start_after="raw/dt=2026-01-01/~")) == [
        "raw/dt=2026-01-02/gateway=gw-1/1-2-abc.jsonl.gz"]
    assert store.get("raw/dt=2026-01-02/gateway=gw-1/1-2-abc.jsonl.gz") == data
    with pytest.raises(ArchiveError, match="checksum"):
        store.get("raw/dt=2026-01-01/gateway=gw-1/1-2-abc.jsonl.gz")
    with pytest.raises(ArchiveError, match="missing"):
        store.get("raw/dt=2026-01-03/gateway=gw-1/nope.jsonl.gz")


@pytest.mark.slow
def test_archive_catches_up_after_the_s3_endpoint_comes_back(tmp_path, collector_db):
    server = LocalS3Server().start()
    bucket = "gridsight-outage"

    def create_bucket() -> None:
        boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1").create_bucket(Bucket=bucket)

    async def scenario() -> None:
        archiver = Archiver(collector_db, S3Store(server.endpoint_url, bucket), batch_messages=50)
        try:
            await _write(collector_db, [raw_chunk("gw-1", s) for s in range(1, 31)])
            assert await archiver.drain() == 30

            server.stop()
            await _write(collector_db, [raw_chunk("gw-1", s) for s in range(100, 160)])
            with pytest.raises(StoreUnavailable):
                await archiver.drain()
            assert archiver.backoff_s() >= 1
            assert scalar(collector_db, "SELECT count(*) FROM archive_outbox") == 60

            server.start()  # same port; moto forgot the bucket, as a recreated bucket would be empty
            create_bucket()
            assert await archiver.drain() == 60
        finally:
            await archiver.close()

    try:
        create_bucket()
        asyncio.run(scenario())
        assert scalar(collector_db, "SELECT count(*) FROM archive_outbox") == 0
        store = S3Store(server.endpoint_url, bucket)
        seqs = sorted(int(m.payload.split(b'"seq":')[1].split(b",")[0])
                      for key in store.list("raw/") for m in decode_object(key, store.get(key)))
        assert seqs == list(range(100, 160))
    finally:
        server.stop()


async def _write(url: str, msgs) -> None:
    writer = BatchWriter(url, unknown_gateways="register")
    await writer.write([Received(*message(m), time.time()) for m in msgs])
    await writer.close()


def _fact_counts(url: str) -> tuple:
    return tuple(scalar(url, f"SELECT count(*) FROM {t}") for t in
                 ("readings", "interval_summaries", "anomaly_flags", "ingest_log", "meters", "gateways")) + (
        round(scalar(url, "SELECT coalesce(sum(kwh), 0) FROM readings_daily"), 6),)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_rebuild_from_the_archive_restores_the_database_and_is_idempotent(kind, tmp_path, postgres_server,
                                                                          collector_db, s3_bucket):
    store = LocalDirStore(tmp_path / "archive") if kind == "local" else S3Store(*s3_bucket)
    _store_messages(collector_db, 45)

    async def archive() -> None:
        archiver = Archiver(collector_db, store)
        await archiver.drain()
        await archiver.close()
    asyncio.run(archive())
    before = _fact_counts(collector_db)

    fresh = postgres_server.dsn("postgres").rsplit("/", 1)[0] + f"/rebuilt_{kind}_{int(time.time() * 1000) % 10**9}"
    sql(postgres_server.dsn("postgres"), f'CREATE DATABASE "{fresh.rsplit("/", 1)[1]}"')
    try:
        migrate(fresh)
        today = dt.datetime.now(dt.timezone.utc).date()
        first = asyncio.run(rebuild(fresh, store, today - dt.timedelta(days=1)))
        second = asyncio.run(rebuild(fresh, store, today - dt.timedelta(days=1)))

        assert _fact_counts(fresh) == before
        assert first.stored == 45 and first.duplicates == 0
        assert second.stored == 0 and second.duplicates == 45
        assert scalar(fresh, "SELECT count(*) FROM archive_outbox") == 0
        skipped = asyncio.run(rebuild(fresh, store, today + dt.timedelta(days=1)))
        assert skipped.objects == 0
    finally:
        sql(postgres_server.dsn("postgres"), f'DROP DATABASE IF EXISTS "{fresh.rsplit("/", 1)[1]}" WITH (FORCE)')
