"""Outbox epochs, content digests and dead-letter replay against a real PostgreSQL.

The idempotency key is (gateway, epoch, seq): a gateway that restarts its seqs in a new epoch
loses nothing, the same key with the same content is a duplicate, and the same key with other
content is a ``seq_conflict`` dead letter that a replay recovers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from collector.db import queries
from collector.db.writer import BatchWriter, Received, connect
from collector.dead_letters import replay_dead_letters
from gridsight import wire

from collector_kit import message, raw_chunk, scalar, sql, summary


def received(msg: wire.Message, at: float | None = None) -> Received:
    topic, payload = message(msg)
    return Received(topic, payload, at or time.time())


def write(url: str, items: list[Received], **kwargs):
    async def go():
        writer = BatchWriter(url, **{"unknown_gateways": "register", **kwargs})
        try:
            return await writer.write(items)
        finally:
            await writer.close()
    return asyncio.run(go())


def in_epoch(msg, epoch):
    return dataclasses.replace(msg, epoch=epoch)


def forged(msg: wire.RawChunk) -> wire.RawChunk:
    """The same key with other readings (a forger's, or a re-used seq after lost state)."""
    return dataclasses.replace(msg, readings=tuple(dataclasses.replace(r, energy_kwh=r.energy_kwh + 500.0)
                                                   for r in msg.readings))


def api(url: str, call):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(url)
        try:
            return await call(conn)
        finally:
            await conn.close()
    return asyncio.run(go())


def test_a_gateway_restarting_at_seq_1_in_a_new_epoch_is_stored_and_the_new_outbox_is_visible(collector_db):
    before = [received(in_epoch(raw_chunk("gw-a", s), "epoch-old")) for s in range(1, 6)]
    after = [received(in_epoch(raw_chunk("gw-a", s, start=time.time() - 600 + s * 100), "epoch-new"))
             for s in range(1, 4)]
    write(collector_db, before)
    result = write(collector_db, after)

    assert result.stored == {"raw": 3} and result.duplicates == 0
    assert scalar(collector_db, "SELECT count(*) FROM readings") == 8 * 40
    assert result.new_epochs[0]["previous_epoch"] == "epoch-old" and result.new_epochs[0]["previous_last_seq"] == 5
    gateway = api(collector_db, lambda c: queries.get_gateway(c, "gw-a"))
    assert gateway["epoch"] == "epoch-new" and gateway["last_seq"] == 3
    assert gateway["outbox"]["previous"]["epoch"] == "epoch-old" and gateway["outbox"]["previous"]["last_seq"] == 5
    health = api(collector_db, queries.ingestion_health)
    assert [e["gateway_id"] for e in health["new_epochs"]] == ["gw-a"]
    assert "gw-a started a new outbox at" in health["new_epochs"][0]["message"]
    assert health["new_epochs"][0]["message"].endswith("the previous one ended at seq 5")


def test_legacy_messages_without_an_epoch_and_epoch_messages_with_the_same_seq_are_both_stored(collector_db):
    result = write(collector_db, [received(summary("gw-a", 1)), received(in_epoch(summary("gw-a", 1), "e1"))])
    assert result.stored == {"summary": 2}
    assert sorted(sql(collector_db, "SELECT epoch, seq FROM ingest_log")) == [("", 1), ("e1", 1)]


def test_the_same_key_with_the_same_content_is_a_duplicate_even_when_resent_later(collector_db):
    chunk = in_epoch(raw_chunk("gw-a", 1), "e1")
    write(collector_db, [received(chunk)])
    again = write(collector_db, [received(dataclasses.replace(chunk, sent_at=chunk.sent_at + 60))])
    assert again.duplicates == 1 and again.dead_letters == {}
    assert scalar(collector_db, "SELECT count(*) FROM readings") == 40


def test_a_conflicting_redelivery_is_dead_lettered_with_its_full_payload_never_dropped(collector_db):
    chunk = in_epoch(raw_chunk("gw-a", 7), "e1")
    write(collector_db, [received(chunk)])
    other = forged(chunk)
    result = write(collector_db, [received(other), received(other)])   # redelivered within one batch
    later = write(collector_db, [received(other)])                      # and again later

    assert result.dead_letters == {"seq_conflict": 1} and result.duplicates == 1
    assert later.dead_letters == {"seq_conflict": 1}
    rows = sql(collector_db, "SELECT reason, gateway_id, payload, field FROM dead_letters")
    assert {(r[0], r[1], bytes(r[2])) for r in rows} == {("seq_conflict", "gw-a", wire.encode(other))}
    assert "seq 7" in rows[0][3]
    health = api(collector_db, queries.ingestion_health)
    assert health["seq_conflicts"]["last_hour"] == 2 and health["dead_letters"] == {"seq_conflict": 2}


def test_forged_future_seqs_cost_no_genuine_reading_once_the_conflicts_are_replayed(collector_db):
    genuine = [in_epoch(raw_chunk("gw-a", s), "e1") for s in range(1, 11)]
    write(collector_db, [received(m) for m in genuine[:5]])
    # a forger who knows the epoch publishes seqs 6-8 before the gateway gets there
    write(collector_db, [received(forged(m)) for m in genuine[5:8]])
    result = write(collector_db, [received(m) for m in genuine[5:]])
    assert result.dead_letters == {"seq_conflict": 3} and result.stored == {"raw": 2}

    dry = asyncio.run(replay_dead_letters(collector_db, reason="seq_conflict", gateway_id="gw-a", dry_run=True))
    assert dry.counts() == {"stored_under_replay_key": 3}
    assert scalar(collector_db, "SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL") == 0

    report = asyncio.run(replay_dead_letters(collector_db, reason="seq_conflict", gateway_id="gw-a"))
    assert report.counts() == {"stored_under_replay_key": 3}
    stored = set(sql(collector_db, "SELECT meter_id, extract(epoch FROM ts)::float8, energy_kwh FROM readings"))
    for msg in genuine:
        assert {(r.meter_id, r.ts, r.energy_kwh) for r in msg.readings} <= stored
    # a second replay (even with --again) stores nothing twice
    again = asyncio.run(replay_dead_letters(collector_db, reason="seq_conflict", again=True))
    assert again.counts() == {"duplicate": 3}
    assert scalar(collector_db, "SELECT count(*) FROM readings") == (10 + 3) * 40


def test_replaying_a_letter_refused_for_a_cause_since_fixed_stores_it_under_its_own_key(collector_db):
    sql(collector_db, "INSERT INTO gateways (id, status) VALUES ('gw-off', 'disabled')")
    write(collector_db, [received(in_epoch(summary("gw-off", 1), "e1"))])
    still = asyncio.run(replay_dead_letters(collector_db, gateway_id="gw-off"))
    assert still.counts() == {"refused": 1}

    sql(collector_db, "UPDATE gateways SET status = 'active' WHERE id = 'gw-off'")
    report = asyncio.run(replay_dead_letters(collector_db, gateway_id="gw-off"))
    assert report.counts() == {"stored": 1}
    assert sql(collector_db, "SELECT epoch, seq FROM ingest_log") == [("e1", 1)]
    assert scalar(collector_db, "SELECT replay_result FROM dead_letters") == "stored under its own key"
