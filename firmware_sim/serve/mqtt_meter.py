"""Simulated meters as local MQTT meters (a Shelly/Tasmota-style device publishing JSON).

Each reading goes to ``{prefix}/{meter_id}/reading`` as a JSON object with the fields of
:class:`gridsight.wire.Reading` (QoS 0, like most plug-in meters). ``malformed_every = N``
publishes a broken payload in place of every Nth reading, so a subscriber's parsing is
exercised; the reading it replaced is not lost but sent right after.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Sequence

from edge_agent.clock import Clock
from gridsight.mqtt import make_client
from firmware_sim.meter import SimulatedMeter

__all__ = ["MqttMeter", "reading_payload"]


def reading_payload(meter_id: str, reading) -> bytes:
    return json.dumps({"meter_id": meter_id, "ts": reading.ts, "energy_kwh": reading.energy_kwh,
                       "power_w": reading.power_w, "voltage_v": reading.voltage_v, "current_a": reading.current_a,
                       "power_factor": reading.power_factor}, separators=(",", ":")).encode()


class MqttMeter:
    """Publish ``meters``' readings to the broker at ``host:port`` as the clock passes them."""

    def __init__(self, meters: Sequence[SimulatedMeter], clock: Clock, *, host: str = "127.0.0.1", port: int = 1883,
                 prefix: str = "meters", period_s: float = 60.0, malformed_every: int = 0) -> None:
        self.meters = list(meters)
        self.clock = clock
        self.prefix = prefix
        self.period_s = period_s
        self.malformed_every = malformed_every
        self.published = 0
        # a plug-in meter speaks MQTT 3.1.1, plain, on the local network
        self._client, _ = make_client(f"mqtt://{host}:{port}", client_id=f"sim-meter-{uuid.uuid4().hex[:8]}",
                                      protocol="3.1.1")
        self._host, self._port = host, port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = clock.now()

    def topic(self, meter_id: str) -> str:
        return f"{self.prefix}/{meter_id}/reading"

    def publish_until(self, now: float) -> int:
        """Publish every reading in (last publish, now]; returns how many messages went out."""
        sent = 0
        for meter in self.meters:
            for r in meter.emitted(self._last, now).readings(meter.meter_id):
                self.published += 1
                if self.malformed_every and self.published % self.malformed_every == 0:
                    self._client.publish(self.topic(meter.meter_id), b'{"meter_id": "' + meter.meter_id.encode()
                                         + b'", "ts": ', qos=0)
                    sent += 1
                self._client.publish(self.topic(meter.meter_id), reading_payload(meter.meter_id, r), qos=0)
                sent += 1
        self._last = max(self._last, now)
        return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            self.publish_until(self.clock.now())
            if self.clock.wait(self._stop, self.period_s):
                return

    def start(self, *, background: bool = True) -> "MqttMeter":
        """Connect; with ``background`` also publish as the clock runs (else call :meth:`publish_until`)."""
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if background:
            self._thread = threading.Thread(target=self._run, name="mqtt-meter", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self) -> "MqttMeter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
