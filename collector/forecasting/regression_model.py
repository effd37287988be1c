"""Lag regression: tomorrow's load per time of day from yesterday, last week and the day type.

Day-ahead load is mostly the recent level (yesterday's weather lasts), the weekly shape and
the season. For each step of the day (24 for hourly data, 48 for half-hours, 96 for quarter
hours) one ridge regression, in logs when the load is positive, predicts the load at that step
from:

* the same step yesterday and a week ago, the latest value before the origin and yesterday's
  mean (the level a weather spell has set);
* the mean of yesterday's last six hours next to the same six hours a week earlier (the
  freshest sign of how far a weather spell has moved the load), and yesterday's maximum and
  minimum (the day's swing, which heating and cooling widen);
* the day type of the target day and of the day before it (Monday follows a Sunday; a public
  holiday counts as a Sunday), and whether yesterday or last week's day was a holiday;
* two yearly harmonics of the target's day of the year (how the weekly shape turns with the
  seasons).

It is fitted on the 8 weeks before the origin plus, where the history has them, the same
season (+-45 days) of up to 4 previous years: recent weeks carry the level, previous years
show what the same time of year does. The samples are the earlier days at the origin's own
time of day, so origins need not be at midnight. Horizons beyond one day are made day by day,
each day's forecast becoming the next one's "yesterday".

Every fit is a few small linear solves (milliseconds), so "auto" backtests it at every origin.
The settings (8 weeks, 4 years of +-45 days, the last six hours, the harmonics, the ridge
penalty) were chosen on training years of PJM East (every day of 2014-08 .. 2016-08,
docs/benchmarks.md) and are general to load, not to that series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from collector.forecasting.calendar import is_holiday
from collector.forecasting.types import ForecastError

__all__ = ["lag_regression", "HISTORY_DAYS", "RECENT_DAYS", "SEASON_YEARS", "SEASON_HALF_WIDTH_DAYS",
           "MIN_TRAIN_DAYS", "LAST_HOURS", "RegressionSettings", "DEFAULT_SETTINGS", "PREVIOUS_SETTINGS"]

#: Days right before the origin every fit uses.
RECENT_DAYS = 56
#: Previous years whose same season (+- SEASON_HALF_WIDTH_DAYS) joins the fit when the history has them.
SEASON_YEARS = 4
SEASON_HALF_WIDTH_DAYS = 45
#: Fewer training days than this and the regression refuses (the weekly models still run).
MIN_TRAIN_DAYS = 14
YEARLY_HARMONICS = 2
#: Ridge penalty on standardised features, per feature per sample: the penalty is
#: RIDGE * features / samples, so a fit on 4 years of seasons (~420 samples per step for ~33
#: features: 0.08) is barely penalised and one on a few weeks (a new meter, the 12-week
#: half-hourly series: ~1) is held back. On the training days a fixed penalty of 1 was too much
#: for PJM (0.1 and 0.01 did better) and 0.1 too little for the half-hourly weeks.
RIDGE = 1.0
#: Hours at the end of yesterday whose mean (against the same hours a week earlier) carries the
#: latest level into tomorrow.
LAST_HOURS = 6


@dataclass(frozen=True)
class RegressionSettings:
    """What the fit uses; the defaults are the module's constants (chosen on training days).

    ``last_hours=0`` leaves out the last-hours and the day's-swing features (the settings before
    2026-12: ``RegressionSettings(season_years=3, half_width_days=30, ridge=1.0, last_hours=0)``).
    """

    recent_days: int = RECENT_DAYS
    season_years: int = SEASON_YEARS
    half_width_days: int = SEASON_HALF_WIDTH_DAYS
    ridge: float = RIDGE
    last_hours: int = LAST_HOURS
    ridge_per_sample: bool = True

    @property
    def history_days(self) -> int:
        """History the fit can use: the recent weeks and the earlier years' seasons, plus 8 days of lags."""
        return int(365.25 * self.season_years) + self.half_width_days + 8


DEFAULT_SETTINGS = RegressionSettings()
#: History the regression can use with its default settings.
HISTORY_DAYS = DEFAULT_SETTINGS.history_days
#: The settings before the last-hours features and the longer seasons (for side-by-side runs).
PREVIOUS_SETTINGS = RegressionSettings(season_years=3, half_width_days=30, ridge=1.0, last_hours=0,
                                       ridge_per_sample=False)


def _training_days(available: int, settings: RegressionSettings) -> np.ndarray:
    """Days back from the origin (1 = the day just before it) the fit uses, among ``available``."""
    parts = [np.arange(1, settings.recent_days + 1)]
    for year in range(1, settings.season_years + 1):
        centre = int(round(365.25 * year))
        parts.append(np.arange(centre - settings.half_width_days, centre + settings.half_width_days + 1))
    back = np.unique(np.concatenate(parts))
    return back[back <= available]


def _features(z: np.ndarray, origins: np.ndarray, per_day: int, day_type: np.ndarray, holiday: np.ndarray,
              year_angle: np.ndarray, last_hours: int) -> np.ndarray:
    """Feature tensor (len(origins), per_day, k) for the days starting at positions ``origins`` of ``z``.

    ``day_type``, ``holiday`` and ``year_angle`` are per step of ``z``'s grid (extended by the horizon).
    """
    steps = origins[:, None] + np.arange(per_day)[None, :]          # target positions
    yesterday, last_week = steps - per_day, steps - 7 * per_day
    week = 7 * per_day

    def per_origin(values: list[float]) -> np.ndarray:
        return np.asarray(values, dtype="float64")[:, None].repeat(per_day, axis=1)

    levels = [z[yesterday], z[last_week], per_origin([z[o - 1] for o in origins]),
              per_origin([z[o - per_day:o].mean() for o in origins])]
    if last_hours:
        last = max(1, last_hours * per_day // 24)
        levels += [per_origin([z[o - last:o].mean() for o in origins]),
                   per_origin([z[o - week - last:o - week].mean() for o in origins]),
                   per_origin([z[o - per_day:o].max() for o in origins]),
                   per_origin([z[o - per_day:o].min() for o in origins])]
    eye = np.eye(7)
    harmonics = np.arange(1, YEARLY_HARMONICS + 1)
    angle = year_angle[steps][..., None] * harmonics
    return np.concatenate([
        np.stack(levels, axis=-1),
        eye[day_type[steps]], eye[day_type[yesterday]],
        np.stack([holiday[yesterday], holiday[last_week]], axis=-1).astype("float64"),
        np.sin(angle), np.cos(angle),
    ], axis=-1)


def _fit_step(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ridge on standardised features: (mean, scale, coefficients, intercept)."""
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd < 1e-9] = 1.0
    zx = (x - mu) / sd
    y_mean = float(y.mean())
    coef = np.linalg.solve(zx.T @ zx + ridge * np.eye(zx.shape[1]), zx.T @ (y - y_mean))
    return mu, sd, coef, y_mean


def lag_regression(y: np.ndarray, index: pd.DatetimeIndex, horizon: int, per_day: int,
                   holidays: frozenset = frozenset(), settings: RegressionSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """``horizon`` steps after ``y`` (a regular series on ``index``) from one regression per step of the day."""
    y = np.asarray(y, dtype="float64")[-settings.history_days * per_day:]
    index = index[-len(y):]
    days_back = _training_days(len(y) // per_day - 8, settings)   # each sample reads 8 days before it
    if len(days_back) < MIN_TRAIN_DAYS:
        raise ForecastError(f"lag regression needs {MIN_TRAIN_DAYS + 8} days of history, "
                            f"got {len(y) / per_day:.1f} days")
    positive = bool((y > 0).all())
    z = np.log(y) if positive else y.copy()
    n_days = -(-horizon // per_day)
    step = index[1] - index[0]
    grid = index.append(pd.date_range(index[-1] + step, periods=n_days * per_day, freq=step))
    holiday = is_holiday(grid, holidays)
    day_type = np.where(holiday, 6, grid.day_of_week.to_numpy())
    year_angle = 2 * np.pi * (grid.day_of_year.to_numpy() - 1 + grid.hour.to_numpy() / 24) / 365.25
    n = len(y)
    train_origins = n - days_back * per_day
    x = _features(z, train_origins, per_day, day_type, holiday, year_angle, settings.last_hours)
    targets = z[train_origins[:, None] + np.arange(per_day)[None, :]]
    ridge = settings.ridge * x.shape[-1] / len(x) if settings.ridge_per_sample else settings.ridge
    fits = [_fit_step(x[:, j, :], targets[:, j], ridge) for j in range(per_day)]
    z = np.concatenate([z, np.empty(n_days * per_day)])
    for day in range(n_days):
        origin = n + day * per_day
        features = _features(z, np.array([origin]), per_day, day_type, holiday, year_angle, settings.last_hours)[0]
        for j, (mu, sd, coef, intercept) in enumerate(fits):
            z[origin + j] = intercept + ((features[j] - mu) / sd) @ coef
    out = z[n:n + horizon]
    if positive:
        out = np.exp(out)
    if not np.isfinite(out).all():
        raise ForecastError("lag regression produced a non-finite forecast")
    return out
