"""Carbon accounting: kg CO2 from hourly consumption and the grid's hourly carbon intensity.

Emissions are attributed hour by hour (consumption in an hour times that hour's intensity)
because intensity swings by a factor of two or more over a day; a daily average would
credit evening peaks with midday solar. Reductions are counted against a *stated* baseline —
the caller names what the reduction is relative to, and the label travels with the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from gridsight.errors import GridsightError

__all__ = ["CarbonError", "AvoidedEmissions", "emissions_by", "co2_avoided", "hourly_intensity_for",
           "intensity_by_region", "co2_kg", "SYSTEM_AREA"]

#: The area name of the grid-wide intensity; any other area is a region id.
SYSTEM_AREA = "system"


def co2_kg(kwh, g_per_kwh):
    """kg CO2 of ``kwh`` at ``g_per_kwh``: the one factor every report uses (g -> kg is / 1000)."""
    return np.asarray(kwh, dtype="float64") * np.asarray(g_per_kwh, dtype="float64") / 1000.0


class CarbonError(GridsightError, ValueError):
    """Consumption or intensity data that cannot be combined; the message says which."""


def hourly_intensity_for(ts: pd.Series | pd.DatetimeIndex, intensity: pd.Series) -> np.ndarray:
    """Intensity (g/kWh) for each timestamp's hour; hours the series lacks raise CarbonError."""
    if len(intensity) == 0:
        raise CarbonError("carbon intensity series is empty")
    series = intensity.copy()
    series.index = pd.to_datetime(series.index, utc=True).floor("h")
    series = series.groupby(level=0).mean()
    hours = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).floor("h")
    values = series.reindex(hours).to_numpy(dtype="float64")
    if np.isnan(values).any():
        first = hours[np.argmax(np.isnan(values))]
        raise CarbonError(f"no carbon intensity for hour {first.isoformat()}; fetch or load it first")
    return values


def intensity_by_region(regions: Sequence[str], ts: pd.Series | pd.DatetimeIndex, intensities: pd.DataFrame) -> np.ndarray:
    """g CO2/kWh for each row: its region's own figure for that hour where stored, else the system's.

    ``intensities`` has ``area`` (``"system"`` or a region id), ``hour_start`` and
    ``intensity_g_per_kwh``. This is the rule of the ``tableau.regional_hourly`` view too, so the
    API, the CLI, TabPy and Tableau charge a region the same. Hours with neither raise CarbonError.
    """
    missing = {"area", "hour_start", "intensity_g_per_kwh"} - set(intensities.columns)
    if missing:
        raise CarbonError(f"intensities are missing columns {sorted(missing)}")
    if intensities.empty:
        raise CarbonError("carbon intensity series is empty")
    table = intensities.assign(hour_start=pd.to_datetime(intensities["hour_start"], utc=True).dt.floor("h"))
    table = table.groupby(["area", "hour_start"])["intensity_g_per_kwh"].mean()
    hours = pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).floor("h")
    regions = pd.Index([str(r) for r in regions])
    own = table.reindex(pd.MultiIndex.from_arrays([regions, hours])).to_numpy(dtype="float64")
    system = table.reindex(pd.MultiIndex.from_arrays([pd.Index([SYSTEM_AREA] * len(hours)), hours])).to_numpy(
        dtype="float64")
    values = np.where(np.isnan(own), system, own)
    if np.isnan(values).any():
        first = int(np.argmax(np.isnan(values)))
        raise CarbonError(f"no carbon intensity for region {regions[first]!r} or the system in hour "
                          f"{hours[first].isoformat()}; fetch or load it first")
    return values


def emissions_by(consumption: pd.DataFrame, intensity: pd.Series | pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """kWh and kg CO2 per group (e.g. ``["meter_id"]``, ``["feeder_id"]``, ``["region"]``).

    ``consumption`` has ``ts`` (interval start, UTC), ``kwh`` and the ``by`` columns (and
    ``region`` when ``intensity`` is per area). ``intensity`` is either g CO2/kWh indexed by
    hour (one figure for every row) or a frame of ``area, hour_start, intensity_g_per_kwh``:
    then each row is charged its region's own intensity, else the system's (:func:`intensity_by_region`).
    """
    per_area = isinstance(intensity, pd.DataFrame)
    missing = ({"ts", "kwh"} | set(by) | ({"region"} if per_area else set())) - set(consumption.columns)
    if missing:
        raise CarbonError(f"consumption is missing columns {sorted(missing)}")
    frame = consumption[list(dict.fromkeys(list(by) + ["ts", "kwh"] + (["region"] if per_area else [])))].copy()
    frame["kwh"] = pd.to_numeric(frame["kwh"], errors="coerce")
    if frame["kwh"].isna().any():
        raise CarbonError("consumption has non-numeric kwh values")
    g = (intensity_by_region(frame["region"], frame["ts"], intensity) if per_area
         else hourly_intensity_for(frame["ts"], intensity))
    frame["co2_kg"] = co2_kg(frame["kwh"].to_numpy(), g)
    out = frame.groupby(list(by), as_index=False)[["kwh", "co2_kg"]].sum()
    out["intensity_g_per_kwh"] = np.where(out["kwh"] > 0, out["co2_kg"] * 1000.0 / out["kwh"].where(out["kwh"] > 0, 1), 0.0)
    return out


@dataclass(frozen=True)
class AvoidedEmissions:
    """CO2 avoided by consuming ``actual`` instead of ``baseline`` (positive = avoided)."""

    baseline: str
    kwh_baseline: float
    kwh_actual: float
    kwh_avoided: float
    co2_kg_baseline: float
    co2_kg_actual: float
    co2_kg_avoided: float

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def co2_avoided(actual_kwh: pd.Series, baseline_kwh: pd.Series, intensity: pd.Series,
                baseline: str) -> AvoidedEmissions:
    """Compare ``actual_kwh`` with ``baseline_kwh`` hour by hour over the hours both cover.

    ``baseline`` states what the baseline is ("same weeks of 2024", "forecast without the
    programme") so a reader knows what the avoided figure is relative to.
    """
    if not baseline or not baseline.strip():
        raise CarbonError("state the baseline: a label saying what the reduction is measured against")
    a = _hourly(actual_kwh, "actual")
    b = _hourly(baseline_kwh, "baseline")
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise CarbonError("actual and baseline consumption share no hours")
    a, b = a.reindex(common), b.reindex(common)
    g = hourly_intensity_for(common, intensity)
    co2_a = float(co2_kg(a.to_numpy(), g).sum())
    co2_b = float(co2_kg(b.to_numpy(), g).sum())
    return AvoidedEmissions(baseline=baseline.strip(), kwh_baseline=float(b.sum()), kwh_actual=float(a.sum()),
                            kwh_avoided=float(b.sum() - a.sum()), co2_kg_baseline=co2_b, co2_kg_actual=co2_a,
                            co2_kg_avoided=co2_b - co2_a)


def _hourly(series: pd.Series, name: str) -> pd.Series:
    if len(series) == 0:
        raise CarbonError(f"{name} consumption is empty")
    s = pd.Series(pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64"),
                  index=pd.to_datetime(series.index, utc=True))
    if s.isna().any():
        raise CarbonError(f"{name} consumption has non-numeric values")
    return s.groupby(s.index.floor("h")).sum()
