"""The ingest worker: MQTT (QoS 1, persistent session, shared subscription) into PostgreSQL.

The guarantee, and how each part serves it:
- The broker keeps what we have not acknowledged. We connect with a fixed client id per
  replica, ``clean_start=False`` and a session expiry, and subscribe with QoS 1, so anything
  unacked when the process dies is redelivered when it comes back.
- We acknowledge only after commit. paho runs with ``manual_ack=True``; a message's PUBACK is
  sent by the writer thread after the transaction holding its rows (and its archive outbox
  entry) has committed. While PostgreSQL is down the batch is retried with backoff and
  nothing is acked; the broker stops sending once ``receive_maximum`` messages are in flight.
- Redelivery stores nothing twice: (gateway_id, epoch, seq) is claimed in `ingest_log` first;
  the same key with other content is a ``seq_conflict`` dead letter, never a silent drop.
- Replicas share the load through ``$share/{group}/gridsight/v1/+/{kind}``; nothing in one
  replica's memory is needed by another.
- An ack is only sent on the connection that delivered the message (connection generation),
  because a packet id from a previous connection may name a different message now.

Threads: paho's network loop receives into a queue; the calling thread batches, writes and
acks; a third thread runs the archiver and periodic partition maintenance.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from gridsight import wire

from collector.archive import Archiver
from collector.db.writer import BatchResult, BatchWriter, PreparedBatch, Received, TransientDatabaseError
from collector.metrics import Metrics
from collector.services import Services, open_services
from collector.settings import CollectorSettings
from gridsight.mqtt import make_client

__all__ = ["IngestWorker", "SESSION_EXPIRY_S"]

log = logging.getLogger("gridsight.collector.ingest")

SESSION_EXPIRY_S = 7 * 86400   # the broker keeps our unacked messages this long while we are away
_BATCH_MAX_BYTES = 32 * 1024 * 1024


class IngestWorker:
    """One collector replica's ingest loop. ``run(stop_event)`` blocks until the event is set."""

    def __init__(self, settings: CollectorSettings, *, services: Services | None = None,
                 metrics: Metrics | None = None, archive: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.archive = archive
        self.clock = clock
        self.ready = threading.Event()      # set once subscribed
        self.last_error: str | None = None
        self.last_batch: BatchResult | None = None
        self._services = services
        self._queue: queue.Queue[Received] = queue.Queue()
        self._generation = 0
        self._client = None

    # ----------------------------------------------------------------- MQTT side (paho thread)

    def _make_client(self, mqtt_url: str):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client, endpoint = make_client(mqtt_url, client_id=self.settings.client_id,
                                       username=self.settings.mqtt_username,
                                       password=self.settings.mqtt_password, tls=self.settings.tls_files,
                                       manual_ack=True)
        client.reconnect_delay_set(0.2, 5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = min(65535, self.settings.receive_maximum)
        client.connect_async(endpoint.host, endpoint.port, keepalive=30, clean_start=False, properties=props)
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error(self.last_error)
            return
        from paho.mqtt.subscribeoptions import SubscribeOptions

        self._generation += 1
        self.metrics.set("gridsight_collector_mqtt_connected", 1)
        topics = wire.subscription_topics(self.settings.shared_group)
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self.last_error = f"subscription refused: {', '.join(failed)}"
            log.error(self.last_error)
            return
        log.info("subscribed to %s", ", ".join(wire.subscription_topics(self.settings.shared_group)))
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.metrics.set("gridsight_collector_mqtt_connected", 0)

    def _on_message(self, client, userdata, message) -> None:
        topic = message._topic.decode("utf-8", errors="replace") if isinstance(message._topic, bytes) else str(message.topic)
        kind = topic.rsplit("/", 1)[-1]
        self.metrics.inc("gridsight_collector_messages_received_total",
                         kind=kind if kind in wire.UPWARD_KINDS else "invalid")
        self._queue.put(Received(topic, message.payload, self.clock(), message.mid, message.qos, self._generation))

    # ----------------------------------------------------------------- writer side (calling thread)

    def _collect(self) -> list[Received]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        size = len(batch[0].payload)
        deadline = time.monotonic() + self.settings.batch_max_wait_s
        while len(batch) < self.settings.batch_max_messages and size < _BATCH_MAX_BYTES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            batch.append(item)
            size += len(item.payload)
        return batch

    def _ack(self, batch: list[Received]) -> None:
        now = self.clock()
        acked = 0
        for item in batch:
            if item.qos == 0 or item.generation != self._generation:
                continue   # qos 0 needs none; an old connection's message will be redelivered and deduped
            self._client.ack(item.mid, item.qos)
            acked += 1
            self.metrics.observe("gridsight_collector_ack_lag_seconds", max(0.0, now - item.received_at))
        self.metrics.inc("gridsight_collector_acks_total", acked)

    def _record(self, result: BatchResult, seconds: float) -> None:
        m = self.metrics
        m.observe("gridsight_collector_batch_seconds", seconds)
        m.observe("gridsight_collector_batch_messages", result.messages)
        for kind, n in result.stored.items():
            m.inc("gridsight_collector_messages_stored_total", n, kind=kind)
        if result.duplicates:
            m.inc("gridsight_collector_duplicates_total", result.duplicates)
        for reason, n in result.dead_letters.items():
            m.inc("gridsight_collector_dead_letters_total", n, reason=reason)
        if result.dead_letters.get("seq_conflict"):
            m.inc("gridsight_collector_seq_conflicts_total", result.dead_letters["seq_conflict"])
        for event in result.new_epochs:
            m.inc("gridsight_collector_epochs_started_total")
            m.set("gridsight_collector_last_new_epoch_timestamp_seconds",
                  max(event["started_at"], m.value("gridsight_collector_last_new_epoch_timestamp_seconds")))
        for table, n in result.rows.items():
            m.inc("gridsight_collector_rows_written_total", n, table=table)
        m.set("gridsight_collector_database_up", 1)

    def _next_batch(self, stop: threading.Event) -> PreparedBatch | None:
        """Collect and prepare (decode, build rows) the next batch; runs on the prepare thread."""
        while not stop.is_set():
            batch = self._collect()
            self.metrics.set("gridsight_collector_inflight_messages", self._queue.qsize() + len(batch))
            if batch:
                return BatchWriter.prepare(batch)
        return None

    async def _write_loop(self, stop: threading.Event, dsn: str) -> None:
        """Store batch N while batch N+1 is collected and decoded on a second thread (the GIL is
        free while we wait for PostgreSQL), then ack N. A failed batch is retried, unacked."""
        writer = BatchWriter(dsn, replica=self.settings.replica_id,
                             unknown_gateways=self.settings.unknown_gateways, archive=self.archive)
        loop = asyncio.get_running_loop()
        preparer = ThreadPoolExecutor(1, thread_name_prefix="gridsight-prepare")
        backoff = 0.25
        try:
            prepared = await loop.run_in_executor(preparer, self._next_batch, stop)
            upcoming = None
            while prepared is not None:
                if upcoming is None:
                    upcoming = loop.run_in_executor(preparer, self._next_batch, stop)
                started = time.perf_counter()
                try:
                    result = await writer.store(prepared)
                except TransientDatabaseError as exc:
                    self.last_error = f"database: {exc}"
                    self.metrics.inc("gridsight_collector_db_errors_total")
                    self.metrics.set("gridsight_collector_database_up", 0)
                    log.warning("batch not stored, retrying in %.1fs: %s", backoff, exc)
                    if stop.wait(backoff):
                        break        # unacked: the broker redelivers to whoever resumes the session
                    backoff = min(backoff * 2, 5.0)
                    current = [m for m in prepared.items if m.generation == self._generation]
                    if len(current) != len(prepared.items):
                        prepared = BatchWriter.prepare(current) if current else None
                        if prepared is None:
                            prepared, upcoming = await upcoming, None
                    continue
                backoff = 0.25
                self.last_error = None
                self.last_batch = result
                self._ack(prepared.items)
                self._record(result, time.perf_counter() - started)
                prepared, upcoming = await upcoming, None
            if upcoming is not None:
                await upcoming       # collected but never stored: left unacked for redelivery
        finally:
            preparer.shutdown(wait=True)
            await writer.close()

    # ----------------------------------------------------------------- archive + maintenance thread

    async def _maintain(self, conn) -> None:
        s = self.settings
        await conn.execute("SELECT count(*) FROM gridsight_maintain_partitions($1, $2, $3, $4)",
                           s.partition_months_ahead, s.retention_days, s.dedupe_days, s.dead_letter_days)
        await conn.execute("SELECT gridsight_refresh_tableau_rollups()")   # migration 0009

    def _archive_thread(self, services: Services, stop: threading.Event) -> threading.Thread:
        archiver = Archiver(services.database_url, services.store,
                            batch_messages=self.settings.archive_batch_messages,
                            max_backoff_s=self.settings.archive_max_backoff_s, metrics=self.metrics)
        self.archiver = archiver

        async def body() -> None:
            try:
                await archiver.run(stop, self.settings.archive_interval_s,
                                   maintenance=self._maintain,
                                   maintenance_interval_s=self.settings.maintenance_interval_s)
            finally:
                await archiver.close()

        thread = threading.Thread(target=lambda: asyncio.run(body()), name="gridsight-archiver", daemon=True)
        thread.start()
        return thread

    # ----------------------------------------------------------------- entry point

    def run(self, stop_event: threading.Event) -> None:
        """Ingest until ``stop_event`` is set; the current batch is committed and acked first."""
        services = self._services or open_services(self.settings)
        owns_services = self._services is None
        archive_stop = threading.Event()
        archive_thread = None
        try:
            if services.mqtt_url is None:
                raise ValueError("no MQTT broker: set MQTT_URL")
            self._client = self._make_client(services.mqtt_url)
            self._client.loop_start()
            if self.archive:
                archive_thread = self._archive_thread(services, archive_stop)
            asyncio.run(self._write_loop(stop_event, services.database_url))
        finally:
            if self._client is not None:
                self._client.disconnect()
                self._client.loop_stop()
            archive_stop.set()
            if archive_thread is not None:
                archive_thread.join(30)
            self.metrics.set("gridsight_collector_mqtt_connected", 0)
            if owns_services:
                services.close()
