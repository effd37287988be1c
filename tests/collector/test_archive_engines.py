"""The raw archive as other engines see it: Parquet under Hive-style dt=/gateway= partitions,
flattened readings beside the messages, the documented DuckDB query over a year of objects, and
rebuilds from Parquet and from the older JSONL.gz objects alike."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from collector.archive import Archiver, LocalDirStore, decode_object, rebuild
from collector.db.writer import BatchWriter, Received
from collector_kit import message, raw_chunk, scalar, summary
from gridsight.archive_format import (JSONL_GZ, ArchivedMessage, archive_key, encode_object, encode_readings,
                                      readings_key)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "collector.md"


def _documented_query() -> str:
    text = DOCS.read_text()
    block = text.split("<!-- duckdb-query -->", 1)[1].split("<!-- /duckdb-query -->", 1)[0]
    return re.search(r"```sql\n(.*?)```", block, re.S).group(1)


def _archived(msg, received_at: float) -> ArchivedMessage:
    topic, payload = message(msg)
    return ArchivedMessage(topic, received_at, payload)


def _put(store: LocalDirStore, day: dt.date, gateway: str, messages: list[ArchivedMessage], seq: int) -> str:
    data, sha = encode_object(messages)
    key = archive_key(day, gateway, seq, seq + len(messages) - 1, sha)
    store.put(key, data, sha)
    store.put(readings_key(key), *encode_readings(messages))
    return key


def test_archiver_writes_parquet_messages_and_flat_readings_under_hive_partitions(tmp_path, collector_db):
    store = LocalDirStore(tmp_path / "archive")
    chunks = [raw_chunk("gw-1", s, per_meter=5) for s in range(1, 4)] + [summary("gw-1", 10)]

    async def go():
        writer = BatchWriter(collector_db, unknown_gateways="register")
        await writer.write([Received(*message(m), time.time()) for m in chunks])
        await writer.close()
        archiver = Archiver(collector_db, store)
        assert await archiver.drain() == 4
        await archiver.close()
    asyncio.run(go())

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    [raw] = list(store.list("raw/"))
    [flat] = list(store.list("readings/"))
    assert raw.startswith(f"raw/dt={today}/gateway=gw-1/") and raw.endswith(".parquet")
    assert flat == "readings/" + raw[len("raw/"):]
    messages = pq.read_table(tmp_path / "archive" / raw)
    assert sorted(messages.column("kind").to_pylist()) == ["raw", "raw", "raw", "summary"]
    assert "gateway" not in messages.column_names and "dt" not in messages.column_names  # partition columns
    readings = pq.read_table(tmp_path / "archive" / flat).to_pylist()
    assert len(readings) == 3 * 4 * 5
    first = min(readings, key=lambda r: (r["meter_id"], r["ts"]))
    assert first["meter_id"] == "gw-1-m0" and first["voltage_v"] == 230.0 and first["seq"] == 1
    assert [m.payload for m in decode_object(raw, store.get(raw))] == [message(m)[1] for m in chunks]


@pytest.mark.slow
def test_documented_duckdb_query_reads_a_year_of_archive_objects(tmp_path, monkeypatch):
    duckdb = pytest.importorskip("duckdb", reason="pip install duckdb (in the dev extra)")
    store = LocalDirStore(tmp_path / "archive")
    day0 = dt.date(2025, 1, 1)
    expected = {}
    for d in range(365):
        day = day0 + dt.timedelta(days=d)
        t0 = dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()
        for g in ("gw-a", "gw-b"):
            chunk = raw_chunk(g, d + 1, meters=2, per_meter=24, start=t0, step=3600.0)
            topic, payload = message(chunk)
            _put(store, day, g, [ArchivedMessage(topic, t0 + 86000, payload)], d + 1)
            for m in range(2):
                rows = [r for r in chunk.readings if r.meter_id == f"{g}-m{m}"]
                expected[(g, f"{g}-m{m}", day)] = (round(rows[-1].energy_kwh - rows[0].energy_kwh, 9), 24)
    # a day outside the documented year must not count
    _put(store, dt.date(2026, 1, 1), "gw-a", [_archived(raw_chunk("gw-a", 999, meters=1), 0.0)], 999)
    monkeypatch.chdir(tmp_path)   # the query names the archive relative to the data directory
    rows = duckdb.sql(_documented_query()).fetchall()
    assert len(rows) == 2 * 2 * 365
    got = {(g, m, day if isinstance(day, dt.date) else dt.date.fromisoformat(day)): (round(kwh, 9), n)
           for g, m, day, kwh, _, _, n in rows}
    assert got == expected
    assert {r[5] for r in rows} == {230.0}


def test_rebuild_replays_new_parquet_and_old_jsonl_objects_alike(tmp_path, postgres_server, collector_db):
    store = LocalDirStore(tmp_path / "archive")
    today = dt.datetime.now(dt.timezone.utc).date()
    now = time.time()
    old = [_archived(raw_chunk("gw-1", s, per_meter=3), now) for s in (1, 2)]
    new = [_archived(raw_chunk("gw-1", s, per_meter=3), now) for s in (3, 4)]
    data, sha = encode_object(old, JSONL_GZ)
    store.put(archive_key(today, "gw-1", 1, 2, sha, JSONL_GZ), data, sha)
    _put(store, today, "gw-1", new, 3)
    assert sorted(k.rsplit(".", 2)[-2:][-1] for k in store.list("raw/")) == ["gz", "parquet"]

    result = asyncio.run(rebuild(collector_db, store, today))
    again = asyncio.run(rebuild(collector_db, store, today))
    assert result.objects == 2 and result.stored == 4
    assert again.stored == 0 and again.duplicates == 4
    assert scalar(collector_db, "SELECT count(*) FROM readings") == 4 * 4 * 3
