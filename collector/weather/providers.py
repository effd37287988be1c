"""Weather providers: hourly air temperature for a place, from an API or a CSV file.

Every provider answers one question — ``hourly_temperature(lat, lon, start, end)`` — with a
UTC-hourly pandas Series in °C, or raises :class:`WeatherError`. Forecast jobs call
:func:`temperature_or_reason`, which turns any provider failure into "no temperature, and
here is why", so a weather outage degrades a forecast instead of stopping it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd

from collector.weather.http import JsonHttpClient
from gridsight.errors import FetchError, GridsightError

__all__ = ["WeatherError", "WeatherProvider", "OpenWeatherMapProvider", "OpenMeteoProvider", "CsvWeatherProvider",
           "temperature_or_reason", "provider_from_name"]


class WeatherError(GridsightError, RuntimeError):
    """Temperature could not be had from a provider; the message names the provider and the cause."""

    exit_code = 1


class WeatherProvider(Protocol):
    name: str

    def hourly_temperature(self, lat: float, lon: float, start: datetime, end: datetime) -> pd.Series:
        """°C per UTC hour in ``[start, end)``."""
        ...


def _utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _check_place(lat: float, lon: float) -> None:
    if not (isinstance(lat, (int, float)) and math.isfinite(lat) and -90 <= lat <= 90):
        raise WeatherError(f"latitude {lat!r} is not between -90 and 90")
    if not (isinstance(lon, (int, float)) and math.isfinite(lon) and -180 <= lon <= 180):
        raise WeatherError(f"longitude {lon!r} is not between -180 and 180")


def _hourly(points: dict[pd.Timestamp, float], start: pd.Timestamp, end: pd.Timestamp, name: str) -> pd.Series:
    if not points:
        raise WeatherError(f"{name}: no temperatures returned")
    series = pd.Series(points, dtype="float64").sort_index()
    series.index = pd.DatetimeIndex(series.index).tz_convert("UTC").floor("h")
    series = series.groupby(level=0).mean()
    series = series[(series.index >= start.floor("h")) & (series.index < end)]
    if series.empty:
        raise WeatherError(f"{name}: no temperatures between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC")
    series.name = "temperature_c"
    return series


class OpenWeatherMapProvider:
    """OpenWeatherMap: One Call 3.0 hourly forecast (48 h ahead) and the History API for the past.

    The API key is the collector's ``OPENWEATHERMAP_API_KEY[_FILE]`` setting. Requests are spaced to
    stay within the free tier's 60 calls/minute; history is fetched a week per call (its limit).
    """

    name = "openweathermap"

    def __init__(self, api_key: str | None = None, *, http: JsonHttpClient | None = None,
                 base_url: str = "https://api.openweathermap.org",
                 history_url: str = "https://history.openweathermap.org",
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.api_key = api_key or ""
        self.http = http or JsonHttpClient(min_interval_s=1.0)
        self.base_url = base_url.rstrip("/")
        self.history_url = history_url.rstrip("/")
        self._now = now

    def hourly_temperature(self, lat: float, lon: float, start: datetime, end: datetime) -> pd.Series:
        _check_place(lat, lon)
        if not self.api_key:
            raise WeatherError("openweathermap: no API key; set OPENWEATHERMAP_API_KEY or OPENWEATHERMAP_API_KEY_FILE")
        start, end = _utc(start), _utc(end)
        now = _utc(self._now())
        points: dict[pd.Timestamp, float] = {}
        try:
            if start < now:
                cursor = start
                while cursor < min(end, now):
                    chunk_end = min(cursor + pd.Timedelta(days=7), end, now)
                    body = self.http.get_json(f"{self.history_url}/data/2.5/history/city", {
                        "lat": lat, "lon": lon, "type": "hour", "start": int(cursor.timestamp()),
                        "end": int(chunk_end.timestamp()), "units": "metric", "appid": self.api_key})
                    points.update(self._history_points(body))
                    cursor = chunk_end
            if end > now:
                body = self.http.get_json(f"{self.base_url}/data/3.0/onecall", {
                    "lat": lat, "lon": lon, "exclude": "current,minutely,daily,alerts", "units": "metric",
                    "appid": self.api_key})
                points.update(self._onecall_points(body))
        except FetchError as exc:
            raise WeatherError(f"openweathermap: {exc}") from None
        return _hourly(points, start, end, self.name)

    def _history_points(self, body: Any) -> dict[pd.Timestamp, float]:
        try:
            return {pd.Timestamp(int(item["dt"]), unit="s", tz="UTC"): float(item["main"]["temp"])
                    for item in body["list"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise WeatherError(f"openweathermap: unexpected history response ({exc!r})") from None

    def _onecall_points(self, body: Any) -> dict[pd.Timestamp, float]:
        try:
            return {pd.Timestamp(int(item["dt"]), unit="s", tz="UTC"): float(item["temp"])
                    for item in body["hourly"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise WeatherError(f"openweathermap: unexpected One Call response ({exc!r})") from None


class OpenMeteoProvider:
    """Open-Meteo (no key): the archive API for days older than ``archive_lag_days``, the
    forecast API (which also serves the recent past) for the rest."""

    name = "open-meteo"

    def __init__(self, *, http: JsonHttpClient | None = None,
                 forecast_url: str = "https://api.open-meteo.com", archive_url: str = "https://archive-api.open-meteo.com",
                 archive_lag_days: int = 5,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.http = http or JsonHttpClient(min_interval_s=0.2)
        self.forecast_url = forecast_url.rstrip("/")
        self.archive_url = archive_url.rstrip("/")
        self.archive_lag_days = archive_lag_days
        self._now = now

    def hourly_temperature(self, lat: float, lon: float, start: datetime, end: datetime) -> pd.Series:
        _check_place(lat, lon)
        start, end = _utc(start), _utc(end)
        last_day = (end - pd.Timedelta(seconds=1)).date()
        archive_until = (_utc(self._now()) - pd.Timedelta(days=self.archive_lag_days)).date()
        points: dict[pd.Timestamp, float] = {}
        try:
            if start.date() <= archive_until:
                points.update(self._fetch(f"{self.archive_url}/v1/archive", lat, lon, start.date(),
                                          min(last_day, archive_until)))
            if last_day > archive_until:
                first = max(start.date(), archive_until + timedelta(days=1))
                points.update(self._fetch(f"{self.forecast_url}/v1/forecast", lat, lon, first, last_day))
        except FetchError as exc:
            raise WeatherError(f"open-meteo: {exc}") from None
        return _hourly(points, start, end, self.name)

    def _fetch(self, url: str, lat: float, lon: float, first, last) -> dict[pd.Timestamp, float]:
        body = self.http.get_json(url, {"latitude": lat, "longitude": lon, "hourly": "temperature_2m",
                                        "start_date": first.isoformat(), "end_date": last.isoformat(),
                                        "timezone": "GMT"})
        try:
            hourly = body["hourly"]
            offset = int(body.get("utc_offset_seconds", 0))
            times = pd.to_datetime(hourly["time"]) - pd.Timedelta(seconds=offset)
            temps = hourly["temperature_2m"]
            return {t.tz_localize("UTC"): float(v) for t, v in zip(times, temps) if v is not None}
        except (KeyError, TypeError, ValueError) as exc:
            raise WeatherError(f"open-meteo: unexpected response ({exc!r})") from None


class CsvWeatherProvider:
    """Temperatures from a CSV file for offline sites: columns ``ts`` (ISO 8601 or Unix s, UTC)
    and ``temperature_c``; an optional ``location`` column is matched against ``location``."""

    name = "csv"

    def __init__(self, path: str | Path, location: str | None = None) -> None:
        self.path = Path(path)
        self.location = location

    def hourly_temperature(self, lat: float, lon: float, start: datetime, end: datetime) -> pd.Series:
        try:
            frame = pd.read_csv(self.path)
        except FileNotFoundError:
            raise WeatherError(f"csv: {self.path} does not exist") from None
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise WeatherError(f"csv: {self.path} is not readable CSV ({exc})") from None
        missing = {"ts", "temperature_c"} - set(frame.columns)
        if missing:
            raise WeatherError(f"csv: {self.path} lacks columns {sorted(missing)}")
        if self.location is not None and "location" in frame.columns:
            frame = frame[frame["location"].astype(str) == self.location]
        try:
            ts = frame["ts"]
            index = (pd.to_datetime(ts.astype("float64"), unit="s", utc=True) if pd.api.types.is_numeric_dtype(ts)
                     else pd.to_datetime(ts, utc=True))
            temps = pd.to_numeric(frame["temperature_c"])
        except (ValueError, TypeError) as exc:
            raise WeatherError(f"csv: {self.path} has bad ts or temperature_c values ({exc})") from None
        return _hourly(dict(zip(index, temps.astype("float64"))), _utc(start), _utc(end), self.name)


def provider_from_name(name: str, *, csv_path: str | Path | None = None,
                       http: JsonHttpClient | None = None, api_key: str | None = None) -> WeatherProvider:
    """The provider called ``name`` (openweathermap, open-meteo, csv) with default endpoints;
    ``api_key`` is the provider's key where it needs one."""
    if name == "openweathermap":
        return OpenWeatherMapProvider(api_key, http=http)
    if name == "open-meteo":
        return OpenMeteoProvider(http=http)
    if name == "csv":
        if not csv_path:
            raise WeatherError("csv provider needs a file path")
        return CsvWeatherProvider(csv_path)
    raise WeatherError(f"unknown weather provider {name!r}; use openweathermap, open-meteo or csv")


def temperature_or_reason(provider: WeatherProvider | None, lat: float | None, lon: float | None,
                          start: datetime, end: datetime) -> tuple[pd.Series | None, str | None]:
    """Temperature for a forecast, or ``(None, note)`` saying why the forecast goes without it."""
    if provider is None:
        return None, None
    if lat is None or lon is None:
        return None, "forecast made without temperature: the series has no location (site lat/lon)"
    try:
        return provider.hourly_temperature(lat, lon, start, end), None
    except WeatherError as exc:
        return None, f"forecast made without temperature: weather unavailable ({exc})"
