"""The stack an outside attacker meets: Mosquitto running the shipped gridsight.conf (TLS, client
certificates, password file, ACL), a fleet workspace provisioned by ``gridsight provision``, and the
collector as its own process (``gridsight collector serve``: API and ingest) with its client
certificate. Tests act as gateways, as the attacker and as API callers from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gridsight.local_services import free_port
from provisioning.ca import FleetCA
from provisioning.fleet import Fleet

JWT_SECRET = "security-tests-jwt-secret-0123456789abcdef"
PASSWORD = "correct horse battery staple"


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def provision_fleet(root: Path, gateways: tuple[str, ...] = ("gw-a", "gw-b"), replicas: int = 1) -> Fleet:
    """A fleet CA, the broker's server certificate, collector account(s) and gateway identities."""
    fleet = Fleet(root)
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1", "localhost"], fleet.broker_dir)
    for n in range(1, replicas + 1):
        fleet.add_collector(f"collector-{n}")
    for gw in gateways:
        fleet.create_gateway(gw, "mqtts://127.0.0.1:8883")
    return fleet


def gateway_password(fleet: Fleet, gateway_id: str) -> str:
    return (fleet.gateway_dir(gateway_id) / "mqtt.password").read_text().strip()


@dataclass
class CollectorProcess:
    """``gridsight collector serve`` as a child process; ``api(...)`` calls its HTTP API."""

    base_url: str
    proc: subprocess.Popen
    log_path: Path
    database_url: str
    data_dir: Path
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def api(self, method: str, path: str, *, headers: dict | None = None, body: Any = None,
            form: dict | None = None, query: dict | None = None) -> tuple[int, Any, dict]:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data, hdrs = None, dict(headers or {})
        if body is not None:
            data, hdrs["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif form is not None:
            data, hdrs["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw, status, rh = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            raw, status, rh = exc.read(), exc.code, dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return status, parsed, rh

    def login(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        status, body, _ = self.api("POST", "/auth/token", form={"username": username, "password": password})
        assert status == 200, (status, body)
        return {"Authorization": f"Bearer {body['access_token']}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_collector(fleet: Fleet, broker_port: int, database_url: str, data_dir: Path, *,
                    replica: int = 1, master_key: str | None = None, extra_env: dict | None = None,
                    ingest: bool = True) -> CollectorProcess:
    """The collector with the account and certificate ``provision collector-account`` wrote."""
    data_dir.mkdir(parents=True, exist_ok=True)
    account = f"collector-{replica}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSIGHT_")}
    env.update({
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "MQTT_URL": f"mqtts://127.0.0.1:{broker_port}",
        "MQTT_USERNAME": account,
        "MQTT_PASSWORD": (fleet.broker_dir / f"{account}.password").read_text().strip(),
        "GRIDSIGHT_COLLECTOR_MQTT_CA_FILE": str(fleet.ca_dir / "ca.crt"),
        "GRIDSIGHT_COLLECTOR_MQTT_CERT_FILE": str(fleet.broker_dir / account / "client.crt"),
        "GRIDSIGHT_COLLECTOR_MQTT_KEY_FILE": str(fleet.broker_dir / account / "client.key"),
        "GRIDSIGHT_COLLECTOR_BATCH_MAX_WAIT_S": "0.05",
        "GRIDSIGHT_COLLECTOR_ARCHIVE_INTERVAL_S": "0.5",
        "GRIDSIGHT_JWT_SECRET": JWT_SECRET,
        "GRIDSIGHT_DATA_DIR": str(data_dir),
    })
    if master_key:
        env["GRIDSIGHT_MASTER_KEY"] = master_key
    env.update(extra_env or {})
    port = free_port()
    log_path = data_dir / "collector.log"
    args = [sys.executable, "-m", "gridsight", "collector", "serve", "--port", str(port), "--replica-id", f"r{replica}"]
    if not ingest:
        args.append("--no-ingest")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    collector = CollectorProcess(f"http://127.0.0.1:{port}", proc, log_path, database_url, data_dir)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited {proc.returncode}:\n{collector.log()[-3000:]}")
        try:
            status, _, _ = collector.api("GET", "/readyz" if ingest else "/healthz")
        except OSError:
            return False
        return status == 200

    try:
        wait_until(ready, 120, "the collector to be ready")
    except BaseException:
        collector.stop()
        raise
    return collector


def create_account(database_url: str, username: str, role: str, customer_id: str | None = None) -> None:
    """An account as ``gridsight accounts create-user`` makes it (the identity store, directly)."""
    from collector.auth.store import IdentityStore, engine_for

    store = IdentityStore(engine_for(database_url))
    try:
        store.create_user(username, PASSWORD, role, customer_id)
    finally:
        store.engine.dispose()


def sql(database_url: str, query: str, *args) -> list:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


class MqttSession:
    """One MQTT 5 client over mutual TLS that never reconnects by itself, recording what the broker said."""

    def __init__(self, port: int, fleet: Fleet, username: str, password: str, cert_dir: Path,
                 client_id: str, *, resume: bool = False, session_expiry_s: int = 0) -> None:
        import queue
        import ssl
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
        self.connack: int | None = None
        self.session_present: bool | None = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  reconnect_on_failure=False)
        self.client.tls_set(ca_certs=str(fleet.ca_dir / "ca.crt"), certfile=str(cert_dir / "client.crt"),
                            keyfile=str(cert_dir / "client.key"), cert_reqs=ssl.CERT_REQUIRED)
        self.client.username_pw_set(username, password)

        def on_connect(c, userdata, flags, reason_code, properties=None):
            self.connack = reason_code.value
            self.session_present = bool(flags.session_present)
            self.connected.set()

        self.client.on_connect = on_connect
        self.client.on_disconnect = lambda *a, **k: (self.disconnected.set(), self.connected.set())
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, msg.payload))
        props = None
        if session_expiry_s:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry_s
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=not resume, properties=props)
        self.client.loop_start()
        assert self.connected.wait(15), "no CONNACK"

    def subscribe(self, topic: str) -> None:
        import threading

        done = threading.Event()
        self.client.on_subscribe = lambda *a, **k: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(15)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def register_gateways(database_url: str, *gateway_ids: str) -> None:
    """Gateways as enrollment registers them (``gateways`` rows), so the collector stores their data."""
    for gateway_id in gateway_ids:
        sql(database_url, "INSERT INTO gateways (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", gateway_id)
