"""Fleet mode: a simulated fleet through real agents, a real broker and a real collector.

:class:`FleetRun` starts (or uses) PostgreSQL and Mosquitto, runs ``gridsight collector
ingest`` as a process, trains a model on clean history when none is given, and runs one
agent per gateway, either as ``gridsight agent run`` processes (``process`` mode: power
cycles are real SIGKILLs) or as :class:`edge_agent.runtime.Agent` threads in this process
(``inprocess`` mode, for hundreds of gateways on a small machine). All agents share one
simulated clock (a :class:`~edge_agent.clock.SimulatedClock` anchored to wall time), and
each gateway reaches the broker through its own TCP proxy so its link can be cut.

The scenario's faults are applied on that clock. When the run is over, agents stop
gracefully, the collector drains, and the run leaves ``labels.csv`` and ``run.json`` (the
manifest ``sim score`` and ``sim report`` read) in the work directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge_agent.clock import SimulatedClock
from firmware_sim.fleet_model import Fleet, gateway_id_for, write_manifest
from firmware_sim.history import write_readings_csv
from firmware_sim.net_proxy import ProxyHub, TcpProxy
from firmware_sim.reader import committed_cursor
from firmware_sim.scenario import FaultEvent, Scenario
from gridsight.errors import GridsightError

__all__ = ["FleetRun", "RunResult", "FleetRunError", "ShiftableClock", "MeterSubset", "run_progress"]

H = 3600.0


class FleetRunError(GridsightError, RuntimeError):
    """The run could not be set up or finished; the message says which part failed."""

    exit_code = 1


class ShiftableClock:
    """A shared simulated clock plus this gateway's own offset (an in-process clock jump)."""

    def __init__(self, base: SimulatedClock) -> None:
        self.base = base
        self.offset = 0.0

    def now(self) -> float:
        return self.base.now() + self.offset

    def sleep(self, seconds: float) -> None:
        self.base.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return self.base.wait(event, seconds)

    def real_seconds(self, seconds: float) -> float:
        return self.base.real_seconds(seconds)


@dataclass
class RunResult:
    work_dir: Path
    labels_path: Path
    manifest_path: Path
    database_url: str
    applied: list[str] = field(default_factory=list)
    real_seconds: float = 0.0
    meters: int = 0


class _ProcessAgent:
    def __init__(self, run: "FleetRun", index: int) -> None:
        self.run = run
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.clock_offset = 0.0
        self.model_path = run.model_path

    def start(self) -> None:
        cfg = self.run.write_agent_config(self.index, self.model_path, self.clock_offset)
        log = open(cfg.parent / "agent.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gridsight", "agent", "run", "--config", str(cfg)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=self.run.child_env())
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def set_clock_offset(self, seconds: float) -> None:
        self.stop()
        self.clock_offset = seconds
        self.start()

    def use_model(self, path: Path) -> None:
        self.stop()
        self.model_path = path
        self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class _ThreadAgent:
    def __init__(self, run: "FleetRun", index: int) -> None:
        self.run = run
        self.index = index
        self.clock = ShiftableClock(run.clock)
        self.agent = None
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()

    def start(self) -> None:
        from edge_agent.config import AgentSettings
        from edge_agent.runtime import Agent
        from gridsight.settings import load_settings

        from firmware_sim.reader import SimulatedMeterReader

        # hundreds of agents share this process's stderr with the run's progress lines
        logging.getLogger("gridsight.agent").setLevel(logging.ERROR)
        values = self.run.agent_settings(self.index, self.run.model_path, 0.0)
        options = {k: v for k, v in values.pop("readers")[0].items() if k != "type"}
        readers = [SimulatedMeterReader.from_config(options)]
        settings = load_settings(AgentSettings, None, env={}, overrides={**values, "model": {"path": ""}})
        self.agent = Agent(settings, readers=readers, clock=self.clock, scorer=self.run.scorer)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop_event,), daemon=True,
                                       name=f"agent-{self.index}")
        self.thread.start()

    def kill(self) -> None:
        raise FleetRunError("power_cycle needs fleet.mode = \"process\" (a thread cannot be killed -9)")

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(60)
        self.thread = None

    def set_clock_offset(self, seconds: float) -> None:
        self.clock.offset = seconds

    def use_model(self, path: Path) -> None:
        from edge_agent.scorer import Scorer
        self.agent.use_model(Scorer.load(path))

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


_RUN_MARKER = ".gridsight-sim-fleet"


def prepare_work_dir(work_dir: Path) -> None:
    """Give a run an empty work directory: a previous run's one is cleared, anything else is refused.

    A run left behind gateway state, keys and a database; reusing them would mix two runs'
    data and sequence numbers, so a rerun in the same place starts from nothing. A directory
    that a fleet run did not make may hold a person's files and is never deleted.
    """
    if work_dir.exists():
        if not work_dir.is_dir():
            raise FleetRunError(f"--work-dir {work_dir} is a file, not a directory")
        if any(work_dir.iterdir()):
            if not (work_dir / _RUN_MARKER).exists():
                raise FleetRunError(f"--work-dir {work_dir} is not empty and is not a previous fleet run's; "
                                    "choose a new or empty directory")
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / _RUN_MARKER).write_text("made by gridsight sim fleet; cleared by the next run here\n")


class FleetRun:
    """One fleet simulation; :meth:`run` does everything and returns a :class:`RunResult`."""

    def __init__(self, scenario: Scenario, work_dir: str | Path, *, database_url: str | None = None,
                 mqtt_port: int | None = None, progress: Callable[[str], None] | None = None,
                 keep_archive_settings: bool = False) -> None:
        self.scenario = scenario
        self.work_dir = Path(work_dir).resolve()
        self.database_url = database_url
        self.external_mqtt_port = mqtt_port
        # QA runs archive to a local directory even where S3 is configured; the demo may use S3.
        self.keep_archive_settings = keep_archive_settings
        self.progress = progress or (lambda m: print(m, file=sys.stderr, flush=True))
        r, f = scenario.run, scenario.fleet
        self.scored_start = r.start_ts
        self.scored_end = self.scored_start + r.hours * H
        self.sim_start = self.scored_start - r.warmup_hours * H
        self.fleet = Fleet(f.seed, f.gateways, f.meters_per_gateway, start=self.scored_start, end=self.scored_end,
                           step_s=r.step_s, anomaly_rate=f.anomaly_rate, fault_rate=f.fault_rate,
                           kinds=f.kinds or None)
        self.mode = f.mode if f.mode != "auto" else ("process" if f.gateways <= 12 else "inprocess")
        self.faults = scenario.faults()
        if self.mode == "inprocess" and any(e.action == "power_cycle" for e in self.faults):
            raise FleetRunError("power_cycle needs fleet.mode = \"process\"")
        if mqtt_port is not None and any(e.action == "broker_outage" for e in self.faults):
            raise FleetRunError("broker_outage needs the simulator's own broker (leave --mqtt-url out)")
        self.model_path: Path | None = None
        self.rollout_path: Path | None = None
        self.rollout_hosted: Path | None = None
        self.public_key: Path | None = None
        self._private_key: Path | None = None
        self.scorer = None
        self.clock: SimulatedClock | None = None
        self.anchor = 0.0
        self._pg = None
        self._broker = None
        self._hub: ProxyHub | None = None
        self.proxies: list[TcpProxy] = []
        self.agents: list[_ProcessAgent | _ThreadAgent] = []
        self._collector: subprocess.Popen | None = None
        self.applied: list[str] = []

    # ---------------------------------------------------------------- configuration

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDSIGHT_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def agent_settings(self, index: int, model: Path | None, clock_offset: float) -> dict:
        r, f = self.scenario.run, self.scenario.fleet
        gw_dir = self.gateway_dir(index)
        gw_dir.mkdir(parents=True, exist_ok=True)
        return {
            "gateway_id": gateway_id_for(index), "data_dir": str(gw_dir), "interval_s": r.interval_s,
            "poll_s": r.poll_s, "grace_s": min(30.0, r.interval_s / 2), "raw_chunk_s": float(r.interval_s),
            "status_s": float(r.interval_s), "log_level": "warning",
            "mqtt": {"url": self.proxies[index].url, "reconnect_min_s": 0.2, "reconnect_max_s": 3.0,
                     "drain_rate": 0.0},
            "model": {"path": str(model) if model else "",
                      **({"public_key": str(self.public_key), "source_dir": str(self.work_dir / "published")}
                         if self.public_key else {})},
            "clock": {"speed": r.speed, "start": self.sim_start + clock_offset, "anchor": self.anchor},
            "readers": [{"type": "sim", "seed": f.seed, "gateway": index, "meters": f.meters_per_gateway,
                         "step_s": r.step_s, "anomalies": True, "anomaly_rate": f.anomaly_rate,
                         "fault_rate": f.fault_rate, "start": self.scored_start, "end": self.scored_end,
                         **({"kinds": list(f.kinds)} if f.kinds else {}), "since": self.sim_start,
                         "state_path": str(self.cursor_path(index)), "name": f"sim:gw{index}",
                         # meters as they are: PV export, tariff registers, per-phase values, gas
                         "channels": True}],
        }

    def write_agent_config(self, index: int, model: Path | None, clock_offset: float) -> Path:
        values = self.agent_settings(index, model, clock_offset)
        path = Path(values["data_dir"]) / "agent.toml"
        path.write_text(_toml(values))
        return path

    # ---------------------------------------------------------------- services

    def _start_services(self) -> None:
        from gridsight.local_services import EmbeddedPostgres, LocalMosquitto

        if self.database_url is None:
            self.progress("fleet: starting embedded PostgreSQL")
            self._pg = EmbeddedPostgres(self.work_dir / "postgres", durable=False).start()
            self.database_url = self._pg.url
        if self.external_mqtt_port is None:
            self._broker = LocalMosquitto(self.work_dir / "mosquitto").start()
            broker_port = self._broker.port
        else:
            broker_port = self.external_mqtt_port
        self.broker_port = broker_port
        self.progress(f"fleet: migrating {self.database_url}")
        done = subprocess.run([sys.executable, "-m", "gridsight", "collector", "migrate"], capture_output=True,
                              text=True, env=self._collector_env(), timeout=300)
        if done.returncode != 0:
            raise FleetRunError(f"collector migrate failed: {(done.stderr or done.stdout).strip()[-400:]}")
        # the fleet's topology (sites, coordinates, feeders, regions) for maps and regional views
        from firmware_sim.registry import write_registry
        write_registry(self.fleet, self.work_dir / "registry.json")
        done = subprocess.run([sys.executable, "-m", "gridsight", "collector", "registry", "import",
                               str(self.work_dir / "registry.json")], capture_output=True, text=True,
                              env=self._collector_env(), timeout=300)
        if done.returncode != 0:
            raise FleetRunError(f"collector registry import failed: {(done.stderr or done.stdout).strip()[-400:]}")
        self._start_collector(wait=True)
        self._hub = ProxyHub()
        self.proxies = [self._hub.proxy(broker_port) for _ in range(self.scenario.fleet.gateways)]

    def _collector_env(self) -> dict[str, str]:
        env = self.child_env()
        # the simulated fleet is registered by the run's registry import; "register" also admits a
        # gateway added mid-run (a real fleet keeps the default, "refuse")
        env.update(DATABASE_URL=self.database_url, MQTT_URL=f"mqtt://127.0.0.1:{self.broker_port}",
                   GRIDSIGHT_DATA_DIR=str(self.work_dir / "collector"), GRIDSIGHT_COLLECTOR_UNKNOWN_GATEWAYS="register")
        if not self.keep_archive_settings:
            for k in ("S3_ENDPOINT_URL", "S3_BUCKET"):
                env.pop(k, None)
        return env

    def _start_collector(self, wait: bool = False) -> None:
        path = self.work_dir / "collector.log"
        offset = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")
        self._collector = subprocess.Popen([sys.executable, "-m", "gridsight", "collector", "ingest",
                                            "--replica-id", "sim-collector"], stdout=log, stderr=subprocess.STDOUT,
                                           env=self._collector_env(), start_new_session=True)
        log.close()
        if not wait:
            return
        # Until the collector's persistent session exists, the broker has nobody to keep
        # messages for: wait for its subscription before any agent publishes.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with path.open("rb") as fh:
                fh.seek(offset)
                if b"subscribed to" in fh.read():
                    return
            if self._collector.poll() is not None:
                raise FleetRunError(f"the collector exited with code {self._collector.returncode}; see {path}")
            time.sleep(0.1)
        raise FleetRunError(f"the collector did not subscribe within 120 s; see {path}")

    def _kill_collector(self) -> None:
        if self._collector is not None and self._collector.poll() is None:
            self._collector.send_signal(signal.SIGKILL)
            self._collector.wait(10)

    # ---------------------------------------------------------------- model

    def _training_history(self) -> Path:
        """The clean history both models train on, written once (v1 and v2 differ by their random state)."""
        history = self.work_dir / "train.csv"
        if history.exists():
            return history
        m = self.scenario.model
        specs = list(self.fleet.meter_specs())
        step = max(1, len(specs) // m.train_meters)
        chosen = {s.meter_id for s in specs[::step][: m.train_meters]}
        clean = Fleet(self.fleet.seed, self.fleet.gateways, self.fleet.meters_per_gateway, step_s=60,
                      anomaly_rate=0.0, fault_rate=0.0)
        end = self.sim_start
        self.progress(f"fleet: writing {len(chosen)} meters x {m.train_days:g} days of clean training history")
        write_readings_csv(MeterSubset(clean, chosen), end - m.train_days * 86400, end, 60, history)
        return history

    def _train(self, out: Path, seed_offset: int, role: str) -> Path:
        from model_export.pipeline import train_and_export

        history = self._training_history()
        version = f"sim-v{seed_offset + 1}"
        self.progress(f"fleet: training {role} model {version} (random state {seed_offset}) -> {out.name}")
        started = time.monotonic()
        # the sites' local time and public holidays, as a utility trains for its own service area;
        # the agents take both from the model
        train_and_export(history, out, version=version, interval_s=self.scenario.run.interval_s,
                         random_state=seed_offset, time_zone=self.fleet.calendar.tz,
                         holiday_country=self.fleet.calendar.country)
        self.progress(f"fleet: {role} model {version} trained in {time.monotonic() - started:.0f} s")
        return out

    def _prepare_models(self) -> None:
        from edge_agent.scorer import Scorer

        m = self.scenario.model
        self.model_path = Path(m.path).resolve() if m.path else self._train(self.work_dir / "model-v1.onnx", 0, "first")
        rollout = next((e for e in self.faults if e.action == "model_rollout"), None)
        if rollout is not None:
            self.rollout_path = Path(rollout.model).resolve() if rollout.model else \
                self._train(self.work_dir / "model-v2.onnx", 1, "rollout")
            if self.mode == "process":
                # agent processes take the new model over the air: signed, announced, verified
                from model_export.signing import generate_keypair, sign_file
                keys = self.work_dir / "keys"
                keys.mkdir(exist_ok=True)
                self._private_key, self.public_key = keys / "models.key", keys / "models.pub"
                generate_keypair(self._private_key, self.public_key)
                # agents fetch file:// URLs only inside their model.source_dir: the run's published/
                published = self.work_dir / "published"
                published.mkdir(exist_ok=True)
                hosted = published / self.rollout_path.name
                hosted.write_bytes(self.rollout_path.read_bytes())
                self.rollout_hosted = hosted
                self.rollout_signature = sign_file(hosted, self._private_key, published / (hosted.name + ".sig"))
        self.scorer = Scorer.load(self.model_path)

    # ---------------------------------------------------------------- faults

    def _targets(self, e: FaultEvent) -> list[int]:
        return list(e.gateways) if e.gateways is not None else list(range(len(self.agents)))

    def _schedule(self) -> list[tuple[float, str, Callable[[], None]]]:
        steps: list[tuple[float, str, Callable[[], None]]] = []
        for e in self.faults:
            t = self.scored_start + e.at_hours * H
            end = t + e.duration_hours * H
            gws = self._targets(e)
            if e.action == "broker_outage":
                steps += [(t, "broker down", self._broker.stop), (end, "broker up", self._broker.start)]
            elif e.action == "partition":
                steps += [(t, f"partition {gws}", lambda g=gws: [self.proxies[i].cut() for i in g]),
                          (end, f"partition healed {gws}", lambda g=gws: [self.proxies[i].restore() for i in g])]
            elif e.action == "power_cycle":
                steps += [(t, f"power off (SIGKILL) {gws}", lambda g=gws: [self.agents[i].kill() for i in g]),
                          (end, f"power on {gws}", lambda g=gws: [self.agents[i].start() for i in g])]
            elif e.action == "collector_restart":
                steps += [(t, "collector killed", self._kill_collector),
                          (end, "collector restarted", self._start_collector)]
            elif e.action == "clock_jump":
                steps += [(t, f"clock jump {e.jump_s:+g} s {gws}",
                           lambda g=gws, j=e.jump_s: [self.agents[i].set_clock_offset(j) for i in g])]
                if e.duration_hours > 0:
                    steps += [(end, f"clock corrected {gws}",
                               lambda g=gws: [self.agents[i].set_clock_offset(0.0) for i in g])]
            elif e.action == "model_rollout":
                if self.mode == "process":
                    steps += [(t, f"model {self.rollout_path.name} announced over the air",
                               lambda g=gws, every=e.gateways is None: self._announce_rollout(None if every else g))]
                else:
                    steps += [(t, f"model rollout to {self.rollout_path.name}",
                               lambda g=gws: [self.agents[i].use_model(self.rollout_path) for i in g])]
        return sorted(steps, key=lambda s: s[0])

    def _fault_events(self) -> list[dict]:
        """The scenario's delivery faults on the simulated clock, for the QA report's timeline."""
        out = []
        for e in self.faults:
            start = self.scored_start + e.at_hours * H
            out.append({"action": e.action, "start": start, "end": start + e.duration_hours * H,
                        "gateways": [gateway_id_for(i) for i in self._targets(e)] if e.gateways is not None else None,
                        "jump_s": e.jump_s if e.action == "clock_jump" else None})
        return out

    def _announce_rollout(self, gateways: list[int] | None) -> None:
        import hashlib

        from edge_agent.scorer import Scorer
        from gridsight.wire import ModelAnnouncement
        from model_export.publish import announce

        scorer = Scorer.load(self.rollout_path)
        cmd = ModelAnnouncement(scorer.name, scorer.version, self.rollout_hosted.as_uri(),
                                hashlib.sha256(self.rollout_hosted.read_bytes()).hexdigest(),
                                Path(self.rollout_signature).as_uri(), time.time(),
                                None if gateways is None else tuple(gateway_id_for(i) for i in gateways))
        announce(f"mqtt://127.0.0.1:{self.broker_port}", cmd)

    # ---------------------------------------------------------------- the run

    def _stored_messages(self) -> int:
        import psycopg
        try:
            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                return int(conn.execute("SELECT count(*) FROM ingest_log").fetchone()[0])
        except psycopg.Error:
            return -1

    def run(self) -> RunResult:
        started = time.monotonic()
        prepare_work_dir(self.work_dir)
        try:
            self._prepare_models()
            self._start_services()
            r = self.scenario.run
            self.anchor = time.time() + 1.0
            self.clock = SimulatedClock(self.sim_start, r.speed, anchor=self.anchor)
            self.anchor_monotonic = time.monotonic() + 1.0
            kind = _ProcessAgent if self.mode == "process" else _ThreadAgent
            self.agents = [kind(self, i) for i in range(self.scenario.fleet.gateways)]
            self.progress(f"fleet: {len(self.agents)} gateways x {self.scenario.fleet.meters_per_gateway} meters "
                          f"({self.mode} mode), {r.warmup_hours:g} h warm-up + {r.hours:g} h scored at {r.speed:g}x")
            for a in self.agents:
                a.start()
            steps = self._schedule()
            finish = self.scored_end + r.interval_s + 2 * r.poll_s + 60
            last_report = 0.0
            while True:
                now = self.clock.now()
                while steps and steps[0][0] <= now:
                    at, what, action = steps.pop(0)
                    action()
                    hours = (at - self.scored_start) / H
                    self.applied.append(f"{hours:+.2f} h {what}")
                    self.progress(f"fleet: {hours:+.2f} h {what}")
                if now >= finish:
                    break
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    dead = [a.index for a in self.agents if not a.alive]
                    done = run_progress(now, self.sim_start, self.scored_start, finish,
                                        time.monotonic() - self.anchor_monotonic)
                    self.progress(f"fleet: {done}, {self._stored_messages()} messages stored"
                                  + (f", down: {dead}" if dead else ""))
                time.sleep(0.05)
            self._wait_for_readers(self.scored_end, r.drain_timeout_s)
            self.progress("fleet: run over; stopping agents and draining the collector")
            for a in self.agents:
                a.stop()
            self._drain(r.drain_timeout_s)
            self.fleet.write_labels(self.work_dir / "labels.csv")
            write_manifest(self.work_dir / "run.json", self.fleet, self.scored_start, self.scored_end,
                           produced_since=self.sim_start, mode=self.mode, speed=r.speed, faults=self.applied,
                           fault_events=self._fault_events(),
                           model=str(self.model_path), rollout_model=str(self.rollout_path or ""))
            return RunResult(self.work_dir, self.work_dir / "labels.csv", self.work_dir / "run.json",
                             self.database_url, self.applied, time.monotonic() - started,
                             self.fleet.gateways * self.fleet.meters_per_gateway)
        finally:
            self._teardown()

    def _reader_cursor(self, index: int) -> float:
        """Where gateway ``index``'s meters stand: everything they handed over before it is stored
        in the agent's outbox (the reader commits a poll's cursor once the agent has stored its batch)."""
        try:
            return committed_cursor(self.cursor_path(index))
        except (OSError, ValueError):
            return float("-inf")

    def gateway_dir(self, index: int) -> Path:
        """Gateway ``index``'s data directory (its agent's outbox, state and meter cursor)."""
        return self.work_dir / "gateways" / gateway_id_for(index)

    def cursor_path(self, index: int) -> Path:
        return self.gateway_dir(index) / "sim-meter-cursor.json"

    def outbox_path(self, index: int) -> Path:
        return self.gateway_dir(index) / "outbox.sqlite"

    def delivered_through(self, index: int, until: float, marks: dict[int, int]) -> bool:
        """Whether gateway ``index`` has delivered everything it owes the collector up to ``until``.

        Three steps, each only after the one before: its meters are read through ``until`` (the
        reader's committed cursor), the readings up to it are sealed into raw chunks (then every
        message about them has a seq below the outbox's next one, kept in ``marks``), and the
        broker has acknowledged every message below that mark (the outbox deletes a message only
        on its PUBACK). Stored is not delivered: a graceful stop seals the outbox but does not
        empty it, so an agent stopped after storing its last batch takes it to its next start.
        """
        if self._reader_cursor(index) < until:
            return False
        import sqlite3

        from edge_agent.outbox import read_owed_before, read_sealed_through

        try:
            db = sqlite3.connect(f"file:{self.outbox_path(index)}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return False
        try:
            if index not in marks:
                mark = read_sealed_through(db, until)
                if mark is None:
                    return False
                marks[index] = mark
            return read_owed_before(db, marks[index]) == 0
        except sqlite3.Error:
            return False
        finally:
            db.close()

    def _wait_for_readers(self, until: float, timeout_s: float) -> None:
        """Wait until every running agent has read its meters through ``until`` and delivered what
        it owes the collector up to there (:meth:`delivered_through`).

        Agents poll on their own schedule: under load, a gateway restarted late in the run (a power
        cycle, a model switch) can still be catching up when the clock passes the end. Stopping it
        once its last batch was stored was not enough: a restarted agent that took the meters' whole
        log since its power cycle in one poll was stopped before it had sent those readings, and the
        score counted them as missing (54 to 654 readings a meter on a loaded machine)."""
        deadline = time.monotonic() + timeout_s
        marks: dict[int, int] = {}
        while True:
            behind = [a.index for a in self.agents if a.alive and not self.delivered_through(a.index, until, marks)]
            if not behind:
                return
            if time.monotonic() >= deadline:
                self.progress(f"fleet: gateways {behind} had not read and delivered their meters through the end "
                              f"of the run after {timeout_s:.0f} s; their last readings will count as missing")
                return
            time.sleep(0.1)

    def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last, stable_since = -2, time.monotonic()
        while time.monotonic() < deadline:
            n = self._stored_messages()
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since >= 4.0:
                return
            time.sleep(0.5)
        self.progress(f"fleet: the collector was still storing after {timeout_s:.0f} s")

    def _teardown(self) -> None:
        for a in self.agents:
            try:
                a.stop()
            except Exception:
                pass
        if self._collector is not None and self._collector.poll() is None:
            self._collector.send_signal(signal.SIGTERM)
            try:
                self._collector.wait(30)
            except subprocess.TimeoutExpired:
                self._collector.kill()
        if self._hub is not None:
            self._hub.close()
        if self._broker is not None:
            self._broker.close()

    def close(self) -> None:
        """Stop the embedded PostgreSQL (kept running after :meth:`run` so the run can be scored)."""
        if self._pg is not None:
            self._pg.close()
            self._pg = None


def run_progress(now: float, sim_start: float, scored_start: float, finish: float, real_elapsed_s: float) -> str:
    """"warm-up 40% (29 of 72 h), run 25%, ETA 3 min 10 s": the phase's share, the whole run's
    share and the time left at the pace so far, on the simulated clock."""
    total = max(finish - sim_start, 1.0)
    now = max(now, sim_start)                 # the clock starts a moment after the first report
    done = min(now - sim_start, total)
    share = done / total
    if now < scored_start:
        span = max(scored_start - sim_start, 1.0)
        phase = f"warm-up {100 * (now - sim_start) / span:.0f}% ({(now - sim_start) / H:.1f} of {span / H:g} h)"
    else:
        span = max(finish - scored_start, 1.0)
        phase = (f"scored {100 * min(now - scored_start, span) / span:.0f}% "
                 f"({min(now - scored_start, span) / H:.1f} of {span / H:.1f} h)")
    eta = real_elapsed_s * (1 - share) / share if share > 0 and real_elapsed_s > 0 else None
    return f"{phase}, run {100 * share:.0f}%, ETA {_duration(eta)}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class MeterSubset(Fleet):
    """A fleet restricted to some meters (for training on a sample)."""

    def __init__(self, fleet: Fleet, meter_ids: set[str]) -> None:
        self.__dict__.update(fleet.__dict__)
        self._only = meter_ids

    def meter_specs(self):
        return (s for s in super().meter_specs() if s.meter_id in self._only)

    def with_step(self, step_s: int) -> "Fleet":
        return MeterSubset(super().with_step(step_s), self._only)


def _toml(values: dict, prefix: str = "") -> str:
    """Enough TOML for agent configs: scalars, tables, arrays of tables, lists of scalars."""
    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return json.dumps(str(v))

    lines, tables = [], []
    for k, v in values.items():
        if isinstance(v, dict):
            tables.append(f"\n[{prefix}{k}]\n" + _toml(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tables.append(f"\n[[{prefix}{k}]]\n" + _toml(item, f"{prefix}{k}."))
        else:
            lines.append(f"{k} = {scalar(v)}")
    return "\n".join(lines) + "\n" + "".join(tables)
