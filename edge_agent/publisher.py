"""The MQTT publisher: moves messages from the outbox to the broker, deleting only on PUBACK.

It runs in its own thread with its own paho-mqtt client and network loop, so a slow or dead
uplink never delays reading meters. Guarantees:

* QoS 1 for everything; a message leaves the outbox only after the broker's PUBACK (MQTT 5
  PUBACKs with a failure reason are retried later, not deleted).
* Reconnect forever with jittered exponential backoff (``reconnect_min_s`` doubling up to
  ``reconnect_max_s``, each delay drawn from its upper half so a fleet never reconnects in
  lockstep after a broker restart).
* ``protocol = "auto"`` connects with MQTT 5 and, if the broker refuses that protocol
  version, alternates to 3.1.1 until one works; it then sticks to what worked.
* A last will on the retained status topic (``online: false``) and, on a clean stop, the
  same offline status published explicitly (brokers do not send the will on DISCONNECT).
* Messages written since this connection came up go first; the backlog follows at
  ``drain_rate`` messages per second (see :meth:`edge_agent.outbox.Outbox.pending`).
* TLS (``mqtts://``) with an optional CA file and client certificate; username/password.
* Subscribes to the downward command topics it is given and hands each message to
  ``on_command`` (the agent queues it; nothing slow runs on the network thread).

A fresh client is made for each connection attempt: anything that was in flight when the link
dropped is simply fetched from the outbox again and re-sent under the same sequence number,
which the collector's ``(gateway_id, seq)`` dedupe absorbs.
"""

from __future__ import annotations

import collections
import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt

from edge_agent.config import MqttSettings
from edge_agent.outbox import Outbox, OutboxError
from gridsight.mqtt import MqttSetupError, make_client
from gridsight.wire import topic_for

__all__ = ["MqttPublisher", "PublisherCounters", "backoff_delay"]

log = logging.getLogger("gridsight.agent.publisher")

_CONNACK_TIMEOUT_S = 15.0
_ACK_FLUSH_S = 0.25
_ACK_FLUSH_COUNT = 500
_REFUSED_RETRY_S = 30.0
_NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code
_NO_SUBSCRIBER_RETRY_S = 2.0
_INFLIGHT_RESEND_S = 120.0
# CONNACK codes meaning "I do not speak this protocol version" (MQTT 3.1.1 rc 1, MQTT 5 0x84)
_UNSUPPORTED_PROTOCOL = {1, 0x84}


def backoff_delay(failures: int, lo: float, hi: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failed attempts: upper half of a doubling cap."""
    cap = min(hi, lo * (2 ** min(failures, 30)))
    return cap / 2 + rng.uniform(0, cap / 2)


@dataclass
class PublisherCounters:
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0
    undelivered: int = 0  # PUBACKs saying no subscriber matched: kept and offered again
    protocol: str | None = None
    latencies_s: collections.deque = field(default_factory=lambda: collections.deque(maxlen=10_000))


class MqttPublisher:
    """Publishes the outbox of one gateway; ``start()`` it, ``stop()`` it to flush and go offline."""

    def __init__(
        self,
        outbox: Outbox,
        gateway_id: str,
        settings: MqttSettings,
        *,
        status_payload: Callable[[bool, int], bytes],
        on_connected: Callable[[], None] | None = None,
        subscriptions: tuple[str, ...] = (),
        on_command: Callable[[str, bytes], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.gateway_id = gateway_id
        self.settings = settings
        self.status_payload = status_payload
        self.on_connected = on_connected
        self.subscriptions = subscriptions
        self.on_command = on_command
        self.rng = rng or random.Random()
        self.counters = PublisherCounters()
        self.status_topic = topic_for(gateway_id, "status")
        self._topics = {k: topic_for(gateway_id, k) for k in ("summary", "flag", "raw", "status")}
        self._protocol = mqtt.MQTTv311 if settings.protocol == "3.1.1" else mqtt.MQTTv5
        self._protocol_confirmed = settings.protocol != "auto"
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connecting_since = 0.0
        self._failures = 0
        self._next_attempt = 0.0
        self._live_from_seq = 0
        self._inflight: dict[int, tuple[int, float, float, bool]] = {}  # mid -> (seq, created_at, sent, retained)
        self._acked: list[int] = []
        self._acked_set: set[int] = set()
        self._last_ack_flush = time.monotonic()
        self._refused: dict[int, float] = {}
        self._tokens = 0.0
        self._last_refill = time.monotonic()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._flush_timeout = 10.0
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------------ public

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def start(self) -> "MqttPublisher":
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.gateway_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, flush_timeout: float = 10.0) -> None:
        """Wait up to ``flush_timeout`` s for in-flight PUBACKs, publish offline status, disconnect."""
        self._flush_timeout = flush_timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(flush_timeout + 10)

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    if self._step():
                        return
                except Exception:  # the uplink thread must never die silently
                    log.exception("publisher error; reconnecting")
                    self._drop_client()
                    self._schedule_retry()
        finally:
            self._stopped.set()

    def _step(self) -> bool:
        """One pass of the network loop; True once stopped."""
        if self._stop.is_set():
            self._shutdown()
            return True
        if self._client is None:
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 0.2))
            else:
                self._connect()
            return False
        rc = self._client.loop(0.05)
        if self._client is None:
            return False  # a callback dropped the connection
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost(f"network loop: {mqtt.error_string(rc)}")
            return False
        if not self._connected:
            if time.monotonic() - self._connecting_since > _CONNACK_TIMEOUT_S:
                self._lost("no CONNACK from the broker", failed_attempt=True)
            return False
        self._flush_acks()
        self._publish_more()
        return False

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        client, _ = make_client(
            s.url,
            client_id=self.gateway_id,
            username=s.username or None,
            password=s.password or None,
            tls=s.tls_files,
            protocol="5" if self._protocol == mqtt.MQTTv5 else "3.1.1",
            clean_session=True,
        )
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)
        will_seq = self.outbox.allocate_seq()
        client.will_set(self.status_topic, self.status_payload(False, will_seq), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _connect(self) -> None:
        s = self.settings
        try:
            client = self._new_client()
            self._connecting_since = time.monotonic()
            if self._protocol == mqtt.MQTTv5:
                client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=True)
            else:
                client.connect(s.host, s.port, keepalive=s.keepalive_s)
            self._client = client
        except (OSError, ssl.SSLError, ValueError, OutboxError, MqttSetupError) as exc:
            self.counters.connect_failures += 1
            self.last_error = f"connect to {s.host}:{s.port}: {exc}"
            log.warning("mqtt %s", self.last_error)
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        delay = backoff_delay(self._failures, self.settings.reconnect_min_s, self.settings.reconnect_max_s, self.rng)
        self._failures += 1
        self._next_attempt = time.monotonic() + delay

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        self._inflight.clear()  # fetched again from the outbox on the next connection
        if client is not None:
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()  # no DISCONNECT packet: the last will must stay armed
                except OSError:
                    pass

    def _lost(self, why: str, failed_attempt: bool = False) -> None:
        if self._connected:
            self.counters.disconnects += 1
            log.warning("mqtt connection lost: %s", why)
        elif failed_attempt or self._client is not None:
            self.counters.connect_failures += 1
            self._maybe_switch_protocol(None)
        self.last_error = why
        self._flush_acks(force=True)
        self._drop_client()
        self._schedule_retry()

    def _maybe_switch_protocol(self, code: int | None) -> None:
        """In auto mode, a refused or silent first handshake tries the other protocol version next."""
        if self._protocol_confirmed or self.settings.protocol != "auto":
            return
        if code is None or code in _UNSUPPORTED_PROTOCOL:
            self._protocol = mqtt.MQTTv311 if self._protocol == mqtt.MQTTv5 else mqtt.MQTTv5
            log.info("mqtt: trying protocol %s", "5" if self._protocol == mqtt.MQTTv5 else "3.1.1")

    # ------------------------------------------------------------------ callbacks (this thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client:
            return
        code = getattr(reason_code, "value", reason_code)
        if reason_code.is_failure:
            self.counters.connect_failures += 1
            self.last_error = f"broker refused the connection: {reason_code}"
            log.warning("mqtt %s", self.last_error)
            self._maybe_switch_protocol(int(code))
            self._drop_client()
            self._schedule_retry()
            return
        self._connected = True
        self._protocol_confirmed = True
        self._failures = 0
        self.counters.connects += 1
        self.counters.protocol = "5" if self._protocol == mqtt.MQTTv5 else "3.1.1"
        self._live_from_seq = self.outbox.next_seq
        self._tokens = 0.0
        self._last_refill = time.monotonic()
        self.last_error = None
        log.info("mqtt connected to %s:%s (MQTT %s)", self.settings.host, self.settings.port, self.counters.protocol)
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)  # type: ignore[union-attr]  # the connected client
        if self.on_connected is not None:
            self.on_connected()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self._client or self._stop.is_set():
            return
        was_connected = self._connected
        self._lost(f"disconnected: {reason_code}", failed_attempt=not was_connected)

    def _on_message(self, client, userdata, message) -> None:
        """A downward command (model announcement); handed over, never processed on this thread."""
        if self.on_command is not None and client is self._client:
            self.on_command(message.topic, bytes(message.payload))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None or client is not self._client:
            return
        seq, created_at, _, retained = entry
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            self.counters.refused += 1
            self._refused[seq] = time.monotonic() + _REFUSED_RETRY_S
            log.warning("broker refused message seq %d: %s", seq, reason_code)
            return
        if not retained and getattr(reason_code, "value", 0) == _NO_MATCHING_SUBSCRIBERS:
            # MQTT 5: the broker took the message but nobody will get it (the collector has not
            # (re)subscribed yet, e.g. after a broker restart dropped its shared subscription).
            # Keep it in the outbox and offer it again shortly instead of losing it.
            self.counters.undelivered += 1
            self._refused[seq] = time.monotonic() + _NO_SUBSCRIBER_RETRY_S
            return
        self.counters.acked += 1
        self.counters.latencies_s.append(max(0.0, time.time() - created_at))
        self._acked.append(seq)
        self._acked_set.add(seq)

    # ------------------------------------------------------------------ moving messages

    def _flush_acks(self, force: bool = False) -> None:
        if not self._acked:
            return
        now = time.monotonic()
        if not force and len(self._acked) < _ACK_FLUSH_COUNT and now - self._last_ack_flush < _ACK_FLUSH_S:
            return
        batch, self._acked = self._acked, []
        try:
            self.outbox.ack(batch)
        except OutboxError as exc:
            log.error("cannot delete acknowledged messages: %s", exc)
            self._acked = batch + self._acked
            return
        self._acked_set.difference_update(batch)
        self._last_ack_flush = now

    def _publish_more(self) -> None:
        room = self.settings.max_inflight - len(self._inflight)
        if room <= 0:
            self._resend_stale()
            return
        now = time.monotonic()
        if self.settings.drain_rate > 0:
            burst = max(1.0, self.settings.drain_rate)
            self._tokens = min(burst, self._tokens + (now - self._last_refill) * self.settings.drain_rate)
            backlog_limit = int(self._tokens)
        else:
            backlog_limit = room
        self._last_refill = now
        if self._refused:
            self._refused = {s: t for s, t in self._refused.items() if t > now}
        exclude = {e[0] for e in self._inflight.values()} | self._acked_set | set(self._refused)
        try:
            pending = self.outbox.pending(
                room, live_from_seq=self._live_from_seq, backlog_limit=backlog_limit, exclude=exclude
            )
        except OutboxError as exc:
            log.error("cannot read the outbox: %s", exc)
            return
        for msg in pending:
            info = self._client.publish(  # type: ignore[union-attr]  # only called while connected
                self._topics[msg.kind], msg.payload, qos=1, retain=msg.retain
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            self._inflight[info.mid] = (msg.seq, msg.created_at, now, msg.retain)
            self.counters.published += 1
            if msg.seq < self._live_from_seq and self.settings.drain_rate > 0:
                self._tokens -= 1

    def _resend_stale(self) -> None:
        """A PUBACK that never comes (broker lost it without dropping us): reconnect to resend."""
        now = time.monotonic()
        if self._inflight and min(e[2] for e in self._inflight.values()) < now - _INFLIGHT_RESEND_S:
            self._lost("PUBACKs overdue")

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self._flush_timeout
        client = self._client
        if client is not None and self._connected:
            while self._inflight and time.monotonic() < deadline and self._client is client:
                client.loop(0.05)
            self._flush_acks(force=True)
            if self._client is client and self._connected:
                try:
                    info = client.publish(
                        self.status_topic, self.status_payload(False, self.outbox.allocate_seq()), qos=1, retain=True
                    )
                    end = min(deadline, time.monotonic() + 2.0)
                    while not info.is_published() and time.monotonic() < end and self._client is client:
                        client.loop(0.05)
                    client.disconnect()
                    client.loop(0.1)
                except (OutboxError, OSError, ValueError, RuntimeError):
                    pass
        self._flush_acks(force=True)
        self._client = None
        self._connected = False
