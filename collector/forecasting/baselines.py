"""The weekly models: seasonal naive, seasonal naive scaled to yesterday's level, Holt-Winters.

Each takes the history's values (a regular series ending just before the forecast origin) and
returns ``horizon`` predicted values. They see public holidays as Sundays (see
:mod:`collector.forecasting.calendar`). All are cheap (Holt-Winters, with its season started from the first
two weeks rather than estimated, a tenth of a second for an hourly month; estimating the 168 or
336 starting values took 3-4 s per fit and was no more accurate on the training years), so "auto" can backtest them at every recent origin.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from collector.forecasting.calendar import clean_holidays, is_holiday
from collector.forecasting.types import ForecastError

__all__ = ["seasonal_naive", "scaled_naive", "holt_winters", "HOLT_WINTERS_WEEKS", "MIN_WEEKLY_DAYS"]

#: Weeks of history Holt-Winters fits on. Four weeks follow a changing level and weekly shape
#: faster than eight (tuned on the training years/weeks of the benchmark series, see docs/benchmarks.md).
HOLT_WINTERS_WEEKS = 4
#: The weekly models need two full weeks (Holt-Winters' seasonal start) plus a day.
MIN_WEEKLY_DAYS = 15
#: Yesterday's level may move last week's shape by at most this factor either way.
MAX_LEVEL_RATIO = 1.4


def _future_index(index: pd.DatetimeIndex, horizon: int) -> pd.DatetimeIndex:
    step = index[1] - index[0]
    return pd.date_range(index[-1] + step, periods=horizon, freq=step)


def _repeat_last_week(y: np.ndarray, horizon: int, week: int) -> np.ndarray:
    last = y[-week:]
    return np.resize(last, horizon) if horizon > week else last[:horizon].copy()


def _holidays_like_sunday(forecast: np.ndarray, y: np.ndarray, index: pd.DatetimeIndex, per_day: int,
                          holidays: frozenset, level: float = 1.0) -> np.ndarray:
    """Holidays in the horizon take the shape of the latest Sunday in the history."""
    future = _future_index(index, len(forecast))
    flags = is_holiday(future, holidays)
    if not flags.any():
        return forecast
    sundays = np.flatnonzero((index.day_of_week == 6) & (index.hour == 0) & (index.minute == 0))
    sundays = [s for s in sundays if s + per_day <= len(y)]
    if not sundays:
        return forecast
    sunday = y[sundays[-1]:sundays[-1] + per_day] * level
    out = forecast.copy()
    steps_into_day = ((future.hour * 3600 + future.minute * 60) * per_day // 86400).to_numpy()
    out[flags] = sunday[steps_into_day[flags]]
    return out


def seasonal_naive(y: np.ndarray, index: pd.DatetimeIndex, horizon: int, per_day: int,
                   holidays: frozenset = frozenset()) -> np.ndarray:
    """The same step last week (a holiday last week is replaced by the week before it)."""
    week = 7 * per_day
    if len(y) < week:
        raise ForecastError(f"seasonal naive needs a week of history, got {len(y) / per_day:.1f} days")
    clean = clean_holidays(y, index, per_day, holidays)
    return _holidays_like_sunday(_repeat_last_week(clean, horizon, week), y, index, per_day, holidays)


def scaled_naive(y: np.ndarray, index: pd.DatetimeIndex, horizon: int, per_day: int,
                 holidays: frozenset = frozenset()) -> np.ndarray:
    """Last week's shape times the ratio of the last 24 hours to the same 24 hours a week earlier.

    That ratio carries a weather-driven level shift (a cold spell, a heat wave) into tomorrow,
    which last week's values alone cannot know about.
    """
    week = 7 * per_day
    if len(y) < week + per_day:
        raise ForecastError(f"scaled naive needs 8 days of history, got {len(y) / per_day:.1f} days")
    clean = clean_holidays(y, index, per_day, holidays)
    before = float(np.mean(clean[-week - per_day:-week]))
    ratio = float(np.mean(clean[-per_day:])) / before if before > 0 else 1.0
    ratio = min(max(ratio, 1.0 / MAX_LEVEL_RATIO), MAX_LEVEL_RATIO)
    forecast = _repeat_last_week(clean, horizon, week) * ratio
    return _holidays_like_sunday(forecast, y, index, per_day, holidays, ratio)


def holt_winters(y: np.ndarray, index: pd.DatetimeIndex, horizon: int, per_day: int,
                 holidays: frozenset = frozenset(), weeks: int = HOLT_WINTERS_WEEKS) -> np.ndarray:
    """Holt-Winters with a weekly season (multiplicative for positive load), on the last ``weeks`` weeks."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    week = 7 * per_day
    if len(y) < 2 * week:
        raise ForecastError(f"Holt-Winters needs two weeks of history, got {len(y) / per_day:.1f} days")
    clean = clean_holidays(y, index, per_day, holidays)[-weeks * week:]
    seasonal = "mul" if (clean > 0).all() else "add"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence chatter; a non-finite forecast is refused below
        fitted = ExponentialSmoothing(clean, seasonal=seasonal, seasonal_periods=week,
                                      initialization_method="heuristic").fit()
        forecast = np.asarray(fitted.forecast(horizon), dtype="float64")
    if not np.isfinite(forecast).all():
        raise ForecastError("Holt-Winters did not converge on this history")
    level = float(np.mean(forecast[:per_day]) / np.mean(clean[-week:-week + per_day])) if len(forecast) >= per_day else 1.0
    return _holidays_like_sunday(forecast, y, index, per_day, holidays, level if np.isfinite(level) else 1.0)
