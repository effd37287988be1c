"""The agent: reader -> window -> scoring -> outbox, with the publisher draining the outbox.

:class:`Agent` wires the stages for one gateway. Every part can be passed in (readers, clock,
scorer, outbox, transport), which is how tests drive time and faults and how the fleet
simulator runs many agents in one process. ``tick()`` is one poll cycle and ends with ONE
outbox transaction holding everything the cycle produced; ``run(stop_event)`` repeats it
every ``poll_s`` clock seconds until the event is set, then shuts down gracefully: the last
readings are sealed, in-flight messages get their PUBACKs, status goes offline.

A reader that raises is retried with jittered backoff (doubling from ``poll_s`` up to
``reader_backoff_max_s``) and reported in status; the other readers carry on.

With ``model.public_key`` set, the agent subscribes to its ``cmd/model`` topics and hands each
announcement to :class:`edge_agent.model_update.ModelUpdater` on a worker thread; a verified
model replaces the running one between intervals (:meth:`Agent.use_model`).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from edge_agent.clock import Clock, ClockHealth, SimulatedClock, SystemClock, clock_health
from edge_agent.config import AgentSettings
from edge_agent.failpoints import hit
from edge_agent.footprint import release_startup_memory
from edge_agent.outbox import NewMessage, Outbox, OutboxError
from edge_agent.publisher import MqttPublisher, backoff_delay
from edge_agent.readers.base import MeterReader, ReaderError
from edge_agent.readers.registry import build_reader
from edge_agent.scorer import ModelError, Scorer
from edge_agent.scoring import IntervalScoring, ScoredInterval
from edge_agent.site_calendar import CalendarError, SiteCalendar, holiday_ordinals_cached
from gridsight.settings import ConfigError
from edge_agent.systemd import SystemdNotifier
from edge_agent.window import IntervalWindow
from gridsight.wire import (
    AnomalyFlag,
    GatewayStatus,
    IntervalSummary,
    RawChunk,
    Reading,
    WireError,
    command_topic,
    decode_command,
    encode,
    fleet_command_topic,
)

__all__ = [
    "Agent",
    "AgentSettings",
    "Transport",
    "NullTransport",
    "ReaderSlot",
    "AGENT_VERSION",
    "build_clock",
    "load_scorer",
    "build_model_updater",
]

log = logging.getLogger("gridsight.agent")


def _installed_version() -> str:
    """gridsight's installed version, read from its ``.dist-info/METADATA`` on ``sys.path``.

    ``importlib.metadata`` would do the same but imports email, zipfile, bz2, lzma, tempfile
    and inspect to do it (~0.9 MB resident for the life of the agent); it stays the fallback
    for installs laid out otherwise (an egg, a zip).
    """
    import sys

    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("gridsight-") and name.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("Version:"):
                                return line.partition(":")[2].strip()
                            if not line.strip():
                                break  # end of the headers
                except OSError:
                    continue
    try:
        from importlib.metadata import version as dist_version

        return dist_version("gridsight")
    except Exception:  # running from a source tree without installed metadata
        return "0.0.0"


AGENT_VERSION = _installed_version()

_RETRY_LIMIT = 200_000  # readings held in memory while the outbox cannot be written


class Transport(Protocol):
    """What the agent needs from the uplink: the MQTT publisher or a stand-in."""

    connected: bool

    def start(self) -> Any: ...
    def stop(self, flush_timeout: float = 10.0) -> None: ...


class NullTransport:
    """No uplink: messages accumulate in the outbox (offline tests, ``--no-publish``)."""

    connected = False
    inflight = 0

    def start(self) -> "NullTransport":
        return self

    def stop(self, flush_timeout: float = 10.0) -> None:
        return None


@dataclass
class ReaderSlot:
    """A reader with its retry state and health, as shown in status."""

    reader: MeterReader
    name: str
    failures: int = 0
    errors: int = 0
    readings: int = 0
    next_try: float = 0.0
    last_error: str | None = None
    last_ok: float | None = None


def build_clock(settings: AgentSettings) -> Clock:
    """The clock the settings ask for: wall time, or simulated time at ``clock.speed``."""
    if settings.clock.simulated:
        return SimulatedClock(
            settings.clock.start or time.time(), settings.clock.speed, anchor=settings.clock.anchor or None
        )
    return SystemClock()


def build_model_updater(settings: AgentSettings) -> Any:
    """The over-the-air model updater when ``model.public_key`` is set, else None."""
    if not settings.model.public_key:
        return None
    from edge_agent.model_update import ModelUpdater, SignatureError

    models_dir = settings.model.models_dir or str(Path(settings.data_dir) / "models")
    try:
        return ModelUpdater(
            models_dir,
            settings.model.public_key,
            gateway_id=settings.gateway_id,
            initial_model=settings.model.path or None,
            interval_s=settings.interval_s,
            source_dir=settings.model.source_dir or None,
        )
    except SignatureError as exc:
        raise ConfigError("model.public_key", str(exc)) from None
    except ModelError as exc:
        raise ConfigError("model.path", str(exc)) from None
    except OSError as exc:
        raise ConfigError("model.models_dir", f"{models_dir}: {exc.strerror or exc}") from None


def load_scorer(settings: AgentSettings) -> Scorer | None:
    """The configured model, or None; an unusable file is a ConfigError naming ``model.path``."""
    if not settings.model.path:
        return None
    try:
        scorer = Scorer.load(settings.model.path)
    except ModelError as exc:
        raise ConfigError("model.path", str(exc)) from None
    if scorer.interval_s != settings.interval_s:
        raise ConfigError(
            "interval_s",
            f"{settings.interval_s} does not match the model's "
            f"interval of {scorer.interval_s} s ({settings.model.path})",
        )
    return scorer


_UNSET: Any = object()


@dataclass
class _Counters:
    readings: int = 0
    duplicates: int = 0
    late: int = 0
    reader_errors: int = 0
    local_errors: int = 0
    intervals: int = 0
    summaries: int = 0
    flags: int = 0
    raw_chunks: int = 0
    outbox_errors: int = 0
    dropped_unstored: int = 0
    ticks: int = 0
    model_updates: int = 0
    model_update_failures: int = 0
    bad_commands: int = 0


def build_calendar(settings: AgentSettings, scorer: Scorer | None) -> SiteCalendar:
    """The site's calendar: the agent's configured time zone and holiday country, else the model's.

    Holidays are computed in a child process (the holidays package would otherwise stay
    resident: about 15 MB), for last year to five years ahead, and kept in the data directory so
    a restart reads them back; without them Sundays still count.
    """
    zone = settings.time_zone or (scorer.time_zone if scorer else "") or "UTC"
    country = settings.holiday_country or (scorer.holiday_country if scorer else None)
    days: frozenset[int] = frozenset()
    if country:
        year = time.gmtime().tm_year
        try:
            days = holiday_ordinals_cached(country, range(year - 1, year + 6), settings.data_dir)
        except CalendarError as exc:
            log.warning("no public holidays for %s (%s); Sundays only", country, exc)
    try:
        return SiteCalendar(zone, days)
    except CalendarError as exc:
        raise ConfigError("time_zone", str(exc)) from None


class Agent:
    """One gateway's agent. Build it, then ``run(stop_event)`` or drive ``tick()`` yourself."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        readers: Sequence[MeterReader] | None = None,
        clock: Clock | None = None,
        scorer: Scorer | None = _UNSET,
        outbox: Outbox | None = None,
        transport: Transport | None = None,
        notifier: SystemdNotifier | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.gateway_id = settings.gateway_id
        self.clock = clock or build_clock(settings)
        self.rng = rng or random.Random()
        if readers is None:
            readers = [build_reader(t, f"readers[{i}]") for i, t in enumerate(settings.readers)]
        self.slots = [ReaderSlot(r, getattr(r, "name", f"reader{i}")) for i, r in enumerate(readers)]
        self.model_updater = build_model_updater(settings)
        if scorer is _UNSET:
            scorer = self.model_updater.current_scorer() if self.model_updater else load_scorer(settings)
            if scorer is not None and scorer.interval_s != settings.interval_s:
                raise ConfigError(
                    "interval_s", f"{settings.interval_s} does not match the model's interval of {scorer.interval_s} s"
                )
        self.calendar = build_calendar(settings, scorer)
        self.scoring = IntervalScoring(scorer, settings.interval_s, self.calendar)
        self.last_model_update: str | None = None
        self.window = IntervalWindow(settings.interval_s, settings.grace_s)
        self.outbox = outbox or Outbox(
            settings.outbox_path,
            budget_bytes=int(settings.outbox.budget_mb * 1024 * 1024),
            synchronous=settings.outbox.synchronous.upper(),
        )
        self.counters = _Counters()
        self._restore()
        self.transport: Transport = (
            transport
            if transport is not None
            else MqttPublisher(  # type: ignore[assignment]
                self.outbox,
                self.gateway_id,
                settings.mqtt,
                status_payload=self.status_payload,
                on_connected=self._status_now,
                rng=self.rng,
                subscriptions=(command_topic(self.gateway_id, "model"), fleet_command_topic("model"))
                if self.model_updater
                else (),
                on_command=self.handle_command,
            )
        )
        self.notifier = notifier or SystemdNotifier()
        self._started_mono = time.monotonic()
        self._last_seal = self.clock.now()
        self._last_status: float | None = None
        self._status_requested = threading.Event()
        self._retry_readings: list[Reading] = []
        self._retry_messages: list[NewMessage] = []
        self._health = ClockHealth(None, None, None)
        self._health_checked = 0.0
        self._commands: queue.Queue = queue.Queue(maxsize=16)
        self._command_worker: threading.Thread | None = None
        from edge_agent.local import build_local_integrations

        self.local = build_local_integrations(settings, self.status)

    # ------------------------------------------------------------------ restore

    def _restore(self) -> None:
        try:
            state = self.outbox.state
            self.scoring.load_state(state.get("features", {}))
            window_state = state.get("window", {})
            since = window_state.get("closed_until") or 0.0
            restored = self.window.load_state(window_state, self.outbox.open_readings(since))
        except (ValueError, TypeError) as exc:
            log.warning("persisted agent state not usable (%s); starting with fresh windows", exc)
            self.window = IntervalWindow(self.settings.interval_s, self.settings.grace_s)
            self.scoring = IntervalScoring(self.scoring.scorer, self.settings.interval_s, self.calendar)
            restored = 0
        if restored:
            log.info("restored %d readings of open intervals from the outbox", restored)

    # ------------------------------------------------------------------ model

    @property
    def model_version(self) -> str | None:
        return self.scoring.model_version

    def use_model(self, scorer: Scorer) -> None:
        """Swap the model (over-the-air update); takes effect from the next closed interval."""
        self.scoring.use_model(scorer)
        self._status_now()
        log.info("model %s %s in use", scorer.name, scorer.version)

    def handle_command(self, topic: str, payload: bytes) -> None:
        """A downward command from the broker: queued for the update worker (never blocks)."""
        if self.model_updater is None:
            return
        try:
            cmd = decode_command(payload)
        except WireError as exc:
            self.counters.bad_commands += 1
            log.warning("ignored a malformed command on %s: %s", topic, exc)
            return
        if self._command_worker is None:
            self._command_worker = threading.Thread(target=self._apply_commands, name="model-update", daemon=True)
            self._command_worker.start()
        try:
            self._commands.put_nowait(cmd)
        except queue.Full:
            self.counters.bad_commands += 1
            log.warning("model announcements arrive faster than they can be applied; dropped %s", cmd.version)

    def _apply_commands(self) -> None:
        while True:
            cmd = self._commands.get()
            ok, reason = self.model_updater.handle_announcement(cmd)
            self.last_model_update = reason
            current = self.model_updater.current_scorer()
            if ok and current is not None and current is not self.scoring.scorer:
                try:
                    self.use_model(current)
                    self.counters.model_updates += 1
                    # the new session's set-up touched onnxruntime's start-up code again
                    release_startup_memory()
                except ValueError as exc:
                    ok, self.last_model_update = False, str(exc)
            if not ok:
                self.counters.model_update_failures += 1
                log.warning("model update: %s", self.last_model_update)
            else:
                log.info("model update: %s", reason)

    # ------------------------------------------------------------------ the poll cycle

    def _poll(self, now: float) -> list[Reading]:
        readings: list[Reading] = []
        for slot in self.slots:
            if now < slot.next_try:
                continue
            try:
                got = slot.reader.read(now)
            except Exception as exc:  # a broken reader must never stop the others
                slot.failures += 1
                slot.errors += 1
                self.counters.reader_errors += 1
                slot.last_error = f"{type(exc).__name__}: {exc}"[:300]
                slot.next_try = now + backoff_delay(
                    slot.failures - 1, self.settings.poll_s, self.settings.reader_backoff_max_s, self.rng
                )
                level = logging.WARNING if isinstance(exc, ReaderError) else logging.ERROR
                log.log(
                    level,
                    "reader %s failed (%d in a row): %s",
                    slot.name,
                    slot.failures,
                    slot.last_error,
                    exc_info=not isinstance(exc, ReaderError),
                )
                continue
            if slot.failures:
                log.info("reader %s recovered after %d failures", slot.name, slot.failures)
            slot.failures = 0
            slot.last_ok = now
            slot.readings += len(got)
            readings.extend(got)
        return readings

    def tick(self) -> int:
        """One poll cycle; returns the number of new readings stored in the outbox."""
        now = self.clock.now()
        polled = self._poll(now)
        hit("agent.polled")
        intake = self.window.accept(polled)
        closed = self.window.due(now)
        scored = [self.scoring.score(c) for c in closed]
        messages = self._retry_messages + [m for s in scored for m in self._interval_messages(s)]
        if self._status_due(now):
            messages.append(NewMessage("status", lambda seq: self.status_payload(True, seq), retain=True))
        readings = self._retry_readings + intake.accepted
        seal = self._seal if now - self._last_seal >= self.settings.raw_chunk_s else None
        state = {"window": self.window.state(), "features": self.scoring.state()} if closed else None
        try:
            seqs = self.outbox.append(
                readings=readings, messages=messages, seal=seal, prune_before=self.window.closed_until, state=state
            )
        except OutboxError as exc:
            self.counters.outbox_errors += 1
            log.error("outbox write failed, keeping this cycle in memory: %s", exc)
            self._retry_messages = messages
            self._retry_readings = readings[-_RETRY_LIMIT:]
            self.counters.dropped_unstored += len(readings) - len(self._retry_readings)
            return 0
        self._retry_readings, self._retry_messages = [], []
        hit("agent.stored")
        self._commit_readers()
        hit("agent.committed")
        if seal is not None:
            self._last_seal = now
            self.counters.raw_chunks += len(seqs) - len(messages)
        self._feed_local(intake.accepted, scored)
        self.counters.ticks += 1
        self.counters.readings += len(intake.accepted)
        self.counters.duplicates += intake.duplicates
        self.counters.late += intake.late
        self.counters.intervals += len(closed)
        self.counters.summaries += sum(1 for s in scored if s.meters)
        self.counters.flags += sum(len(s.flags) for s in scored)
        return len(readings)

    def _commit_readers(self) -> None:
        """Everything the readers handed over is in the outbox now: let them move their cursors.

        Called only after a successful outbox transaction that held every reading still owed
        (this cycle's and any kept in memory after a failed write), so a reader's cursor never
        passes a reading that is not stored. A cursor that cannot be written means the meters
        hand those readings over again after a restart (the window drops them as replays).
        """
        for slot in self.slots:
            commit = getattr(slot.reader, "commit", None)
            if commit is None:
                continue
            try:
                commit()
            except Exception as exc:
                slot.errors += 1
                self.counters.reader_errors += 1
                slot.last_error = f"cursor not committed: {exc}"
                log.warning("reader %s: %s", slot.name, slot.last_error)

    def _feed_local(self, readings: list[Reading], scored: list) -> None:
        """Hand the cycle to the local integrations (Home Assistant, metrics); their faults stay theirs."""
        for integration in self.local:
            try:
                integration.observe(readings, scored)
            except Exception as exc:
                self.counters.local_errors += 1
                log.warning("local integration %s failed: %s", integration.name, exc)

    def _seal(self, seq: int, readings: list[Reading]) -> bytes:
        return encode(
            RawChunk(
                self.gateway_id, seq, self.model_version, self.clock.now(), tuple(readings), epoch=self.outbox.epoch
            )
        )

    def _interval_messages(self, s: ScoredInterval) -> list[NewMessage]:
        out = []
        gw, epoch = self.gateway_id, self.outbox.epoch
        if s.meters:
            out.append(
                NewMessage(
                    "summary",
                    lambda seq, s=s: encode(
                        IntervalSummary(  # type: ignore[misc]
                            gw,
                            seq,
                            s.model_version,
                            self.clock.now(),
                            s.interval_start,
                            s.interval_s,
                            s.meters,
                            epoch=epoch,
                        )
                    ),
                )
            )
        for f in s.flags:
            log.info(
                "anomaly meter=%s interval=%s score=%.4f %s", f.meter_id, f.interval_start, f.score, f.reason or ""
            )
            out.append(
                NewMessage(
                    "flag",
                    lambda seq, f=f: encode(
                        AnomalyFlag(  # type: ignore[misc]
                            gw,
                            seq,
                            s.model_version,
                            self.clock.now(),
                            f.meter_id,
                            f.interval_start,
                            f.interval_s,
                            f.score,
                            f.threshold,
                            f.kwh,
                            f.features,
                            f.reason,
                            epoch=epoch,
                        )
                    ),
                )
            )
        return out

    # ------------------------------------------------------------------ status

    def _status_now(self) -> None:
        self._status_requested.set()

    def _status_due(self, now: float) -> bool:
        if (
            self._status_requested.is_set()
            or self._last_status is None
            or now - self._last_status >= self.settings.status_s
        ):
            self._status_requested.clear()
            self._last_status = now
            return True
        return False

    def _clock_health(self) -> ClockHealth:
        mono = time.monotonic()
        if mono - self._health_checked > 30 or self._health_checked == 0.0:
            self._health = clock_health()
            self._health_checked = mono
        return self._health

    def status(self) -> dict[str, Any]:
        """Everything the status message reports, as a plain dict (also written to status.json)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        snap = self.outbox.snapshot()
        depth = {**snap["queue"], "unsealed_readings": snap["unsealed_readings"]}
        pub = getattr(self.transport, "counters", None)
        health = self._clock_health()
        counters: dict[str, float] = {
            "readings": self.counters.readings,
            "duplicates": self.counters.duplicates,
            "late": self.counters.late,
            "reader_errors": self.counters.reader_errors,
            "readers": len(self.slots),
            "readers_failing": sum(1 for s in self.slots if s.failures),
            "intervals": self.counters.intervals,
            "summaries": self.counters.summaries,
            "flags": self.counters.flags,
            "raw_chunks": self.counters.raw_chunks,
            "outbox_errors": self.counters.outbox_errors,
            "clock_jumps": self.window.clock_jumps,
            "model_updates": self.counters.model_updates,
            "model_update_failures": self.counters.model_update_failures,
            "bad_commands": self.counters.bad_commands,
            "local_errors": self.counters.local_errors,
            "outbox_bytes": self.outbox.used_bytes,
            "outbox_budget_bytes": self.outbox.budget_bytes,
            "unsealed_readings": depth["unsealed_readings"],
            **{f"queue_{k}": depth[k] for k in ("summary", "flag", "raw")},
            **{k: v for k, v in self.outbox.counters.items()},
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "rss_mb": round(_rss_mb(), 2),
        }
        if pub is not None:
            counters.update(
                {
                    "mqtt_connected": int(bool(self.transport.connected)),
                    "mqtt_connects": pub.connects,
                    "mqtt_disconnects": pub.disconnects,
                    "mqtt_connect_failures": pub.connect_failures,
                    "mqtt_published": pub.published,
                    "mqtt_acked": pub.acked,
                    "mqtt_refused": pub.refused,
                    "mqtt_undelivered": pub.undelivered,
                }
            )
            latencies = sorted(pub.latencies_s)
            if latencies:
                # outbox write -> PUBACK, over the last (up to) 10,000 messages
                counters["mqtt_latency_p50_ms"] = round(1000 * latencies[len(latencies) // 2], 2)
                counters["mqtt_latency_p99_ms"] = round(
                    1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2
                )
        for slot in self.slots[:40]:
            key = slot.name.replace(" ", "_")[:40]
            counters[f"reader.{key}.errors"] = slot.errors
            counters[f"reader.{key}.failing"] = int(slot.failures > 0)
        scorer = self.scoring.scorer
        counters["scorer_numpy"] = int(scorer is not None and scorer.kind == "numpy")
        return {
            "gateway_id": self.gateway_id,
            "online": True,
            "model_version": self.model_version,
            "scorer": scorer.kind if scorer is not None else None,
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "queue_depth": snap["queue_depth"],
            # the same numbers, read the same way, as `gridsight agent status` shows
            "outbox": {
                "epoch": snap["epoch"],
                "next_seq": snap["next_seq"],
                "queue": snap["queue"],
                "queue_depth": snap["queue_depth"],
                "queue_bytes": snap["queue_bytes"],
                "unsealed_readings": snap["unsealed_readings"],
            },
            "clock_synced": health.synced,
            "clock_offset_s": health.offset_s,
            "agent_version": AGENT_VERSION,
            "counters": counters,
            "model_update": self.last_model_update,
            "readers": [
                {
                    "name": s.name,
                    "failures": s.failures,
                    "errors": s.errors,
                    "readings": s.readings,
                    "last_error": s.last_error,
                    "last_ok": s.last_ok,
                    # protocol readers count frames, CRC failures, skipped bytes, retries
                    **({"counters": s.reader.counters()} if hasattr(s.reader, "counters") else {}),
                }
                for s in self.slots
            ],
        }

    def status_payload(self, online: bool, seq: int) -> bytes:
        st = self.status()
        return encode(
            GatewayStatus(
                self.gateway_id,
                seq,
                self.model_version,
                self.clock.now(),
                online,
                st["uptime_s"],
                st["queue_depth"],
                st["clock_synced"],
                st["clock_offset_s"],
                AGENT_VERSION,
                {k: float(v) for k, v in st["counters"].items()},
                epoch=self.outbox.epoch,
            )
        )

    def write_status_file(self) -> None:
        """``data_dir/status.json`` for ``gridsight agent status`` (atomic replace)."""
        import json

        path = os.path.join(str(self.settings.data_dir), "status.json")
        tmp = path + ".tmp"
        st = self.status()
        st["written_at"] = time.time()
        st["clock_now"] = self.clock.now()
        try:
            with open(tmp, "w") as fh:
                json.dump(st, fh, indent=1, default=str)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    # ------------------------------------------------------------------ running

    def run(self, stop_event: threading.Event, *, flush_timeout: float = 10.0) -> None:
        """Poll every ``poll_s`` until ``stop_event`` is set, then shut down gracefully."""
        self.transport.start()
        self.notifier.ready(f"gateway {self.gateway_id}: {len(self.slots)} readers")
        log.info(
            "agent %s started: %d readers, model %s, outbox %s",
            self.gateway_id,
            len(self.slots),
            self.model_version,
            self.outbox.path,
        )
        last_status_file = 0.0
        written_changes = -1
        try:
            while not stop_event.is_set():
                started = self.clock.now()
                self.tick()
                self.notifier.watchdog()
                # status.json follows the outbox within one poll cycle: rewritten whenever the
                # queue or the sequence state changed (appends, PUBACK deletions, the will's seq),
                # and at least every 10 s for the counters. Writing it on a timer alone left it
                # showing a queue the publisher had long drained.
                changes = self.outbox.changes
                if changes != written_changes or time.monotonic() - last_status_file >= min(
                    self.settings.status_s, 10.0
                ):
                    self.write_status_file()
                    last_status_file = time.monotonic()
                    written_changes = changes
                remaining = self.settings.poll_s - (self.clock.now() - started)
                wait = getattr(self.clock, "wait", None)
                if wait is not None:
                    wait(stop_event, max(0.0, remaining))
                else:
                    self.clock.sleep(max(0.0, remaining))
        finally:
            self.shutdown(flush_timeout)

    def shutdown(self, flush_timeout: float = 10.0) -> None:
        """Seal what is staged, let in-flight messages finish, go offline, close everything."""
        self.notifier.stopping()
        try:
            self.outbox.append(readings=self._retry_readings, messages=self._retry_messages, seal=self._seal)
            self._commit_readers()
        except OutboxError as exc:
            log.error("final outbox write failed: %s", exc)
        self.transport.stop(flush_timeout)
        self.write_status_file()
        for slot in self.slots:
            try:
                slot.reader.close()
            except Exception as exc:
                log.warning("closing reader %s: %s", slot.name, exc)
        for integration in self.local:
            try:
                integration.close()
            except Exception as exc:
                log.warning("closing local integration %s: %s", integration.name, exc)
        self.outbox.close()
        self.notifier.close()
        log.info("agent %s stopped", self.gateway_id)


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
