"""Replaying dead letters once the cause is understood: nothing refused is lost for good.

A dead letter keeps its full payload (up to the wire limit). Replaying one feeds that payload
through the same batch writer as live ingestion, with its original receive time:

- a letter refused for a cause that has since gone (an unknown gateway now registered, a
  disabled one re-enabled, a database refusal fixed, a collector bug fixed) is stored under
  its own key ``(gateway, epoch, seq)``;
- a letter whose key is held by other content (always so for ``seq_conflict``) is stored
  under a *replay key*, epoch ``{epoch}~replay{dead letter id}``: the message that holds the
  original key stays as it is, the replayed one is stored beside it, and replaying the same
  letter again is a duplicate. So a forged or conflicting message costs no genuine data: the
  genuine one is either the holder of the key or recoverable from its dead letter;
- a letter whose key already holds the same content is marked ``duplicate``;
- a letter refused again stays a dead letter, unmarked, with the reason reported.

Replayed letters are kept, marked with ``replayed_at`` and ``replay_result``, and are skipped
by later replays unless ``again`` is set. ``dry_run`` says what would happen and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable

from gridsight import wire

__all__ = ["ReplayOutcome", "ReplayReport", "replay_dead_letters", "select_dead_letters"]


@dataclass
class ReplayOutcome:
    id: int
    reason: str
    gateway_id: str | None
    result: str          # stored | stored_under_replay_key | duplicate | refused | truncated
    detail: str = ""


@dataclass
class ReplayReport:
    selected: int = 0
    dry_run: bool = False
    outcomes: list[ReplayOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.result] = out.get(o.result, 0) + 1
        return out

    def as_dict(self) -> dict:
        return {"selected": self.selected, "dry_run": self.dry_run, "results": self.counts(),
                "letters": [o.__dict__ for o in self.outcomes]}


async def select_dead_letters(conn, *, ids: list[int] | None = None, reason: str | None = None,
                              gateway_id: str | None = None, since: dt.date | None = None,
                              again: bool = False, limit: int = 1000) -> list:
    where, args = ["TRUE"], []
    if ids:
        args.append(list(ids))
        where.append(f"id = ANY(${len(args)}::bigint[])")
    if reason is not None:
        args.append(reason)
        where.append(f"reason = ${len(args)}")
    if gateway_id is not None:
        args.append(gateway_id)
        where.append(f"gateway_id = ${len(args)}")
    if since is not None:
        args.append(float(dt.datetime.combine(since, dt.time(), dt.timezone.utc).timestamp()))
        where.append(f"received_at >= ${len(args)}")
    if not again:
        where.append("replayed_at IS NULL")
    return await conn.fetch(
        "SELECT id, received_at, topic, gateway_id, reason, payload, payload_bytes FROM dead_letters "
        f"WHERE {' AND '.join(where)} ORDER BY id LIMIT {int(limit)}", *args)


async def _predict(conn, letter) -> ReplayOutcome:
    """What replaying ``letter`` would do, without writing anything."""
    from collector.db.writer import DeadLetter, Received, classify

    out = classify(Received(letter["topic"], bytes(letter["payload"]), letter["received_at"]))
    base = (letter["id"], letter["reason"], letter["gateway_id"])
    if isinstance(out, DeadLetter):
        return ReplayOutcome(*base, "refused", f"{out.reason}: {out.field}")
    key = (out.gateway_id, out.epoch or "", out.seq)
    stored = await conn.fetchval("SELECT digest FROM ingest_log WHERE gateway_id = $1 AND epoch = $2 AND seq = $3",
                                 *key)
    digest = wire.content_digest(out)
    if stored is None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM ingest_log WHERE gateway_id = $1 AND epoch = $2 AND seq = $3)", *key):
        return ReplayOutcome(*base, "stored", "its key is free")
    if stored is None or bytes(stored) == digest:
        return ReplayOutcome(*base, "duplicate", "its key already holds the same content")
    replay_key = f"{out.epoch or ''}~replay{letter['id']}"
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ingest_log WHERE gateway_id = $1 AND epoch = $2 "
                           "AND seq = $3)", out.gateway_id, replay_key, out.seq):
        return ReplayOutcome(*base, "duplicate", f"already stored under replay key {replay_key}")
    return ReplayOutcome(*base, "stored_under_replay_key", replay_key)


async def replay_dead_letters(dsn: str, *, ids: list[int] | None = None, reason: str | None = None,
                              gateway_id: str | None = None, since: dt.date | None = None,
                              again: bool = False, limit: int = 1000, dry_run: bool = False,
                              replica: str = "replay", unknown_gateways: str = "refuse",
                              progress: Callable[[ReplayOutcome], None] | None = None) -> ReplayReport:
    """Replay the chosen dead letters (see the module docstring); one transaction per letter."""
    from collector.db.writer import BatchWriter, Received, connect

    conn = await connect(dsn)
    writer = None if dry_run else BatchWriter(dsn, replica=replica, unknown_gateways=unknown_gateways,
                                              record_dead_letters=False)
    report = ReplayReport(dry_run=dry_run)
    try:
        letters = await select_dead_letters(conn, ids=ids, reason=reason, gateway_id=gateway_id, since=since,
                                            again=again, limit=limit)
        report.selected = len(letters)
        for letter in letters:
            base = (letter["id"], letter["reason"], letter["gateway_id"])
            if letter["payload_bytes"] > len(letter["payload"]):
                outcome = ReplayOutcome(*base, "truncated",
                                        f"only {len(letter['payload'])} of {letter['payload_bytes']} bytes were kept")
            elif dry_run:
                outcome = await _predict(conn, letter)
            else:
                item = Received(letter["topic"], bytes(letter["payload"]), letter["received_at"],
                                replay_of=letter["id"])
                result = await writer.write([item])
                if result.dead_letters:
                    outcome = ReplayOutcome(*base, "refused", ", ".join(result.dead_letters))
                elif sum(result.stored.values()) and result.replayed_under:
                    outcome = ReplayOutcome(*base, "stored_under_replay_key", result.replayed_under[0])
                elif sum(result.stored.values()):
                    outcome = ReplayOutcome(*base, "stored", "under its own key")
                else:
                    outcome = ReplayOutcome(*base, "duplicate", "the same content is already stored")
                if outcome.result != "refused":
                    await conn.execute("UPDATE dead_letters SET replayed_at = now(), replay_result = $2 "
                                       "WHERE id = $1", letter["id"],
                                       f"{outcome.result} {outcome.detail}".strip()[:200])
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        if writer is not None:
            await writer.close()
        await conn.close()
    return report
