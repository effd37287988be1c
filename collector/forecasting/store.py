"""Forecasting's queries: actual load by feeder/region/system, stored forecasts, weather, carbon intensity.

Actuals come from ``readings_hourly`` (hourly) or ``interval_summaries`` (15-minute), placed by
each meter's site: a feeder's load is its sites' meters, a region's is the sites whose region
(or whose feeder's region) it is, the system is every meter. All functions take an asyncpg
connection so the API, the CLI jobs and the tests share them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pandas as pd

from collector.forecasting.types import Forecast
from collector.forecasting.series import SUPPORTED_FREQS
from gridsight.errors import GridsightError

__all__ = ["SERIES_KINDS", "SYSTEM_KEY", "actual_load", "series_keys", "series_location", "store_forecast",
           "stored_forecast", "store_weather", "stored_weather", "store_carbon_intensity", "stored_carbon_intensity",
           "regional_load", "consumption_by", "carbon_intensities", "region_policies", "stored_forecast_load", "UnknownSeries"]

SERIES_KINDS = ("feeder", "region", "system")
SYSTEM_KEY = "all"


class UnknownSeries(GridsightError, LookupError):
    """A feeder or region with no such id, or a kind that is not feeder, region or system."""


_PLACE = """
    FROM meters m
    LEFT JOIN sites st ON st.id = m.site_id
    LEFT JOIN feeders fd ON fd.id = st.feeder_id
"""
_REGION = "COALESCE(st.region_id, fd.region_id)"


def _series_filter(kind: str, key: str, param: int) -> str:
    if kind == "system":
        return "TRUE"
    if kind == "feeder":
        return f"st.feeder_id = ${param}"
    if kind == "region":
        return f"{_REGION} = ${param}"
    raise UnknownSeries(f"series kind must be one of {', '.join(SERIES_KINDS)}, got {kind!r}")


async def _check_exists(conn: asyncpg.Connection, kind: str, key: str) -> None:
    if kind == "system":
        if key != SYSTEM_KEY:
            raise UnknownSeries(f"the system series key is {SYSTEM_KEY!r}, got {key!r}")
        return
    table = {"feeder": "feeders", "region": "regions"}.get(kind)
    if table is None:
        raise UnknownSeries(f"series kind must be one of {', '.join(SERIES_KINDS)}, got {kind!r}")
    if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)", key):
        raise UnknownSeries(f"no {kind} {key!r}")


async def actual_load(conn: asyncpg.Connection, kind: str, key: str, start: datetime, end: datetime,
                      freq: str = "h") -> pd.Series:
    """kWh per step in ``[start, end)`` for a feeder, region or the system (empty when no data)."""
    await _check_exists(conn, kind, key)
    if freq not in SUPPORTED_FREQS:
        raise UnknownSeries(f"freq must be one of {sorted(SUPPORTED_FREQS)}, got {freq!r}")
    args: list[Any] = [start, end] + ([key] if kind != "system" else [])
    where = _series_filter(kind, key, 3)
    if freq == "30min":
        # half-hours from the meters' quarter-hour summaries (the settlement period of GB and much of the EU)
        sql = f"""SELECT date_bin('30 minutes', s.interval_start, '2000-01-03T00:00:00Z') AS ts, sum(s.kwh) AS kwh
                  FROM interval_summaries s JOIN meters m ON m.id = s.meter_id
                  LEFT JOIN sites st ON st.id = m.site_id LEFT JOIN feeders fd ON fd.id = st.feeder_id
                  WHERE s.interval_start >= $1 AND s.interval_start < $2 AND s.interval_s = 900 AND {where}
                  GROUP BY 1 ORDER BY 1"""
    elif freq == "h":
        sql = f"""SELECT h.bucket AS ts, sum(h.kwh) AS kwh FROM readings_hourly h
                  JOIN meters m ON m.id = h.meter_id
                  LEFT JOIN sites st ON st.id = m.site_id LEFT JOIN feeders fd ON fd.id = st.feeder_id
                  WHERE h.bucket >= $1 AND h.bucket < $2 AND {where} GROUP BY 1 ORDER BY 1"""
    else:
        sql = f"""SELECT s.interval_start AS ts, sum(s.kwh) AS kwh FROM interval_summaries s
                  JOIN meters m ON m.id = s.meter_id
                  LEFT JOIN sites st ON st.id = m.site_id LEFT JOIN feeders fd ON fd.id = st.feeder_id
                  WHERE s.interval_start >= $1 AND s.interval_start < $2 AND s.interval_s = 900 AND {where}
                  GROUP BY 1 ORDER BY 1"""
    rows = await conn.fetch(sql, *args)
    index = pd.DatetimeIndex([r["ts"] for r in rows]).tz_convert("UTC") if rows else pd.DatetimeIndex([], tz="UTC")
    return pd.Series([float(r["kwh"]) for r in rows], index=index, name="kwh", dtype="float64")


async def series_keys(conn: asyncpg.Connection, kind: str) -> list[str]:
    """Every feeder or region id with at least one meter (``["all"]`` for the system)."""
    if kind == "system":
        return [SYSTEM_KEY]
    if kind == "feeder":
        sql = f"SELECT DISTINCT st.feeder_id AS key {_PLACE} WHERE st.feeder_id IS NOT NULL ORDER BY 1"
    elif kind == "region":
        sql = f"SELECT DISTINCT {_REGION} AS key {_PLACE} WHERE {_REGION} IS NOT NULL ORDER BY 1"
    else:
        raise UnknownSeries(f"series kind must be one of {', '.join(SERIES_KINDS)}, got {kind!r}")
    return [r["key"] for r in await conn.fetch(sql)]


async def series_location(conn: asyncpg.Connection, kind: str, key: str) -> tuple[float, float] | None:
    """Mean site coordinates of the series (for its weather), or None when no site has them."""
    args = [key] if kind != "system" else []
    row = await conn.fetchrow(f"SELECT avg(st.lat) AS lat, avg(st.lon) AS lon {_PLACE} "
                              f"WHERE st.lat IS NOT NULL AND {_series_filter(kind, key, 1)}", *args)
    if row is None or row["lat"] is None:
        return None
    return float(row["lat"]), float(row["lon"])


async def store_forecast(conn: asyncpg.Connection, kind: str, key: str, forecast: Forecast) -> uuid.UUID:
    """Insert one run of ``forecast`` (its steps, and the run with the model chosen and why);
    returns its ``run_id``. Horizon counts steps from 1."""
    import json

    run_id = uuid.uuid4()
    selection = forecast.selection
    await conn.execute(
        """INSERT INTO forecast_runs (run_id, series_kind, series_key, model, model_version, chosen_because, selection)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        run_id, kind, key, forecast.model, forecast.model_version,
        selection["reason"] if selection else f"{forecast.model} was named by the caller or is the short-history fallback",
        json.dumps(selection) if selection else None)
    frame = forecast.frame
    interval_s = SUPPORTED_FREQS[forecast.freq]
    notes = "; ".join(forecast.notes) or None
    records = [(run_id, kind, key, forecast.model, forecast.model_version, interval_s, i + 1, ts.to_pydatetime(),
                float(row.yhat), float(row.yhat_lower), float(row.yhat_upper), forecast.interval_width,
                forecast.used_temperature, notes)
               for i, (ts, row) in enumerate(frame.iterrows())]
    await conn.copy_records_to_table(
        "forecasts", records=records,
        columns=["run_id", "series_kind", "series_key", "model", "model_version", "interval_s", "horizon", "ts",
                 "yhat", "yhat_lower", "yhat_upper", "interval_width", "used_temperature", "notes"])
    return run_id


async def stored_forecast(conn: asyncpg.Connection, kind: str, key: str, start: datetime,
                          end: datetime) -> dict | None:
    """The newest stored run of a series that has points in ``[start, end)``, with those points."""
    run = await conn.fetchrow(
        """SELECT run_id, model, model_version, interval_s, interval_width, used_temperature, notes, created_at
           FROM forecasts WHERE series_kind = $1 AND series_key = $2 AND ts >= $3 AND ts < $4
           ORDER BY created_at DESC, id DESC LIMIT 1""", kind, key, start, end)
    if run is None:
        return None
    points = await conn.fetch(
        """SELECT ts, horizon, yhat, yhat_lower, yhat_upper FROM forecasts
           WHERE run_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts""", run["run_id"], start, end)
    why = await conn.fetchrow("SELECT chosen_because, selection FROM forecast_runs WHERE run_id = $1", run["run_id"])
    return {"series_kind": kind, "series_key": key, "run_id": str(run["run_id"]), "model": run["model"],
            "model_version": run["model_version"], "interval_s": run["interval_s"],
            "interval_width": run["interval_width"], "used_temperature": run["used_temperature"],
            "notes": run["notes"].split("; ") if run["notes"] else [], "created_at": run["created_at"].isoformat(),
            "chosen_because": why["chosen_because"] if why else None,
            "selection": _json(why["selection"]) if why else None,
            "points": [{"ts": p["ts"].isoformat(), "horizon": p["horizon"], "yhat": p["yhat"],
                        "yhat_lower": p["yhat_lower"], "yhat_upper": p["yhat_upper"]} for p in points]}


async def store_weather(conn: asyncpg.Connection, location: str, lat: float | None, lon: float | None,
                        temperature: pd.Series, source: str, now: pd.Timestamp | None = None) -> int:
    """Upsert hourly temperatures; hours after ``now`` are marked as forecasts. Returns rows written."""
    now = now or pd.Timestamp.now(tz="UTC")
    rows = [(location, ts.to_pydatetime(), float(v), lat, lon, source, bool(ts > now))
            for ts, v in temperature.items()]
    await conn.executemany(
        """INSERT INTO weather_observations (location, ts, temperature_c, lat, lon, source, is_forecast)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (location, ts) DO UPDATE SET temperature_c = EXCLUDED.temperature_c, lat = EXCLUDED.lat,
               lon = EXCLUDED.lon, source = EXCLUDED.source, is_forecast = EXCLUDED.is_forecast, fetched_at = now()""",
        rows)
    return len(rows)


async def stored_weather(conn: asyncpg.Connection, location: str, start: datetime, end: datetime) -> pd.Series:
    rows = await conn.fetch("SELECT ts, temperature_c FROM weather_observations WHERE location = $1 "
                            "AND ts >= $2 AND ts < $3 ORDER BY ts", location, start, end)
    index = pd.DatetimeIndex([r["ts"] for r in rows]).tz_convert("UTC") if rows else pd.DatetimeIndex([], tz="UTC")
    return pd.Series([r["temperature_c"] for r in rows], index=index, dtype="float64", name="temperature_c")


async def store_carbon_intensity(conn: asyncpg.Connection, area: str, hourly: pd.DataFrame, source: str) -> int:
    """Upsert rows of ``hour_start, intensity_g_per_kwh, is_forecast``; an actual replaces a forecast."""
    rows = [(area, pd.Timestamp(r.hour_start).to_pydatetime(), float(r.intensity_g_per_kwh), source,
             bool(r.is_forecast)) for r in hourly.itertuples()]
    await conn.executemany(
        """INSERT INTO carbon_intensity (area, hour_start, intensity_g_per_kwh, source, is_forecast)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (area, hour_start) DO UPDATE SET intensity_g_per_kwh = EXCLUDED.intensity_g_per_kwh,
               source = EXCLUDED.source, is_forecast = EXCLUDED.is_forecast, fetched_at = now()
           WHERE carbon_intensity.is_forecast OR NOT EXCLUDED.is_forecast""", rows)
    return len(rows)


async def stored_carbon_intensity(conn: asyncpg.Connection, area: str, start: datetime, end: datetime) -> pd.Series:
    """g CO2/kWh per hour for ``area``, falling back to the ``system`` figure for hours it lacks."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (hour_start) hour_start, intensity_g_per_kwh FROM carbon_intensity
           WHERE area IN ($1, 'system') AND hour_start >= $2 AND hour_start < $3
           ORDER BY hour_start, (area = $1) DESC""", area, start, end)
    index = pd.DatetimeIndex([r["hour_start"] for r in rows]).tz_convert("UTC") if rows \
        else pd.DatetimeIndex([], tz="UTC")
    return pd.Series([r["intensity_g_per_kwh"] for r in rows], index=index, dtype="float64")


async def carbon_intensities(conn: asyncpg.Connection, start: datetime, end: datetime) -> pd.DataFrame:
    """Every stored area's intensity per hour in ``[start, end)``: ``area, hour_start, intensity_g_per_kwh``.

    With :func:`collector.carbon.intensity_by_region` this charges each region its own figure,
    else the system's: the rule of ``tableau.regional_hourly``.
    """
    rows = await conn.fetch("SELECT area, hour_start, intensity_g_per_kwh FROM carbon_intensity "
                            "WHERE hour_start >= $1 AND hour_start < $2 ORDER BY area, hour_start", start, end)
    return pd.DataFrame({"area": [r["area"] for r in rows],
                         "hour_start": pd.to_datetime([r["hour_start"] for r in rows], utc=True),
                         "intensity_g_per_kwh": [float(r["intensity_g_per_kwh"]) for r in rows]})


async def region_policies(conn: asyncpg.Connection) -> dict:
    """Each region's local time zone and own time-of-use windows (``regions`` table), for the sandbox."""
    from collector.policy import RegionPolicy

    rows = await conn.fetch("SELECT id, timezone, tou_peak_hours, tou_offpeak_hours FROM regions")
    return {r["id"]: RegionPolicy(r["timezone"] or "UTC", r["tou_peak_hours"], r["tou_offpeak_hours"]) for r in rows}


async def regional_load(conn: asyncpg.Connection, start: datetime, end: datetime,
                        regions: list[str] | None = None) -> pd.DataFrame:
    """``region, ts, kwh`` per UTC hour: the policy sandbox's input from actuals."""
    rows = await conn.fetch(
        f"""SELECT {_REGION} AS region, h.bucket AS ts, sum(h.kwh) AS kwh FROM readings_hourly h
            JOIN meters m ON m.id = h.meter_id
            LEFT JOIN sites st ON st.id = m.site_id LEFT JOIN feeders fd ON fd.id = st.feeder_id
            WHERE h.bucket >= $1 AND h.bucket < $2 AND {_REGION} IS NOT NULL
              AND ($3::text[] IS NULL OR {_REGION} = ANY($3::text[]))
            GROUP BY 1, 2 ORDER BY 1, 2""", start, end, regions)
    return pd.DataFrame({"region": [r["region"] for r in rows],
                         "ts": pd.to_datetime([r["ts"] for r in rows], utc=True),
                         "kwh": [float(r["kwh"]) for r in rows]})


async def consumption_by(conn: asyncpg.Connection, start: datetime, end: datetime) -> pd.DataFrame:
    """``meter_id, feeder_id, region, ts, kwh`` per meter and UTC hour, for carbon accounting."""
    rows = await conn.fetch(
        f"""SELECT h.meter_id, COALESCE(st.feeder_id, 'unassigned') AS feeder_id,
                   COALESCE({_REGION}, 'unassigned') AS region, h.bucket AS ts, h.kwh
            FROM readings_hourly h JOIN meters m ON m.id = h.meter_id
            LEFT JOIN sites st ON st.id = m.site_id LEFT JOIN feeders fd ON fd.id = st.feeder_id
            WHERE h.bucket >= $1 AND h.bucket < $2""", start, end)
    return pd.DataFrame({"meter_id": [r["meter_id"] for r in rows], "feeder_id": [r["feeder_id"] for r in rows],
                         "region": [r["region"] for r in rows],
                         "ts": pd.to_datetime([r["ts"] for r in rows], utc=True),
                         "kwh": [float(r["kwh"]) for r in rows]})


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def stored_forecast_load(run: dict) -> pd.DataFrame:
    """A stored run as ``ts, kwh`` (the yhat of each step), for the sandbox's forecast source."""
    return pd.DataFrame({"ts": pd.to_datetime([p["ts"] for p in run["points"]], utc=True),
                         "kwh": [p["yhat"] for p in run["points"]]})
