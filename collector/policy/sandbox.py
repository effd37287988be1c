"""Apply policies to regional load and compare peak, energy, cost and CO2 before and after.

Input load is a frame of ``region, ts, kwh`` (energy per interval, hourly or 15-minute, actual
or forecast). Policies apply in a fixed, stated order because they interact: efficiency cuts
the base load, EVs add charging load, the time-of-use tariff then moves part of the peak-hour
load to off-peak hours of the same day, and demand response finally clips what is still above
its threshold (clipped energy is shed, not recovered). Hours of day (time-of-use windows, the
tariff's peak hours, EV charging profiles) are hours of each region's local day: a region's
time zone and its own time-of-use windows come from :class:`RegionPolicy` (the ``regions``
table, or the ``region_tou`` parameter); regions without them use ``tou_timezone`` and the
``tou_peak_hours`` / ``tou_offpeak_hours`` parameters.

Cost is the cost to serve at ``Tariff.price_by_hour`` (currency per kWh), the same tariff
before and after, so a cost change is caused by the load change alone. CO2 uses the grid's
carbon intensity (g/kWh): a constant, an hourly series, or per area (each region's own figure
where stored, else the system's, by :func:`collector.carbon.intensity_by_region` -- the rule
every carbon figure of gridsight uses).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from collector.carbon.accounting import co2_kg
from gridsight.errors import GridsightError

__all__ = ["PolicyError", "TimeOfUseShift", "DemandResponse", "Efficiency", "EVAdoption", "Tariff", "Scenario",
           "SandboxResult", "RegionPolicy", "apply_scenario", "run_sandbox", "scenario_from_params",
           "load_after_for_rows", "day_profile_after", "sandbox_with_stored_intensity", "PARAMETERS", "EV_PROFILES"]


class PolicyError(GridsightError, ValueError):
    """A policy parameter that cannot be used; ``parameter`` names it (as in the API and CLI)."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


def _hours(parameter: str, hours: Sequence[int]) -> tuple[int, ...]:
    out = tuple(hours)
    if not out:
        raise PolicyError(parameter, "needs at least one hour")
    for h in out:
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 0 <= h <= 23:
            raise PolicyError(parameter, f"hours are integers 0..23, got {h!r}")
    return tuple(sorted(set(int(h) for h in out)))


def _fraction(parameter: str, value: float, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not np.isfinite(value):
        raise PolicyError(parameter, f"expected a number, got {value!r}")
    if not 0.0 <= value <= upper:
        raise PolicyError(parameter, f"must be between 0 and {upper:g}, got {value:g}")
    return float(value)


@dataclass(frozen=True)
class TimeOfUseShift:
    """A time-of-use tariff moving ``share`` of peak-hour load to off-peak hours of the same day."""

    share: float
    peak_hours: tuple[int, ...] = (17, 18, 19, 20)
    offpeak_hours: tuple[int, ...] = (0, 1, 2, 3, 4, 5)

    def __post_init__(self) -> None:
        _fraction("tou_share", self.share)
        object.__setattr__(self, "peak_hours", _hours("tou_peak_hours", self.peak_hours))
        object.__setattr__(self, "offpeak_hours", _hours("tou_offpeak_hours", self.offpeak_hours))
        if set(self.peak_hours) & set(self.offpeak_hours):
            raise PolicyError("tou_offpeak_hours", "overlaps tou_peak_hours")


@dataclass(frozen=True)
class RegionPolicy:
    """A region's local time zone (IANA name) and, optionally, its own time-of-use windows."""

    timezone: str = "UTC"
    peak_hours: tuple[int, ...] | None = None
    offpeak_hours: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(str(self.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError("tou_timezone", f"unknown time zone {self.timezone!r}; use an IANA name "
                                              "such as 'America/New_York'") from None
        if self.peak_hours is not None:
            object.__setattr__(self, "peak_hours", _parse_hours("tou_peak_hours", self.peak_hours))
        if self.offpeak_hours is not None:
            object.__setattr__(self, "offpeak_hours", _parse_hours("tou_offpeak_hours", self.offpeak_hours))


@dataclass(frozen=True)
class DemandResponse:
    """Clip each region's load above a threshold, in kW or as a fraction of its own peak."""

    threshold_kw: float | None = None
    threshold_share_of_peak: float | None = None

    def __post_init__(self) -> None:
        if (self.threshold_kw is None) == (self.threshold_share_of_peak is None):
            raise PolicyError("dr_threshold_kw", "give exactly one of dr_threshold_kw or dr_threshold_share_of_peak")
        if self.threshold_kw is not None:
            if isinstance(self.threshold_kw, bool) or not isinstance(self.threshold_kw, (int, float)) \
                    or not np.isfinite(self.threshold_kw) or self.threshold_kw <= 0:
                raise PolicyError("dr_threshold_kw", f"must be a positive number, got {self.threshold_kw!r}")
        else:
            share = _fraction("dr_threshold_share_of_peak", self.threshold_share_of_peak)
            if share == 0:
                raise PolicyError("dr_threshold_share_of_peak", "must be above 0")


@dataclass(frozen=True)
class Efficiency:
    """An efficiency programme cutting every interval's load by ``percent``."""

    percent: float

    def __post_init__(self) -> None:
        _fraction("efficiency_pct", self.percent, upper=100.0)


#: Share of a day's EV charging energy per hour of day (UTC), each summing to 1.
EV_PROFILES: dict[str, tuple[float, ...]] = {
    # Drivers plug in on arrival home: a ramp from 17:00 peaking at 19:00-21:00.
    "evening": tuple(np.array([2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 6, 12, 16, 16, 14, 9, 4],
                              dtype=float) / 82),
    # Smart charging behind a timer: midnight to 06:00.
    "overnight": tuple(np.array([1] * 6 + [0] * 18, dtype=float) / 6),
    "flat": tuple([1 / 24] * 24),
}


@dataclass(frozen=True)
class EVAdoption:
    """``vehicles`` new EVs per region, each charging ``kwh_per_vehicle_day`` along ``profile``."""

    vehicles: int
    kwh_per_vehicle_day: float = 7.0
    profile: str = "evening"

    def __post_init__(self) -> None:
        if isinstance(self.vehicles, bool) or not isinstance(self.vehicles, (int, np.integer)) or self.vehicles < 0:
            raise PolicyError("ev_vehicles", f"must be a whole number >= 0, got {self.vehicles!r}")
        if isinstance(self.kwh_per_vehicle_day, bool) or not isinstance(self.kwh_per_vehicle_day, (int, float)) \
                or not 0 <= self.kwh_per_vehicle_day <= 200:
            raise PolicyError("ev_kwh_per_day", f"must be between 0 and 200 kWh, got {self.kwh_per_vehicle_day!r}")
        if self.profile not in EV_PROFILES:
            raise PolicyError("ev_profile", f"must be one of {', '.join(EV_PROFILES)}, got {self.profile!r}")


@dataclass(frozen=True)
class Tariff:
    """Price per kWh by hour of day (UTC), 24 values."""

    price_by_hour: tuple[float, ...]

    def __post_init__(self) -> None:
        prices = tuple(float(p) for p in self.price_by_hour)
        if len(prices) != 24 or not all(np.isfinite(p) and p >= 0 for p in prices):
            raise PolicyError("price_by_hour", "needs 24 non-negative prices")
        object.__setattr__(self, "price_by_hour", prices)

    @classmethod
    def peak_offpeak(cls, peak_price: float, offpeak_price: float,
                     peak_hours: Sequence[int] = (17, 18, 19, 20)) -> "Tariff":
        for name, value in (("price_peak", peak_price), ("price_offpeak", offpeak_price)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise PolicyError(name, f"must be a non-negative number, got {value!r}")
        hours = set(_hours("price_peak_hours", peak_hours))
        return cls(tuple(peak_price if h in hours else offpeak_price for h in range(24)))


@dataclass(frozen=True)
class Scenario:
    """The policies to apply (any may be absent) and how to price and weigh the outcome."""

    tou: TimeOfUseShift | None = None
    demand_response: DemandResponse | None = None
    efficiency: Efficiency | None = None
    ev: EVAdoption | None = None
    tariff: Tariff = field(default_factory=lambda: Tariff.peak_offpeak(0.30, 0.12))
    carbon_g_per_kwh: float | pd.Series | pd.DataFrame = 400.0
    timezone: str = "UTC"                                  # regions without their own RegionPolicy
    regions: Mapping[str, RegionPolicy] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxResult:
    """``summary``: one row per region with *_before, *_after and *_change columns;
    ``load``: region, ts, kwh_before, kwh_after for charts."""

    summary: pd.DataFrame
    load: pd.DataFrame

    def as_dict(self) -> dict:
        return {"regions": self.summary.to_dict(orient="records")}


def _validated_load(load: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    missing = {"region", "ts", "kwh"} - set(load.columns)
    if missing:
        raise PolicyError("load", f"missing columns {sorted(missing)}; need region, ts, kwh")
    if load.empty:
        raise PolicyError("load", "no load rows to apply policies to")
    frame = load[["region", "ts", "kwh"]].copy()
    frame["region"] = frame["region"].astype(str)
    try:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["kwh"] = pd.to_numeric(frame["kwh"]).astype("float64")
    except (ValueError, TypeError) as exc:
        raise PolicyError("load", f"bad ts or kwh values: {exc}") from None
    if not np.isfinite(frame["kwh"]).all() or (frame["kwh"] < 0).any():
        raise PolicyError("load", "kwh must be finite and non-negative")
    frame = frame.groupby(["region", "ts"], as_index=False)["kwh"].sum().sort_values(["region", "ts"])
    steps = frame.groupby("region")["ts"].diff().dropna().dt.total_seconds()
    step_s = float(steps.mode().iloc[0]) if len(steps) else 3600.0
    if step_s not in (900.0, 3600.0):
        raise PolicyError("load", f"interval of {step_s:g} s is not supported; use hourly or 15-minute load")
    return frame.reset_index(drop=True), step_s / 3600.0


def apply_scenario(load: pd.DataFrame, scenario: Scenario) -> SandboxResult:
    """Apply ``scenario`` to ``load`` (region, ts, kwh) and summarise before and after per region."""
    frame, step_h = _validated_load(load)
    hour, day = _local_hours(frame, scenario)
    before = frame["kwh"].to_numpy()
    after = before.copy()
    if scenario.efficiency is not None:
        after *= 1.0 - scenario.efficiency.percent / 100.0
    if scenario.ev is not None and scenario.ev.vehicles:
        profile = np.asarray(EV_PROFILES[scenario.ev.profile])
        daily = scenario.ev.vehicles * scenario.ev.kwh_per_vehicle_day
        after += daily * profile[hour] * step_h   # profile is per hour; a 15-min step gets a quarter
    if scenario.tou is not None and scenario.tou.share > 0:
        after = _shift_time_of_use(frame["region"].to_numpy(), day, hour, after, scenario.tou, scenario.regions)
    if scenario.demand_response is not None:
        after = _clip_demand(frame["region"].to_numpy(), after, step_h, scenario.demand_response)
    g_per_kwh = _intensity_at(scenario.carbon_g_per_kwh, frame["region"], frame["ts"])
    price = np.asarray(scenario.tariff.price_by_hour)[hour]
    detail = pd.DataFrame({"region": frame["region"], "ts": frame["ts"], "kwh_before": before, "kwh_after": after})
    rows = []
    for region, part in detail.groupby("region", sort=True):
        idx = part.index.to_numpy()
        row: dict[str, Any] = {"region": region}
        for label, kwh in (("before", before[idx]), ("after", after[idx])):
            row[f"peak_kw_{label}"] = float(kwh.max() / step_h)
            row[f"energy_kwh_{label}"] = float(kwh.sum())
            row[f"cost_{label}"] = float((kwh * price[idx]).sum())
            row[f"co2_kg_{label}"] = float(co2_kg(kwh, g_per_kwh[idx]).sum())
        for metric in ("peak_kw", "energy_kwh", "cost", "co2_kg"):
            row[f"{metric}_change"] = row[f"{metric}_after"] - row[f"{metric}_before"]
        rows.append(row)
    return SandboxResult(summary=pd.DataFrame(rows), load=detail)


def _local_hours(frame: pd.DataFrame, scenario: Scenario) -> tuple[np.ndarray, pd.Series]:
    """Hour of the local day and local date of each row, in its region's time zone."""
    hour = np.empty(len(frame), dtype=int)
    day = pd.Series(pd.NaT, index=frame.index, dtype="object")
    for region, part in frame.groupby("region", sort=False):
        zone = scenario.regions[region].timezone if region in scenario.regions else scenario.timezone
        local = part["ts"].dt.tz_convert(zone)
        hour[part.index.to_numpy()] = local.dt.hour.to_numpy()
        day.loc[part.index] = local.dt.strftime("%Y-%m-%d").to_numpy()
    return hour, day


def _intensity_at(intensity: float | pd.Series | pd.DataFrame, region: pd.Series, ts: pd.Series) -> np.ndarray:
    if isinstance(intensity, pd.DataFrame):
        from collector.carbon import CarbonError, intensity_by_region

        try:
            return intensity_by_region(region, ts, intensity)
        except CarbonError as exc:
            raise PolicyError("carbon_g_per_kwh", str(exc)) from None
    if isinstance(intensity, pd.Series):
        hourly = intensity.copy()
        hourly.index = pd.to_datetime(hourly.index, utc=True)
        values = hourly.sort_index().reindex(ts.dt.floor("h"), method="nearest").to_numpy(dtype="float64")
        return np.nan_to_num(values, nan=float(np.nanmean(hourly.to_numpy())))
    return np.full(len(ts), float(intensity))


def _shift_time_of_use(region: np.ndarray, day: pd.Series, hour: np.ndarray, kwh: np.ndarray,
                       tou: TimeOfUseShift, regions: Mapping[str, RegionPolicy]) -> np.ndarray:
    out = kwh.copy()
    peak = np.isin(hour, tou.peak_hours)
    offpeak = np.isin(hour, tou.offpeak_hours)
    for name, policy in regions.items():      # a region's own windows, in its local hours
        mine = region == name
        if policy.peak_hours is not None:
            peak[mine] = np.isin(hour[mine], policy.peak_hours)
        if policy.offpeak_hours is not None:
            offpeak[mine] = np.isin(hour[mine], policy.offpeak_hours)
        if (peak & offpeak & mine).any():
            raise PolicyError("region_tou", f"region {name!r}: off-peak hours overlap peak hours")
    groups = pd.DataFrame({"region": region, "day": day}).groupby(["region", "day"]).indices
    for idx in groups.values():
        p, o = idx[peak[idx]], idx[offpeak[idx]]
        if len(p) == 0 or len(o) == 0:
            continue  # a partial day without off-peak hours keeps its load: nowhere to shift it
        moved = out[p].sum() * tou.share
        out[p] *= 1.0 - tou.share
        out[o] += moved / len(o)
    return out


def _clip_demand(region: np.ndarray, kwh: np.ndarray, step_h: float, dr: DemandResponse) -> np.ndarray:
    out = kwh.copy()
    for r in np.unique(region):
        mask = region == r
        if dr.threshold_kw is not None:
            cap = dr.threshold_kw * step_h
        else:
            cap = out[mask].max() * dr.threshold_share_of_peak
        out[mask] = np.minimum(out[mask], cap)
    return out


#: Flat parameters accepted by the API, CLI, Tableau sliders and TabPy, with their meaning.
PARAMETERS: dict[str, str] = {
    "tou_share": "share (0..1) of peak-hour load moved to off-peak hours by a time-of-use tariff",
    "tou_peak_hours": "peak hours of the local day (list or '17-20'); default 17-20",
    "tou_offpeak_hours": "off-peak hours of the local day; default 0-5",
    "tou_timezone": "IANA time zone of regions without their own (regions.timezone); default UTC",
    "region_tou": "per region: {region: {timezone, peak, offpeak}}, overriding the regions table and defaults",
    "dr_threshold_kw": "demand response: clip each region's load above this many kW",
    "dr_threshold_share_of_peak": "demand response: clip above this share (0..1) of each region's own peak",
    "efficiency_pct": "efficiency programme: percent (0..100) cut from every interval",
    "ev_vehicles": "new electric vehicles per region",
    "ev_kwh_per_day": "charging energy per vehicle per day, kWh (default 7)",
    "ev_profile": f"charging profile: {', '.join(EV_PROFILES)} (default evening)",
    "price_peak": "cost to serve in peak hours, per kWh (default 0.30)",
    "price_offpeak": "cost to serve outside peak hours, per kWh (default 0.12)",
    "price_peak_hours": "hours of the local day priced at price_peak (default 17-20)",
    "carbon_g_per_kwh": "grid carbon intensity, g CO2 per kWh (default 400) when no hourly series is given",
}


def _parse_hours(parameter: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        hours: list[int] = []
        try:
            for part in value.split(","):
                part = part.strip()
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    if hi < lo:
                        raise PolicyError(parameter, f"range {part!r} runs backwards")
                    hours.extend(range(lo, hi + 1))
                elif part:
                    hours.append(int(part))
        except ValueError:
            raise PolicyError(parameter, f"expected hours like '17-20' or '0,1,2', got {value!r}") from None
        return _hours(parameter, hours)
    if isinstance(value, (list, tuple)):
        return _hours(parameter, value)
    raise PolicyError(parameter, f"expected a list of hours or a string like '17-20', got {value!r}")


def _number(parameter: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise PolicyError(parameter, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise PolicyError(parameter, f"expected a number, got {value!r}")
    return float(value)


def scenario_from_params(params: Mapping[str, Any]) -> Scenario:
    """A :class:`Scenario` from flat parameters (see :data:`PARAMETERS`); unknown or bad ones raise."""
    for key in params:
        if key not in PARAMETERS:
            raise PolicyError(key, f"unknown parameter; known: {', '.join(PARAMETERS)}")
    p = {k: v for k, v in params.items() if v is not None}
    tou = None
    if "tou_share" in p:
        tou = TimeOfUseShift(share=_number("tou_share", p["tou_share"]),
                             peak_hours=_parse_hours("tou_peak_hours", p.get("tou_peak_hours", "17-20")),
                             offpeak_hours=_parse_hours("tou_offpeak_hours", p.get("tou_offpeak_hours", "0-5")))
    else:
        for dependent in ("tou_peak_hours", "tou_offpeak_hours"):
            if dependent in p:
                raise PolicyError(dependent, "only applies with tou_share")
    dr = None
    if "dr_threshold_kw" in p or "dr_threshold_share_of_peak" in p:
        dr = DemandResponse(
            threshold_kw=_number("dr_threshold_kw", p["dr_threshold_kw"]) if "dr_threshold_kw" in p else None,
            threshold_share_of_peak=_number("dr_threshold_share_of_peak", p["dr_threshold_share_of_peak"])
            if "dr_threshold_share_of_peak" in p else None)
    efficiency = Efficiency(_number("efficiency_pct", p["efficiency_pct"])) if "efficiency_pct" in p else None
    ev = None
    if "ev_vehicles" in p:
        vehicles = _number("ev_vehicles", p["ev_vehicles"])
        if vehicles != int(vehicles):
            raise PolicyError("ev_vehicles", f"must be a whole number, got {vehicles:g}")
        ev = EVAdoption(vehicles=int(vehicles),
                        kwh_per_vehicle_day=_number("ev_kwh_per_day", p.get("ev_kwh_per_day", 7.0)),
                        profile=str(p.get("ev_profile", "evening")))
    else:
        for dependent in ("ev_kwh_per_day", "ev_profile"):
            if dependent in p:
                raise PolicyError(dependent, "only applies with ev_vehicles")
    tariff = Tariff.peak_offpeak(_number("price_peak", p.get("price_peak", 0.30)),
                                 _number("price_offpeak", p.get("price_offpeak", 0.12)),
                                 _parse_hours("price_peak_hours", p.get("price_peak_hours", "17-20")))
    carbon = _number("carbon_g_per_kwh", p.get("carbon_g_per_kwh", 400.0))
    if carbon < 0:
        raise PolicyError("carbon_g_per_kwh", f"must be >= 0, got {carbon:g}")
    timezone = str(p.get("tou_timezone", "UTC"))
    RegionPolicy(timezone)   # refuse an unknown zone here, naming the parameter
    regions = _region_tou(p.get("region_tou"))
    return Scenario(tou=tou, demand_response=dr, efficiency=efficiency, ev=ev, tariff=tariff, carbon_g_per_kwh=carbon,
                    timezone=timezone, regions=regions)


def _region_tou(value: Any) -> dict[str, RegionPolicy]:
    if value is None:
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise PolicyError("region_tou", "expected a JSON object of region -> {timezone, peak, offpeak}") from None
    if not isinstance(value, Mapping):
        raise PolicyError("region_tou", "expected an object of region -> {timezone, peak, offpeak}")
    out = {}
    for region, spec in value.items():
        if not isinstance(spec, Mapping) or set(spec) - {"timezone", "peak", "offpeak"}:
            raise PolicyError("region_tou", f"region {region!r}: expected {{timezone, peak, offpeak}}, got {spec!r}")
        out[str(region)] = RegionPolicy(str(spec.get("timezone", "UTC")), spec.get("peak"), spec.get("offpeak"))
    return out


def run_sandbox(load: pd.DataFrame, params: Mapping[str, Any],
                carbon_intensity: pd.Series | pd.DataFrame | None = None,
                regions: Mapping[str, RegionPolicy] | None = None) -> SandboxResult:
    """Validate flat ``params`` and apply them.

    ``carbon_intensity`` (g/kWh: hourly, or per area as ``area, hour_start, intensity_g_per_kwh``)
    overrides the constant; ``regions`` (time zone and windows per region, e.g. from the regions
    table) apply where the ``region_tou`` parameter does not name the region.
    """
    scenario = scenario_from_params(params)
    merged = {**(regions or {}), **scenario.regions}
    carbon = carbon_intensity if carbon_intensity is not None and len(carbon_intensity) else scenario.carbon_g_per_kwh
    scenario = dataclasses.replace(scenario, carbon_g_per_kwh=carbon, regions=merged)
    return apply_scenario(load, scenario)


def sandbox_with_stored_intensity(load: pd.DataFrame, params: Mapping[str, Any], intensities: pd.DataFrame,
                                  regions: Mapping[str, RegionPolicy] | None = None) -> tuple[SandboxResult, list[str]]:
    """The sandbox as the API and the CLI run it on stored data: CO2 at each region's own stored
    intensity, else the system's, when that covers every hour of the load; else at
    ``carbon_g_per_kwh`` (saying so). Returns the result and its notes."""
    from collector.carbon import CarbonError, intensity_by_region

    notes: list[str] = []
    carbon = None
    if len(intensities):
        try:
            frame = load.assign(ts=pd.to_datetime(load["ts"], utc=True))
            intensity_by_region(frame["region"].astype(str), frame["ts"], intensities)
            carbon = intensities
        except CarbonError as exc:
            notes.append(f"CO2 from carbon_g_per_kwh: {exc}")
    else:
        notes.append("CO2 from carbon_g_per_kwh: no carbon intensity stored for these hours")
    return run_sandbox(load, params, carbon_intensity=carbon, regions=regions), notes


def load_after_for_rows(regions: Sequence[str], ts: Sequence[Any], kwh: Sequence[float],
                        **params: Any) -> list[float]:
    """Load after the policies, row for row: the list-in, list-out shape TabPy's SCRIPT_REAL needs."""
    frame = pd.DataFrame({"region": list(regions), "ts": list(ts), "kwh": list(kwh)})
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    result = run_sandbox(frame, params)
    after = result.load.set_index(["region", "ts"])["kwh_after"]
    keys = pd.MultiIndex.from_arrays([frame["region"].astype(str), frame["ts"]])
    return [float(v) for v in after.reindex(keys).to_numpy()]


def _scalar(parameter: str, value: Any) -> float:
    """TabPy passes every argument as a list, a parameter repeated per row: take its first value."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise PolicyError(parameter, "is empty")
        value = value[0]
    return _number(parameter, value)


def day_profile_after(hour_of_day: Sequence[int], avg_kwh: Sequence[float], meters: Sequence[float],
                      tou_shift_pct: Any = 0, dr_cap_pct: Any = 100, efficiency_pct: Any = 0,
                      ev_adoption_pct: Any = 0, ev_kwh_per_day: Any = 7.0) -> list[float]:
    """One region's average day (a row per hour) after the policies, in the Tableau sliders' units.

    Percent sliders: ``tou_shift_pct`` of peak-hour load shifted, demand response capping at
    ``dr_cap_pct`` of the day's peak, ``efficiency_pct`` cut, and ``ev_adoption_pct`` of the
    region's meters gaining an EV. Returns kWh per hour row for row, as TabPy's SCRIPT_REAL needs.
    """
    hours = [int(h) for h in hour_of_day]
    if len(hours) != len(avg_kwh) or len(hours) != len(meters):
        raise PolicyError("hour_of_day", "hour_of_day, avg_kwh and meters need one value per row")
    if len(set(hours)) != len(hours):
        raise PolicyError("hour_of_day", "each hour once per call: partition the calculation by region")
    params: dict[str, Any] = {}
    tou = _scalar("tou_shift_pct", tou_shift_pct)
    if tou:
        params["tou_share"] = _fraction("tou_shift_pct", tou, upper=100.0) / 100.0
    cap = _fraction("dr_cap_pct", _scalar("dr_cap_pct", dr_cap_pct), upper=100.0)
    if cap == 0:
        raise PolicyError("dr_cap_pct", "must be above 0")
    if cap < 100:
        params["dr_threshold_share_of_peak"] = cap / 100.0
    eff = _scalar("efficiency_pct", efficiency_pct)
    if eff:
        params["efficiency_pct"] = eff
    ev = _fraction("ev_adoption_pct", _scalar("ev_adoption_pct", ev_adoption_pct), upper=100.0)
    if ev:
        fleet = max(float(m) for m in meters) if len(meters) else 0.0
        params["ev_vehicles"] = int(round(fleet * ev / 100.0))
        params["ev_kwh_per_day"] = _scalar("ev_kwh_per_day", ev_kwh_per_day)
    day = pd.Timestamp("2026-01-05", tz="UTC")   # any Monday: only the hour of day matters
    ts = [day + pd.Timedelta(hours=h) for h in hours]
    return load_after_for_rows(["profile"] * len(hours), ts, [float(v) for v in avg_kwh], **params)
