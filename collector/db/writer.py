"""The batch writer: one transaction per batch of MQTT messages, exactly-once by (gateway_id, epoch, seq).

Why it looks like this:
- The dedupe key goes in first (`INSERT INTO ingest_log ... ON CONFLICT DO NOTHING RETURNING`),
  so only messages new to the database contribute rows, and a redelivery after a crash stores
  nothing twice. Concurrent replicas inserting the same key serialise on the primary key.
- The key is (gateway, outbox epoch, seq) and ingest_log keeps each message's content digest:
  a key already stored with the same digest is a duplicate (acked, counted); with another
  digest it is a conflict, dead-lettered as ``seq_conflict`` with its full payload and a log
  line, never dropped. A gateway's first message in a new epoch (a wiped data directory) is
  recorded in ``gateway_epochs`` and logged with where the previous epoch ended.
- A replayed dead letter (``Received.replay_of``) whose key is taken by other content is
  stored under its own replay key, epoch ``{epoch}~replay{dead letter id}``, so replaying it
  twice is a duplicate and the message that holds the original key stays as it is.
- Facts go in with COPY (asyncpg's binary protocol), the fastest way into PostgreSQL.
- Rollups, meters and gateways are updated in the same transaction, last and in key order, so
  row locks shared between replicas are held briefly and deadlocks are rare (and retried).
  Meters go before the rollups, because a region's rollup (``region_rollups``) follows the
  meter to its region; the per-meter upserts return their new counts, which tell whether a
  meter is new to an hour, a day or a quarter hour (the region's ``meters``).
- Accepted messages are copied to `archive_outbox` in the same transaction: once the batch
  commits, every message is durably in PostgreSQL and queued for the object store, which is the
  moment the ingest worker may acknowledge it to the broker.
- Bad input never blocks a batch: decode errors become dead letters, and a message PostgreSQL
  refuses (a NUL character in text, say) is isolated and dead-lettered with the database's reason.

On the writer's connection `timestamptz` travels as float Unix seconds (a tuple codec), which
spares building a datetime per reading on the hot path.
"""

from __future__ import annotations

import calendar
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import asyncpg

from gridsight import wire
from gridsight.errors import GridsightError

__all__ = ["Received", "DeadLetter", "BatchResult", "BatchWriter", "PreparedBatch", "TransientDatabaseError",
           "classify", "connect", "PG_EPOCH"]

log = logging.getLogger("gridsight.collector.writer")

PG_EPOCH = 946_684_800  # 2000-01-01T00:00:00Z, PostgreSQL's timestamp origin
QUARTER, HOUR, DAY = 900, 3600, 86400
_GATEWAY_CACHE_S = 30.0
DEAD_PAYLOAD_LIMIT = wire.MAX_PAYLOAD_BYTES + 1


@dataclass(frozen=True, slots=True)
class Received:
    """One message as it came off the broker; ``mid``/``generation`` let the worker ack it later."""

    topic: str
    payload: bytes
    received_at: float
    mid: int = 0
    qos: int = 0
    generation: int = 0
    replay_of: int | None = None    # the dead letter this message is replayed from


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    gateway_id: str | None
    reason: str
    field: str | None
    payload: bytes
    received_at: float
    size: int = -1          # original payload size; payload itself may be truncated

    @property
    def payload_bytes(self) -> int:
        return self.size if self.size >= 0 else len(self.payload)


@dataclass
class BatchResult:
    """What a batch did; the worker turns it into metrics and acks."""

    messages: int = 0
    stored: Counter = field(default_factory=Counter)        # kind -> messages newly stored
    duplicates: int = 0
    dead_letters: Counter = field(default_factory=Counter)  # reason -> count
    rows: Counter = field(default_factory=Counter)          # table -> rows written
    new_epochs: list[dict] = field(default_factory=list)    # gateways that started a new outbox
    replayed_under: list[str] = field(default_factory=list) # replay keys used for taken keys

    def merge(self, other: "BatchResult") -> None:
        self.messages += other.messages
        self.stored.update(other.stored)
        self.duplicates += other.duplicates
        self.dead_letters.update(other.dead_letters)
        self.rows.update(other.rows)
        self.new_epochs.extend(other.new_epochs)
        self.replayed_under.extend(other.replayed_under)


class TransientDatabaseError(GridsightError, RuntimeError):
    """The database is unreachable or the transaction lost a race; retry the same batch later."""

    exit_code = 1


def classify(item: Received) -> wire.Message | DeadLetter:
    """Decode through the wire contract, or say why the message is a dead letter."""
    try:
        return wire.decode(item.topic, item.payload)
    except wire.WireError as exc:
        reason, field_name = _reason(exc, len(item.payload)), exc.field
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # the contract should raise WireError for any bad input; never let one message stop ingest
        reason, field_name = "malformed", f"{type(exc).__name__}: {str(exc)[:100]}"
    payload = bytes(item.payload[:DEAD_PAYLOAD_LIMIT])
    return DeadLetter(item.topic, _topic_gateway(item.topic), reason, field_name, payload, item.received_at,
                      len(item.payload))


def _reason(exc: wire.WireError, size: int) -> str:
    if exc.field == "topic":
        return "bad_topic"
    if exc.field == "v":
        return "bad_version"
    if exc.field in ("gateway_id", "kind") and "topic says" in exc.reason:
        return "topic_mismatch"
    if size > wire.MAX_PAYLOAD_BYTES or "inflates beyond" in exc.reason:
        return "oversized"
    return "malformed"


def _ts_encode(value: float) -> tuple[int]:
    return (round((value - PG_EPOCH) * 1_000_000),)


def _ts_decode(value: tuple[int]) -> float:
    return value[0] / 1_000_000 + PG_EPOCH


async def connect(dsn: str, timeout: float = 10.0) -> asyncpg.Connection:
    """A writer connection: float-seconds timestamptz codec, no statement timeout surprises."""
    conn = await asyncpg.connect(dsn, timeout=timeout)
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_ts_encode,
                              decoder=_ts_decode, format="tuple")
    return conn


TRANSIENT_ERRORS = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError,
              TimeoutError, asyncpg.exceptions.DeadlockDetectedError,
              asyncpg.exceptions.SerializationError, asyncpg.exceptions.OperatorInterventionError,
              asyncpg.exceptions.TooManyConnectionsError, asyncpg.exceptions.CannotConnectNowError,
              asyncpg.exceptions.LockNotAvailableError)

_READING_COLS = ("meter_id", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "power_factor",
                 "gateway_id", "seq")
# readings layout 2 (migration 0006): written only by batches that carry any of these values
_READING_EXT_COLS = _READING_COLS + wire.READING_EXTENSIONS
_SUMMARY_COLS = ("meter_id", "interval_start", "interval_s", "kwh", "readings", "power_w_mean",
                 "power_w_max", "score", "anomalous", "model_version", "gateway_id", "seq", "received_at",
                 "export_kwh")
_FLAG_COLS = ("meter_id", "interval_start", "interval_s", "score", "threshold", "kwh", "features", "reason",
              "model_version", "gateway_id", "seq", "sent_at", "received_at")
_DEAD_COLS = ("received_at", "topic", "gateway_id", "reason", "field", "payload", "payload_bytes", "replica")
_OUTBOX_COLS = ("received_at", "gateway_id", "seq", "kind", "topic", "payload")
_PARTITIONED = {"readings": "ts", "interval_summaries": "interval_start", "anomaly_flags": "interval_start"}

_ROLLUP_SQL = """
INSERT INTO {table} AS r (meter_id, bucket, kwh, intervals, readings, power_w_sum, power_w_n,
                          power_w_max, anomalous_intervals, {extra}updated_at)
SELECT u.*, now() FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::int[], $5::int[],
                              $6::float8[], $7::int[], $8::float8[], $9::int[]{extra_arg}) AS u
ON CONFLICT (meter_id, bucket) DO UPDATE SET
    kwh = r.kwh + EXCLUDED.kwh, intervals = r.intervals + EXCLUDED.intervals,
    readings = r.readings + EXCLUDED.readings, power_w_sum = r.power_w_sum + EXCLUDED.power_w_sum,
    power_w_n = r.power_w_n + EXCLUDED.power_w_n,
    power_w_max = GREATEST(r.power_w_max, EXCLUDED.power_w_max),
    anomalous_intervals = r.anomalous_intervals + EXCLUDED.anomalous_intervals, {extra_set}updated_at = now()
RETURNING meter_id, bucket, intervals{extra_ret}
"""
_HOURLY_SQL = _ROLLUP_SQL.format(table="readings_hourly", extra="quarters, ", extra_arg=", $10::int8[]",
                                 extra_set="quarters = r.quarters + EXCLUDED.quarters, ", extra_ret=", quarters")
_DAILY_SQL = _ROLLUP_SQL.format(table="readings_daily", extra="", extra_arg="", extra_set="", extra_ret="")
_QUARTER_BITS = 16            # readings_hourly.quarters: one 16-bit counter per quarter of the hour
_QUARTER_MASK = (1 << _QUARTER_BITS) - 1

# A region's share of the batch, by the region each meter is in now (see migration 0005)
_REGION_SQL = """
INSERT INTO region_rollups AS r (region_id, bucket_s, bucket, kwh, intervals, readings, power_w_sum, power_w_n,
                                 power_w_max, anomalous_intervals, meters, updated_at)
SELECT s.region_id, u.bucket_s, u.bucket, sum(u.kwh), sum(u.intervals), sum(u.readings), sum(u.p_sum), sum(u.p_n),
       max(u.p_max), sum(u.anomalous), sum(u.fresh), now()
FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::float8[], $5::int[], $6::int[], $7::float8[], $8::int[],
            $9::float8[], $10::int[], $11::int[])
     AS u(meter_id, bucket_s, bucket, kwh, intervals, readings, p_sum, p_n, p_max, anomalous, fresh)
JOIN meters m ON m.id = u.meter_id
LEFT JOIN gateways g ON g.id = m.gateway_id
JOIN sites s ON s.id = COALESCE(m.site_id, g.site_id)
WHERE s.region_id IS NOT NULL
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (region_id, bucket_s, bucket) DO UPDATE SET
    kwh = r.kwh + EXCLUDED.kwh, intervals = r.intervals + EXCLUDED.intervals,
    readings = r.readings + EXCLUDED.readings, power_w_sum = r.power_w_sum + EXCLUDED.power_w_sum,
    power_w_n = r.power_w_n + EXCLUDED.power_w_n, power_w_max = GREATEST(r.power_w_max, EXCLUDED.power_w_max),
    anomalous_intervals = r.anomalous_intervals + EXCLUDED.anomalous_intervals, meters = r.meters + EXCLUDED.meters,
    updated_at = now()
"""

_METERS_SQL = """
INSERT INTO meters AS m (id, gateway_id, site_id, first_seen_at, last_seen_at, last_interval_start, last_reading_ts)
SELECT u.id, u.gw, g.site_id, u.seen, u.seen, u.li, u.lr
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[]) AS u(id, gw, seen, li, lr)
LEFT JOIN gateways g ON g.id = u.gw
ORDER BY u.id
ON CONFLICT (id) DO UPDATE SET
    gateway_id = COALESCE(m.gateway_id, EXCLUDED.gateway_id),   -- ingest never re-homes a meter
    last_seen_at = GREATEST(m.last_seen_at, EXCLUDED.last_seen_at),
    last_interval_start = GREATEST(m.last_interval_start, EXCLUDED.last_interval_start),
    last_reading_ts = GREATEST(m.last_reading_ts, EXCLUDED.last_reading_ts)
"""

_EPOCHS_SQL = """
INSERT INTO gateway_epochs AS e (gateway_id, epoch, first_seq, last_seq, messages, first_sent_at,
                                 first_received_at, last_received_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[],
                     $7::timestamptz[], $8::timestamptz[])
ON CONFLICT (gateway_id, epoch) DO UPDATE SET
    first_seq = LEAST(e.first_seq, EXCLUDED.first_seq), last_seq = GREATEST(e.last_seq, EXCLUDED.last_seq),
    messages = e.messages + EXCLUDED.messages, first_sent_at = LEAST(e.first_sent_at, EXCLUDED.first_sent_at),
    last_received_at = GREATEST(e.last_received_at, EXCLUDED.last_received_at)
RETURNING gateway_id, epoch, (xmax = 0) AS inserted
"""

# A gateway's newly seen epoch becomes its current one unless it is older (by send time) than
# the current one (a late backlog of an epoch never seen before must not hide the live one).
_NEW_EPOCH_SQL = """
WITH u AS (SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int[])
           AS u(id, epoch, sent, received, n)),
prev AS (SELECT g.id, g.epoch AS epoch, pe.last_seq, pe.first_sent_at, pe.last_received_at
         FROM gateways g JOIN u ON u.id = g.id
         LEFT JOIN gateway_epochs pe ON pe.gateway_id = g.id AND pe.epoch = g.epoch)
UPDATE gateways g SET
    epoch = CASE WHEN prev.first_sent_at IS NULL OR u.sent >= prev.first_sent_at THEN u.epoch ELSE g.epoch END,
    epoch_started_at = CASE WHEN prev.first_sent_at IS NULL OR u.sent >= prev.first_sent_at
                            THEN u.received ELSE g.epoch_started_at END,
    epochs = g.epochs + u.n
FROM u JOIN prev ON prev.id = u.id
WHERE g.id = u.id
RETURNING g.id, u.epoch, u.received, prev.epoch AS prev_epoch, prev.last_seq AS prev_last_seq,
          prev.last_received_at AS prev_last_received, g.epoch = u.epoch AS current
"""

_GATEWAYS_SQL = """
UPDATE gateways g SET last_seen_at = GREATEST(g.last_seen_at, u.seen),
    last_seq = COALESCE((SELECT e.last_seq FROM gateway_epochs e WHERE e.gateway_id = g.id AND e.epoch = g.epoch),
                        GREATEST(g.last_seq, u.seq)),
    model_version = COALESCE(u.mv, g.model_version), skew_s = u.skew
FROM (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::text[], $5::float8[])
      AS x(id, seen, seq, mv, skew) ORDER BY id) AS u
WHERE g.id = u.id
"""

_STATUS_SQL = """
UPDATE gateways g SET online = u.online, status_at = u.sent, uptime_s = u.uptime, queue_depth = u.depth,
    clock_synced = u.synced, clock_offset_s = u.offset_s, agent_version = COALESCE(u.agent, g.agent_version)
FROM unnest($1::text[], $2::timestamptz[], $3::bool[], $4::float8[], $5::bigint[], $6::bool[], $7::float8[],
            $8::text[]) AS u(id, sent, online, uptime, depth, synced, offset_s, agent)
WHERE g.id = u.id AND (g.status_at IS NULL OR g.status_at <= u.sent)
"""


class _Rollup:
    __slots__ = ("kwh", "intervals", "readings", "p_sum", "p_n", "p_max", "anomalous", "quarters")

    def __init__(self) -> None:
        self.kwh = 0.0
        self.intervals = self.readings = self.p_n = self.anomalous = self.quarters = 0
        self.p_sum = 0.0
        self.p_max: float | None = None

    def add(self, m: wire.MeterSummary, quarter: int = 0) -> None:
        self.quarters += 1 << (_QUARTER_BITS * quarter)
        self.kwh += m.kwh
        self.intervals += 1
        self.readings += m.readings
        if m.power_w_mean is not None:
            self.p_sum += m.power_w_mean
            self.p_n += 1
        if m.power_w_max is not None:
            self.p_max = m.power_w_max if self.p_max is None else max(self.p_max, m.power_w_max)
        if m.anomalous:
            self.anomalous += 1


@dataclass(slots=True)
class _Entry:
    """One decoded message with every row it would write, computed before the transaction."""

    item: Received
    msg: wire.Message
    digest: bytes = b""
    epoch_key: str = ""          # '' = the legacy epoch; a replay key for a replayed conflict
    readings: list[tuple] = field(default_factory=list)
    extended: bool = False  # readings carry layout-2 values (tuples then have _READING_EXT_COLS)
    summaries: list[tuple] = field(default_factory=list)
    flag: tuple | None = None
    meters: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # id -> (interval, reading)
    months: dict[str, tuple[float, float]] = field(default_factory=dict)                # table -> (min ts, max ts)


@dataclass
class PreparedBatch:
    """A batch decoded and turned into rows (pure CPU, no database): see :meth:`BatchWriter.prepare`."""

    items: list[Received]
    entries: list[_Entry]
    dead: list[DeadLetter]
    duplicates: int


def _entry(item: Received, msg: wire.Message) -> _Entry:
    entry = _Entry(item, msg, wire.content_digest(msg), msg.epoch or "")
    gw, seq, received = msg.gateway_id, msg.seq, item.received_at
    if isinstance(msg, wire.RawChunk):
        ext = wire.READING_EXTENSIONS
        entry.extended = wire.reading_extensions_used(msg.readings)
        if entry.extended:
            entry.readings = [(r.meter_id, r.ts, r.energy_kwh, r.power_w, r.voltage_v, r.current_a, r.power_factor,
                               gw, seq, *(getattr(r, c) for c in ext)) for r in msg.readings]
        else:
            entry.readings = [(r.meter_id, r.ts, r.energy_kwh, r.power_w, r.voltage_v, r.current_a, r.power_factor,
                               gw, seq) for r in msg.readings]
        latest: dict[str, float] = {}
        lo = hi = msg.readings[0].ts
        for r in msg.readings:
            ts = r.ts
            if ts < lo:
                lo = ts
            elif ts > hi:
                hi = ts
            if latest.get(r.meter_id, 0.0) < ts:
                latest[r.meter_id] = ts
        entry.meters = {m: (None, ts) for m, ts in latest.items()}
        entry.months["readings"] = (lo, hi)
    elif isinstance(msg, wire.IntervalSummary):
        start = msg.interval_start
        entry.summaries = [(m.meter_id, start, msg.interval_s, m.kwh, m.readings, m.power_w_mean, m.power_w_max,
                            m.score, m.anomalous, msg.model_version, gw, seq, received, m.export_kwh)
                           for m in msg.meters]
        entry.meters = {m.meter_id: (start, None) for m in msg.meters}
        entry.months["interval_summaries"] = (start, start)
    elif isinstance(msg, wire.AnomalyFlag):
        entry.flag = (msg.meter_id, msg.interval_start, msg.interval_s, msg.score, msg.threshold, msg.kwh,
                      json.dumps(msg.features), msg.reason, msg.model_version, gw, seq, msg.sent_at, received)
        entry.meters = {msg.meter_id: (None, None)}
        entry.months["anomaly_flags"] = (msg.interval_start, msg.interval_start)
    return entry


class BatchWriter:
    """Writes batches of received messages to PostgreSQL. One instance owns one connection.

    ``unknown_gateways``: "register" adds a first-seen gateway (auto_registered=true); "refuse"
    dead-letters its messages. A message naming a meter the registry binds to another gateway is
    dead-lettered as ``meter_not_owned``; a meter nobody owns yet is bound to the first gateway
    that reports it, and only the registry moves it afterwards. ``archive=False`` (rebuilds from the archive) skips the outbox.
    :meth:`prepare` (decode, rows) and :meth:`store` (one transaction) are separate so the
    ingest worker can prepare the next batch on another thread while this one commits.
    """

    def __init__(self, dsn: str, *, replica: str = "collector", unknown_gateways: str = "refuse",
                 archive: bool = True, record_dead_letters: bool = True) -> None:
        self.dsn = dsn
        self.replica = replica
        self.unknown_gateways = unknown_gateways
        self.archive = archive
        # False when replaying dead letters: a refusal is reported, not dead-lettered a second time
        self.record_dead_letters = record_dead_letters
        self._conn: asyncpg.Connection | None = None
        self._gateways: dict[str, str] = {}
        self._gateways_loaded_at = 0.0
        self._owners: dict[str, str | None] = {}       # meter id -> gateway bound to it (None: nobody yet)
        self._models: set[str] = set()
        self._partitions: set[tuple[str, int]] = set()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                self._conn = await connect(self.dsn)
            except TRANSIENT_ERRORS as exc:
                raise TransientDatabaseError(f"cannot connect: {exc}") from exc
        return self._conn

    @staticmethod
    def prepare(batch: Sequence[Received]) -> PreparedBatch:
        """Decode through the wire contract and compute every row; thread-safe, touches no database."""
        entries: list[_Entry] = []
        dead: list[DeadLetter] = []
        seen: dict[tuple[str, str, int], bytes] = {}
        duplicates = 0
        for item in batch:
            out = classify(item)
            if isinstance(out, DeadLetter):
                dead.append(out)
                continue
            entry = _entry(item, out)
            key = (out.gateway_id, entry.epoch_key, out.seq)
            first = seen.get(key)
            if first is not None:    # the same key twice in one batch: keep the first
                if first == entry.digest:
                    duplicates += 1
                else:
                    dead.append(_conflict(entry, "an earlier message of the same batch"))
                continue
            seen[key] = entry.digest
            entries.append(entry)
        return PreparedBatch(list(batch), entries, dead, duplicates)

    async def write(self, batch: Sequence[Received]) -> BatchResult:
        """Prepare and store a batch in one transaction. Raises TransientDatabaseError to retry."""
        return await self.store(self.prepare(batch))

    async def store(self, prepared: PreparedBatch) -> BatchResult:
        """Store a prepared batch in one transaction. Raises TransientDatabaseError to retry."""
        try:
            conn = await self._connection()
            try:
                return await self._store(conn, prepared.entries, list(prepared.dead), len(prepared.items),
                                         prepared.duplicates)
            except BaseException:
                self._owners.clear()       # meters this batch claimed were not stored
                raise
        except TransientDatabaseError:
            await self._drop_connection()
            raise
        except TRANSIENT_ERRORS as exc:
            await self._drop_connection()
            raise TransientDatabaseError(str(exc)) from exc
        except asyncpg.PostgresError:
            if len(prepared.items) == 1:
                raise
            return await self._write_isolated(prepared.items)

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _write_isolated(self, batch: Sequence[Received]) -> BatchResult:
        """One transaction per message, so the one PostgreSQL refuses is dead-lettered alone."""
        total = BatchResult()
        for item in batch:
            try:
                total.merge(await self.write([item]))
            except asyncpg.PostgresError as exc:
                letter = DeadLetter(item.topic, _topic_gateway(item.topic), "rejected_by_database",
                                    f"{type(exc).__name__}: {str(exc)[:200]}",
                                    bytes(item.payload[:DEAD_PAYLOAD_LIMIT]), item.received_at, len(item.payload))
                conn = await self._connection()
                total.merge(await self._store(conn, [], [letter], 1, 0))
        return total

    async def _known_gateways(self, conn: asyncpg.Connection, ids: set[str]) -> None:
        now = time.monotonic()
        if now - self._gateways_loaded_at > _GATEWAY_CACHE_S:
            self._gateways.clear()
            self._owners.clear()           # the registry may have re-homed meters since
            self._gateways_loaded_at = now
        missing = [g for g in ids if g not in self._gateways]
        if missing:
            for row in await conn.fetch("SELECT id, status FROM gateways WHERE id = ANY($1::text[])", missing):
                self._gateways[row["id"]] = row["status"]

    async def _meter_owners(self, conn: asyncpg.Connection, entries: list[_Entry]) -> dict[str, str | None]:
        missing = sorted({m for e in entries for m in e.meters} - self._owners.keys())
        if missing:
            found = {r["id"]: r["gateway_id"] for r in
                     await conn.fetch("SELECT id, gateway_id FROM meters WHERE id = ANY($1::text[])", missing)}
            for meter_id in missing:
                self._owners[meter_id] = found.get(meter_id)
        return self._owners

    def _foreign_meter(self, owners: dict[str, str | None], entry: _Entry) -> tuple[str, str] | None:
        """``(meter, owner)`` of the first meter in ``entry`` bound to another gateway, else None.
        Meters nobody owns are claimed (in this writer's view) by ``entry``'s gateway."""
        gw = entry.msg.gateway_id
        for meter_id in entry.meters:
            owner = owners.get(meter_id)
            if owner is not None and owner != gw:
                return meter_id, owner
        for meter_id in entry.meters:
            if owners.get(meter_id) is None:
                owners[meter_id] = gw
        return None

    async def _ensure_partitions(self, conn: asyncpg.Connection, entries: list[_Entry]) -> None:
        needed: set[tuple[str, int]] = set()
        for entry in entries:
            for table, (lo, hi) in entry.months.items():
                for month in range(_month(lo), _month(hi) + 1):
                    needed.add((table, month))
        for table, month in sorted(needed - self._partitions):
            year, mon = divmod(month, 12)
            at = calendar.timegm((year, mon + 1, 15, 0, 0, 0))
            await conn.execute("SELECT gridsight_ensure_partition($1, $2)", table, float(at))
            self._partitions.add((table, month))

    async def _store(self, conn: asyncpg.Connection, entries: list[_Entry], dead: list[DeadLetter],
                     n_messages: int, duplicates: int) -> BatchResult:
        result = BatchResult(messages=n_messages, duplicates=duplicates)
        await self._known_gateways(conn, {e.msg.gateway_id for e in entries})
        register: set[str] = set()
        accepted: list[_Entry] = []
        owners = await self._meter_owners(conn, entries)
        for entry in entries:
            item, msg = entry.item, entry.msg
            status = self._gateways.get(msg.gateway_id)
            if status is None and self.unknown_gateways == "refuse":
                log.warning("dead letter unknown_gateway: gateway %s is not registered (enroll it or import it "
                            "with the registry); %s seq %s refused", msg.gateway_id, type(msg).KIND, msg.seq)
                dead.append(DeadLetter(item.topic, msg.gateway_id, "unknown_gateway", "gateway_id",
                                       bytes(item.payload), item.received_at))
            elif status == "disabled":
                dead.append(DeadLetter(item.topic, msg.gateway_id, "disabled_gateway", "gateway_id",
                                       bytes(item.payload), item.received_at))
            elif (foreign := self._foreign_meter(owners, entry)) is not None:
                meter_id, owner = foreign
                log.warning("dead letter meter_not_owned: gateway %s sent %s seq %s about meter %s, which the "
                            "registry binds to gateway %s", msg.gateway_id, type(msg).KIND, msg.seq, meter_id, owner)
                dead.append(DeadLetter(item.topic, msg.gateway_id, "meter_not_owned",
                                       f"meter_id {meter_id} belongs to {owner}"[:200], bytes(item.payload),
                                       item.received_at))
            else:
                if status is None:
                    register.add(msg.gateway_id)
                accepted.append(entry)
        await self._ensure_partitions(conn, accepted)

        async with conn.transaction():
            if register:
                await conn.execute("INSERT INTO gateways (id, auto_registered) SELECT unnest($1::text[]), true "
                                   "ON CONFLICT (id) DO NOTHING", sorted(register))
            new, conflicts, duplicates = await self._claim_keys(conn, accepted)
            replays = [e for e in conflicts if e.item.replay_of is not None]
            if replays:
                # a replayed dead letter whose key holds other content: its own replay key
                for entry in replays:
                    entry.epoch_key = f"{entry.msg.epoch or ''}~replay{entry.item.replay_of}"
                    result.replayed_under.append(entry.epoch_key)
                more_new, conflicts2, more_dups = await self._claim_keys(conn, replays)
                new += more_new
                duplicates += more_dups
                conflicts = [e for e in conflicts if e.item.replay_of is None] + conflicts2
            for entry in conflicts:
                dead.append(_conflict(entry, "the message stored under this key"))
            result.duplicates += duplicates
            await self._store_facts(conn, new, result)
            if dead and not self.record_dead_letters:
                result.dead_letters.update(d.reason for d in dead)
            elif dead:
                await conn.copy_records_to_table(
                    "dead_letters", columns=_DEAD_COLS,
                    records=[(d.received_at, d.topic, d.gateway_id, d.reason, d.field, d.payload,
                              d.payload_bytes, self.replica) for d in dead])
                result.dead_letters.update(d.reason for d in dead)
                result.rows["dead_letters"] += len(dead)
        for gateway_id in register:
            self._gateways[gateway_id] = "active"
        return result

    async def _claim_keys(self, conn: asyncpg.Connection, accepted: list[_Entry]
                          ) -> tuple[list[_Entry], list[_Entry], int]:
        """Claim each entry's key in ingest_log: (new entries, conflicting entries, duplicates)."""
        if not accepted:
            return [], [], 0
        cols: list[list] = [[] for _ in range(8)]
        for entry in sorted(accepted, key=lambda e: (e.msg.gateway_id, e.epoch_key, e.msg.seq)):
            msg = entry.msg
            cols[0].append(msg.gateway_id)
            cols[1].append(entry.epoch_key)
            cols[2].append(msg.seq)
            cols[3].append(type(msg).KIND)
            cols[4].append(msg.sent_at)
            cols[5].append(entry.item.received_at)
            cols[6].append(_rows_of(msg))
            cols[7].append(entry.digest)
        rows = await conn.fetch(
            "INSERT INTO ingest_log (gateway_id, epoch, seq, kind, sent_at, received_at, rows, digest, replica) "
            "SELECT u.*, $9 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::timestamptz[], "
            "$6::timestamptz[], $7::int[], $8::bytea[]) AS u ON CONFLICT (gateway_id, epoch, seq) DO NOTHING "
            "RETURNING gateway_id, epoch, seq", *cols, self.replica)
        fresh = {(r[0], r[1], r[2]) for r in rows}
        new = [e for e in accepted if (e.msg.gateway_id, e.epoch_key, e.msg.seq) in fresh]
        taken = [e for e in accepted if (e.msg.gateway_id, e.epoch_key, e.msg.seq) not in fresh]
        if not taken:
            return new, [], 0
        stored = {(r[0], r[1], r[2]): r[3] for r in await conn.fetch(
            "SELECT l.gateway_id, l.epoch, l.seq, l.digest FROM ingest_log l "
            "JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS u(g, e, s) "
            "ON l.gateway_id = u.g AND l.epoch = u.e AND l.seq = u.s",
            [e.msg.gateway_id for e in taken], [e.epoch_key for e in taken], [e.msg.seq for e in taken])}
        conflicts = []
        duplicates = 0
        for entry in taken:
            digest = stored.get((entry.msg.gateway_id, entry.epoch_key, entry.msg.seq))
            # no digest: a key stored before digests were kept (migration 0008); trusted as before
            if digest is None or bytes(digest) == entry.digest:
                duplicates += 1
            else:
                conflicts.append(entry)
        return new, conflicts, duplicates

    async def _store_facts(self, conn: asyncpg.Connection, new: list[_Entry], result: BatchResult) -> None:
        readings: list[tuple] = []
        extended: list[tuple] = []
        summaries: list[tuple] = []
        flags: list[tuple] = []
        outbox: list[tuple] = []
        statuses: dict[str, wire.GatewayStatus] = {}
        quarterly: dict[tuple[str, int], _Rollup] = defaultdict(_Rollup)
        hourly: dict[tuple[str, int], _Rollup] = defaultdict(_Rollup)
        daily: dict[tuple[str, int], _Rollup] = defaultdict(_Rollup)
        meters: dict[str, list] = {}        # id -> [gateway, seen, last_interval, last_reading]
        gateways: dict[str, list] = {}      # id -> [seen, seq, model_version, skew]
        epochs: dict[tuple[str, str], list] = {}  # (id, epoch) -> [first, last seq, n, first sent, first, last recv]
        models: set[str] = set()

        for entry in new:
            item, msg = entry.item, entry.msg
            gw, seq, received = msg.gateway_id, msg.seq, item.received_at
            kind = type(msg).KIND
            result.stored[kind] += 1
            if entry.readings:
                (extended if entry.extended else readings).extend(entry.readings)
            if entry.summaries:
                summaries.extend(entry.summaries)
                start = msg.interval_start
                quarter_start = int(start // QUARTER * QUARTER)
                hour, day = int(start // HOUR * HOUR), int(start // DAY * DAY)
                quarter = (quarter_start - hour) // QUARTER
                for m in msg.meters:
                    quarterly[(m.meter_id, quarter_start)].add(m)
                    hourly[(m.meter_id, hour)].add(m, quarter)
                    daily[(m.meter_id, day)].add(m)
            if entry.flag is not None:
                flags.append(entry.flag)
            if isinstance(msg, wire.GatewayStatus):
                prev = statuses.get(gw)
                if prev is None or prev.sent_at <= msg.sent_at:
                    statuses[gw] = msg
            for meter_id, (interval, reading) in entry.meters.items():
                _touch(meters, meter_id, gw, received, interval, reading)
            if entry.item.replay_of is None or "~" not in entry.epoch_key:
                e = epochs.get((gw, entry.epoch_key))
                if e is None:
                    epochs[(gw, entry.epoch_key)] = [seq, seq, 1, msg.sent_at, received, received]
                else:
                    e[0], e[1], e[2] = min(e[0], seq), max(e[1], seq), e[2] + 1
                    e[3], e[4], e[5] = min(e[3], msg.sent_at), min(e[4], received), max(e[5], received)
            g = gateways.get(gw)
            if g is None:
                gateways[gw] = [received, seq, msg.model_version, received - msg.sent_at]
            else:
                if received >= g[0]:
                    g[0], g[3] = received, received - msg.sent_at
                    g[2] = msg.model_version or g[2]
                g[1] = max(g[1], seq)
            if msg.model_version and msg.model_version not in self._models:
                models.add(msg.model_version)
            if self.archive:
                outbox.append((received, gw, seq, kind, item.topic, bytes(item.payload)))

        if readings:
            await conn.copy_records_to_table("readings", columns=_READING_COLS, records=readings)
            result.rows["readings"] += len(readings)
        if extended:
            await conn.copy_records_to_table("readings", columns=_READING_EXT_COLS, records=extended)
            result.rows["readings"] += len(extended)
        if summaries:
            await conn.copy_records_to_table("interval_summaries", columns=_SUMMARY_COLS, records=summaries)
            result.rows["interval_summaries"] += len(summaries)
        if outbox:
            await conn.copy_records_to_table("archive_outbox", columns=_OUTBOX_COLS, records=outbox)
            result.rows["archive_outbox"] += len(outbox)
        if models:
            await conn.execute("INSERT INTO model_versions (version) SELECT unnest($1::text[]) "
                               "ON CONFLICT (version) DO NOTHING", sorted(models))
        if meters:
            ids = sorted(meters)
            await conn.execute(_METERS_SQL, ids, [meters[i][0] for i in ids], [meters[i][1] for i in ids],
                               [meters[i][2] for i in ids], [meters[i][3] for i in ids])
        if flags:
            # after the meters: a flag is counted in its meter's region when stored (migration 0014)
            await conn.copy_records_to_table("anomaly_flags", columns=_FLAG_COLS, records=flags)
            result.rows["anomaly_flags"] += len(flags)
        if hourly:
            await self._store_rollups(conn, quarterly, hourly, daily, result)
        if statuses:
            ids = sorted(statuses)
            s = [statuses[i] for i in ids]
            await conn.execute(_STATUS_SQL, ids, [x.sent_at for x in s], [x.online for x in s],
                               [x.uptime_s for x in s], [x.queue_depth for x in s], [x.clock_synced for x in s],
                               [x.clock_offset_s for x in s], [x.agent_version for x in s])
        if epochs:
            await self._store_epochs(conn, epochs, result)
        if gateways:
            ids = sorted(gateways)
            await conn.execute(_GATEWAYS_SQL, ids, [gateways[i][0] for i in ids], [gateways[i][1] for i in ids],
                               [gateways[i][2] for i in ids], [gateways[i][3] for i in ids])
        self._models.update(models)

    @staticmethod
    async def _store_epochs(conn: asyncpg.Connection, epochs: dict[tuple[str, str], list], result: BatchResult) -> None:
        """Record each (gateway, epoch) seen; a gateway's first message in a new epoch is an event."""
        keys = sorted(epochs)
        rows = await conn.fetch(_EPOCHS_SQL, *([k[i] for k in keys] for i in range(2)),
                                *([epochs[k][i] for k in keys] for i in range(6)))
        newest: dict[str, list] = {}          # gateway -> [epoch, first sent, first received, new epochs]
        for gw, epoch, inserted in rows:
            if not inserted:
                continue
            e = epochs[(gw, epoch)]
            n = newest.get(gw)
            if n is None:
                newest[gw] = [epoch, e[3], e[4], 1]
            else:
                n[3] += 1
                if e[3] > n[1]:
                    n[0], n[1], n[2] = epoch, e[3], e[4]
        if not newest:
            return
        ids = sorted(newest)
        changed = await conn.fetch(_NEW_EPOCH_SQL, ids, [newest[g][0] for g in ids], [newest[g][1] for g in ids],
                                   [newest[g][2] for g in ids], [newest[g][3] for g in ids])
        for row in changed:
            if row["prev_epoch"] is None:
                continue                    # a gateway's first epoch: nothing ended
            event = {"gateway_id": row["id"], "epoch": row["epoch"], "started_at": row["received"],
                     "previous_epoch": row["prev_epoch"], "previous_last_seq": row["prev_last_seq"],
                     "current": row["current"]}
            result.new_epochs.append(event)
            log.warning("gateway %s started a new outbox (epoch %s) at %s; the previous one (epoch %s) ended at "
                        "seq %s", row["id"], row["epoch"] or "legacy", _iso(row["received"]),
                        row["prev_epoch"] or "legacy", row["prev_last_seq"])

    @staticmethod
    async def _store_rollups(conn: asyncpg.Connection, quarterly: dict, hourly: dict, daily: dict,
                             result: BatchResult) -> None:
        """Per-meter rollups, then the regions' share with how many meters are new to each period."""
        hour_keys, day_keys = sorted(hourly), sorted(daily)
        new_hours = await conn.fetch(_HOURLY_SQL, *_rollup_columns(hourly, hour_keys),
                                     [hourly[k].quarters for k in hour_keys])
        new_days = await conn.fetch(_DAILY_SQL, *_rollup_columns(daily, day_keys))
        result.rows["readings_hourly"] += len(hour_keys)
        result.rows["readings_daily"] += len(day_keys)
        # a period is new to a meter when its count after the upsert is what this batch added
        fresh: dict[tuple[str, int, int], int] = {}
        for row in new_hours:
            key = (row[0], round(row[1]))
            added = hourly[key]
            fresh[(key[0], HOUR, key[1])] = int(row[2] == added.intervals)
            for q in range(HOUR // QUARTER):
                lane = _QUARTER_BITS * q
                mine = (added.quarters >> lane) & _QUARTER_MASK
                if mine:
                    now_there = (row[3] >> lane) & _QUARTER_MASK
                    fresh[(key[0], QUARTER, key[1] + q * QUARTER)] = int(now_there == mine)
        for row in new_days:
            key = (row[0], round(row[1]))
            fresh[(key[0], DAY, key[1])] = int(row[2] == daily[key].intervals)
        cols: list[list] = [[] for _ in range(11)]
        for size, rollup in ((QUARTER, quarterly), (HOUR, hourly), (DAY, daily)):
            for (meter_id, bucket), v in rollup.items():
                for col, value in zip(cols, (meter_id, size, float(bucket), v.kwh, v.intervals, v.readings, v.p_sum,
                                             v.p_n, v.p_max, v.anomalous, fresh[(meter_id, size, bucket)])):
                    col.append(value)
        await conn.execute(_REGION_SQL, *cols)
        result.rows["region_rollups"] += len(cols[0])


def _conflict(entry: _Entry, holder: str) -> DeadLetter:
    """A message whose key is taken by other content: dead-lettered whole, and logged."""
    msg, item = entry.msg, entry.item
    epoch = msg.epoch if msg.epoch is not None else "legacy"
    log.warning("seq_conflict: gateway %s epoch %s seq %d (%s) differs from %s; dead-lettered with its payload "
                "(replay it with: gridsight collector dead-letters replay --reason seq_conflict --gateway %s)",
                msg.gateway_id, epoch, msg.seq, type(msg).KIND, holder, msg.gateway_id)
    return DeadLetter(item.topic, msg.gateway_id, "seq_conflict",
                      f"seq: epoch {epoch} seq {msg.seq} is stored with other content",
                      bytes(item.payload), item.received_at)


def _touch(meters: dict, meter_id: str, gw: str, seen: float, interval: float | None, reading: float | None) -> None:
    m = meters.get(meter_id)
    if m is None:
        meters[meter_id] = [gw, seen, interval, reading]
        return
    m[0] = gw
    m[1] = max(m[1], seen)
    if interval is not None and (m[2] is None or interval > m[2]):
        m[2] = interval
    if reading is not None and (m[3] is None or reading > m[3]):
        m[3] = reading


def _rollup_columns(rollup: dict[tuple[str, int], _Rollup], keys: list[tuple[str, int]]) -> list[list]:
    vals = [rollup[k] for k in keys]
    return [[k[0] for k in keys], [float(k[1]) for k in keys], [v.kwh for v in vals], [v.intervals for v in vals],
            [v.readings for v in vals], [v.p_sum for v in vals], [v.p_n for v in vals], [v.p_max for v in vals],
            [v.anomalous for v in vals]]


def _rows_of(msg: wire.Message) -> int:
    if isinstance(msg, wire.RawChunk):
        return len(msg.readings)
    if isinstance(msg, wire.IntervalSummary):
        return len(msg.meters)
    return 1


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _month(ts: float) -> int:
    t = time.gmtime(ts)
    return t.tm_year * 12 + t.tm_mon - 1


def _topic_gateway(topic: str) -> str | None:
    try:
        return wire.parse_topic(topic)[0]
    except wire.WireError:
        return None
