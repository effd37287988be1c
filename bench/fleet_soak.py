"""Fleet soak: N gateways through the shipped broker config (TLS, passwords, ACL) into two collector
replicas on the shared subscription, while gateways restart, lose their data directories, the
broker restarts and collectors are SIGKILLed. Does anything get lost or stored twice?

Parts, all real: Mosquitto running deploy/mosquitto/gridsight.conf (mutual TLS, one password
account per gateway and per replica, the provisioning ACL), embedded PostgreSQL, two
`gridsight collector ingest` processes (one broker account each), and lightweight gateways:
publisher processes, each multiplexing hundreds of paho MQTT 5 clients on one selector loop.
A gateway speaks the wire contract (v2: its outbox epoch in every message) and keeps its own
durable outbox (rows in its process's SQLite file: epoch, next seq, unacked messages), deleting
a message only on PUBACK, as the agent does. What a simulated gateway shares with the agent is
the contract and the delivery rules, not the code: the agent's own kill -9 and outage tests
cover its code.

Faults, at random times during the fault phase:
  gateway restart  the gateway's connection drops without DISCONNECT and its memory is lost; it
                   comes back 1-5 s later from its outbox (same epoch, unacked messages resent)
  data-dir wipe    as a restart, but its outbox is deleted: it comes back in a new epoch at seq 1
  broker restart   Mosquitto is stopped and started again (its persistence keeps sessions)
  collector kill   one replica is SIGKILLed and started again 5-15 s later

Accounting, per message key (gateway, epoch, seq), from a ledger each publisher keeps apart from
the outboxes: produced readings; stored (the key is in ingest_log); wiped_unsent (the message
was still in an outbox when that outbox was deleted and never reached the collector: destroyed
with the disk, not a delivery failure); lost = produced - stored - wiped_unsent; duplicated =
reading rows stored more than once; conflicts = seq_conflict dead letters. Drain time after a
fault: until every message created before it is acknowledged and every acknowledged message is
stored. The control phase runs the same traffic without faults first.

    .venv/bin/python bench/fleet_soak.py --quick        # 200 gateways, about two minutes
    .venv/bin/python bench/fleet_soak.py                # 2000 gateways x 10 meters, 10 + 3 minutes

The LAST line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import selectors
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsight import wire  # noqa: E402
from gridsight.local_services import EmbeddedPostgres, LocalMosquitto, free_port  # noqa: E402

SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "gridsight.conf"
MAX_INFLIGHT = 20
# messages the collector has taken in: stored, or dead-lettered (a conflict is acked too)
_TAKEN_SQL = "SELECT (SELECT count(*) FROM ingest_log) + (SELECT count(*) FROM dead_letters)"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the broker, as shipped


class ShippedBroker(LocalMosquitto):
    """Mosquitto on the shipped gridsight.conf; only its install paths, port and persistence
    folder are the bench's."""

    def __init__(self, fleet_root: Path, work_dir: Path, port: int) -> None:
        super().__init__(work_dir, port=port, anonymous=False)
        self.fleet_root = fleet_root

    def write_config(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        text = SHIPPED_CONF.read_text()
        text = text.replace("/etc/mosquitto/gridsight/ca.crt", str(self.fleet_root / "ca" / "ca.crt"))
        text = text.replace("/etc/mosquitto/gridsight/", f"{self.fleet_root / 'broker'}/")
        if "listener 8883\n" not in text:
            raise RuntimeError(f"{SHIPPED_CONF} no longer has 'listener 8883'")
        text = text.replace("listener 8883\n", f"listener {self.port} 127.0.0.1\n")
        harness = ["user root"] if os.geteuid() == 0 else []
        harness += ["persistence true", f"persistence_location {self.work_dir}/", "autosave_interval 1",
                    "log_dest stdout", "log_type error", "log_type warning"]
        conf = self.work_dir / "mosquitto.conf"
        conf.write_text("\n".join(harness) + "\n" + text)
        return conf

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None


def provision(root: Path, gateways: list[str], replicas: int) -> dict:
    """CA, server certificate, one password account per gateway and per collector replica, the ACL.

    The simulated gateways share one client certificate signed by the fleet CA (the broker checks
    the certificate against the CA and the account by its password; per-gateway certificates cost
    the same handshake)."""
    from provisioning import broker
    from provisioning.ca import FleetCA
    from provisioning.fleet import Fleet

    fleet = Fleet(root)
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1", "localhost"], fleet.broker_dir)
    collectors = {}
    for i in range(replicas):
        collectors[f"r{i + 1}"] = fleet.add_collector("collector", replica=f"r{i + 1}")
    fleet.ca().issue_client("bench-gateway", root / "gateway-cert")
    users = broker.read_users(fleet.passwd_file)
    passwords = {}
    for gw in gateways:
        passwords[gw] = f"pw-{gw}-{random.getrandbits(64):016x}"
        users[gw] = broker.mosquitto_hash(passwords[gw])
    tmp = fleet.passwd_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{u}:{h}\n" for u, h in sorted(users.items()))
    os.replace(tmp, fleet.passwd_file)
    broker.write_acl(fleet.acl_file, gateways, [f"collector-r{i + 1}" for i in range(replicas)])
    return {"collectors": collectors, "gateways": passwords}


# --------------------------------------------------------------------------- a gateway's outbox


_OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (gateway TEXT PRIMARY KEY, epoch TEXT NOT NULL, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (gateway TEXT, seq INTEGER, kind TEXT, created REAL, payload BLOB,
                                     PRIMARY KEY (gateway, seq));
"""
_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (gateway TEXT, epoch TEXT, seq INTEGER, incarnation INTEGER, kind TEXT,
                                   readings INTEGER, created REAL, phase TEXT, acked REAL,
                                   wiped INTEGER DEFAULT 0, digest BLOB,
                                   PRIMARY KEY (gateway, epoch, seq, incarnation));
"""


class Gateway:
    """One simulated gateway: meters, an outbox (in its process's SQLite file) and an MQTT client."""

    def __init__(self, gid: str, meters: int) -> None:
        self.gid = gid
        self.meters = [f"{gid}-m{m}" for m in range(meters)]
        self.epoch = ""
        self.incarnation = 0        # data directories this gateway has had (bench bookkeeping)
        self.next_seq = 1
        self.pending: dict[int, tuple[str, float, bytes]] = {}   # seq -> (kind, created, payload)
        self.inflight: dict[int, int] = {}                        # mid -> seq
        self.sent_at: dict[int, float] = {}                       # mid -> when it was published
        self.connect_started = 0.0
        self.fd: int | None = None          # the socket registered in the selector
        self.retry_at: dict[int, float] = {}                      # seq -> when to offer again
        self.client = None
        self.connected = False
        self.down_until = 0.0       # no connection attempt before this
        self.alive_at = 0.0         # the gateway process is down (restarting) until this
        self.failures = 0
        self.next_reading = 0.0
        self.readings: list[wire.Reading] = []
        self.chunks = 0


def publisher_main(index: int, gateways: list[str], passwords: dict, port: int, work: str, cfg: dict,
                   commands: mp.Queue, reports: mp.Queue) -> None:
    """One publisher process: its gateways on one selector loop (see the module docstring)."""
    import paho.mqtt.client as mqtt

    rng = random.Random(1000 + index)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    db = sqlite3.connect(os.path.join(work, f"outbox-{index}.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_OUTBOX_SCHEMA)
    ledger = sqlite3.connect(os.path.join(work, f"ledger-{index}.sqlite"), isolation_level=None)
    ledger.execute("PRAGMA journal_mode=WAL")
    ledger.execute("PRAGMA synchronous=OFF")
    ledger.executescript(_LEDGER_SCHEMA)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg["ca"])
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    sel = selectors.DefaultSelector()
    gws = {g: Gateway(g, cfg["meters"]) for g in gateways}
    by_client: dict[int, Gateway] = {}
    phase = "control"
    produced_msgs = acked_msgs = 0
    acked_rows: list[tuple] = []

    def load(gw: Gateway) -> None:
        row = db.execute("SELECT epoch, next_seq FROM meta WHERE gateway = ?", (gw.gid,)).fetchone()
        if row is None:
            # --legacy-keys: no epoch (schema v1), so a wiped gateway re-uses its seqs
            gw.epoch, gw.next_seq = ("" if cfg["legacy"] else f"{rng.getrandbits(64):016x}"), 1
            db.execute("INSERT INTO meta VALUES (?, ?, ?)", (gw.gid, gw.epoch, gw.next_seq))
        else:
            gw.epoch, gw.next_seq = row
        gw.pending = {s: (k, c, bytes(p)) for s, k, c, p in db.execute(
            "SELECT seq, kind, created, payload FROM messages WHERE gateway = ?", (gw.gid,))}
        gw.inflight.clear()
        gw.retry_at.clear()

    def drop(gw: Gateway, down_s: float) -> None:
        client, gw.client = gw.client, None
        gw.connected = False
        gw.inflight.clear()
        gw.sent_at.clear()
        forget_fd(gw)
        if client is not None:
            by_client.pop(id(client), None)
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()           # no DISCONNECT: as a crash or a lost link looks
                except OSError:
                    pass
        gw.down_until = time.time() + down_s

    why: dict[str, int] = {}

    def note(reason: str) -> None:
        why[reason] = why.get(reason, 0) + 1
        if why[reason] in (1, 10, 100, 1000):
            say(f"  publisher {index}: {reason} (x{why[reason]})")

    def on_connect(client, gw, flags, rc, props):
        if rc.is_failure:
            note(f"CONNACK {rc}")
            drop(gw, min(30.0, 0.5 * 2 ** gw.failures) * (0.5 + rng.random() / 2))
            gw.failures += 1
            return
        gw.connected = True
        gw.failures = 0

    def on_disconnect(client, gw, flags, rc, props):
        if client is gw.client:
            note(f"disconnected: {rc}")
            drop(gw, min(30.0, 0.5 * 2 ** gw.failures) * (0.5 + rng.random() / 2))
            gw.failures += 1

    def on_publish(client, gw, mid, rc, props):
        nonlocal acked_msgs
        seq = gw.inflight.pop(mid, None)
        gw.sent_at.pop(mid, None)
        if seq is None or client is not gw.client:
            return
        code = getattr(rc, "value", 0)
        if code >= 0x80 or code == 0x10:     # refused, or no subscriber yet: keep it, offer it again
            gw.retry_at[seq] = time.time() + 2.0
            return
        if gw.pending.pop(seq, None) is not None:
            acked_msgs += 1
            acked_rows.append((gw.gid, seq, gw.epoch, gw.incarnation))

    def forget_fd(gw: Gateway) -> None:
        # by fd number: paho may already have closed the socket, and a closed socket's fd is
        # reused by the next connection (a stale registration then breaks it)
        if gw.fd is not None:
            try:
                sel.unregister(gw.fd)
            except (KeyError, ValueError, OSError):
                pass
            gw.fd = None

    def register_write(client, gw, sock):
        if gw.client is client and gw.fd is not None:
            try:
                sel.modify(gw.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
            except (KeyError, ValueError, OSError):
                pass

    def unregister_write(client, gw, sock):
        if gw.client is client and gw.fd is not None:
            try:
                sel.modify(gw.fd, selectors.EVENT_READ, client)
            except (KeyError, ValueError, OSError):
                pass

    def socket_closed(client, gw, sock):
        if gw.client is client:
            forget_fd(gw)

    def connect(gw: Gateway) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=gw.gid, protocol=mqtt.MQTTv5,
                             userdata=gw)
        client.username_pw_set(gw.gid, passwords[gw.gid])
        client.tls_set_context(ctx)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect, client.on_disconnect, client.on_publish = on_connect, on_disconnect, on_publish
        client.on_socket_register_write = register_write
        client.on_socket_unregister_write = unregister_write
        client.on_socket_close = socket_closed
        gw.client = client
        gw.connect_started = time.time()
        try:
            client.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        except (OSError, ssl.SSLError, ValueError) as exc:
            note(f"connect: {type(exc).__name__}: {str(exc)[:60]}")
            gw.client = None
            gw.down_until = time.time() + min(30.0, 0.5 * 2 ** gw.failures) * (0.5 + rng.random() / 2)
            gw.failures += 1
            return
        by_client[id(client)] = gw
        gw.fd = client.socket().fileno()
        sel.register(gw.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def produce(gw: Gateway, now: float) -> None:
        """Take readings once a reading period; seal them into a raw chunk every chunk period."""
        nonlocal produced_msgs
        while gw.next_reading <= now:
            ts = gw.next_reading
            for i, meter in enumerate(gw.meters):
                gw.readings.append(wire.Reading(meter, ts, round(1000 + ts / 3600 * (i + 1) % 1e6, 4), 300.0 + i))
            gw.next_reading += cfg["reading_s"]
        if len(gw.readings) >= cfg["chunk_readings"]:
            readings, gw.readings = tuple(gw.readings), []
            seq = gw.next_seq
            gw.next_seq += 1
            msg = wire.RawChunk(gw.gid, seq, None, now, readings, epoch=gw.epoch or None)
            payload = wire.encode(msg)
            db.execute("INSERT INTO messages VALUES (?, ?, 'raw', ?, ?)", (gw.gid, seq, now, payload))
            db.execute("UPDATE meta SET next_seq = ? WHERE gateway = ?", (gw.next_seq, gw.gid))
            ledger.execute("INSERT INTO ledger VALUES (?, ?, ?, ?, 'raw', ?, ?, ?, NULL, 0, ?)",
                           (gw.gid, gw.epoch, seq, gw.incarnation, len(readings), now, phase,
                            wire.content_digest(msg)))
            gw.pending[seq] = ("raw", now, payload)
            produced_msgs += 1

    def publish_more(gw: Gateway, now: float) -> None:
        room = MAX_INFLIGHT - len(gw.inflight)
        if room <= 0 or not gw.pending:
            return
        busy = set(gw.inflight.values())
        for seq in sorted(gw.pending)[:room + len(busy)]:
            if room <= 0:
                break
            if seq in busy or gw.retry_at.get(seq, 0) > now:
                continue
            info = gw.client.publish(wire.topic_for(gw.gid, "raw"), gw.pending[seq][2], qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            gw.inflight[info.mid] = seq
            gw.sent_at[info.mid] = now
            gw.retry_at.pop(seq, None)
            room -= 1

    def restart(gw: Gateway, wipe: bool) -> int:
        """Crash the gateway (memory gone); with ``wipe`` its outbox too. Returns messages destroyed."""
        down = rng.uniform(1.0, 5.0)
        drop(gw, down)
        gw.alive_at = time.time() + down
        gw.next_reading = gw.alive_at       # no readings are taken while it is down
        destroyed = 0
        db.execute("BEGIN")
        if wipe:
            destroyed = len(gw.pending)
            lost = [(gw.gid, gw.epoch, s, gw.incarnation) for s in gw.pending]
            db.execute("DELETE FROM messages WHERE gateway = ?", (gw.gid,))
            db.execute("DELETE FROM meta WHERE gateway = ?", (gw.gid,))
            ledger.executemany("UPDATE ledger SET wiped = 1 WHERE gateway = ? AND epoch = ? AND seq = ? "
                               "AND incarnation = ?", lost)
            gw.incarnation += 1
        db.execute("COMMIT")
        gw.readings = []          # readings not yet sealed die with the process; never counted as produced
        load(gw)
        return destroyed

    start = time.time()
    for i, gw in enumerate(gws.values()):
        load(gw)
        gw.next_reading = start + rng.uniform(0, cfg["reading_s"])
        gw.down_until = start + i * cfg["connect_spread_s"] / max(1, len(gws))
    last_misc = last_report = 0.0
    stopping = False
    produce_until = float("inf")
    while True:
        now = time.time()
        try:
            while True:
                cmd = commands.get_nowait()
                if cmd[0] in ("restart", "wipe"):
                    destroyed = restart(gws[cmd[1]], cmd[0] == "wipe")
                    reports.put(("fault", index, cmd[0], cmd[1], destroyed))
                elif cmd[0] == "phase":
                    phase = cmd[1]
                elif cmd[0] == "stop_producing":
                    produce_until = now
                elif cmd[0] == "stop":
                    stopping = True
        except queue.Empty:
            pass
        db.execute("BEGIN")
        if now < produce_until:
            for gw in gws.values():
                if gw.alive_at <= now:
                    produce(gw, now)
        db.execute("COMMIT")
        if acked_rows:
            db.execute("BEGIN")
            db.executemany("DELETE FROM messages WHERE gateway = ? AND seq = ?", [(g, s) for g, s, _, _ in acked_rows])
            db.execute("COMMIT")
            ledger.executemany("UPDATE ledger SET acked = ? WHERE gateway = ? AND epoch = ? AND seq = ? "
                               "AND incarnation = ?", [(now, g, e, s, i) for g, s, e, i in acked_rows])
            acked_rows.clear()
        connects = 0
        for gw in gws.values():
            if gw.client is None and gw.down_until <= now and connects < cfg["connects_per_loop"]:
                connect(gw)
                connects += 1
            elif gw.connected:
                publish_more(gw, now)
        for key, events in sel.select(timeout=0.02):
            client = key.data
            gw = by_client.get(id(client))
            if gw is None or gw.client is not client:
                continue
            if events & selectors.EVENT_READ:
                rc = client.loop_read(50)
                if rc != mqtt.MQTT_ERR_SUCCESS and gw.client is client:
                    note(f"read: {rc}")
                    drop(gw, rng.uniform(0.5, 3.0))
                    continue
            if events & selectors.EVENT_WRITE and gw.client is client:
                client.loop_write()
        if now - last_misc >= 1.0:
            last_misc = now
            for gw in list(gws.values()):
                if gw.client is None:
                    continue
                if gw.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    drop(gw, rng.uniform(0.5, 3.0))
                elif not gw.connected and now - gw.connect_started > 15:
                    note("no CONNACK within 15 s")
                    drop(gw, rng.uniform(0.5, 3.0))      # no CONNACK: try again, as the agent does
                elif gw.sent_at and now - min(gw.sent_at.values()) > 60:
                    note("PUBACKs overdue")
                    drop(gw, rng.uniform(0.5, 3.0))      # PUBACKs overdue: reconnect and resend
        if now - last_report >= 1.0 or stopping:
            last_report = now
            oldest = min((c for gw in gws.values() for (_, c, _) in gw.pending.values()), default=None)
            reports.put(("state", index, produced_msgs, acked_msgs, oldest,
                         sum(len(gw.pending) for gw in gws.values()),
                         sum(1 for gw in gws.values() if gw.connected), now))
        if stopping:
            break
    for gw in gws.values():
        if gw.client is not None:
            gw.client.disconnect()
    db.close()
    ledger.close()


# --------------------------------------------------------------------------- the orchestrator


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Collector:
    def __init__(self, replica: str, config: Path, env: dict, work: Path) -> None:
        self.replica, self.config, self.env, self.work = replica, config, env, work
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        log = open(self.work / f"collector-{self.replica}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gridsight", "collector", "--config", str(self.config),
                                      "ingest", "--replica-id", self.replica], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=log)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.kills += 1
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def run(args) -> dict:
    import psycopg

    n = args.gateways
    gateways = [f"gw-{i:05d}" for i in range(n)]
    work = Path(tempfile.mkdtemp(prefix="gridsight-soak-"))
    say(f"work directory {work}; load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    accounts = provision(work / "fleet", gateways, 2)
    pg = EmbeddedPostgres(work / "pg", durable=True).start()
    broker = ShippedBroker(work / "fleet", work / "mosquitto", free_port()).start()
    collectors: list[Collector] = []
    pubs: list[mp.Process] = []
    try:
        from collector.db import migrate

        dsn = pg.dsn("postgres")
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO gateways (id) VALUES (%s)", [(g,) for g in gateways])  # provisioned
        fleet = work / "fleet"
        for i, (replica, password) in enumerate(accounts["collectors"].items()):
            (work / f"collector-{replica}").mkdir()
            config = work / f"collector-{replica}.toml"
            config.write_text(
                f'mqtt_url = "mqtts://127.0.0.1:{broker.port}"\nmqtt_username = "collector-{replica}"\n'
                f'mqtt_password = "{password}"\nmqtt_ca_file = "{fleet / "ca" / "ca.crt"}"\n'
                f'mqtt_cert_file = "{fleet / "broker" / f"collector-{replica}" / "client.crt"}"\n'
                f'mqtt_key_file = "{fleet / "broker" / f"collector-{replica}" / "client.key"}"\n'
                f'database_url = "{dsn}"\nreplica_id = "{replica}"\ndata_dir = "{work / f"collector-{replica}"}"\n'
                'batch_max_messages = 500\n')
            collectors.append(Collector(replica, config, {**os.environ}, work))
        for c in collectors:
            c.start()
        cfg = {"ca": str(fleet / "ca" / "ca.crt"), "cert": str(fleet / "gateway-cert" / "client.crt"),
               "key": str(fleet / "gateway-cert" / "client.key"), "meters": args.meters,
               "reading_s": args.reading_s, "chunk_readings": args.meters * args.readings_per_chunk,
               "connects_per_loop": 20, "connect_spread_s": args.connect_spread_s, "legacy": args.legacy_keys}
        reports: mp.Queue = mp.Queue()
        commands = []
        split = [gateways[k::args.procs] for k in range(args.procs)]
        for k, part in enumerate(split):
            q: mp.Queue = mp.Queue()
            commands.append(q)
            p = mp.Process(target=publisher_main, args=(k, part, {g: accounts["gateways"][g] for g in part},
                                                        broker.port, str(work), cfg, q, reports))
            p.start()
            pubs.append(p)
        owner = {g: k for k, part in enumerate(split) for g in part}
        state: dict[int, tuple] = {}
        peak = {"broker_rss_mb": 0.0, "collector_rss_mb": 0.0}
        faults: list[dict] = []
        pending_faults: list[dict] = []

        def dbq(sql: str):
            with psycopg.connect(dsn, autocommit=True) as conn:
                return conn.execute(sql).fetchone()[0]

        def pump(wait: float = 0.0) -> None:
            deadline = time.time() + wait
            while True:
                try:
                    item = reports.get(timeout=max(0.01, deadline - time.time()))
                except queue.Empty:
                    item = None
                if item is not None and item[0] == "state":
                    state[item[1]] = item[2:]
                if time.time() >= deadline:
                    break
            peak["broker_rss_mb"] = max(peak["broker_rss_mb"], rss_mb(broker.pid) or 0.0)
            peak["collector_rss_mb"] = max(peak["collector_rss_mb"],
                                           max((rss_mb(c.proc.pid) or 0.0) for c in collectors if c.proc) if any(
                                               c.proc for c in collectors) else 0.0)

        def totals() -> dict:
            s = list(state.values())
            oldest = [x[2] for x in s if x[2] is not None]
            return {"produced": sum(x[0] for x in s), "acked": sum(x[1] for x in s),
                    "oldest_unacked": min(oldest) if oldest else None, "queued": sum(x[3] for x in s),
                    "connected": sum(x[4] for x in s), "reported": min((x[5] for x in s), default=0.0)}

        def check_drains() -> None:
            if not pending_faults:
                return
            t = totals()
            stored = dbq(_TAKEN_SQL)
            collectors_up = all(c.proc is not None for c in collectors)
            for f in list(pending_faults):
                # drained: every gateway connected again, every message made before the fault
                # acked, every acked message stored, both replicas running; all as reported after it
                if t["reported"] > f["at"] + 1 and t["connected"] == n and collectors_up and \
                        (t["oldest_unacked"] is None or t["oldest_unacked"] > f["at"]) and stored >= t["acked"]:
                    f["drain_s"] = round(time.time() - f["at"], 1)
                    pending_faults.remove(f)

        say(f"{n} gateways x {args.meters} meters through {SHIPPED_CONF.relative_to(ROOT)} (TLS) in "
            f"{args.procs} publisher processes; 2 collector replicas")
        t0 = time.time()
        while totals()["connected"] < n and time.time() - t0 < 600:
            pump(2.0)
            say(f"  connecting: {totals()['connected']}/{n} gateways")
        connect_s = time.time() - t0
        say(f"control phase: {args.control_minutes} min without faults")
        end = time.time() + args.control_minutes * 60
        while time.time() < end:
            pump(5.0)
            t = totals()
            say(f"  produced {t['produced']:,} messages, acked {t['acked']:,}, queued {t['queued']:,}, "
                f"connected {t['connected']}/{n}")
        for q in commands:
            q.put(("phase", "faults"))
        rng = random.Random(args.seed)
        duration = args.minutes * 60
        plan = sorted([(rng.uniform(0.05, 0.9) * duration, "restart") for _ in range(args.restarts)]
                      + [(rng.uniform(0.05, 0.9) * duration, "wipe") for _ in range(args.wipes)]
                      + [(rng.uniform(0.3, 0.5) * duration, "broker")]
                      + [(rng.uniform(0.1, 0.9) * duration, "collector") for _ in range(args.collector_kills)])
        say(f"fault phase: {args.minutes} min; {args.restarts} gateway restarts, {args.wipes} data-dir wipes, "
            "1 broker restart, {} collector kills".format(args.collector_kills))
        phase_start = time.time()
        revive: list[tuple[float, Collector]] = []
        next_say = time.time() + 10
        while time.time() - phase_start < duration or revive:
            now = time.time()
            while plan and plan[0][0] <= now - phase_start:
                _, kind = plan.pop(0)
                f = {"kind": kind, "at": time.time()}
                if kind in ("restart", "wipe"):
                    gw = rng.choice(gateways)
                    commands[owner[gw]].put((kind, gw))
                    f["target"] = gw
                elif kind == "broker":
                    broker.stop()
                    time.sleep(rng.uniform(2.0, 6.0))
                    broker.start()
                    f["at"] = time.time()
                else:
                    c = rng.choice([c for c in collectors if c.proc is not None] or collectors)
                    c.kill()
                    revive.append((time.time() + rng.uniform(5, 15), c))
                    f["target"] = c.replica
                faults.append(f)
                pending_faults.append(f)
            for when, c in list(revive):
                if when <= now:
                    c.start()
                    revive.remove((when, c))
            pump(1.0)
            check_drains()
            if time.time() >= next_say:
                next_say = time.time() + 10
                t = totals()
                say(f"  t+{time.time() - phase_start:.0f}s produced {t['produced']:,}, acked {t['acked']:,}, "
                    f"queued {t['queued']:,}, connected {t['connected']}/{n}, faults so far {len(faults)}")
        for q in commands:
            q.put(("stop_producing",))
        say("producing stopped; draining")
        drain_start = time.time()
        while time.time() - drain_start < args.drain_timeout_s:
            pump(2.0)
            check_drains()
            t = totals()
            stored = dbq(_TAKEN_SQL)
            if t["queued"] == 0 and stored >= t["acked"] and not pending_faults:
                break
            if time.time() >= next_say:
                next_say = time.time() + 10
                say(f"  draining: queued {t['queued']:,}, acked {t['acked']:,}, stored {stored:,}, "
                    f"connected {t['connected']}/{n}, replicas up {sum(c.proc is not None for c in collectors)}")
        final_drain_s = round(time.time() - drain_start, 1)
        time.sleep(3)
        for q in commands:
            q.put(("stop",))
        while True:
            try:
                item = reports.get(timeout=5)
            except queue.Empty:
                break
            if item[0] == "state":
                state[item[1]] = item[2:]
        for p in pubs:
            p.join(60)
        return account(dsn, work, args, faults, peak, connect_s, final_drain_s, collectors)
    finally:
        for p in pubs:
            if p.is_alive():
                p.kill()
        for c in collectors:
            c.stop()
        broker.close()
        pg.close()


def account(dsn: str, work: Path, args, faults, peak, connect_s, final_drain_s, collectors) -> dict:
    """Join the publishers' ledgers with ingest_log and count readings, per phase."""
    import psycopg

    rows = []
    for path in sorted(work.glob("ledger-*.sqlite")):
        with sqlite3.connect(path) as lg:
            rows += lg.execute("SELECT gateway, epoch, seq, readings, phase, wiped, acked IS NOT NULL, digest "
                               "FROM ledger").fetchall()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE ledger (gateway text, epoch text, seq bigint, readings int, phase text, "
                     "wiped int, acked bool, digest bytea)")
        with conn.cursor().copy("COPY ledger FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        per_phase = {}
        for phase in ("control", "faults"):
            produced, stored, wiped_unsent, acked_missing = conn.execute(
                "SELECT coalesce(sum(l.readings), 0), "
                "coalesce(sum(l.readings) FILTER (WHERE i.seq IS NOT NULL), 0), "
                "coalesce(sum(l.readings) FILTER (WHERE i.seq IS NULL AND l.wiped = 1), 0), "
                "count(*) FILTER (WHERE i.seq IS NULL AND l.acked) "
                "FROM ledger l LEFT JOIN ingest_log i ON i.gateway_id = l.gateway AND i.epoch = l.epoch "
                "AND i.seq = l.seq AND i.digest = l.digest WHERE l.phase = %s", (phase,)).fetchone()
            per_phase[phase] = {"produced": int(produced), "stored": int(stored), "wiped_unsent": int(wiped_unsent),
                                "lost": int(produced - stored - wiped_unsent),
                                "acked_not_stored_messages": int(acked_missing)}
        conn.execute("SET work_mem = '256MB'")
        total_rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (meter_id, ts)) FROM readings").fetchone()
        conflicts = conn.execute("SELECT count(*) FROM dead_letters WHERE reason = 'seq_conflict'").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        epochs = conn.execute("SELECT count(*) FROM gateway_epochs").fetchone()[0]
        new_epochs = conn.execute("SELECT coalesce(sum(epochs - 1), 0) FROM gateways").fetchone()[0]
    return {"gateways": args.gateways, "meters_per_gateway": args.meters, "legacy_keys": args.legacy_keys, "control_minutes": args.control_minutes,
            "fault_minutes": args.minutes, "connect_s": round(connect_s, 1),
            "control": per_phase["control"], "faults": per_phase["faults"],
            "produced": per_phase["control"]["produced"] + per_phase["faults"]["produced"],
            "stored": per_phase["control"]["stored"] + per_phase["faults"]["stored"],
            "lost": per_phase["control"]["lost"] + per_phase["faults"]["lost"],
            "wiped_unsent": per_phase["faults"]["wiped_unsent"],
            "duplicated": int(total_rows - distinct), "conflicts": int(conflicts), "dead_letters": int(dead),
            "epochs_seen": int(epochs), "new_epochs": int(new_epochs),
            "faults_injected": {k: sum(1 for f in faults if f["kind"] == k)
                                for k in ("restart", "wipe", "broker", "collector")},
            "drain_s": [{"kind": f["kind"], "drain_s": f.get("drain_s")} for f in faults],
            "final_drain_s": final_drain_s,
            "broker_rss_peak_mb": round(peak["broker_rss_mb"], 1),
            "collector_rss_peak_mb": round(peak["collector_rss_mb"], 1),
            "collector_kills": sum(c.kills for c in collectors),
            "load_avg_end": round(os.getloadavg()[0], 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="200 gateways, 1 + 1 minutes, fewer faults")
    p.add_argument("--gateways", type=int, help="simulated gateways (default 2000, quick 200)")
    p.add_argument("--meters", type=int, default=10, help="meters per gateway")
    p.add_argument("--minutes", type=float, help="fault phase length (default 10, quick 1)")
    p.add_argument("--control-minutes", type=float, help="control phase without faults first (default 3, quick 0.5)")
    p.add_argument("--reading-s", type=float, default=10.0, help="seconds between a meter's readings")
    p.add_argument("--readings-per-chunk", type=int, default=3, help="readings per meter in one raw chunk")
    p.add_argument("--restarts", type=int, help="gateway restarts in the fault phase (default 40, quick 10)")
    p.add_argument("--wipes", type=int, help="data-directory wipes in the fault phase (default 20, quick 5)")
    p.add_argument("--collector-kills", type=int, help="collector SIGKILLs in the fault phase (default 4, quick 2)")
    p.add_argument("--procs", type=int, default=2, help="publisher processes")
    p.add_argument("--connect-spread-s", type=float, default=30.0, help="first connections spread over this long")
    p.add_argument("--drain-timeout-s", type=float, default=600.0, help="give up draining after this long")
    p.add_argument("--seed", type=int, default=16, help="fault schedule seed")
    p.add_argument("--legacy-keys", action="store_true",
                   help="the alternative: gateways send schema-1 messages without an epoch, so a wiped gateway "
                        "re-uses its seqs (what every gateway did before epochs)")
    args = p.parse_args()
    q = args.quick
    args.gateways = args.gateways or (200 if q else 2000)
    args.minutes = args.minutes if args.minutes is not None else (1.0 if q else 10.0)
    args.control_minutes = args.control_minutes if args.control_minutes is not None else (0.5 if q else 3.0)
    args.restarts = args.restarts if args.restarts is not None else (10 if q else 40)
    args.wipes = args.wipes if args.wipes is not None else (5 if q else 20)
    args.collector_kills = args.collector_kills if args.collector_kills is not None else (2 if q else 4)
    if q:
        args.connect_spread_s = min(args.connect_spread_s, 10.0)
    command = "python bench/fleet_soak.py" + (" --quick" if q else "") + (" --legacy-keys" if args.legacy_keys else "")
    result = run(args)
    say("")
    say(f"command: {command}")
    for phase in ("control", "faults"):
        r = result[phase]
        say(f"{phase:>8}: produced {r['produced']:,} readings, stored {r['stored']:,}, lost {r['lost']}, "
            f"destroyed unsent by wipes {r['wiped_unsent']:,}")
    say(f"duplicated {result['duplicated']}, seq conflicts {result['conflicts']}, dead letters {result['dead_letters']}, "
        f"new epochs {result['new_epochs']}")
    say("drain after each fault: " + ", ".join(f"{d['kind']} {d['drain_s']} s" for d in result["drain_s"]))
    say(f"final drain {result['final_drain_s']} s; broker RSS peak {result['broker_rss_peak_mb']} MB, "
        f"collector RSS peak {result['collector_rss_peak_mb']} MB; load average at end {result['load_avg_end']}")
    result["command"] = command
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
