"""The raw archive: every accepted message, compressed, checksummed, in an object store.

The object format and layout are :mod:`gridsight.archive_format`'s: Parquet under Hive-style
``raw/dt=YYYY-MM-DD/gateway={id}/`` partitions (every message, as received), with the same
messages' raw readings flattened beside them under ``readings/dt=.../gateway=.../`` for DuckDB,
Spark, Trino or Athena; objects from before Parquet (``.jsonl.gz``) stay readable. Models live
under ``models/{name}/{version}/`` in the same store (written by model_export).

The :class:`Archiver` drains ``archive_outbox`` (filled in the ingest transaction) group by
group; an object is recorded in ``archive_objects`` and its messages leave the outbox in one
transaction after both uploads succeeded. While the store is down it backs off and retries;
ingest is unaffected because the outbox holds the messages durably in PostgreSQL.
:func:`rebuild` replays ``raw/`` objects of either format through the same batch writer, so it
is idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["ObjectStore", "ArchiveError", "StoreUnavailable", "LocalDirStore", "S3Store", "Archiver",
           "RebuildResult", "archive_key", "encode_object", "decode_object", "rebuild", "open_store"]

log = logging.getLogger("gridsight.collector.archive")

from gridsight.archive_format import (RAW_PREFIX, ArchiveError, ArchivedMessage, LocalDirStore,  # noqa: F401
    ObjectStore, S3Store, StoreUnavailable, archive_key, decode_object, encode_object, encode_readings, key_date,
    key_gateway, open_store, readings_key)


# --------------------------------------------------------------------------- archiver


class Archiver:
    """Drains ``archive_outbox`` into the object store, one (day, gateway) group per object."""

    def __init__(self, dsn: str, store: ObjectStore, *, batch_messages: int = 5000,
                 max_backoff_s: float = 60.0, metrics=None) -> None:
        self.dsn = dsn
        self.store = store
        self.batch_messages = batch_messages
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics
        self.failures = 0
        self.last_error: str | None = None
        self._conn = None

    async def _connection(self):
        from collector.db.writer import connect

        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self.dsn)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def backoff_s(self) -> float:
        """Seconds to wait after ``failures`` consecutive failures: 1, 2, 4 ... capped."""
        return 0.0 if self.failures == 0 else min(self.max_backoff_s, 2.0 ** (self.failures - 1))

    async def pending(self) -> int:
        conn = await self._connection()
        return await conn.fetchval("SELECT count(*) FROM archive_outbox")

    async def drain(self) -> int:
        """Upload everything pending; returns messages archived. Raises StoreUnavailable on outage."""
        total = 0
        while True:
            n = await self.run_once()
            total += n
            if n == 0:
                return total

    async def run_once(self) -> int:
        """Upload the groups among the oldest pending messages; returns messages archived."""
        conn = await self._connection()
        groups = await conn.fetch(
            "SELECT DISTINCT gateway_id, (received_at AT TIME ZONE 'UTC')::date AS day "
            "FROM (SELECT gateway_id, received_at FROM archive_outbox ORDER BY id LIMIT $1) AS head",
            self.batch_messages)
        done = 0
        for group in groups:
            done += await self._archive_group(conn, group["gateway_id"], group["day"])
        if self.metrics is not None:
            self.metrics.set("gridsight_collector_archive_pending", await conn.fetchval("SELECT count(*) FROM archive_outbox"))
        return done

    async def _archive_group(self, conn, gateway_id: str, day: dt.date) -> int:
        start = dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, received_at, seq, topic, payload FROM archive_outbox WHERE gateway_id = $1 "
                "AND received_at >= $2 AND received_at < $3 ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED",
                gateway_id, start, start + 86400, self.batch_messages)
            if not rows:
                return 0
            messages = [ArchivedMessage(r["topic"], r["received_at"], bytes(r["payload"])) for r in rows]
            loop = asyncio.get_running_loop()
            data, sha = await loop.run_in_executor(None, encode_object, messages)
            readings = await loop.run_in_executor(None, encode_readings, messages)
            key = archive_key(day, gateway_id, rows[0]["seq"], rows[-1]["seq"], sha)
            try:
                await loop.run_in_executor(None, self.store.put, key, data, sha)
                if readings is not None:   # keys are content-derived: a retry after a failure here rewrites both
                    await loop.run_in_executor(None, self.store.put, readings_key(key), *readings)
            except ArchiveError as exc:
                self.failures += 1
                self.last_error = str(exc)
                if self.metrics is not None:
                    self.metrics.inc("gridsight_collector_archive_failures_total")
                raise StoreUnavailable(str(exc)) from exc
            await conn.execute(
                "INSERT INTO archive_objects (key, sha256, bytes, messages, gateway_id, dt, first_received_at, "
                "last_received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING",
                key, sha, len(data), len(rows), gateway_id, day,
                min(r["received_at"] for r in rows), max(r["received_at"] for r in rows))
            await conn.execute("DELETE FROM archive_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.failures = 0
        self.last_error = None
        if self.metrics is not None:
            self.metrics.inc("gridsight_collector_archive_objects_total")
        return len(rows)

    async def run(self, stop: threading.Event, interval_s: float = 2.0,
                  maintenance: Callable[[], object] | None = None, maintenance_interval_s: float = 3600.0) -> None:
        """Archive until ``stop`` is set, backing off while the store or database is down."""
        from collector.db.writer import TransientDatabaseError, TRANSIENT_ERRORS

        next_maintenance = 0.0
        while not stop.is_set():
            wait = interval_s
            try:
                if maintenance is not None and time.monotonic() >= next_maintenance:
                    await maintenance(await self._connection())
                    next_maintenance = time.monotonic() + maintenance_interval_s
                await self.drain()
            except StoreUnavailable:
                wait = max(interval_s, self.backoff_s())
            except (TransientDatabaseError, *TRANSIENT_ERRORS):
                await self.close()
                wait = max(interval_s, 2.0)
            except Exception as exc:  # the archiver must outlive any single failure; the outbox keeps the data
                log.warning("archiver pass failed, retrying: %s: %s", type(exc).__name__, exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                await self.close()
                wait = max(interval_s, 5.0)
            await asyncio.get_running_loop().run_in_executor(None, stop.wait, wait)


# --------------------------------------------------------------------------- rebuild


@dataclass
class RebuildResult:
    objects: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    rows: int = 0


async def rebuild(dsn: str, store: ObjectStore, since: dt.date, *, replica: str = "rebuild",
                  batch_messages: int = 500, progress: Callable[[str], None] | None = None) -> RebuildResult:
    """Reload PostgreSQL from the archive objects received on or after ``since``; idempotent."""
    from collector.db.writer import BatchWriter, Received, connect

    writer = BatchWriter(dsn, replica=replica, unknown_gateways="register", archive=False)
    conn = await connect(dsn)
    result = RebuildResult()
    try:
        start_after = f"{RAW_PREFIX}dt={(since - dt.timedelta(days=1)).isoformat()}/~"
        for key in store.list(RAW_PREFIX, start_after=start_after):
            day = key_date(key)
            if day is None or day < since:
                continue
            data = await asyncio.get_running_loop().run_in_executor(None, store.get, key)
            messages = decode_object(key, data)
            if not messages:
                continue
            for i in range(0, len(messages), batch_messages):
                chunk = [Received(m.topic, m.payload, m.received_at) for m in messages[i:i + batch_messages]]
                out = await writer.write(chunk)
                result.messages += out.messages
                result.stored += sum(out.stored.values())
                result.duplicates += out.duplicates
                result.dead_letters += sum(out.dead_letters.values())
                result.rows += sum(v for k, v in out.rows.items() if k in ("readings", "interval_summaries",
                                                                          "anomaly_flags"))
            await conn.execute(
                "INSERT INTO archive_objects (key, sha256, bytes, messages, gateway_id, dt, first_received_at, "
                "last_received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING",
                key, hashlib.sha256(data).hexdigest(), len(data), len(messages), key_gateway(key), day,
                min(m.received_at for m in messages), max(m.received_at for m in messages))
            result.objects += 1
            if progress is not None:
                progress(f"{key}: {len(messages)} messages")
    finally:
        await writer.close()
        await conn.close()
    return result
