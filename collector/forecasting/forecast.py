"""What a forecast is, and which model makes it.

:func:`forecast_load` is the one entry point the jobs, the API, the backtest and the bench
call. It picks Prophet when the history is long enough to learn weekly shapes and the
statsmodels exponential-smoothing fallback otherwise, and it records every compromise (no
weather, fallback model) in ``Forecast.notes`` so a planner reading the number knows what
it rests on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from collector.forecasting.series import SeriesError, as_load_series, steps_per_day
from gridsight.errors import GridsightError

__all__ = ["Forecast", "ForecastError", "ForecastOptions", "forecast_load", "MIN_PROPHET_DAYS"]

#: Below this much history Prophet cannot separate weekly from daily shape; the fallback is better.
MIN_PROPHET_DAYS = 14


class ForecastError(GridsightError, ValueError):
    """A forecast that cannot be made with the given inputs; the message says which input."""


@dataclass(frozen=True)
class ForecastOptions:
    """Choices a utility tunes per deployment; the defaults suit feeder and system load."""

    country: str | None = "US"          # public holidays of this ISO country code
    interval_width: float = 0.8         # central prediction interval
    model: str = "auto"                 # "auto" | "prophet" | "ets"
    max_history_days: int = 400         # fit time grows with history; 400 days carry the yearly shape
    residual_correction: bool = True    # carry the recent level error forward (weather persistence)

    def __post_init__(self) -> None:
        if not 0.0 < self.interval_width < 1.0:
            raise ForecastError(f"interval_width must be between 0 and 1, got {self.interval_width}")
        if self.model not in ("auto", "prophet", "ets"):
            raise ForecastError(f"model must be auto, prophet or ets, got {self.model!r}")
        if self.max_history_days < 2:
            raise ForecastError(f"max_history_days must be at least 2, got {self.max_history_days}")


@dataclass(frozen=True)
class Forecast:
    """Predicted load per future step with its prediction interval.

    ``frame`` is indexed by UTC step start and has columns ``yhat``, ``yhat_lower``,
    ``yhat_upper`` in the history's unit (kWh per step, or MW for system load).
    """

    frame: pd.DataFrame
    model: str
    model_version: str
    freq: str
    interval_width: float
    fit_seconds: float
    used_temperature: bool = False
    predict_seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def horizon(self) -> int:
        return len(self.frame)

    def peak(self) -> dict:
        """The predicted peak step: what capacity planning reads first."""
        ts = self.frame["yhat"].idxmax()
        row = self.frame.loc[ts]
        return {"ts": ts.isoformat(), "yhat": float(row.yhat), "yhat_upper": float(row.yhat_upper)}

    def with_notes(self, *notes: str) -> "Forecast":
        return dataclasses.replace(self, notes=self.notes + tuple(notes))


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
    history = history.iloc[-options.max_history_days * per_day:]
    days = len(history) / per_day
    if days < 2:
        raise ForecastError(f"history: need at least 2 days of data to forecast, got {days:.1f}")
    notes: list[str] = []
    model = options.model
    if model == "auto":
        model = "prophet" if days >= MIN_PROPHET_DAYS else "ets"
        if model == "ets":
            notes.append(f"history of {days:.1f} days is short for Prophet (< {MIN_PROPHET_DAYS}); "
                         "used the exponential-smoothing fallback")
    if model == "ets":
        from collector.forecasting.ets_model import fit_predict_ets
        forecast = fit_predict_ets(history, horizon, freq, options)
        if temperature is not None:
            notes.append("temperature ignored: the fallback model has no regressors")
        return forecast.with_notes(*notes)
    from collector.forecasting.prophet_model import fit_predict_prophet
    temp = None
    if temperature is not None:
        temp, reason = _aligned_temperature(temperature, history.index, horizon, freq)
        if temp is None:
            notes.append(f"forecast made without temperature: {reason}")
    forecast = fit_predict_prophet(history, horizon, freq, options, temperature=temp)
    return forecast.with_notes(*notes)


def _aligned_temperature(temperature: pd.Series, index: pd.DatetimeIndex, horizon: int,
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
