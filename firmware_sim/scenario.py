"""Fleet scenarios: a TOML file scripting a simulated run and the faults that hit it.

    [run]
    start = "2026-01-05T00:00:00Z"   # start of the scored window (anomalies happen inside it)
    hours = 48                       # scored window length, simulated hours
    warmup_hours = 24                # agents run this long before, to learn each meter's profile
    speed = 600                      # simulated seconds per real second
    step_s = 60                      # seconds between meter readings
    poll_s = 60                      # agent poll period, simulated seconds

    [fleet]
    seed = 1
    gateways = 4
    meters_per_gateway = 5
    anomaly_rate = 0.3               # share of meters with a consumption anomaly
    fault_rate = 0.1                 # share of meters with a data fault
    mode = "auto"                    # "process" (one agent process per gateway), "inprocess", "auto"

    [model]
    path = ""                        # an existing model; empty: train one on clean history
    train_days = 7

    [[events]]
    action = "broker_outage"         # the broker stops, then starts again
    at_hours = 10                    # simulated hours after run.start (negative: during warm-up)
    duration_hours = 1

Actions: ``broker_outage``, ``partition`` (cut ``gateways``' links), ``power_cycle``
(SIGKILL ``gateways``' agents, restart after ``duration_hours``), ``collector_restart``
(SIGKILL the collector, restart after ``duration_hours``), ``clock_jump`` (``gateways``
restart with their clock off by ``jump_s`` for ``duration_hours``), ``model_rollout`` (every
gateway switches to a second model, ``model`` path or trained). ``gateways`` is a list of
gateway indexes; omitted means all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridsight.settings import ConfigError, load_settings
from firmware_sim.anomalies import ALL_KINDS, parse_time

__all__ = ["Scenario", "RunPlan", "FleetPlan", "ModelPlan", "FaultEvent", "ACTIONS", "load_scenario"]

ACTIONS = ("broker_outage", "partition", "power_cycle", "collector_restart", "clock_jump", "model_rollout")
_EVENT_KEYS = {"action", "at_hours", "duration_hours", "gateways", "jump_s", "model"}


@dataclass
class RunPlan:
    start: str = "2026-01-05T00:00:00Z"
    hours: float = 48.0
    warmup_hours: float = 24.0
    speed: float = 600.0
    step_s: int = 60
    poll_s: float = 60.0
    interval_s: int = 900
    drain_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        try:
            parse_time(self.start, "run.start")
        except ValueError as exc:
            raise ConfigError("run.start", str(exc)) from None
        for key in ("hours", "speed", "poll_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"run.{key}", "must be positive")
        if self.warmup_hours < 0:
            raise ConfigError("run.warmup_hours", "must not be negative")
        if self.step_s <= 0 or 900 % self.step_s:
            raise ConfigError("run.step_s", f"{self.step_s} must divide 900 seconds")

    @property
    def start_ts(self) -> float:
        return parse_time(self.start)


@dataclass
class FleetPlan:
    seed: int = 1
    gateways: int = 2
    meters_per_gateway: int = 4
    anomaly_rate: float = 0.3
    fault_rate: float = 0.1
    kinds: list[str] = field(default_factory=list)
    mode: str = "auto"

    def __post_init__(self) -> None:
        if self.gateways < 1 or self.meters_per_gateway < 1:
            raise ConfigError("fleet.gateways", "gateways and meters_per_gateway must be at least 1")
        for key in ("anomaly_rate", "fault_rate"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"fleet.{key}", "must be between 0 and 1")
        for k in self.kinds:
            if k not in ALL_KINDS:
                raise ConfigError("fleet.kinds", f"{k!r} is not one of {', '.join(ALL_KINDS)}")
        if self.mode not in ("auto", "process", "inprocess"):
            raise ConfigError("fleet.mode", f"{self.mode!r} is not auto, process or inprocess")


@dataclass
class ModelPlan:
    path: str = ""
    train_days: float = 7.0
    train_meters: int = 40

    def __post_init__(self) -> None:
        if self.path and not Path(self.path).is_file():
            raise ConfigError("model.path", f"{self.path} does not exist")


@dataclass(frozen=True)
class FaultEvent:
    action: str
    at_hours: float
    duration_hours: float = 0.0
    gateways: tuple[int, ...] | None = None
    jump_s: float = 0.0
    model: str = ""


@dataclass
class Scenario:
    run: RunPlan = field(default_factory=RunPlan)
    fleet: FleetPlan = field(default_factory=FleetPlan)
    model: ModelPlan = field(default_factory=ModelPlan)
    events: list[dict[str, Any]] = field(default_factory=list)

    def faults(self) -> list[FaultEvent]:
        """The events, checked and in time order; ConfigError names ``events[i].key``."""
        out = []
        for i, raw in enumerate(self.events):
            where = f"events[{i}]"
            if not isinstance(raw, dict):
                raise ConfigError(where, "expected a table")
            for key in raw:
                if key not in _EVENT_KEYS:
                    raise ConfigError(f"{where}.{key}", "unknown key")
            action = raw.get("action")
            if action not in ACTIONS:
                raise ConfigError(f"{where}.action", f"{action!r} is not one of {', '.join(ACTIONS)}")
            values: dict[str, Any] = {"action": action}
            for key in ("at_hours", "duration_hours", "jump_s"):
                v = raw.get(key, 0.0)
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"{where}.{key}", f"expected a number, got {v!r}")
                values[key] = float(v)
            if "at_hours" not in raw:
                raise ConfigError(f"{where}.at_hours", "missing")
            if values["duration_hours"] < 0:
                raise ConfigError(f"{where}.duration_hours", "must not be negative")
            if not -self.run.warmup_hours <= values["at_hours"] <= self.run.hours:
                raise ConfigError(f"{where}.at_hours", "must fall inside the run (warm-up included)")
            if action in ("broker_outage", "partition", "power_cycle") and values["duration_hours"] <= 0:
                raise ConfigError(f"{where}.duration_hours", f"{action} needs a positive duration")
            if action == "clock_jump" and not values["jump_s"]:
                raise ConfigError(f"{where}.jump_s", "clock_jump needs a non-zero jump_s")
            gws = raw.get("gateways")
            if gws is not None:
                if not isinstance(gws, list) or not all(isinstance(g, int) and 0 <= g < self.fleet.gateways
                                                        for g in gws):
                    raise ConfigError(f"{where}.gateways", f"expected a list of gateway indexes 0..{self.fleet.gateways - 1}")
                values["gateways"] = tuple(gws)
            model = raw.get("model", "")
            if model and not Path(model).is_file():
                raise ConfigError(f"{where}.model", f"{model} does not exist")
            values["model"] = model
            out.append(FaultEvent(**values))
        return sorted(out, key=lambda e: e.at_hours)


def load_scenario(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Scenario:
    """The scenario from ``path`` (or defaults), with CLI overrides such as {"fleet": {"gateways": 3}}."""
    scenario = load_settings(Scenario, path, env_prefix="GRIDSIGHT_SIM_", env={}, overrides=overrides)
    scenario.faults()
    return scenario
