"""Builders and helpers shared by the collector tests (imported by name: tests/collector is on sys.path)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

from collector.ingest import IngestWorker
from collector.services import Services
from collector.settings import CollectorSettings
from gridsight import wire

NOW = float(int(time.time()) // 900 * 900)


def raw_chunk(gateway_id: str, seq: int, *, meters: int = 4, per_meter: int = 10, start: float | None = None,
              step: float = 10.0) -> wire.RawChunk:
    """A chunk of `meters * per_meter` readings with distinct (meter, ts)."""
    base = NOW - 3600 + seq * per_meter * step if start is None else start
    readings = tuple(
        wire.Reading(f"{gateway_id}-m{m}", base + i * step, 1000.0 + seq + i * 0.01, 400.0 + m, 230.0, 1.7, 0.98)
        for m in range(meters) for i in range(per_meter))
    return wire.RawChunk(gateway_id, seq, "iforest-1", NOW, readings)


def summary(gateway_id: str, seq: int, *, meters: int = 4, interval_start: float | None = None,
            anomalous_meter: int | None = None, kwh: float = 0.25) -> wire.IntervalSummary:
    start = NOW - 900 if interval_start is None else interval_start
    rows = tuple(wire.MeterSummary(f"{gateway_id}-m{m}", kwh, 90, 1000.0 + m, 2000.0, 0.05 if m != anomalous_meter else -0.2,
                                   m == anomalous_meter) for m in range(meters))
    return wire.IntervalSummary(gateway_id, seq, "iforest-1", NOW, start, 900, rows)


def flag(gateway_id: str, seq: int, meter: int = 0, interval_start: float | None = None) -> wire.AnomalyFlag:
    start = NOW - 900 if interval_start is None else interval_start
    return wire.AnomalyFlag(gateway_id, seq, "iforest-1", NOW, f"{gateway_id}-m{meter}", start, 900, -0.2, -0.1,
                            0.02, {"kwh": 0.02}, "kwh 0.02 vs profile 0.25 (drop)")


def message(msg: wire.Message) -> tuple[str, bytes]:
    return wire.topic_for(msg.gateway_id, type(msg).KIND), wire.encode(msg)


class Publisher:
    """A QoS 1 MQTT publisher (as a gateway would be) that waits for the broker's PUBACK."""

    def __init__(self, port: int, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(30)

    def send_all(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, p, qos=1) for t, p in items]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()




class RunningWorker:
    """An IngestWorker on its own thread; `stop()` commits the current batch and disconnects."""

    def __init__(self, settings: CollectorSettings, services: Services) -> None:
        self.worker = IngestWorker(settings, services=services)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop_event,), daemon=True)

    def start(self) -> "RunningWorker":
        self.thread.start()
        if not self.worker.ready.wait(20):
            raise AssertionError(f"worker did not subscribe: {self.worker.last_error}")
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop"

    @property
    def metrics(self):
        return self.worker.metrics




def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sql(url: str, query: str, *args):
    """Run one query synchronously and return all rows (psycopg, autocommit)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def scalar(url: str, query: str, *args):
    return sql(url, query, *args)[0][0]

