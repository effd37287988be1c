"""A real Mosquitto started with the shipped gridsight.conf, and small MQTT clients for the tests."""

from __future__ import annotations

import os
import queue
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from provisioning.fleet import Fleet
from gridsight.local_services import LocalMosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "deploy/mosquitto/gridsight.conf"


def broker_conf_for(fleet: Fleet, tls_port: int) -> str:
    """The shipped configuration with its install paths pointed at the fleet workspace."""
    text = SHIPPED_CONF.read_text()
    text = text.replace("/etc/mosquitto/gridsight/ca.crt", str(fleet.ca_dir / "ca.crt"))
    text = text.replace("/etc/mosquitto/gridsight/", f"{fleet.broker_dir}/")
    assert "listener 8883\n" in text
    return text.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")


class ShippedConfigBroker(LocalMosquitto):
    """Mosquitto running the shipped gridsight.conf and nothing else but test paths, persistence
    in the test's folder and logging: no listener or limit of the test harness's own."""

    def __init__(self, fleet: Fleet, work_dir: Path, tls_port: int | None = None) -> None:
        super().__init__(work_dir, port=tls_port or free_port(), anonymous=False)
        self.fleet = fleet

    def write_config(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "mosquitto.conf"
        harness = ["user root"] if os.geteuid() == 0 else []
        harness += ["persistence true", f"persistence_location {self.work_dir}/", "autosave_interval 1",
                    "log_dest stdout", "log_type error", "log_type warning"]
        conf.write_text("\n".join(harness) + "\n" + broker_conf_for(self.fleet, self.port))
        return conf


def start_broker(fleet: Fleet, work_dir: Path, tls_port: int | None = None) -> tuple[LocalMosquitto, int]:
    broker = ShippedConfigBroker(fleet, work_dir, tls_port).start()
    return broker, broker.port


@dataclass
class Session:
    client: mqtt.Client
    connected: int | None            # CONNACK reason code value (0 = accepted), None if no CONNACK
    messages: "queue.Queue[tuple[str, bytes]]"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def attempt(self, topic: str, payload: bytes) -> str:
        """Publish once at QoS 1 and report the broker's answer: "accepted" or "refused".

        Mosquitto 2.0 answers a denied publish with reason code 135 and closes the connection,
        so either outcome ends the wait; the connection is not reused afterwards.
        """
        outcome: dict = {}
        done = threading.Event()

        def on_publish(c, userdata, mid, reason_code, properties=None):
            outcome["rc"] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
            done.set()

        self.client.on_publish = on_publish
        self.client.on_disconnect = lambda *a, **k: (outcome.setdefault("rc", 255), done.set())
        self.client.publish(topic, payload, qos=1)
        assert done.wait(10), "neither PUBACK nor disconnect"
        self.client.loop_stop()
        return "accepted" if outcome["rc"] < 128 else "refused"

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a, **k: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(10), "no SUBACK"

    def wait_for(self, topic: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Every message received up to and including the first on ``topic``."""
        seen = []
        while True:
            item = self.messages.get(timeout=timeout)
            seen.append(item)
            if item[0] == topic:
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, fleet: Fleet, username: str | None, password: str | None,
            cert_dir: Path | None, client_id: str | None = None, session_expiry_s: int = 0) -> Session:
    """Connect over TLS with the fleet CA; ``cert_dir`` holds client.crt/client.key (None: no client cert).

    MQTT 5, because Mosquitto 2.0 answers a denied QoS 1 publish with a "not authorized" PUBACK
    reason code, which 3.1.1 clients take as a protocol error and reconnect."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{username}-{free_port()}",
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(fleet.ca_dir / "ca.crt"),
                   certfile=str(cert_dir / "client.crt") if cert_dir else None,
                   keyfile=str(cert_dir / "client.key") if cert_dir else None,
                   cert_reqs=ssl.CERT_REQUIRED)
    if username is not None:
        client.username_pw_set(username, password)
    messages: queue.Queue = queue.Queue()
    result: dict = {}
    ready = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties=None):
        result["rc"] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        ready.set()

    client.on_connect = on_connect
    client.on_message = lambda c, u, msg: messages.put((msg.topic, msg.payload))
    client.on_disconnect = lambda *a, **k: ready.set()
    try:
        properties = None
        if session_expiry_s:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = session_expiry_s
        client.connect("127.0.0.1", port, keepalive=30, clean_start=not session_expiry_s, properties=properties)
    except (ssl.SSLError, OSError):
        return Session(client, None, messages)
    client.loop_start()
    ready.wait(10)
    return Session(client, result.get("rc"), messages)
