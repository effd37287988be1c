"""Grid carbon intensity providers: g CO2 per kWh per UTC hour.

The National Grid ESO Carbon Intensity API publishes half-hourly figures for Great Britain
(national actuals, regional forecasts); they are averaged to hours, using the actual figure
when published and the forecast otherwise. A CSV provider serves grids without such an API
(a utility's own marginal-emissions file, or an annual average repeated per hour).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from collector.weather.http import JsonHttpClient
from gridsight.errors import FetchError, GridsightError

__all__ = ["CarbonIntensityError", "CarbonIntensityProvider", "NationalGridESOProvider", "CsvCarbonIntensity"]


class CarbonIntensityError(GridsightError, RuntimeError):
    """Carbon intensity could not be had; the message names the provider and the cause."""

    exit_code = 1


class CarbonIntensityProvider(Protocol):
    name: str

    def hourly_intensity(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows per UTC hour in ``[start, end)``: ``hour_start``, ``intensity_g_per_kwh``, ``is_forecast``."""
        ...


def _utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _to_hours(rows: list[tuple[pd.Timestamp, float, bool]], start: pd.Timestamp, end: pd.Timestamp,
              name: str) -> pd.DataFrame:
    if not rows:
        raise CarbonIntensityError(f"{name}: no intensity figures returned")
    frame = pd.DataFrame(rows, columns=["ts", "intensity_g_per_kwh", "is_forecast"])
    frame["hour_start"] = pd.DatetimeIndex(frame["ts"]).floor("h")
    hourly = frame.groupby("hour_start", as_index=False).agg(intensity_g_per_kwh=("intensity_g_per_kwh", "mean"),
                                                            is_forecast=("is_forecast", "max"))
    hourly = hourly[(hourly["hour_start"] >= start.floor("h")) & (hourly["hour_start"] < end)]
    if hourly.empty:
        raise CarbonIntensityError(f"{name}: no figures between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC")
    if (hourly["intensity_g_per_kwh"] < 0).any():
        raise CarbonIntensityError(f"{name}: negative intensity in response")
    return hourly.reset_index(drop=True)


class NationalGridESOProvider:
    """api.carbonintensity.org.uk — national (``region_id=None``) or one of its 17 regions.

    The API answers at most 14 days per request; longer spans are fetched in pieces.
    """

    name = "national-grid-eso"
    MAX_DAYS = 14

    def __init__(self, region_id: int | None = None, *, http: JsonHttpClient | None = None,
                 base_url: str = "https://api.carbonintensity.org.uk") -> None:
        if region_id is not None and not (isinstance(region_id, int) and 1 <= region_id <= 17):
            raise CarbonIntensityError(f"region_id must be 1..17 (the API's regions), got {region_id!r}")
        self.region_id = region_id
        self.http = http or JsonHttpClient(min_interval_s=0.5)
        self.base_url = base_url.rstrip("/")

    def hourly_intensity(self, start: datetime, end: datetime) -> pd.DataFrame:
        start, end = _utc(start), _utc(end)
        if end <= start:
            raise CarbonIntensityError(f"{self.name}: end must be after start")
        rows: list[tuple[pd.Timestamp, float, bool]] = []
        cursor = start.floor("h")
        try:
            while cursor < end:
                chunk_end = min(cursor + pd.Timedelta(days=self.MAX_DAYS), end)
                span = f"{cursor:%Y-%m-%dT%H:%MZ}/{chunk_end:%Y-%m-%dT%H:%MZ}"
                if self.region_id is None:
                    body = self.http.get_json(f"{self.base_url}/intensity/{span}")
                else:
                    body = self.http.get_json(f"{self.base_url}/regional/intensity/{span}/regionid/{self.region_id}")
                rows.extend(self._rows(body))
                cursor = chunk_end
        except FetchError as exc:
            raise CarbonIntensityError(f"{self.name}: {exc}") from None
        return _to_hours(rows, start, end, self.name)

    def _rows(self, body: Any) -> list[tuple[pd.Timestamp, float, bool]]:
        try:
            data = body["data"]
            if isinstance(data, dict):          # regional: {"data": {"regionid": .., "data": [...]}}
                data = data["data"]
            elif data and isinstance(data[0], dict) and "regionid" in data[0] and "data" in data[0]:
                data = data[0]["data"]
            out = []
            for item in data:
                intensity = item["intensity"]
                actual = intensity.get("actual")
                value = actual if actual is not None else intensity["forecast"]
                if value is None:
                    continue
                out.append((pd.Timestamp(item["from"]).tz_convert("UTC"), float(value), actual is None))
            return out
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CarbonIntensityError(f"{self.name}: unexpected response ({exc!r})") from None


class CsvCarbonIntensity:
    """Intensities from a CSV file: ``hour_start`` (or ``ts``; ISO 8601 or Unix s, UTC) and
    ``intensity_g_per_kwh``."""

    name = "csv"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def hourly_intensity(self, start: datetime, end: datetime) -> pd.DataFrame:
        try:
            frame = pd.read_csv(self.path)
        except FileNotFoundError:
            raise CarbonIntensityError(f"csv: {self.path} does not exist") from None
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise CarbonIntensityError(f"csv: {self.path} is not readable CSV ({exc})") from None
        ts_col = "hour_start" if "hour_start" in frame.columns else "ts"
        if ts_col not in frame.columns or "intensity_g_per_kwh" not in frame.columns:
            raise CarbonIntensityError(f"csv: {self.path} needs columns hour_start (or ts) and intensity_g_per_kwh")
        try:
            ts = frame[ts_col]
            index = (pd.to_datetime(ts.astype("float64"), unit="s", utc=True) if pd.api.types.is_numeric_dtype(ts)
                     else pd.to_datetime(ts, utc=True))
            values = pd.to_numeric(frame["intensity_g_per_kwh"]).astype("float64")
        except (ValueError, TypeError) as exc:
            raise CarbonIntensityError(f"csv: {self.path} has bad values ({exc})") from None
        return _to_hours(list(zip(index, values, [False] * len(values))), _utc(start), _utc(end), self.name)
