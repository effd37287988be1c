"""Test data and a recording MQTT subscriber for the agent's tests (imported by test modules)."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gridsight.wire import Reading, WireError, decode

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday


def load_profile_w(meter: int, ts: float) -> float:
    """A smooth daily load curve per meter: what the model learns as normal."""
    hour = (ts % 86_400) / 3600
    return 400 + 250 * math.sin((hour - 6) / 24 * 2 * math.pi) + 60 * meter


def recording(meters: int, start: float, seconds: float, step_s: float,
              power: Callable[[int, float], float] = load_profile_w) -> list[Reading]:
    """Readings of ``meters`` meters every ``step_s``: cumulative register from the power curve."""
    out = []
    energy = [1000.0 * (m + 1) for m in range(meters)]
    t = start
    while t < start + seconds:
        for m in range(meters):
            p = power(m, t)
            energy[m] += p * step_s / 3.6e6
            out.append(Reading(f"meter-{m}", t, round(energy[m], 6), round(p, 3)))
        t += step_s
    return out


def write_csv(path: Path, readings: list[Reading]) -> Path:
    lines = ["meter_id,ts,energy_kwh,power_w"]
    lines += [f"{r.meter_id},{r.ts},{r.energy_kwh},{r.power_w}" for r in readings]
    path.write_text("\n".join(lines) + "\n")
    return path


class Subscriber:
    """A real MQTT client that records every upward message of every gateway, decoded."""

    def __init__(self, url_port: int, persistent: bool = False, username: str | None = None,
                 password: str | None = None) -> None:
        """``persistent``: a session that outlives broker restarts (queued messages are kept)."""
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        self.messages: list = []
        self.errors: list[str] = []
        self.retained_status: dict[str, object] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{url_port}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: (not f.session_present) and c.subscribe("gridsight/v1/+/+", qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", url_port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber did not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        try:
            msg = decode(message.topic, message.payload)
        except WireError as exc:
            with self._lock:
                self.errors.append(f"{message.topic}: {exc}")
            return
        with self._lock:
            self.messages.append(msg)
            if type(msg).KIND == "status":
                self.retained_status[msg.gateway_id] = msg

    def of_kind(self, kind: str) -> list:
        with self._lock:
            return [m for m in self.messages if type(m).KIND == kind]

    def unique(self, kind: str) -> list:
        """Messages of ``kind`` deduplicated by (gateway_id, seq), as the collector does."""
        seen = {}
        for m in self.of_kind(kind):
            seen.setdefault((m.gateway_id, m.seq), m)
        return [seen[k] for k in sorted(seen)]

    def raw_readings(self) -> list[Reading]:
        """Every raw reading, chunks deduplicated by (gateway, seq) and taken in seq order."""
        return [r for chunk in self.unique("raw") for r in chunk.readings]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` real seconds pass (never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def readings_by_meter(readings) -> dict[str, list[float]]:
    out = defaultdict(list)
    for r in readings:
        out[r.meter_id].append(r.ts)
    return out
