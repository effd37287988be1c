"""The forecast job: read actuals from PostgreSQL, fit every series through the executor, store runs.

Used by ``gridsight collector forecast`` (scheduled from cron/systemd timers, or on demand)
and by the API's on-demand route. Reading and writing happen on one asyncpg connection; the
fits happen in the executor (process pool or Dask), so the database is never held during a fit.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import asyncpg
import pandas as pd

from collector.forecasting.executor import ForecastJob, ForecastOutcome, run_forecast_jobs
from collector.forecasting.types import ForecastError, ForecastOptions
from collector.forecasting.series import SUPPORTED_FREQS
from collector.forecasting import store
from collector.settings import asyncpg_dsn
from collector.weather.providers import WeatherProvider, temperature_or_reason

__all__ = ["SeriesRef", "ForecastRunResult", "forecast_series_from_database", "prepare_jobs", "save_outcomes"]


@dataclass(frozen=True)
class SeriesRef:
    kind: str
    key: str


@dataclass
class ForecastRunResult:
    kind: str
    key: str
    run_id: str | None = None
    model: str | None = None
    points: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    forecast: object | None = None     # the Forecast, for callers that return it

    def as_dict(self) -> dict:
        return {"series_kind": self.kind, "series_key": self.key, "run_id": self.run_id, "model": self.model,
                "points": self.points, "peak": self.forecast.peak() if self.forecast is not None else None,
                "selection": getattr(self.forecast, "selection", None), "notes": self.notes, "error": self.error}


async def prepare_jobs(conn: asyncpg.Connection, series: Sequence[SeriesRef], *, now: pd.Timestamp,
                       horizon_hours: int, history_days: int, freq: str = "h",
                       options: ForecastOptions = ForecastOptions(), weather: WeatherProvider | None = None,
                       ) -> tuple[list[ForecastJob], list[ForecastRunResult]]:
    """Jobs for the series with data; results (with the error) for those that cannot be forecast."""
    if freq not in SUPPORTED_FREQS:
        raise ForecastError(f"freq must be one of {sorted(SUPPORTED_FREQS)}, got {freq!r}")
    step = pd.Timedelta(seconds=SUPPORTED_FREQS[freq])
    end = now.floor(freq)                       # the current step is still filling: leave it out
    start = end - pd.Timedelta(days=history_days)
    horizon = int(horizon_hours * 3600 // SUPPORTED_FREQS[freq])
    jobs, skipped = [], []
    for ref in series:
        history = await store.actual_load(conn, ref.kind, ref.key, start.to_pydatetime(), end.to_pydatetime(), freq)
        if history.empty:
            skipped.append(ForecastRunResult(ref.kind, ref.key, error="no actual load in the history window"))
            continue
        temperature, note = None, None
        if weather is not None:
            place = await store.series_location(conn, ref.kind, ref.key)
            until = history.index[-1] + step * (horizon + 1)
            temperature, note = temperature_or_reason(weather, place[0] if place else None,
                                                      place[1] if place else None, history.index[0], until)
            if temperature is not None:
                await store.store_weather(conn, f"{ref.kind}:{ref.key}", place[0], place[1], temperature,
                                          weather.name, now)
        jobs.append(ForecastJob(ref.kind, ref.key, history, horizon, temperature, options, note))
    return jobs, skipped


async def save_outcomes(conn: asyncpg.Connection, outcomes: Sequence[ForecastOutcome]) -> list[ForecastRunResult]:
    results = []
    for outcome in outcomes:
        if outcome.forecast is None:
            results.append(ForecastRunResult(outcome.kind, outcome.key, error=outcome.error))
            continue
        run_id = await store.store_forecast(conn, outcome.kind, outcome.key, outcome.forecast)
        results.append(ForecastRunResult(outcome.kind, outcome.key, str(run_id), outcome.forecast.model,
                                         outcome.forecast.horizon, list(outcome.forecast.notes),
                                         forecast=outcome.forecast))
    return results


def forecast_series_from_database(database_url: str, series: Sequence[SeriesRef] | None = None, *,
                                  kinds: Sequence[str] = ("system",), horizon_hours: int = 48,
                                  history_days: int = 120, freq: str = "h",
                                  options: ForecastOptions = ForecastOptions(), executor: Executor | None = None,
                                  weather: WeatherProvider | None = None, now: pd.Timestamp | None = None,
                                  save: bool = True,
                                  progress: Callable[[str], None] | None = None) -> list[ForecastRunResult]:
    """Forecast ``series`` (or every series of ``kinds``) and store the runs when ``save``."""
    if horizon_hours < 1 or horizon_hours > 24 * 31:
        raise ForecastError(f"horizon_hours must be 1..744, got {horizon_hours}")
    if history_days < 2:
        raise ForecastError(f"history_days must be at least 2, got {history_days}")
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")

    async def prepare() -> tuple[list[ForecastJob], list[ForecastRunResult]]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            refs = list(series or [])
            if not refs:
                for kind in kinds:
                    refs.extend(SeriesRef(kind, key) for key in await store.series_keys(conn, kind))
            return await prepare_jobs(conn, refs, now=now, horizon_hours=horizon_hours, history_days=history_days,
                                      freq=freq, options=options, weather=weather)
        finally:
            await conn.close()

    async def persist(outcomes: list[ForecastOutcome]) -> list[ForecastRunResult]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            async with conn.transaction():
                return await save_outcomes(conn, outcomes)
        finally:
            await conn.close()

    jobs, skipped = asyncio.run(prepare())
    if progress:
        progress(f"fitting {len(jobs)} series ({len(skipped)} without data)")
    outcomes = run_forecast_jobs(jobs, executor)
    if save:
        results = asyncio.run(persist(outcomes))
    else:
        results = [ForecastRunResult(o.kind, o.key, None, o.forecast.model if o.forecast else None,
                                     o.forecast.horizon if o.forecast else 0,
                                     list(o.forecast.notes) if o.forecast else [], o.error, o.forecast)
                   for o in outcomes]
    return results + skipped
