"""Prophet shaped for electricity load.

Load is multiplicative (the daily swing grows with the level), its daily shape differs between
summer (afternoon cooling peak), winter (morning and evening heating peaks) and weekends, and
temperature drives it through heating and cooling degrees rather than linearly. Prophet alone
ignores yesterday's level, so the recent fit error is carried forward with an AR(1) decay:
that is what lets it beat "same hour yesterday" on day-ahead horizons.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd

from collector.forecasting.types import Forecast, ForecastError, ForecastOptions
from collector.forecasting.series import steps_per_day

__all__ = ["fit_predict_prophet", "fit_prophet", "predict_prophet", "MODEL_VERSION"]

# Bump when the model's shape changes, so stored forecasts say which recipe made them.
RECIPE = "gs1"
HEATING_BASE_C = 15.0
COOLING_BASE_C = 20.0
DAILY_FOURIER = 6

# Prophet's optional plotting complains at import that plotly is missing; we never plot.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
import prophet  # noqa: E402  (configures its loggers on import)

# Prophet and cmdstanpy log every fit at INFO; a fleet of fits would drown the job's own output.
# Set after importing prophet, which sets its loggers' levels on import.
# cmdstanpy installs its own INFO handler on first use unless its logger already has one.
logging.getLogger("cmdstanpy").addHandler(logging.NullHandler())
for _name in ("cmdstanpy", "prophet"):
    logging.getLogger(_name).setLevel(logging.ERROR)

MODEL_VERSION = f"prophet-{prophet.__version__}+{RECIPE}"


class _QuietProphet(warnings.catch_warnings):
    """Prophet's own pandas deprecations are not ours to act on; keep them out of job logs."""

    def __enter__(self):
        result = super().__enter__()
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"prophet\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"prophet\.")
        return result


def _calendar(ds: pd.DatetimeIndex, days: float) -> pd.DataFrame:
    frame = pd.DataFrame({"ds": ds.tz_convert("UTC").tz_localize(None)})
    month = frame["ds"].dt.month
    weekend = frame["ds"].dt.day_of_week >= 5
    frame["weekend"] = weekend
    if days >= 180:
        summer = month.isin([6, 7, 8, 9])
        winter = month.isin([12, 1, 2, 3])
        frame["summer_day"] = summer
        frame["winter_day"] = winter
        frame["shoulder_day"] = ~(summer | winter)
    return frame


def _build(days: float, options: ForecastOptions, with_temperature: bool):
    from prophet import Prophet

    yearly = days >= 365
    model = Prophet(
        yearly_seasonality=10 if yearly else False,
        weekly_seasonality=True,
        daily_seasonality=False,
        seasonality_mode="multiplicative",
        interval_width=options.interval_width,
        uncertainty_samples=400,
    )
    if days >= 180:
        for season in ("summer_day", "winter_day", "shoulder_day"):
            model.add_seasonality(name=f"daily_{season}", period=1, fourier_order=DAILY_FOURIER, condition_name=season)
    else:
        model.add_seasonality(name="daily", period=1, fourier_order=DAILY_FOURIER)
    model.add_seasonality(name="daily_weekend", period=1, fourier_order=4, condition_name="weekend")
    if options.country:
        try:
            model.add_country_holidays(country_name=options.country)
        except (AttributeError, KeyError, NotImplementedError, ValueError) as exc:
            raise ForecastError(f"country {options.country!r} has no holiday calendar: {exc}") from None
    if with_temperature:
        model.add_regressor("heating_degrees")
        model.add_regressor("cooling_degrees")
    return model


def _with_temperature(frame: pd.DataFrame, temperature: np.ndarray) -> pd.DataFrame:
    frame = frame.copy()
    frame["heating_degrees"] = np.clip(HEATING_BASE_C - temperature, 0, None)
    frame["cooling_degrees"] = np.clip(temperature - COOLING_BASE_C, 0, None)
    return frame


def fit_prophet(history: pd.Series, freq: str, options: ForecastOptions,
                temperature: pd.Series | None = None):
    """Fit on ``history``; ``temperature`` (when given) is indexed by UTC step and covers it."""
    per_day = steps_per_day(freq)
    days = len(history) / per_day
    model = _build(days, options, temperature is not None)
    train = _calendar(history.index, days)
    train["y"] = history.to_numpy()
    if temperature is not None:
        train = _with_temperature(train, temperature.reindex(history.index).to_numpy())
    with _QuietProphet():
        model.fit(train)
    model.gridsight_days = days
    return model


def predict_prophet(model, history: pd.Series, horizon: int, freq: str, options: ForecastOptions,
                    temperature: pd.Series | None = None, with_interval: bool = True) -> pd.DataFrame:
    """``horizon`` steps after ``history`` from a fitted model (which may have been fitted on an
    earlier part of it): the newest errors of the model feed the residual correction.
    ``temperature`` is indexed like the history's grid extended by the horizon. Without
    ``with_interval`` the bounds equal yhat and Prophet's trajectory sampling (most of the
    predict time) is skipped."""
    per_day = steps_per_day(freq)
    days = getattr(model, "gridsight_days", len(history) / per_day)
    # Predict the last days of history too: their errors feed the residual correction.
    tail = min(len(history), 7 * per_day)
    future_index = pd.date_range(history.index[-1], periods=horizon + 1, freq=freq, tz="UTC")[1:]
    grid = history.index[-tail:].append(future_index)
    future = _calendar(grid, days)
    if temperature is not None:
        future = _with_temperature(future, temperature.reindex(grid).to_numpy())
    samples = model.uncertainty_samples
    model.uncertainty_samples = samples if with_interval else 0
    try:
        with _QuietProphet():
            predicted = model.predict(future)
    finally:
        model.uncertainty_samples = samples
    yhat = predicted["yhat"].to_numpy()
    lower = predicted["yhat_lower"].to_numpy() if with_interval else yhat
    upper = predicted["yhat_upper"].to_numpy() if with_interval else yhat
    correction = np.zeros(horizon)
    if options.residual_correction:
        residuals = history.to_numpy()[-tail:] - yhat[:tail]
        correction = _residual_path(residuals, horizon, per_day)
    frame = pd.DataFrame({
        "yhat": yhat[tail:] + correction,
        "yhat_lower": lower[tail:] + correction,
        "yhat_upper": upper[tail:] + correction,
    }, index=future_index)
    frame.index.name = "ts"
    return frame


def fit_predict_prophet(history: pd.Series, horizon: int, freq: str, options: ForecastOptions,
                        temperature: pd.Series | None = None) -> Forecast:
    """Fit on ``history`` and predict ``horizon`` steps; ``temperature`` spans both when given."""
    started = time.perf_counter()
    model = fit_prophet(history, freq, options, temperature)
    fitted_at = time.perf_counter()
    frame = predict_prophet(model, history, horizon, freq, options, temperature)
    return Forecast(frame=frame, model="prophet", model_version=MODEL_VERSION, freq=freq,
                    interval_width=options.interval_width, fit_seconds=fitted_at - started,
                    used_temperature=temperature is not None, predict_seconds=time.perf_counter() - fitted_at)


def _residual_path(residuals: np.ndarray, horizon: int, per_day: int) -> np.ndarray:
    """Expected future errors of the seasonal model, from its errors over the last days.

    Three persistent parts: the last day's mean error (a weather-driven level shift that lasts
    days, fading over about a week), the last step's deviation from it (decaying at the AR(1)
    rate of the recent errors), and yesterday's error at the same time of day (a hot day's
    afternoon peak is higher than the average shape), weighted by how well that held lately.
    """
    level = float(np.mean(residuals[-per_day:]))
    centred = residuals - level
    phi = _regression_slope(centred[:-1], centred[1:])
    beta = _regression_slope(centred[:-per_day], centred[per_day:]) if len(centred) > 2 * per_day else 0.0
    steps = np.arange(1, horizon + 1)
    path = level * np.exp(-steps / (7 * per_day)) + centred[-1] * phi ** steps
    same_time_yesterday = np.zeros(horizon)
    reach = min(horizon, per_day)
    same_time_yesterday[:reach] = centred[len(centred) - per_day:len(centred) - per_day + reach]
    # Only where the AR(1) term has faded: near steps already carry the latest error.
    return path + beta * same_time_yesterday * (1.0 - phi ** steps)


def _regression_slope(x: np.ndarray, y: np.ndarray) -> float:
    denom = float(np.dot(x, x))
    slope = float(np.dot(x, y) / denom) if denom > 0 else 0.0
    return min(max(slope, 0.0), 0.99)
