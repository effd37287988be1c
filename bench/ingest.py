"""Ingest benchmark: how close does gridsight's end-to-end path get to PostgreSQL's COPY ceiling?

Three measurements in one run, on the same machine, into the same partitioned `readings` table
(same indexes, fresh database each):

  (a) ceiling  — asyncpg COPY of the same reading rows straight into `readings`, in batches;
  (b) naive    — the obvious approach: one SQLModel insert + commit per reading;
  (c) gridsight end to end — simulated gateways (separate processes) publish pre-encoded raw
      chunks and batched interval summaries with QoS 1 to Mosquitto; `gridsight collector
      ingest` process(es) on one shared subscription validate, dedupe, COPY into PostgreSQL,
      archive to a local object store, and ack after commit. The publishers queue enough in
      the broker (sized by `--rate-guess`) to keep the collector busy for at least `--duration`
      seconds; the rate counts from the first publish until the last reading is stored (the
      JSON says whether that took at least 60 s), and loss is checked by counting rows,
      ingest_log keys and archived messages.

Prints readings/s for each, the ratios, the command to reproduce, and ONE JSON line last.
    .venv/bin/python bench/ingest.py            # full: 60 s of publishing
    .venv/bin/python bench/ingest.py --quick    # about a minute in total
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsight import wire  # noqa: E402
from gridsight.local_services import EmbeddedPostgres, LocalMosquitto  # noqa: E402

READINGS_PER_CHUNK = 1000      # 10 meters x 100 readings: ~17 minutes of 10-second readings per meter
METERS_PER_GATEWAY = 10
START_TS = 1_767_225_600.0     # 2026-01-01T00:00:00Z


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def chunk_readings(gateway: int, chunk: int) -> tuple[wire.Reading, ...]:
    """Readings with realistic, poorly compressible values (a hash stands in for noise)."""
    per_meter = READINGS_PER_CHUNK // METERS_PER_GATEWAY
    base = START_TS + chunk * per_meter * 10.0
    out = []
    for m in range(METERS_PER_GATEWAY):
        for i in range(per_meter):
            h = ((gateway * 1_000_003 + chunk * 10_007 + m * 101 + i) * 2_654_435_761) % 4_294_967_296
            power = 150.0 + h % 450_000 / 100.0
            out.append(wire.Reading(f"g{gateway:04d}-m{m:02d}", base + i * 10.0,
                                    round(1000.0 + chunk * 1.37 + i * power / 360_000.0, 4), power,
                                    round(228.0 + h % 400 / 100.0, 2), round(power / 230.0, 3),
                                    round(0.9 + h % 100 / 1000.0, 3)))
    return tuple(out)


def reading_rows(gateway: int, chunk: int) -> list[tuple]:
    return [(r.meter_id, r.ts, r.energy_kwh, r.power_w, r.voltage_v, r.current_a, r.power_factor, f"gw{gateway:04d}",
             chunk) for r in chunk_readings(gateway, chunk)]


# --------------------------------------------------------------------------- (a) COPY ceiling


async def copy_ceiling(dsn: str, total_rows: int, batch_rows: int) -> float:
    from collector.db.writer import connect

    batches, chunk = [], 0
    while sum(len(b) for b in batches) < total_rows:
        rows: list[tuple] = []
        while len(rows) < batch_rows:
            rows.extend(reading_rows(chunk % 50, chunk))
            chunk += 1
        batches.append(rows)
    conn = await connect(dsn)
    await conn.execute("SELECT gridsight_ensure_partition('readings', $1)", START_TS)
    cols = ("meter_id", "ts", "energy_kwh", "power_w", "voltage_v", "current_a", "power_factor", "gateway_id", "seq")
    started = time.perf_counter()
    n = 0
    for rows in batches:
        async with conn.transaction():
            await conn.copy_records_to_table("readings", columns=cols, records=rows)
        n += len(rows)
    elapsed = time.perf_counter() - started
    assert await conn.fetchval("SELECT count(*) FROM readings") == n
    await conn.close()
    return n / elapsed


# --------------------------------------------------------------------------- (b) naive ORM


def _reading_row_model():
    """An ORM model of `readings` as the obvious implementation would write it."""
    from datetime import datetime
    from typing import Optional

    from sqlalchemy import Column, DateTime
    from sqlmodel import Field, SQLModel

    namespace = {"__tablename__": "readings", "__table_args__": {"extend_existing": True},
                 "__annotations__": {"meter_id": str, "ts": datetime, "energy_kwh": float,
                                     "power_w": Optional[float], "voltage_v": Optional[float],
                                     "current_a": Optional[float], "power_factor": Optional[float],
                                     "gateway_id": str, "seq": int},
                 "meter_id": Field(primary_key=True),
                 "ts": Field(sa_column=Column(DateTime(timezone=True), primary_key=True)),
                 "power_w": None, "voltage_v": None, "current_a": None, "power_factor": None}
    return type("ReadingRow", (SQLModel,), namespace, table=True)


def naive_sqlmodel(url: str, total_rows: int) -> float:
    from datetime import datetime, timezone

    from sqlmodel import Session, create_engine

    from collector.settings import sqlalchemy_url

    ReadingRow = _reading_row_model()
    rows = []
    chunk = 0
    while len(rows) < total_rows:
        rows.extend(reading_rows(chunk % 50, chunk))
        chunk += 1
    rows = rows[:total_rows]
    engine = create_engine(sqlalchemy_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT gridsight_ensure_partition('readings', to_timestamp({START_TS}))")
    started = time.perf_counter()
    with Session(engine) as session:
        for r in rows:
            session.add(ReadingRow(meter_id=r[0], ts=datetime.fromtimestamp(r[1], timezone.utc), energy_kwh=r[2],
                                   power_w=r[3], voltage_v=r[4], current_a=r[5], power_factor=r[6], gateway_id=r[7],
                                   seq=r[8]))
            session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return len(rows) / elapsed


# --------------------------------------------------------------------------- (c) end to end


def gateway_publisher(port: int, gateways: range, chunks_per_gateway: int, ready, go, done_queue) -> None:
    """One process simulating several gateways: encodes everything first, then publishes flat out."""
    import paho.mqtt.client as mqtt

    messages: list[tuple[str, bytes]] = []
    for c in range(chunks_per_gateway):
        for g in gateways:
            gw = f"gw{g:04d}"
            seq = 2 * c + 1
            messages.append((wire.topic_for(gw, "raw"),
                             wire.encode(wire.RawChunk(gw, seq, "bench-1", START_TS, chunk_readings(g, c)))))
            if c % 10 == 0:  # one batched interval summary per gateway per ~15 minutes of readings
                meters = tuple(wire.MeterSummary(f"g{g:04d}-m{m:02d}", 0.3, 90, 400.0, 900.0, 0.1, False)
                               for m in range(METERS_PER_GATEWAY))
                messages.append((wire.topic_for(gw, "summary"), wire.encode(
                    wire.IntervalSummary(gw, seq + 1, "bench-1", START_TS, START_TS + c * 1000.0, 900, meters))))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{gateways.start}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.put(len(messages))
    go.wait()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(600)
    readings = sum(1 for t, _ in messages if t.endswith("/raw")) * READINGS_PER_CHUNK
    done_queue.put((len(messages), readings, sum(1 for t, _ in messages if t.endswith("/summary")) *
                    METERS_PER_GATEWAY, time.time()))
    client.disconnect()
    client.loop_stop()


def _wait_consuming(dsn: str, port: int, procs: list, work: Path, replicas: int) -> None:
    """Probe until every replica has dead-lettered a junk message: all are subscribed and writing."""
    import paho.mqtt.client as mqtt
    import psycopg

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-probe", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.time() + 120
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute("SELECT count(DISTINCT replica) FROM dead_letters").fetchone()[0] < replicas:
                if time.time() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"collector did not start; see {work}/collector-0.log")
                client.publish("gridsight/v1/probe/raw", b"probe", qos=1).wait_for_publish(10)
                time.sleep(0.2)
    finally:
        client.disconnect()
        client.loop_stop()


def end_to_end(dsn: str, broker: LocalMosquitto, work: Path, *, rate_guess: float, duration: float,
               publishers: int, gateways: int, replicas: int) -> dict:
    import psycopg

    chunks_total = max(1, int(rate_guess * duration / READINGS_PER_CHUNK))
    per_gateway = max(1, chunks_total // gateways)
    env = {**os.environ, "DATABASE_URL": dsn, "MQTT_URL": broker.url, "GRIDSIGHT_COLLECTOR_ARCHIVE_INTERVAL_S": "1",
           "GRIDSIGHT_COLLECTOR_BATCH_MAX_MESSAGES": "200", "GRIDSIGHT_COLLECTOR_BATCH_MAX_WAIT_S": "0.1",
           "GRIDSIGHT_COLLECTOR_UNKNOWN_GATEWAYS": "register"}     # synthetic gateways nobody registered
    procs = []
    for i in range(replicas):
        renv = {**env, "GRIDSIGHT_DATA_DIR": str(work / f"collector-{i}"),
                "GRIDSIGHT_COLLECTOR_REPLICA_ID": f"bench-{i}"}
        # all replicas share one archive directory, as they would share one bucket
        os.makedirs(work / f"collector-{i}", exist_ok=True)
        if i > 0:
            os.symlink(work / "collector-0" / "archive", work / f"collector-{i}" / "archive")
        else:
            os.makedirs(work / "collector-0" / "archive", exist_ok=True)
        procs.append(subprocess.Popen([sys.executable, "-m", "gridsight", "collector", "ingest"], env=renv,
                                      stdout=subprocess.DEVNULL, stderr=open(work / f"collector-{i}.log", "wb")))
    try:
        _wait_consuming(dsn, broker.port, procs, work, replicas)
        say(f"  (c) {publishers} publisher processes, {gateways} gateways, {per_gateway * gateways} raw chunks "
            f"({per_gateway * gateways * READINGS_PER_CHUNK:,} readings), {replicas} collector replica(s)")
        go = mp.Event()
        ready_q: mp.Queue = mp.Queue()
        done_q: mp.Queue = mp.Queue()
        split = [range(gateways * k // publishers, gateways * (k + 1) // publishers) for k in range(publishers)]
        pubs = [mp.Process(target=gateway_publisher, args=(broker.port, r, per_gateway, ready_q, go, done_q)) for r in split]
        for p in pubs:
            p.start()
        for _ in pubs:
            ready_q.get(timeout=1800)      # every publisher has encoded its messages and connected
        started = time.time()
        go.set()
        published = [done_q.get(timeout=3600) for _ in pubs]
        for p in pubs:
            p.join()
        messages = sum(p[0] for p in published)
        readings = sum(p[1] for p in published)
        summary_rows = sum(p[2] for p in published)
        publish_s = max(p[3] for p in published) - started
        say(f"  (c) published {messages:,} messages in {publish_s:.1f} s; waiting for the collector to store them")
        with psycopg.connect(dsn, autocommit=True) as conn:
            last, last_change = -1, time.time()
            last_said = time.time()
            while True:
                stored = conn.execute("SELECT count(*) FROM ingest_log").fetchone()[0]
                if stored >= messages:
                    break
                if stored != last:
                    last, last_change = stored, time.time()
                if time.time() - last_said >= 5:
                    say(f"      {stored:,}/{messages:,} messages stored")
                    last_said = time.time()
                elif time.time() - last_change > 60:
                    raise RuntimeError(f"collector stalled at {stored}/{messages} messages")
                time.sleep(0.1)
            finished = time.time()
            n_readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            conn.execute("SET work_mem = '512MB'")   # the duplicate check below hashes every reading
            doubled = conn.execute("SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM readings "
                                   "GROUP BY meter_id, ts HAVING count(*) > 1) d").fetchone()[0]
            distinct = n_readings - int(doubled)
            n_summary = conn.execute("SELECT count(*) FROM interval_summaries").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM dead_letters WHERE topic <> 'gridsight/v1/probe/raw'").fetchone()[0]
            deadline = time.time() + 300
            while conn.execute("SELECT count(*) FROM archive_outbox").fetchone()[0] > 0 and time.time() < deadline:
                time.sleep(0.5)
            archived = conn.execute("SELECT coalesce(sum(messages), 0) FROM archive_objects").fetchone()[0]
            by_replica = dict(conn.execute("SELECT replica, count(*) FROM ingest_log GROUP BY 1").fetchall())
        elapsed = finished - started
        return {"readings_per_s": n_readings / elapsed, "elapsed_s": elapsed, "publish_s": publish_s,
                "published_readings": readings, "stored_readings": n_readings, "distinct_readings": distinct,
                "published_summary_rows": summary_rows, "stored_summary_rows": n_summary, "messages": messages,
                "archived_messages": archived, "dead_letters": dead, "by_replica": by_replica,
                "lost": readings - n_readings, "duplicated": n_readings - distinct}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute in total")
    parser.add_argument("--duration", type=float, help="seconds of publishing for (c) (default 60, quick 15)")
    parser.add_argument("--replicas", type=int, default=1, help="collector replicas on the shared subscription")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--gateways", type=int, default=40, help="simulated gateways")
    parser.add_argument("--rate-guess", type=float, default=150_000,
                        help="readings/s to size the publish volume: above what the collector reaches, so it "
                             "stays busy for at least --duration")
    args = parser.parse_args()
    duration = args.duration or (15.0 if args.quick else 60.0)
    ceiling_rows = 300_000 if args.quick else 1_000_000
    naive_rows = 500 if args.quick else 3_000
    cmd = "python bench/ingest.py" + (" --quick" if args.quick else "") + (
        f" --replicas {args.replicas}" if args.replicas != 1 else "")

    work = Path(tempfile.mkdtemp(prefix="gridsight-bench-ingest-"))
    pg = EmbeddedPostgres(work / "pg", durable=True).start()
    broker = LocalMosquitto(work / "mqtt").start()
    try:
        from collector.db import migrate
        import psycopg

        def fresh(name: str) -> str:
            with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            migrate(pg.dsn(name))
            return pg.dsn(name)

        say(f"(a) COPY ceiling: {ceiling_rows:,} rows in batches of 100,000")
        ceiling = asyncio.run(copy_ceiling(fresh("ceiling"), ceiling_rows, 100_000))
        say(f"    {ceiling:,.0f} readings/s")
        say(f"(b) naive SQLModel: {naive_rows:,} readings, one insert + commit each")
        naive = naive_sqlmodel(fresh("naive"), naive_rows)
        say(f"    {naive:,.0f} readings/s")
        say(f"(c) gridsight end to end for ~{duration:.0f} s of publishing")
        e2e = end_to_end(fresh("e2e"), broker, work, rate_guess=args.rate_guess, duration=duration,
                         publishers=args.publishers, gateways=args.gateways, replicas=args.replicas)
        say(f"    {e2e['readings_per_s']:,.0f} readings/s over {e2e['elapsed_s']:.1f} s; lost {e2e['lost']}, "
            f"duplicated {e2e['duplicated']}, archived {e2e['archived_messages']}/{e2e['messages']} messages")
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "bench": "ingest", "quick": args.quick, "command": cmd, "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        "ceiling_copy_readings_per_s": round(ceiling),
        "naive_sqlmodel_readings_per_s": round(naive, 1),
        "e2e_readings_per_s": round(e2e["readings_per_s"]),
        "e2e_over_ceiling": round(e2e["readings_per_s"] / ceiling, 3),
        "e2e_over_naive": round(e2e["readings_per_s"] / naive, 1),
        "e2e_elapsed_s": round(e2e["elapsed_s"], 1), "e2e_publish_s": round(e2e["publish_s"], 1),
        "replicas": args.replicas,
        "published_readings": e2e["published_readings"], "stored_readings": e2e["stored_readings"],
        "lost_readings": e2e["lost"], "duplicated_readings": e2e["duplicated"],
        "summary_rows_published": e2e["published_summary_rows"], "summary_rows_stored": e2e["stored_summary_rows"],
        "messages": e2e["messages"], "archived_messages": e2e["archived_messages"],
        "dead_letters": e2e["dead_letters"],
        # the target (c): >= 50,000 readings/s and >= 40 % of the ceiling, sustained for >= 1 minute, no loss
        "sustained_60s": e2e["elapsed_s"] >= 60,
        "target_met": (e2e["readings_per_s"] >= 50_000 and e2e["readings_per_s"] >= 0.4 * ceiling
                       and e2e["lost"] == 0 and e2e["elapsed_s"] >= 60),
    }
    print(f"reproduce: {cmd}")
    print(f"ceiling (COPY)      {ceiling:>12,.0f} readings/s")
    print(f"naive (SQLModel)    {naive:>12,.1f} readings/s")
    print(f"gridsight e2e       {e2e['readings_per_s']:>12,.0f} readings/s  = {result['e2e_over_ceiling']:.0%} of "
          f"ceiling, {result['e2e_over_naive']:,.0f}x naive; lost {e2e['lost']}, duplicated {e2e['duplicated']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
