"""The simulated fleet: regions, feeders, gateways, meters and their injected events.

Everything is derived from ``(seed, gateway index, meter index)``, so one gateway can be
rebuilt on its own (an agent process only needs the seed and its index) and a fleet of
any size shares its first gateways with every larger fleet of the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from firmware_sim.anomalies import AnomalyEvent, plan_events, write_labels_csv
from firmware_sim.local_calendar import LocalCalendar
from firmware_sim.meter import SimulatedMeter
from firmware_sim.profiles import CLASS_PARAMS, LoadProfile, MeterClass
from firmware_sim.randomness import choice_index, key_for, uniform
from firmware_sim.weather import Weather
from gridsight.errors import GridsightError

__all__ = ["Region", "MeterSpec", "GatewaySpec", "Fleet", "REGIONS", "gateway_id_for", "meter_id_for",
           "ManifestError", "write_manifest", "read_manifest"]


class ManifestError(GridsightError, ValueError):
    """A run manifest that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Region:
    name: str
    kind: str            # "urban" | "rural"
    lat: float
    lon: float
    feeders: int
    mean_temp_c: float


# A service territory in the PJM East area, whose public hourly load calibrates the profiles.
REGIONS: tuple[Region, ...] = (
    Region("metro-north", "urban", 39.952, -75.165, 6, 13.0),
    Region("metro-south", "urban", 39.290, -76.612, 5, 13.8),
    Region("valley", "rural", 40.600, -77.560, 3, 11.0),
    Region("shore", "rural", 39.360, -74.430, 3, 12.8),
)
_URBAN_MIX = {MeterClass.RESIDENTIAL: 0.55, MeterClass.RESIDENTIAL_PV: 0.10, MeterClass.RESIDENTIAL_EV: 0.10,
              MeterClass.COMMERCIAL: 0.20, MeterClass.INDUSTRIAL: 0.05}
_RURAL_MIX = {MeterClass.RESIDENTIAL: 0.60, MeterClass.RESIDENTIAL_PV: 0.20, MeterClass.RESIDENTIAL_EV: 0.05,
              MeterClass.COMMERCIAL: 0.08, MeterClass.INDUSTRIAL: 0.07}


def gateway_id_for(index: int) -> str:
    return f"gw-{index:04d}"


def meter_id_for(index: int, meter: int) -> str:
    return f"gw-{index:04d}-m{meter:02d}"


@dataclass(frozen=True)
class MeterSpec:
    meter_id: str
    gateway_id: str
    meter_class: MeterClass
    lat: float
    lon: float
    region: str
    feeder_id: str
    phases: int


@dataclass(frozen=True)
class GatewaySpec:
    gateway_id: str
    index: int
    region: str
    region_kind: str
    feeder_id: str
    lat: float
    lon: float
    meters: tuple[MeterSpec, ...] = field(default=())


class Fleet:
    """A reproducible fleet. ``start``/``end`` (Unix s) bound the window anomalies are planned in.

    ``kinds`` restricts the injected kinds (for focused tests); ``classes`` forces every
    meter to one of the given classes instead of the regional mix.
    """

    def __init__(self, seed: int = 1, gateways: int = 1, meters_per_gateway: int = 4, *,
                 start: float | None = None, end: float | None = None, step_s: int = 60,
                 anomaly_rate: float = 0.1, fault_rate: float = 0.05, kinds: Sequence[str] | None = None,
                 classes: Sequence[str] | None = None, tz: str = "America/New_York", country: str = "US") -> None:
        if gateways < 0 or meters_per_gateway < 1:
            raise ValueError("gateways must be >= 0 and meters_per_gateway >= 1")
        if not (0.0 <= anomaly_rate <= 1.0 and 0.0 <= fault_rate <= 1.0):
            raise ValueError("anomaly_rate and fault_rate must be between 0 and 1")
        if (anomaly_rate or fault_rate) and (start is None or end is None):
            raise ValueError("start and end are required to plan anomalies")
        if start is not None and end is not None and end <= start:
            raise ValueError("end must be after start")
        self.seed = int(seed)
        self.gateways = int(gateways)
        self.meters_per_gateway = int(meters_per_gateway)
        self.start, self.end = start, end
        self.step_s = int(step_s)
        if self.step_s <= 0 or 900 % self.step_s:
            raise ValueError(f"step_s must divide 900 seconds, got {step_s}")
        self.anomaly_rate = float(anomaly_rate)
        self.fault_rate = float(fault_rate)
        self.kinds = tuple(kinds) if kinds else None
        self.classes = tuple(MeterClass(c) for c in classes) if classes else None
        self.calendar = LocalCalendar(tz, country)
        self._weather = {r.name: Weather(self.seed, r.name, mean_c=r.mean_temp_c,
                                         utc_offset_h=self.calendar.standard_offset_h()) for r in REGIONS}
        if self.kinds:
            plan_events("probe", 0, 0.0, 1.0, anomaly_rate=0, fault_rate=0, three_phase=True, typical_w=1.0,
                        kinds=self.kinds)

    def with_step(self, step_s: int) -> "Fleet":
        """The same fleet read on another grid (same daily energy and events, other step noise)."""
        return Fleet(self.seed, self.gateways, self.meters_per_gateway, start=self.start, end=self.end,
                     step_s=step_s, anomaly_rate=self.anomaly_rate, fault_rate=self.fault_rate, kinds=self.kinds,
                     classes=[c.value for c in self.classes] if self.classes else None, tz=self.calendar.tz,
                     country=self.calendar.country)

    # ---------------------------------------------------------------- layout

    def gateway(self, index: int) -> GatewaySpec:
        key = key_for(self.seed, "gateway", index)
        u = uniform(key, np.arange(8))
        region = REGIONS[choice_index(key, 50, [0.35, 0.30, 0.20, 0.15])]
        spread = 0.08 if region.kind == "urban" else 0.40
        lat = region.lat + spread * (2 * u[1] - 1)
        lon = region.lon + spread * (2 * u[2] - 1)
        feeder = f"{region.name}-f{1 + int(u[3] * region.feeders)}"
        gid = gateway_id_for(index)
        mix = _URBAN_MIX if region.kind == "urban" else _RURAL_MIX
        meters = []
        for j in range(self.meters_per_gateway):
            mkey = key_for(self.seed, "meter", index, j)
            if self.classes:
                cls = self.classes[choice_index(mkey, 1, [1.0] * len(self.classes))]
            else:
                cls = list(mix)[choice_index(mkey, 1, list(mix.values()))]
            mu = uniform(mkey, np.arange(2, 4))
            meters.append(MeterSpec(meter_id_for(index, j), gid, cls, round(lat + 0.004 * (2 * mu[0] - 1), 6),
                                    round(lon + 0.004 * (2 * mu[1] - 1), 6), region.name, feeder,
                                    CLASS_PARAMS[cls].phases))
        return GatewaySpec(gid, index, region.name, region.kind, feeder, round(lat, 6), round(lon, 6), tuple(meters))

    def gateway_specs(self) -> Iterator[GatewaySpec]:
        for i in range(self.gateways):
            yield self.gateway(i)

    def meter_specs(self) -> Iterator[MeterSpec]:
        for g in self.gateway_specs():
            yield from g.meters

    # ---------------------------------------------------------------- behaviour

    def profile(self, spec: MeterSpec) -> LoadProfile:
        return LoadProfile(spec.meter_id, spec.meter_class, self.seed, self.calendar,
                           self._weather[spec.region], self.step_s)

    def events(self, spec: MeterSpec, profile: LoadProfile | None = None) -> list[AnomalyEvent]:
        if self.start is None or self.end is None or not (self.anomaly_rate or self.fault_rate):
            return []
        profile = profile or self.profile(spec)
        return plan_events(spec.meter_id, self.seed, self.start, self.end, anomaly_rate=self.anomaly_rate,
                           fault_rate=self.fault_rate, three_phase=spec.phases == 3, typical_w=profile.typical_w,
                           utc_offset_h=self.calendar.standard_offset_h(), kinds=self.kinds)

    def meter(self, spec: MeterSpec) -> SimulatedMeter:
        profile = self.profile(spec)
        return SimulatedMeter(profile, self.events(spec, profile))

    def gateway_meters(self, index: int) -> list[SimulatedMeter]:
        return [self.meter(s) for s in self.gateway(index).meters]

    def labels(self) -> list[AnomalyEvent]:
        return [e for spec in self.meter_specs() for e in self.events(spec)]

    def write_labels(self, path: str | Path) -> int:
        return write_labels_csv(self.labels(), path)

    def handed_over(self, after: float, until: float) -> dict[str, np.ndarray]:
        """Timestamps of every reading the meters hand over in ``(after, until]``, per meter."""
        out = {}
        for spec in self.meter_specs():
            meter = self.meter(spec)
            parts, t = [], after
            while t < until:
                nxt = min(t + 86400.0, until)
                parts.append(meter.emitted(t, nxt).ts)
                t = nxt
            out[spec.meter_id] = np.concatenate(parts) if parts else np.zeros(0)
        return out

    def settings(self) -> dict[str, Any]:
        """Everything needed to rebuild this fleet (JSON-able)."""
        return {"seed": self.seed, "gateways": self.gateways, "meters_per_gateway": self.meters_per_gateway,
                "start": self.start, "end": self.end, "step_s": self.step_s, "anomaly_rate": self.anomaly_rate,
                "fault_rate": self.fault_rate, "kinds": list(self.kinds) if self.kinds else None,
                "classes": [c.value for c in self.classes] if self.classes else None,
                "tz": self.calendar.tz, "country": self.calendar.country}

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> "Fleet":
        v = dict(values)
        return cls(v.pop("seed"), v.pop("gateways"), v.pop("meters_per_gateway"), **v)


def write_manifest(path: str | Path, fleet: Fleet, run_start: float, run_end: float, **extra: Any) -> None:
    """The run manifest `sim score` and `sim report` read: the fleet and the scored span."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"fleet": fleet.settings(), "run_start": run_start, "run_end": run_end, **extra}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True))
    tmp.replace(path)


def read_manifest(path: str | Path) -> tuple[Fleet, float, float, dict[str, Any]]:
    """(fleet, run_start, run_end, the whole manifest); ManifestError naming what is wrong."""
    path = Path(path)
    try:
        body = json.loads(path.read_text())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ManifestError(f"{path}: not JSON ({exc})") from None
    try:
        fleet = Fleet.from_settings(body["fleet"])
        return fleet, float(body["run_start"]), float(body["run_end"]), body
    except KeyError as exc:
        raise ManifestError(f"{path}: missing key {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: bad fleet settings ({exc})") from None
