"""The durable outbox: every reading and message the gateway owes the collector, on disk.

One SQLite file (WAL journal, ``synchronous=FULL`` by default) holds three things:

* ``batches``: raw readings as they are taken, one zlib-compressed columnar row per poll
  cycle (a few kB for 200 meters instead of 200 rows and their index pages: this is what
  keeps an SD card alive). A reading counts as taken once it is here. The same rows are the
  window stage's journal: after a crash the open intervals are rebuilt from them
  (:meth:`Outbox.open_readings`). Batches are sealed into raw-chunk messages every chunk
  period and pruned once sealed *and* their interval is summarised.
* ``messages``: encoded wire messages with their per-gateway sequence number, waiting for
  the broker's PUBACK. ``seq`` is allocated here and persisted in the same transaction as
  the message, so it survives restarts and never repeats.
* ``meta``: the outbox's epoch, the next sequence number, eviction counters and the agent's
  small JSON state (window watermark, feature history), written atomically with the messages
  they explain.

The epoch is a random id made when the outbox file is created (or first opened by a version
that knows epochs) and never changed. Every message carries it, and ``(gateway, epoch, seq)``
is the collector's idempotency key: a gateway whose data directory is lost (SD-card swap,
re-flash, reinstall) restarts at seq 1 in a *new* epoch, so its messages are new data to
the collector rather than duplicates of what the old outbox sent.

Writes are batched: the agent makes one transaction per poll cycle (:meth:`Outbox.append`),
and PUBACKs are deleted in batches (:meth:`Outbox.ack`), which is what spares an SD card.

The outbox is bounded by ``budget_bytes`` of logical data (payload and reading bytes plus a
fixed per-row overhead). When an append would exceed it, the oldest messages are evicted
raw chunks first, then summaries, then flags; each eviction is counted per kind
(``evicted_raw``, ``evicted_summary``, ``evicted_flag`` and ``*_bytes``). Staged readings
that are not yet sealed are never evicted: they are the newest data and are small.

Delivery order (:meth:`Outbox.pending`): messages created since the current connection
("live") go first, oldest first; the backlog follows, flags before summaries before raw,
oldest first within each kind, at a rate the publisher limits.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import zlib
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from gridsight.wire import READING_EXTENSIONS, Reading, reading_extensions_used
from gridsight.errors import GridsightError

__all__ = [
    "Outbox",
    "OutboxError",
    "new_epoch",
    "read_snapshot",
    "read_sealed_through",
    "read_owed_before",
    "PendingMessage",
    "NewMessage",
    "KIND_RANK",
    "ROW_OVERHEAD_BYTES",
]

# Higher rank = more valuable: sent first from the backlog, evicted last.
KIND_RANK: dict[str, int] = {"raw": 0, "summary": 1, "flag": 2, "status": 3}
EVICTION_ORDER = ("raw", "summary", "flag", "status")
# SQLite row + index overhead, so a budget of N bytes is roughly N bytes on disk.
ROW_OVERHEAD_BYTES = 48
# Readings per stored batch row: a sealed chunk is whole batches, so this bounds chunk size.
BATCH_MAX_READINGS = 2000
_COLUMNS = ("meter_id", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "power_factor")
_COUNTERS = (
    "evicted_raw",
    "evicted_summary",
    "evicted_flag",
    "evicted_status",
    "evicted_raw_bytes",
    "evicted_summary_bytes",
    "evicted_flag_bytes",
    "evicted_status_bytes",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, rank INTEGER NOT NULL, retain INTEGER NOT NULL,
    created_at REAL NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS messages_rank ON messages (rank, seq);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY, max_ts REAL NOT NULL, count INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _pack(readings: Sequence[Reading]) -> bytes:
    columns: list = [[getattr(r, c) for r in readings] for c in _COLUMNS]
    # layout-2 values (export, phases, channels) ride as an eighth element, only when present,
    # so batches written before the extension and plain meters' batches look the same
    if reading_extensions_used(readings):
        extra = {c: [getattr(r, c) for r in readings] for c in READING_EXTENSIONS}
        columns.append({c: v for c, v in extra.items() if any(x is not None for x in v)})
    return zlib.compress(json.dumps(columns, separators=(",", ":")).encode(), 1)


def _unpack(data: bytes) -> list[Reading]:
    columns = json.loads(zlib.decompress(data))
    if len(columns) > len(_COLUMNS):
        extra = columns[len(_COLUMNS)]
        names = list(_COLUMNS) + list(extra)
        return [Reading(**dict(zip(names, row))) for row in zip(*columns[: len(_COLUMNS)], *extra.values())]
    return [Reading(*row) for row in zip(*columns)]


class OutboxError(GridsightError, RuntimeError):
    """The outbox file cannot be opened or written (disk full, corrupt file, wrong owner)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to add: ``build(seq)`` returns its wire bytes once its seq is allocated."""

    kind: str
    build: Callable[[int], bytes]
    retain: bool = False


@dataclass(frozen=True, slots=True)
class PendingMessage:
    seq: int
    kind: str
    payload: bytes
    retain: bool
    created_at: float


class Outbox:
    """A bounded, crash-safe store of readings and messages for one gateway (one process)."""

    def __init__(
        self,
        path: str | Path,
        *,
        budget_bytes: int = 256 * 1024 * 1024,
        synchronous: str = "FULL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.budget_bytes = int(budget_bytes)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # busy_timeout_s: how long a write waits for another process holding the file's write
            # lock (``gridsight agent status`` only reads) before it fails as an OutboxError
            self._db = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            # 1 kB pages: a poll's batch rewrites ~6 small pages instead of ~3 large ones (fewer bytes)
            self._db.execute("PRAGMA page_size=1024")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA cache_size=-1024")  # 1 MB page cache: a Pi has RAM to spare for little else
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            # checkpoint in larger steps: fewer rewrites of the same pages on the SD card
            self._db.execute("PRAGMA wal_autocheckpoint=2000")
            self._db.executescript(_SCHEMA)
            self._load()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from None
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: {exc.strerror or exc}") from None

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        # the epoch is born with the outbox; OR IGNORE keeps the first one if two processes race
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (new_epoch(),))
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self._epoch = meta["epoch"]
        max_seq = self._db.execute("SELECT MAX(seq) FROM messages").fetchone()[0]
        self._next_seq = _next_seq_of(meta, max_seq)
        self._chunked_upto = int(meta.get("chunked_upto", 0))
        # Batch ids must grow past chunked_upto forever. SQLite reuses rowids once a table is
        # empty (every sealed batch pruned), and a reused id <= chunked_upto looked sealed:
        # its readings were never put in a chunk and were pruned unsent.
        max_batch = self._db.execute("SELECT MAX(id) FROM batches").fetchone()[0] or 0
        self._next_batch_id = max(max_batch, self._chunked_upto) + 1
        self.counters: dict[str, int] = {k: int(meta.get(k, 0)) for k in _COUNTERS}
        self._message_bytes = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) + COUNT(*) * ? FROM messages", (ROW_OVERHEAD_BYTES,)
        ).fetchone()[0]
        self._batch_bytes = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) + COUNT(*) * ? FROM batches", (ROW_OVERHEAD_BYTES,)
        ).fetchone()[0]
        self._pruned_before: float | None = None
        self._changes = 0

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def epoch(self) -> str:
        """This outbox's random id, carried by every message it makes (see the module docstring)."""
        return self._epoch

    @property
    def changes(self) -> int:
        """Counts committed changes of the queue or the sequence state (status-file freshness)."""
        return self._changes

    def snapshot(self) -> dict[str, Any]:
        """Queue depth and sequence state as one consistent read (what status.json and
        ``gridsight agent status`` both report)."""
        with self._lock:
            return read_snapshot(self._db, self._chunked_upto)

    @property
    def state(self) -> dict[str, Any]:
        """The agent's persisted JSON state as of the last append (read from the file: the agent
        needs it once, at start, and 200 meters' feature history is not kept twice in memory)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'state'").fetchone()
        return json.loads(row[0]) if row else {}

    @property
    def used_bytes(self) -> int:
        return self._message_bytes + self._batch_bytes

    def depth(self) -> dict[str, int]:
        """Messages waiting per kind, plus staged readings not yet sealed into a chunk."""
        with self._lock:
            out = {k: 0 for k in KIND_RANK}
            out.update(dict(self._db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall()))
            out["unsealed_readings"] = self._db.execute(
                "SELECT COALESCE(SUM(count), 0) FROM batches WHERE id > ?", (self._chunked_upto,)
            ).fetchone()[0]
            return out

    # ------------------------------------------------------------------ writing

    def append(
        self,
        *,
        readings: Sequence[Reading] = (),
        messages: Iterable[NewMessage] = (),
        seal: Callable[[int, list[Reading]], bytes] | None = None,
        seal_max: int = 5000,
        prune_before: float | None = None,
        state: dict[str, Any] | None = None,
    ) -> list[int]:
        """Store one poll cycle in ONE transaction; return the sequence numbers allocated.

        ``readings`` are staged; ``messages`` get consecutive seqs; ``seal`` (if given) turns
        every staged, unsealed reading into raw-chunk messages of at most ``seal_max``
        readings; sealed readings older than ``prune_before`` are deleted; ``state`` replaces
        the persisted agent state. Then the budget is enforced by eviction. The meta row is
        rewritten only when something in it changed, sparing a page write per poll.
        """
        with self._lock:
            seqs: list[int] = []
            next_seq = self._next_seq
            next_batch_id = self._next_batch_id
            chunked_upto = self._chunked_upto
            added_bytes = 0
            added_batch_bytes = 0
            counters = dict(self.counters)
            meta_dirty = state is not None
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                for i in range(0, len(readings), BATCH_MAX_READINGS):
                    part = readings[i : i + BATCH_MAX_READINGS]
                    data = _pack(part)
                    db.execute(
                        "INSERT INTO batches (id, max_ts, count, data) VALUES (?, ?, ?, ?)",
                        (next_batch_id, max(r.ts for r in part), len(part), data),
                    )
                    next_batch_id += 1
                    added_batch_bytes += len(data) + ROW_OVERHEAD_BYTES
                for msg in messages:
                    payload = msg.build(next_seq)
                    if msg.kind == "status":
                        # only the latest status matters; an unsent older one is replaced
                        removed = db.execute("DELETE FROM messages WHERE kind = 'status' RETURNING size").fetchall()
                        added_bytes -= sum(r[0] + ROW_OVERHEAD_BYTES for r in removed)
                    db.execute(
                        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (next_seq, msg.kind, KIND_RANK[msg.kind], int(msg.retain), _now(), len(payload), payload),
                    )
                    seqs.append(next_seq)
                    added_bytes += len(payload) + ROW_OVERHEAD_BYTES
                    next_seq += 1
                    meta_dirty = True
                if seal is not None:
                    rows = db.execute(
                        "SELECT id, count, data FROM batches WHERE id > ? ORDER BY id", (chunked_upto,)
                    ).fetchall()
                    chunk: list[Reading] = []
                    for index, (batch_id, _count, data) in enumerate(rows):
                        chunk.extend(_unpack(data))
                        if len(chunk) >= seal_max or index == len(rows) - 1:
                            payload = seal(next_seq, chunk)
                            db.execute(
                                "INSERT INTO messages VALUES (?, 'raw', ?, 0, ?, ?, ?)",
                                (next_seq, KIND_RANK["raw"], _now(), len(payload), payload),
                            )
                            seqs.append(next_seq)
                            added_bytes += len(payload) + ROW_OVERHEAD_BYTES
                            next_seq += 1
                            chunked_upto = batch_id
                            chunk = []
                            meta_dirty = True
                if prune_before is not None and (
                    chunked_upto != self._chunked_upto
                    or self._pruned_before is None
                    or prune_before > self._pruned_before
                ):
                    freed = db.execute(
                        "DELETE FROM batches WHERE id <= ? AND max_ts < ? RETURNING LENGTH(data)",
                        (chunked_upto, prune_before),
                    ).fetchall()
                    added_batch_bytes -= sum(r[0] + ROW_OVERHEAD_BYTES for r in freed)
                evicted_bytes = self._evict(
                    db, self._message_bytes + added_bytes + self._batch_bytes + added_batch_bytes, counters
                )
                added_bytes -= evicted_bytes
                meta_dirty = meta_dirty or evicted_bytes > 0
                if meta_dirty:
                    meta: dict[str, int | str] = {"next_seq": next_seq, "chunked_upto": chunked_upto, **counters}
                    if state is not None:
                        meta["state"] = json.dumps(state, separators=(",", ":"))
                    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise OutboxError(f"outbox {self.path}: {exc}") from None
                raise
            self._next_seq = next_seq
            self._next_batch_id = next_batch_id
            self._chunked_upto = chunked_upto
            if seqs or evicted_bytes:
                self._changes += 1  # the queue changed (staged readings alone do not count)
            self._message_bytes += added_bytes
            self._batch_bytes += added_batch_bytes
            if prune_before is not None:
                self._pruned_before = prune_before
            self.counters = counters
            return seqs

    def _evict(self, db: sqlite3.Connection, used: int, counters: dict[str, int]) -> int:
        """Delete the oldest messages, least valuable kind first, until ``used`` fits the budget."""
        freed = 0
        for kind in EVICTION_ORDER:
            while used - freed > self.budget_bytes:
                victims = db.execute(
                    "SELECT seq, size FROM messages WHERE rank = ? ORDER BY seq LIMIT 256", (KIND_RANK[kind],)
                ).fetchall()
                if not victims:
                    break
                take = []
                for seq, size in victims:
                    if used - freed <= self.budget_bytes:
                        break
                    take.append(seq)
                    freed += size + ROW_OVERHEAD_BYTES
                    counters[f"evicted_{kind}"] += 1
                    counters[f"evicted_{kind}_bytes"] += size
                db.executemany("DELETE FROM messages WHERE seq = ?", [(s,) for s in take])
        return freed

    def allocate_seq(self) -> int:
        """One persisted sequence number for a message that bypasses the queue (the last will)."""
        with self._lock:
            seq = self._next_seq
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (str(seq + 1),))
            self._next_seq = seq + 1
            self._changes += 1
            return seq

    # ------------------------------------------------------------------ reading back

    def open_readings(self, since_ts: float) -> list[Reading]:
        """Staged readings with ``ts >= since_ts``: the open windows to rebuild after a restart."""
        with self._lock:
            rows = self._db.execute("SELECT data FROM batches WHERE max_ts >= ? ORDER BY id", (since_ts,)).fetchall()
        return [r for (data,) in rows for r in _unpack(data) if r.ts >= since_ts]

    def pending(
        self, limit: int, *, live_from_seq: int, backlog_limit: int, exclude: set[int] | frozenset[int] = frozenset()
    ) -> list[PendingMessage]:
        """Up to ``limit`` messages to publish now: live ones (``seq >= live_from_seq``) oldest
        first, then at most ``backlog_limit`` backlog messages, most valuable kind first."""
        with self._lock:
            extra = len(exclude)
            live = self._db.execute(
                "SELECT seq, kind, payload, retain, created_at FROM messages WHERE seq >= ? ORDER BY seq LIMIT ?",
                (live_from_seq, limit + extra),
            ).fetchall()
            out = [PendingMessage(s, k, bytes(p), bool(r), c) for s, k, p, r, c in live if s not in exclude][:limit]
            room = min(limit - len(out), backlog_limit)
            if room > 0:
                old = self._db.execute(
                    "SELECT seq, kind, payload, retain, created_at FROM messages WHERE seq < ?"
                    " ORDER BY rank DESC, seq LIMIT ?",
                    (live_from_seq, room + extra),
                ).fetchall()
                out += [PendingMessage(s, k, bytes(p), bool(r), c) for s, k, p, r, c in old if s not in exclude][:room]
            return out

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete messages the broker acknowledged, in one transaction; returns how many."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                freed = 0
                count = 0
                for i in range(0, len(seqs), 500):
                    part = seqs[i : i + 500]
                    rows = db.execute(
                        f"DELETE FROM messages WHERE seq IN ({','.join('?' * len(part))}) RETURNING size", part
                    ).fetchall()
                    freed += sum(r[0] + ROW_OVERHEAD_BYTES for r in rows)
                    count += len(rows)
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise OutboxError(f"outbox {self.path}: {exc}") from None
                raise
            self._message_bytes -= freed
            if count:
                self._changes += 1
            return count

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass
            self._db.close()


def new_epoch() -> str:
    """A fresh outbox epoch: 64 random bits as 16 hex digits."""
    return secrets.token_hex(8)


@contextmanager
def _one_read(db: sqlite3.Connection) -> Iterator[None]:
    """Every query inside sees one snapshot of the file (joining a transaction already open)."""
    in_tx = db.in_transaction
    if not in_tx:
        db.execute("BEGIN")
    try:
        yield
    finally:
        if not in_tx:
            db.execute("COMMIT")


def _next_seq_of(meta: dict[str, Any], max_seq: int | None) -> int:
    """The seq the outbox gives its next message: the persisted counter, or past any stored message."""
    return max(int(meta.get("next_seq", 1)), (max_seq or 0) + 1)


def read_snapshot(db: sqlite3.Connection, chunked_upto: int | None = None) -> dict[str, Any]:
    """Queue and sequence state of an outbox database, read in one transaction.

    Used by the running agent (status.json) and by ``gridsight agent status`` (a read-only
    connection), so both compute the same numbers the same way.
    """
    with _one_read(db):
        depth = {k: 0 for k in KIND_RANK}
        depth.update(dict(db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall()))
        size, oldest, max_seq = db.execute(
            "SELECT COALESCE(SUM(size), 0), MIN(created_at), MAX(seq) FROM messages"
        ).fetchone()
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key != 'state'").fetchall())
        upto = int(meta.get("chunked_upto", 0)) if chunked_upto is None else chunked_upto
        staged = db.execute("SELECT COALESCE(SUM(count), 0) FROM batches WHERE id > ?", (upto,)).fetchone()[0]
    return {
        "epoch": meta.get("epoch"),
        "queue": depth,
        "queue_depth": sum(depth.values()),
        "queue_bytes": size,
        "oldest_queued_at": oldest,
        "next_seq": _next_seq_of(meta, max_seq),
        "unsealed_readings": staged,
        "evicted": {k: int(v) for k, v in meta.items() if k.startswith("evicted_")},
    }


def read_sealed_through(db: sqlite3.Connection, until: float) -> int | None:
    """The outbox's next sequence number if every staged reading up to ``until`` is sealed, else None.

    Batches are stored in poll order, so the readings up to ``until`` are in the first batch that
    reaches it and the batches before it; once those are sealed, each of these readings travels in a
    raw chunk whose seq is lower than the number returned (see :func:`read_owed_before`). Only the
    readings the agent has stored count: a reader's cursor says which ones it has.
    """
    with _one_read(db):
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('chunked_upto', 'next_seq')").fetchall())
        first = db.execute("SELECT MIN(id) FROM batches WHERE max_ts >= ?", (until,)).fetchone()[0]
        max_seq = db.execute("SELECT MAX(seq) FROM messages").fetchone()[0]
    if first is not None and first > int(meta.get("chunked_upto", 0)):
        return None
    return _next_seq_of(meta, max_seq)


def read_owed_before(db: sqlite3.Connection, seq: int) -> int:
    """How many messages below ``seq`` the outbox still holds for the collector (raw chunks,
    summaries, flags: everything but status, of which only the latest ever matters)."""
    return int(db.execute("SELECT COUNT(*) FROM messages WHERE seq < ? AND kind != 'status'", (seq,)).fetchone()[0])


def _now() -> float:
    # wall time, not the agent's clock: it measures how long a message waited on this disk
    return time.time()
