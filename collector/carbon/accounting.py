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

__all__ = ["CarbonError", "AvoidedEmissions", "emissions_by", "co2_avoided", "hourly_intensity_for"]


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


def emissions_by(consumption: pd.DataFrame, intensity: pd.Series, by: Sequence[str]) -> pd.DataFrame:
    """kWh and kg CO2 per group (e.g. ``["meter_id"]``, ``["feeder_id"]``, ``["region"]``).

    ``consumption`` has ``ts`` (interval start, UTC), ``kwh`` and the ``by`` columns;
    ``intensity`` is g CO2/kWh indexed by hour.
    """
    missing = ({"ts", "kwh"} | set(by)) - set(consumption.columns)
    if missing:
        raise CarbonError(f"consumption is missing columns {sorted(missing)}")
    frame = consumption[list(by) + ["ts", "kwh"]].copy()
    frame["kwh"] = pd.to_numeric(frame["kwh"], errors="coerce")
    if frame["kwh"].isna().any():
        raise CarbonError("consumption has non-numeric kwh values")
    frame["co2_kg"] = frame["kwh"].to_numpy() * hourly_intensity_for(frame["ts"], intensity) / 1000.0
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
    co2_a = float((a.to_numpy() * g).sum() / 1000.0)
    co2_b = float((b.to_numpy() * g).sum() / 1000.0)
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
