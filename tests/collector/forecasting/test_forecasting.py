"""Load forecasts: Prophet for weeks of history, the ETS fallback for days, temperature as a
regressor when it covers the horizon, and clear refusals for unusable series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collector.forecasting import (
    ForecastError,
    ForecastOptions,
    SeriesError,
    as_load_series,
    forecast_load,
    mape,
)

from .conftest import synthetic_load


def test_weeks_of_hourly_history_get_a_prophet_forecast_with_prediction_intervals():
    truth = synthetic_load(23)
    history, future = truth.iloc[:-48], truth.iloc[-48:]
    fc = forecast_load(history, 48, options=ForecastOptions(model="prophet"))
    assert fc.model == "prophet" and fc.model_version.startswith("prophet-")
    assert list(fc.frame.index) == list(future.index)
    assert (fc.frame.yhat_lower <= fc.frame.yhat).all() and (fc.frame.yhat <= fc.frame.yhat_upper).all()
    assert mape(future.to_numpy(), fc.frame.yhat.to_numpy()) < 5.0
    assert fc.notes == ()


def test_a_few_days_of_history_use_the_exponential_smoothing_fallback_and_say_so():
    truth = synthetic_load(5)                         # Monday to Friday: no weekend to foresee
    fc = forecast_load(truth.iloc[:-24], 24)
    assert fc.model == "ets" and fc.model_version.startswith("ets-statsmodels-")
    assert "fallback" in fc.notes[0]
    assert len(fc.frame) == 24 and (fc.frame.yhat_lower < fc.frame.yhat_upper).all()
    assert mape(truth.iloc[-24:].to_numpy(), fc.frame.yhat.to_numpy()) < 10.0


def test_fifteen_minute_history_is_forecast_in_fifteen_minute_steps():
    truth = synthetic_load(4, freq="15min")
    fc = forecast_load(truth.iloc[:-96], 96)
    assert fc.freq == "15min"
    assert (fc.frame.index[1] - fc.frame.index[0]) == pd.Timedelta(minutes=15)
    assert fc.frame.index[0] == truth.index[-96]


def hot_spell_temperature(days: int) -> pd.Series:
    index = pd.date_range("2026-01-05", periods=days * 24, freq="h", tz="UTC")
    rng = np.random.default_rng(11)
    daily_mean = np.repeat(rng.uniform(14, 34, days), 24)            # day-to-day swings drive cooling load
    return pd.Series(daily_mean + 4 * np.sin(2 * np.pi * (index.hour - 9) / 24), index=index)


def test_temperature_covering_history_and_horizon_is_used_and_improves_the_forecast():
    temperature = hot_spell_temperature(22)
    truth = synthetic_load(22, temperature=temperature)
    history, future = truth.iloc[:-24], truth.iloc[-24:]
    options = ForecastOptions(model="prophet", residual_correction=False)
    with_t = forecast_load(history, 24, temperature=temperature, options=options)
    without = forecast_load(history, 24, options=options)
    assert with_t.used_temperature and not without.used_temperature
    assert mape(future.to_numpy(), with_t.frame.yhat.to_numpy()) < mape(future.to_numpy(), without.frame.yhat.to_numpy())


def test_temperature_that_stops_before_the_horizon_is_dropped_with_a_note():
    temperature = hot_spell_temperature(20)
    truth = synthetic_load(22)
    fc = forecast_load(truth.iloc[:-24], 24, temperature=temperature, options=ForecastOptions(model="prophet"))
    assert not fc.used_temperature
    assert fc.notes and fc.notes[0].startswith("forecast made without temperature: temperature covers")


def test_short_gaps_are_filled_and_long_gaps_refused_naming_where():
    series = synthetic_load(3)
    holed = series.drop(series.index[10:13])
    assert len(as_load_series(holed)) == len(series)
    with pytest.raises(SeriesError, match=r"gap of 20 missing steps \(from 2026-01-05T12:00"):
        as_load_series(series.drop(series.index[[3]]).drop(series.index[12:32]))
    with pytest.raises(SeriesError, match="not numbers"):
        as_load_series(["1.0", "lots"], index=series.index[:2])


@pytest.mark.parametrize("history, horizon, message", [
    (synthetic_load(1), 24, "at least 2 days"),
    (synthetic_load(5), 0, "horizon must be at least 1"),
    (pd.Series([1.0, 2.0, np.inf, 4.0], index=pd.date_range("2026-01-01", periods=4, freq="h", tz="UTC")),
     2, "infinite"),
    (pd.Series([1.0, 2.0, 3.0], index=pd.date_range("2026-01-01", periods=3, freq="2h", tz="UTC")),
     2, "interval of 7200 s is not supported"),
])
def test_unusable_inputs_raise_forecast_error_saying_why(history, horizon, message):
    with pytest.raises(ForecastError, match=message):
        forecast_load(history, horizon)


def test_unknown_country_for_holidays_is_a_forecast_error():
    with pytest.raises(ForecastError, match="country 'XX'"):
        forecast_load(synthetic_load(15), 24, options=ForecastOptions(country="XX"))


def test_naive_timestamps_and_unix_seconds_are_read_as_utc():
    naive = synthetic_load(3).tz_localize(None)
    assert as_load_series(naive).index.tz is not None
    unix = as_load_series(naive.to_numpy(), index=naive.index.as_unit("s").asi8)
    assert unix.index[0] == pd.Timestamp("2026-01-05T00:00Z")
