"""The outbox keeps every reading and message across crashes, within its disk budget."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edge_agent.outbox import NewMessage, Outbox, OutboxError
from gridsight.wire import Reading

T0 = 1_767_225_600.0


def msg(kind: str, size: int = 100) -> NewMessage:
    return NewMessage(kind, lambda seq: json.dumps({"seq": seq, "pad": "x" * size}).encode())


def seq_of(payload: bytes) -> int:
    return json.loads(payload)["seq"]


def test_sequence_numbers_continue_after_reopen_even_when_everything_was_acknowledged(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    seqs = box.append(messages=[msg("summary"), msg("flag")])
    assert seqs == [1, 2]
    box.ack(seqs)
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    assert box.append(messages=[msg("summary")]) == [3]
    assert box.allocate_seq() == 4
    box.close()
    assert Outbox(tmp_path / "o.sqlite").append(messages=[msg("flag")]) == [5]


def test_payload_carries_the_sequence_number_it_was_stored_under(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.append(messages=[msg("summary"), msg("flag")])
    pending = box.pending(10, live_from_seq=1, backlog_limit=10)
    assert [(p.seq, seq_of(p.payload)) for p in pending] == [(1, 1), (2, 2)]


def test_live_messages_go_before_backlog_and_backlog_sends_flags_before_summaries_before_raw(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    box.append(messages=[msg("raw"), msg("summary"), msg("flag"), msg("raw"), msg("summary")])  # 1..5 backlog
    live_from = box.next_seq
    box.append(messages=[msg("raw"), msg("summary")])  # 6, 7 live
    order = [p.seq for p in box.pending(100, live_from_seq=live_from, backlog_limit=100)]
    assert order == [6, 7, 3, 2, 5, 1, 4]
    # the drain rate limits backlog, never live
    assert [p.seq for p in box.pending(100, live_from_seq=live_from, backlog_limit=1)] == [6, 7, 3]
    assert [p.seq for p in box.pending(100, live_from_seq=live_from, backlog_limit=10, exclude={6, 3})] == [7, 2, 5, 1, 4]


def test_acknowledged_messages_leave_the_outbox_and_free_their_bytes(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    seqs = box.append(messages=[msg("summary", 1000) for _ in range(5)])
    used = box.used_bytes
    assert box.ack(seqs[:3]) == 3
    assert box.ack(seqs[:3]) == 0  # a second PUBACK for the same message changes nothing
    assert box.depth()["summary"] == 2
    assert box.used_bytes < used
    box.close()
    assert Outbox(tmp_path / "o.sqlite").depth()["summary"] == 2


def test_at_budget_raw_is_evicted_before_summaries_before_flags_and_every_eviction_is_counted(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=15_000)
    box.append(messages=[msg("flag", 1000) for _ in range(4)])
    box.append(messages=[msg("summary", 1000) for _ in range(4)])
    box.append(messages=[msg("raw", 1000) for _ in range(4)])
    assert sum(box.counters.values()) == 0
    # 8 more summaries overflow the budget: all raw goes first, then the oldest summaries
    box.append(messages=[msg("summary", 1000) for _ in range(8)])
    depth = box.depth()
    assert depth["raw"] == 0 and depth["flag"] == 4
    assert box.counters["evicted_raw"] == 4
    assert box.counters["evicted_summary"] == 12 - depth["summary"] > 0
    assert box.counters["evicted_flag"] == 0
    assert box.used_bytes <= 15_000
    survivors = [p.seq for p in box.pending(100, live_from_seq=10**9, backlog_limit=100) if p.kind == "summary"]
    assert survivors == sorted(survivors) and survivors[-1] == box.next_seq - 1  # the newest summaries stay
    # flags go only when nothing else is left
    box.append(messages=[msg("flag", 1000) for _ in range(20)])
    assert box.depth()["summary"] == 0 and box.counters["evicted_flag"] > 0
    counters = dict(box.counters)
    box.close()
    assert Outbox(tmp_path / "o.sqlite").counters == counters  # counters survive restarts


def test_readings_are_sealed_into_chunks_and_pruned_only_after_their_interval_closed(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(20):  # one poll cycle each
        box.append(readings=[Reading("m1", T0 + i * 60, 1.0 + i)])
    assert box.depth()["unsealed_readings"] == 20
    seal = lambda seq, rs: json.dumps({"seq": seq, "ts": [r.ts for r in rs]}).encode()
    box.append(seal=seal, seal_max=8, prune_before=T0 + 600)
    chunks = box.pending(10, live_from_seq=1, backlog_limit=10)
    assert [len(json.loads(c.payload)["ts"]) for c in chunks] == [8, 8, 4]
    assert box.depth()["unsealed_readings"] == 0
    # the open interval's readings stay as the window's journal
    assert [r.ts for r in box.open_readings(T0 + 600)] == [T0 + i * 60 for i in range(10, 20)]
    assert box.open_readings(0)[0].ts == T0 + 600


@pytest.mark.parametrize("reopen", [False, True])
def test_readings_staged_after_every_batch_was_pruned_are_still_sealed_and_sent(tmp_path, reopen):
    # a meter silent for a whole interval empties the batch table; SQLite then reused row ids
    # at or below the sealed watermark, and the next readings were pruned without being sent
    seal = lambda seq, rs: json.dumps({"seq": seq, "ts": [r.ts for r in rs]}).encode()
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(5):
        box.append(readings=[Reading("m1", T0 + i * 60, 1.0 + i)])
    box.append(seal=seal, prune_before=T0 + 900)
    box.ack([m.seq for m in box.pending(10, live_from_seq=1, backlog_limit=10)])
    if reopen:
        box.close()
        box = Outbox(tmp_path / "o.sqlite")
    later = [Reading("m1", T0 + 1800 + i * 60, 10.0 + i) for i in range(3)]
    for r in later:
        box.append(readings=[r], prune_before=T0 + 1800)
    assert box.depth()["unsealed_readings"] == 3
    box.append(seal=seal, prune_before=T0 + 2700)
    (chunk,) = box.pending(10, live_from_seq=1, backlog_limit=10)
    assert json.loads(chunk.payload)["ts"] == [r.ts for r in later]


def test_a_file_that_is_not_an_outbox_gives_a_clear_error(tmp_path):
    bad = tmp_path / "o.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="o.sqlite"):
        Outbox(bad)


WRITER = textwrap.dedent("""
    import json, sys
    from edge_agent.outbox import NewMessage, Outbox
    from gridsight.wire import Reading
    box = Outbox(sys.argv[1])
    i = box.state.get("i", 0)
    while True:
        i += 1
        readings = [Reading(f"m{k}", 1767225600.0 + i, float(i)) for k in range(3)]
        seqs = box.append(readings=readings,
                          messages=[NewMessage("summary", lambda s: json.dumps({"seq": s}).encode())],
                          seal=(lambda s, rs: json.dumps({"seq": s, "n": len(rs)}).encode()) if i % 5 == 0 else None,
                          state={"i": i})
        print(i, *seqs, flush=True)
        if len(seqs) > 1 and i % 7 == 0:
            box.ack(seqs[:1])
""")


def test_outbox_loses_nothing_when_its_writer_is_killed_with_sigkill_again_and_again(tmp_path):
    path = tmp_path / "o.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(7)
    confirmed_cycles: set[int] = set()
    confirmed_seqs: set[int] = set()
    acked: set[int] = set()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
        lines = []
        deadline = time.monotonic() + 30
        target = rng.randint(20, 200)
        while len(lines) < target and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lines += proc.stdout.read().splitlines()  # whatever was printed before the kill
        for line in lines:
            parts = [int(x) for x in line.split()]
            if not parts:
                continue
            i, seqs = parts[0], parts[1:]
            confirmed_cycles.add(i)
            confirmed_seqs.update(seqs)
            if len(seqs) > 1 and i % 7 == 0:
                acked.add(seqs[0])  # may or may not have been committed before the kill
    box = Outbox(path)
    stored = {p.seq for p in box.pending(10**6, live_from_seq=10**12, backlog_limit=10**6)}
    # every message whose commit was reported is still there unless the writer acked it
    assert confirmed_seqs - acked <= stored
    assert stored <= confirmed_seqs | set(range(1, box.next_seq))
    # sequence numbers never repeat and have no gaps: all allocated seqs are stored or acked
    assert set(range(1, box.next_seq)) - stored <= acked
    # every reading of every confirmed cycle is staged (sealed or not), none twice
    staged = box.open_readings(0)
    per_meter = {}
    for r in staged:
        per_meter.setdefault(r.meter_id, []).append(r.ts)
    for ts_list in per_meter.values():
        assert len(ts_list) == len(set(ts_list))
        assert {int(t - 1767225600.0) for t in ts_list} >= confirmed_cycles
