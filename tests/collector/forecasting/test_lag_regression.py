"""The lag regression candidate: tomorrow per time of day from yesterday, last week and the day type.

What a planner cares about: it follows a level that weather has moved (which last week's values
cannot), it knows Monday follows a Sunday and a holiday behaves like one, it forecasts from any
time of day and beyond one day, and it refuses too little history with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collector.forecasting import ForecastOptions, backtest_day_ahead, forecast_load, mape
from collector.forecasting.baselines import seasonal_naive
from collector.forecasting.calendar import holiday_dates
from collector.forecasting.regression_model import DEFAULT_SETTINGS, HISTORY_DAYS, RegressionSettings, lag_regression
from collector.forecasting.types import ForecastError

from .conftest import synthetic_load


def spells(days: int, freq: str = "h", seed: int = 11, start: str = "2025-01-06") -> pd.Series:
    """Weekly-shaped load whose level moves in multi-day spells (as heat waves and cold snaps move it)."""
    base = synthetic_load(days, freq=freq, seed=seed, start=start)
    per_day = len(base) // days
    rng = np.random.default_rng(seed)
    level = [0.0]
    for _ in range(days - 1):
        level.append(0.85 * level[-1] + rng.normal(0, 0.04))
    return base * (1 + np.repeat(level, per_day))


def _day_ahead_errors(series: pd.Series, per_day: int, origins: int) -> tuple[float, float]:
    ours, naive = [], []
    for k in range(origins, 0, -1):
        history, actual = series.iloc[:-k * per_day], series.iloc[-k * per_day:][:per_day].to_numpy()
        ours.append(mape(actual, lag_regression(history.to_numpy(), history.index, per_day, per_day)))
        naive.append(mape(actual, seasonal_naive(history.to_numpy(), history.index, per_day, per_day)))
    return float(np.mean(ours)), float(np.mean(naive))


@pytest.mark.parametrize("freq,per_day", [("h", 24), ("30min", 48), ("15min", 96)])
def test_it_follows_a_level_that_moved_days_ago_better_than_last_weeks_values(freq, per_day):
    ours, naive = _day_ahead_errors(spells(120, freq=freq), per_day, origins=14)
    assert ours < 0.7 * naive, (ours, naive)


def test_it_uses_the_same_season_of_earlier_years_when_the_history_has_them():
    # summer is 30 % above winter; two years of history teach how the level turns in spring
    days = 3 * 365
    series = spells(days, seed=5, start="2022-01-03")
    season = 1 + 0.15 * np.sin(2 * np.pi * (series.index.day_of_year.to_numpy() - 100) / 365.25)
    series = series * season
    origin = pd.Timestamp("2024-05-06", tz="UTC")
    actual = series[(series.index >= origin) & (series.index < origin + pd.Timedelta(days=1))].to_numpy()
    long = series[series.index < origin]
    short = long.iloc[-70 * 24:]
    with_years = mape(actual, lag_regression(long.to_numpy(), long.index, 24, 24))
    recent_only = mape(actual, lag_regression(short.to_numpy(), short.index, 24, 24))
    assert with_years < 5.0 and recent_only < 8.0   # both sensible; the long history is used without error


def test_a_public_holiday_is_forecast_at_a_sundays_level():
    # Spring bank holiday 2026-05-25 (Monday) in Great Britain; holidays in the history look like Sundays too
    series = synthetic_load(150, start="2026-01-05", seed=2)
    gb = holiday_dates("GB", series.index[0], pd.Timestamp("2026-12-31"))
    days = series.index.normalize().tz_localize(None)
    holiday = np.array([d in gb for d in days])
    series[holiday] *= 0.85
    origin = pd.Timestamp("2026-05-25", tz="UTC")
    history = series[series.index < origin]
    actual = series[(series.index >= origin) & (series.index < origin + pd.Timedelta(days=1))].to_numpy()
    aware = lag_regression(history.to_numpy(), history.index, 24, 24, gb)
    blind = lag_regression(history.to_numpy(), history.index, 24, 24, frozenset())
    assert mape(actual, aware) < 4.0 and mape(actual, aware) < mape(actual, blind) / 2


def test_it_forecasts_from_any_time_of_day_and_for_more_than_a_day():
    series = spells(90)
    history, future = series.iloc[:-60], series.iloc[-60:-12]       # origin at noon, 48 h ahead
    path = lag_regression(history.to_numpy(), history.index, 48, 24)
    assert path.shape == (48,) and np.isfinite(path).all()
    naive = seasonal_naive(history.to_numpy(), history.index, 48, 24)
    assert mape(future.to_numpy(), path) < mape(future.to_numpy(), naive)


def test_load_that_touches_zero_is_forecast_without_logarithms():
    rng = np.random.default_rng(4)
    index = pd.date_range("2026-03-02", periods=24 * 40, freq="h", tz="UTC")
    daylight = np.clip(np.sin(np.pi * (index.hour - 6) / 12), 0, None)
    load = np.clip(0.4 - 0.45 * daylight + rng.normal(0, 0.05, len(index)), 0, None)
    path = lag_regression(load, index, 24, 24)
    assert np.isfinite(path).all() and path.max() < 1.0


def test_too_little_history_is_refused_with_the_days_needed():
    series = synthetic_load(12)
    with pytest.raises(ForecastError, match="lag regression needs 22 days of history, got 12.0 days"):
        lag_regression(series.to_numpy(), series.index, 24, 24)


def test_named_lag_regression_forecast_and_its_backtest():
    series = spells(80)
    fc = forecast_load(series, 24, options=ForecastOptions(model="lag_regression", country=None))
    assert fc.model == "lag_regression" and fc.model_version.startswith("lag_regression-numpy-")
    assert (fc.frame.yhat_lower <= fc.frame.yhat).all() and (fc.frame.yhat <= fc.frame.yhat_upper).all()
    report = backtest_day_ahead(series, weeks=2, options=ForecastOptions(model="lag_regression", country=None))
    assert report.model.mape < report.same_hour_last_week.mape
    assert report.models_used == {"lag_regression": 14}


def test_a_level_that_moved_late_yesterday_is_carried_into_tomorrow_by_the_last_hours():
    # The weather turns in the evening: each spell's level starts at 18:00, so yesterday's mean
    # is mostly the old level and only its last six hours show the new one.
    base = synthetic_load(200, seed=8, start="2025-01-06")
    rng = np.random.default_rng(8)
    level = [0.0]
    for _ in range(199):
        level.append(0.5 * level[-1] + rng.normal(0, 0.06))
    shifted = np.roll(np.repeat(level, 24), 18 - 24)      # day d's level holds from 18:00 of day d - 1
    series = base * (1 + shifted)
    with_last, without = [], []
    for k in range(28, 0, -1):
        history, actual = series.iloc[:-k * 24], series.iloc[-k * 24:][:24].to_numpy()
        with_last.append(mape(actual, lag_regression(history.to_numpy(), history.index, 24, 24)))
        without.append(mape(actual, lag_regression(history.to_numpy(), history.index, 24, 24, frozenset(),
                                                   RegressionSettings(last_hours=0))))
    assert np.mean(with_last) < 0.95 * np.mean(without), (np.mean(with_last), np.mean(without))


def test_settings_bound_the_history_read():
    assert DEFAULT_SETTINGS.history_days == HISTORY_DAYS
    assert RegressionSettings(season_years=0).history_days == RegressionSettings().half_width_days + 8
