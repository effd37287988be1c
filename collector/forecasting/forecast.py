"""Which model makes a forecast: the one entry point the jobs, the API, the backtest and the bench call.

:func:`forecast_load` with ``model="auto"`` (the default) runs every candidate day-ahead over
the series' own last six weeks and keeps the best over the last three — Prophet, the lag
regression, Holt-Winters with a weekly season, last week scaled to yesterday's level, last
week as it was, or their inverse-error ensemble (see :mod:`collector.forecasting.selection`). The forecast says which model was
chosen and why (``Forecast.selection``), and records every compromise (no weather, the
short-history fallback) in ``Forecast.notes`` so a planner reading the number knows what it
rests on. Intervals are calibrated on the chosen model's own recent errors; nothing is negative.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from collector.forecasting.selection import (
    HISTORY_DAYS_NEEDED,
    MIN_PROPHET_DAYS,
    WINDOW_DAYS,
    candidate_paths,
    choice_interval,
    choose,
)
from collector.forecasting.series import SUPPORTED_FREQS, SeriesError, as_load_series, steps_per_day
from collector.forecasting.types import AUTO_CANDIDATES, Forecast, ForecastError, ForecastOptions

__all__ = ["Forecast", "ForecastError", "ForecastOptions", "forecast_load", "MIN_PROPHET_DAYS",
           "MIN_SELECTION_DAYS", "model_version", "align_temperature"]

#: "auto" needs this much history to backtest its candidates; below it the ETS fallback runs.
MIN_SELECTION_DAYS = 10
RECIPE = "gs3"


def model_version(model: str) -> str:
    """What made a forecast, precisely enough to reproduce it (library version + our recipe)."""
    import statsmodels

    if model == "prophet":
        from collector.forecasting.prophet_model import MODEL_VERSION
        return MODEL_VERSION
    if model == "ets":
        from collector.forecasting.ets_model import MODEL_VERSION
        return MODEL_VERSION
    if model == "ensemble":
        import prophet
        return f"ensemble-statsmodels-{statsmodels.__version__}-prophet-{prophet.__version__}+{RECIPE}"
    if model == "lag_regression":
        return f"lag_regression-numpy-{np.__version__}+{RECIPE}"
    return f"{model}-statsmodels-{statsmodels.__version__}+{RECIPE}"


def _non_negative(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.clip(lower=0.0)
    out["yhat_lower"] = np.minimum(out["yhat_lower"], out["yhat"])
    out["yhat_upper"] = np.maximum(out["yhat_upper"], out["yhat"])
    return out


def forecast_load(history: pd.Series, horizon: int, *, temperature: pd.Series | None = None,
                  options: ForecastOptions = ForecastOptions()) -> Forecast:
    """Forecast ``horizon`` steps after the end of ``history`` (a regular UTC series).

    ``temperature`` (°C, any UTC index covering history and horizon) becomes a regressor of the
    Prophet model; when it does not cover both, the forecast is made without it and says so.
    """
    if horizon < 1:
        raise ForecastError(f"horizon must be at least 1 step, got {horizon}")
    try:
        history = as_load_series(history)
    except SeriesError as exc:
        raise ForecastError(f"history: {exc}") from None
    freq = history.index.freqstr
    per_day = steps_per_day(freq)
    days = len(history) / per_day
    if days < 2:
        raise ForecastError(f"history: need at least 2 days of data to forecast, got {days:.1f}")
    notes: list[str] = []
    model = options.model
    if model == "auto" and days < MIN_SELECTION_DAYS:
        model = "ets"
        notes.append(f"history of {days:.1f} days is short for choosing a model (< {MIN_SELECTION_DAYS}); "
                     "used the exponential-smoothing fallback")
    temp = None
    if temperature is not None:
        temp, reason = align_temperature(temperature, history.index, horizon, freq)
        if temp is None:
            notes.append(f"forecast made without temperature: {reason}")
    if model == "ets":
        from collector.forecasting.ets_model import fit_predict_ets
        forecast = fit_predict_ets(history.iloc[-options.max_history_days * per_day:], horizon, freq, options)
        if temperature is not None:
            notes.append("temperature ignored: the fallback model has no regressors")
        return dataclasses.replace(forecast, frame=_non_negative(forecast.frame)).with_notes(*notes)
    if model == "prophet":
        from collector.forecasting.prophet_model import fit_predict_prophet
        forecast = fit_predict_prophet(history.iloc[-options.max_history_days * per_day:], horizon, freq,
                                       options, temperature=temp)
        return dataclasses.replace(forecast, frame=_non_negative(forecast.frame)).with_notes(*notes)
    return _chosen_forecast(history, horizon, model, options, temp, notes)


def _chosen_forecast(history: pd.Series, horizon: int, model: str, options: ForecastOptions,
                     temperature: pd.Series | None, notes: list[str]) -> Forecast:
    """Backtest the candidates over the last six weeks, then forecast with the best (or the named one)."""
    freq = history.index.freqstr
    per_day = steps_per_day(freq)
    step = pd.Timedelta(seconds=SUPPORTED_FREQS[freq])
    origin = history.index[-1] + step
    window = [origin - pd.Timedelta(days=k) for k in range(2 * WINDOW_DAYS, 0, -1)]
    window = [o for o in window if o - pd.Timedelta(days=8) >= history.index[0]]
    origins = window + [origin]
    if model == "auto":
        candidates = options.candidates
    elif model == "ensemble":
        candidates = AUTO_CANDIDATES
    else:
        candidates = (model,)
    started = time.perf_counter()
    keep = (max(options.max_history_days, HISTORY_DAYS_NEEDED) + 2 * WINDOW_DAYS + 1) * per_day
    paths = candidate_paths(history.iloc[-keep:], origins, [per_day] * len(window) + [horizon], options,
                            temperature, candidates)
    actuals = [history.reindex(pd.date_range(o, periods=per_day, freq=freq)).to_numpy() for o in window]
    actuals.append(np.full(per_day, np.nan))
    try:
        choice = choose(paths, actuals, len(origins) - 1)
    except ForecastError as exc:
        if model != "auto":
            raise
        from collector.forecasting.ets_model import fit_predict_ets
        forecast = fit_predict_ets(history.iloc[-options.max_history_days * per_day:], horizon, freq, options)
        return dataclasses.replace(forecast, frame=_non_negative(forecast.frame)).with_notes(
            *notes, f"no candidate could be backtested ({exc}); used the exponential-smoothing fallback")
    if model == "ensemble" and choice.model != "ensemble":
        raise ForecastError("the ensemble needs two candidates with a week of backtest")
    fit_seconds = time.perf_counter() - started
    yhat = np.clip(choice.forecast[:horizon], 0.0, None)
    try:
        lower, upper = choice_interval(choice, yhat, options.interval_width, per_day)
    except ForecastError:
        lower, upper = _week_on_week_interval(yhat, history.to_numpy(), options.interval_width, per_day)
        notes.append("interval from week-on-week changes: too few backtest errors to calibrate it")
    index = pd.date_range(origin, periods=horizon, freq=freq)
    frame = pd.DataFrame({"yhat": yhat, "yhat_lower": lower, "yhat_upper": upper}, index=index)
    frame.index.name = "ts"
    uses_prophet = choice.model == "prophet" or (choice.weights is not None and "prophet" in choice.weights)
    if temperature is not None and not uses_prophet:
        notes.append(f"temperature not used: only Prophet takes it, and {choice.model} was chosen")
    notes.extend(paths.notes)
    selection = choice.as_dict()
    selection["candidates"] = list(candidates)
    return Forecast(frame=_non_negative(frame), model=choice.model, model_version=model_version(choice.model),
                    freq=freq, interval_width=options.interval_width, fit_seconds=fit_seconds,
                    used_temperature=temperature is not None and uses_prophet, notes=tuple(notes),
                    selection=selection)


def _week_on_week_interval(yhat: np.ndarray, y: np.ndarray, width: float,
                           per_day: int) -> tuple[np.ndarray, np.ndarray]:
    week = 7 * per_day
    if len(y) > week + per_day:
        base = y[:-week]
        ok = base > 0
        ratios = y[week:][ok] / base[ok] - 1.0
    else:
        ratios = np.array([-0.1, 0.1])
    lo, hi = np.quantile(ratios, [(1 - width) / 2, (1 + width) / 2])
    return (np.clip(np.minimum(yhat * (1 + min(lo, 0.0)), yhat), 0.0, None),
            np.maximum(yhat * (1 + max(hi, 0.0)), yhat))


def align_temperature(temperature: pd.Series, index: pd.DatetimeIndex, horizon: int,
                         freq: str) -> tuple[pd.Series | None, str]:
    """Temperature on the history + horizon grid, interpolated from hourly, or why not."""
    if len(temperature) == 0:
        return None, "no temperature observations"
    t = temperature.copy()
    if not isinstance(t.index, pd.DatetimeIndex):
        return None, "temperature has no timestamps"
    t.index = t.index.tz_localize("UTC") if t.index.tz is None else t.index.tz_convert("UTC")
    t = t.sort_index().groupby(level=0).mean().astype("float64")
    grid = pd.date_range(index[0], periods=len(index) + horizon, freq=freq, tz="UTC")
    if t.index[0] > grid[0] + pd.Timedelta(hours=1) or t.index[-1] < grid[-1] - pd.Timedelta(hours=1):
        return None, (f"temperature covers {t.index[0]:%Y-%m-%d %H:%M} to {t.index[-1]:%Y-%m-%d %H:%M}, "
                      f"needed {grid[0]:%Y-%m-%d %H:%M} to {grid[-1]:%Y-%m-%d %H:%M}")
    aligned = t.reindex(t.index.union(grid)).interpolate(method="time", limit_direction="both").reindex(grid)
    if aligned.isna().any():
        return None, "temperature has gaps"
    return aligned, ""
