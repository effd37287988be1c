"""The model each series gets is chosen by its own day-ahead backtest and says why; half-hourly
series are first-class; forecasts and their bounds are never negative; the backtest scores every
weekday alike and reports how often the interval covered what happened."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from collector.forecasting import ForecastOptions, backtest_day_ahead, forecast_load, mape
from collector.forecasting.baselines import scaled_naive, seasonal_naive
from collector.forecasting.calendar import holiday_dates
from collector.forecasting.selection import SINGLE_MODEL_MARGIN, interval_from_residuals, step_scale

from .conftest import synthetic_load

FAST = ForecastOptions(candidates=("lag_regression", "holt_winters", "scaled_naive", "seasonal_naive"), country=None)


def drifting(days: int, freq: str = "h", seed: int = 3) -> pd.Series:
    """Synthetic load whose level wanders for days at a time, as weather makes it."""
    base = synthetic_load(days, freq=freq, seed=seed)
    per_day = len(base) // days
    rng = np.random.default_rng(seed)
    level = [0.0]
    for _ in range(days - 1):
        level.append(0.8 * level[-1] + rng.normal(0, 0.03))
    return base * (1 + np.repeat(level, per_day))


@pytest.mark.slow
def test_half_hourly_history_is_forecast_in_half_hours_by_the_model_its_backtest_chose():
    truth = drifting(45, freq="30min")
    history, future = truth.iloc[:-48], truth.iloc[-48:]
    fc = forecast_load(history, 96, options=ForecastOptions(country="GB"))
    assert fc.freq == "30min" and len(fc.frame) == 96
    assert fc.frame.index[0] == future.index[0] and fc.frame.index[1] - fc.frame.index[0] == pd.Timedelta(minutes=30)
    sel = fc.selection
    assert sel["chosen"] == fc.model and fc.model in sel["window_mape"]
    assert {"prophet", "lag_regression", "holt_winters", "scaled_naive", "seasonal_naive"} <= set(sel["window_mape"])
    best_single = min(v for m, v in sel["window_mape"].items() if m != "ensemble")
    if fc.model == "ensemble":   # chosen unless a single model is better by the margin
        assert sel["window_mape"]["ensemble"] * (1 - SINGLE_MODEL_MARGIN) <= best_single
        assert abs(sum(sel["weights"].values()) - 1) < 1e-3
    else:
        assert sel["window_mape"][fc.model] == best_single and sel["weights"] is None
    assert re.search(r"MAPE over the last \d+ days", sel["reason"])
    assert mape(future.to_numpy(), fc.frame.yhat.to_numpy()[:48]) < 5.0


@pytest.mark.parametrize("model", ["auto", "ets", "prophet", "holt_winters", "seasonal_naive"])
def test_forecasts_and_their_bounds_are_never_negative_even_for_a_load_near_zero(model):
    rng = np.random.default_rng(5)
    index = pd.date_range("2026-03-02", periods=24 * 21, freq="h", tz="UTC")
    # a feeder with rooftop solar: net load dips to zero at midday, noisy around it
    daylight = np.clip(np.sin(np.pi * (index.hour - 6) / 12), 0, None)
    load = np.clip(0.4 - 0.45 * daylight + rng.normal(0, 0.15, len(index)), 0, None)
    fc = forecast_load(pd.Series(load, index=index), 48, options=ForecastOptions(model=model, country=None))
    frame = fc.frame
    assert (frame.yhat >= 0).all() and (frame.yhat_lower >= 0).all() and (frame.yhat_upper >= 0).all()
    assert (frame.yhat_lower <= frame.yhat).all() and (frame.yhat <= frame.yhat_upper).all()


@pytest.mark.slow
def test_default_backtest_forecasts_from_every_midnight_of_four_weeks_and_tables_each_weekday():
    report = backtest_day_ahead(drifting(50), options=FAST, name="feeder-9")
    assert report.folds == 28
    weekdays = pd.DatetimeIndex(report.origins).day_of_week
    assert sorted(np.bincount(weekdays, minlength=7)) == [4] * 7
    assert set(report.by_weekday["forecast"]) == {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
    assert {"holt_winters", "scaled_naive", "seasonal_naive"} <= set(report.candidates)
    table = report.table()
    assert "MAPE % by weekday" in table and "Sun" in table and "prediction interval covered" in table
    assert sum(report.models_used.values()) == 28


@pytest.mark.slow
def test_calibrated_80_percent_interval_covers_about_80_percent_in_the_backtest():
    # eight weeks of daily origins: over four, a few days' correlated errors move coverage by 10 points
    report = backtest_day_ahead(drifting(100, seed=8), weeks=8, options=FAST)
    assert report.interval_width == 0.8
    assert 0.70 <= report.interval_coverage <= 0.90


@pytest.mark.slow
def test_weekends_and_mondays_are_forecast_no_worse_than_last_weeks_naive():
    report = backtest_day_ahead(drifting(60, seed=4), options=FAST)
    ours, naive = report.by_weekday["forecast"], report.by_weekday["same_hour_last_week"]
    for day in ("Sat", "Sun", "Mon"):
        assert ours[day] <= naive[day], (day, ours, naive)
    assert report.model.mape < report.same_hour_last_week.mape


def test_a_public_holiday_is_forecast_like_a_sunday_not_like_last_weeks_weekday():
    # 2026-05-25 is Spring bank holiday (Monday) in Great Britain: load drops to a Sunday's level
    series = synthetic_load(36, start="2026-04-20", seed=2)
    holiday = (series.index >= "2026-05-25") & (series.index < "2026-05-26")
    series[holiday] *= 0.85
    history = series[series.index < "2026-05-25"]
    actual = series[holiday].to_numpy()
    gb = holiday_dates("GB", history.index[0], pd.Timestamp("2026-06-30"))
    for model in (seasonal_naive, scaled_naive):
        aware = model(history.to_numpy(), history.index, 24, 24, gb)
        blind = model(history.to_numpy(), history.index, 24, 24, frozenset())
        assert mape(actual, aware) < mape(actual, blind) / 2


@pytest.mark.parametrize("noise", ["normal", "student_t"])
def test_interval_calibrated_on_four_weeks_of_errors_covers_about_its_level_of_the_next_days(noise):
    # Relative errors of a known distribution: four weeks of hourly errors calibrate the interval,
    # then 200 days drawn from the same distribution are scored against it.
    rng = np.random.default_rng(11)
    draw = (lambda n: rng.normal(0, 0.04, n)) if noise == "normal" else (lambda n: 0.03 * rng.standard_t(4, n))
    yhat = np.full(24, 500.0)
    past = draw(28 * 24)
    future = yhat * (1 + draw((200, 24)))
    coverage = {}
    for width in (0.5, 0.8, 0.95):
        lower, upper = interval_from_residuals(yhat, past, width, per_day=24)
        coverage[width] = float(np.mean((future >= lower) & (future <= upper)))
    # widened by INTERVAL_INFLATION for what a window cannot show: a little over the level, never under
    assert 0.78 <= coverage[0.8] <= 0.88
    assert 0.48 <= coverage[0.5] <= 0.62
    assert 0.93 <= coverage[0.95] <= 0.99
    unwidened = interval_from_residuals(yhat, past, 0.8, per_day=24, inflation=1.0)
    assert (unwidened[0] >= lower).all() and (unwidened[1] <= upper).all()


def test_widened_interval_stays_non_negative_and_around_the_forecast():
    yhat = np.array([0.0, 0.2, 5.0, 80.0] * 12)
    errors = np.random.default_rng(2).uniform(-1.5, 2.0, 500)     # a feeder whose load falls past zero
    lower, upper = interval_from_residuals(yhat, errors, 0.95, per_day=24)
    assert (lower >= 0).all() and (upper >= 0).all()
    assert (lower <= yhat).all() and (yhat <= upper).all()
    assert (upper[24:] >= upper[:24]).all()       # day two is no narrower than day one


def test_interval_by_step_of_the_day_is_wide_where_the_model_misses_and_narrow_where_it_does_not():
    # Afternoon hours miss by four times what night hours miss by (a summer peak against the
    # night's base load). Pooled quantiles over-cover the night and under-cover the afternoon;
    # scaled per step of the day, each part covers about its level.
    rng = np.random.default_rng(5)
    size = np.where((np.arange(24) >= 12) & (np.arange(24) < 20), 0.06, 0.015)
    yhat = np.full(24, 1000.0)
    past = rng.normal(0, 1, (28, 24)) * size
    steps = np.tile(np.arange(24), 28)
    future = yhat * (1 + rng.normal(0, 1, (300, 24)) * size)
    afternoon = size > 0.03
    pooled = interval_from_residuals(yhat, past.ravel(), 0.8, per_day=24)
    by_step = interval_from_residuals(yhat, past.ravel(), 0.8, per_day=24, steps=steps)

    def coverage(bounds, hours):
        inside = (future >= bounds[0]) & (future <= bounds[1])
        return float(inside[:, hours].mean())

    assert coverage(pooled, afternoon) < 0.72 and coverage(pooled, ~afternoon) > 0.95
    assert 0.76 <= coverage(by_step, afternoon) <= 0.9 and 0.76 <= coverage(by_step, ~afternoon) <= 0.9
    night = np.arange(24) < 8           # away from the afternoon by more than the smoothing's two hours
    assert (by_step[1] - by_step[0])[night].max() < 0.6 * (pooled[1] - pooled[0])[night].min()


def test_step_scale_is_the_smoothed_typical_error_of_each_step():
    residuals = np.array([0.1, -0.1, 0.02, -0.02] * 12)
    steps = np.array([0, 0, 12, 12] * 12)
    scale = step_scale(residuals, steps, 24)
    assert scale.shape == (24,) and scale[0] > scale[12] > 0
    assert scale[6] == pytest.approx(np.mean(np.abs(residuals)))   # no errors near 06:00: the overall size
