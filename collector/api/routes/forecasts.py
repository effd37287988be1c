"""Load forecasts: the newest stored run of a series, or a forecast made on demand."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import pandas as pd
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from collector.api.deps import ID_PATTERN, Connection, Range, param_error
from collector.auth import require_roles
from collector.forecasting import store
from collector.forecasting.executor import run_forecast_jobs
from collector.forecasting.series import SUPPORTED_FREQS
from collector.forecasting.types import ForecastOptions
from collector.forecasting.jobs import SeriesRef, prepare_jobs

router = APIRouter(tags=["forecasts"], dependencies=[require_roles("admin", "analyst", "policymaker")])

SeriesKind = Literal["feeder", "region", "system"]


@router.get("/forecasts", summary="Newest stored forecast run of a series in a time range",
            description="Points (yhat with its prediction interval, kWh per step) of the newest run with steps "
                        "in [start, end). series_key is a feeder or region id, or 'all' for the system.")
async def stored_forecast(conn: Connection, span: Range, series_kind: SeriesKind = "system",
                          series_key: Annotated[str, Query(pattern=ID_PATTERN)] = store.SYSTEM_KEY) -> dict:
    run = await store.stored_forecast(conn, series_kind, series_key, span.start, span.end)
    if run is None:
        raise param_error("series_key", f"no stored forecast for {series_kind} {series_key!r} in this range",
                          status=404)
    return run


class ForecastRequest(BaseModel):
    series_kind: SeriesKind = "system"
    series_key: str = Field(store.SYSTEM_KEY, pattern=ID_PATTERN, description="feeder or region id; 'all' for system")
    horizon_hours: int = Field(48, ge=1, le=744, description="how far ahead")
    history_days: int = Field(120, ge=2, le=1500, description="history of actuals to fit on")
    freq: Literal["h", "30min", "15min"] = "h"
    model: Literal["auto", "prophet", "holt_winters", "scaled_naive", "seasonal_naive", "ensemble", "ets"] = "auto"
    country: str | None = Field("US", pattern=r"^[A-Z]{2}$", description="public holidays of this country")
    store: bool = Field(False, description="also store the run in the forecasts table")


@router.post("/forecasts/run", summary="Forecast one series now with the model its own backtest chooses",
             description="Backtests the candidates on the series' last two weeks, forecasts with the best "
                         "(Prophet, Holt-Winters, scaled or plain seasonal naive, or their ensemble; ETS for "
                         "short histories) and returns the forecast with its calibrated prediction interval, "
                         "the choice and why, and notes. Takes seconds to a minute.")
async def run_forecast(conn: Connection, body: ForecastRequest) -> dict:
    options = ForecastOptions(country=body.country, model=body.model)
    try:
        jobs, skipped = await prepare_jobs(conn, [SeriesRef(body.series_kind, body.series_key)],
                                           now=pd.Timestamp.now(tz="UTC"), horizon_hours=body.horizon_hours,
                                           history_days=body.history_days, freq=body.freq, options=options)
    except store.UnknownSeries as exc:
        raise param_error("series_key", str(exc), status=404, where="body") from None
    if skipped:
        raise param_error("history_days", f"{skipped[0].error} ({body.history_days} days)", where="body")
    outcome = (await asyncio.to_thread(run_forecast_jobs, jobs))[0]
    if outcome.forecast is None:
        raise param_error("history_days", outcome.error or "cannot forecast", where="body")
    forecast = outcome.forecast
    run_id = None
    if body.store:
        run_id = str(await store.store_forecast(conn, body.series_kind, body.series_key, forecast))
    return {"series_kind": body.series_kind, "series_key": body.series_key, "run_id": run_id,
            "model": forecast.model, "model_version": forecast.model_version,
            "interval_s": SUPPORTED_FREQS[forecast.freq], "interval_width": forecast.interval_width,
            "selection": forecast.selection,
            "used_temperature": forecast.used_temperature, "notes": list(forecast.notes),
            "fit_seconds": round(forecast.fit_seconds, 3), "peak": forecast.peak(),
            "points": [{"ts": ts.isoformat(), "horizon": i + 1, "yhat": row.yhat, "yhat_lower": row.yhat_lower,
                        "yhat_upper": row.yhat_upper} for i, (ts, row) in enumerate(forecast.frame.iterrows())]}
