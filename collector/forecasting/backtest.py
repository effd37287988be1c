"""Rolling-origin day-ahead evaluation against the two baselines every planner already has.

At each origin (a UTC midnight) the model sees only the load before it and forecasts the next
day. The naive baselines get the same information: the same hour yesterday and the same hour
last week. A forecast that cannot beat those is not worth running.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from collector.forecasting.executor import ForecastJob, run_forecast_jobs
from collector.forecasting.forecast import ForecastError, ForecastOptions
from collector.forecasting.series import SUPPORTED_FREQS, SeriesError, as_load_series, steps_per_day

__all__ = ["BacktestReport", "MethodScore", "backtest_day_ahead", "mape", "smape"]


def mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute percentage error, %, over steps with non-zero actual load."""
    mask = actual != 0
    return float(np.mean(np.abs(predicted[mask] - actual[mask]) / np.abs(actual[mask])) * 100)


def smape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Symmetric MAPE, % (0..200): defined even when a meter reads zero."""
    denom = np.abs(actual) + np.abs(predicted)
    mask = denom != 0
    return float(np.mean(2 * np.abs(predicted[mask] - actual[mask]) / denom[mask]) * 100)


@dataclass(frozen=True)
class MethodScore:
    """Scores of one method over all folds.

    ``peak_error_pct`` is the error in each day's peak load (the number capacity is planned
    on); ``peak_hour_offset_h`` how many hours the predicted peak is from the actual one.
    """

    method: str
    mape: float
    smape: float
    peak_error_pct: float
    peak_hour_offset_h: float

    def as_dict(self) -> dict:
        return {"method": self.method, "mape": round(self.mape, 3), "smape": round(self.smape, 3),
                "peak_error_pct": round(self.peak_error_pct, 3),
                "peak_hour_offset_h": round(self.peak_hour_offset_h, 3)}


@dataclass(frozen=True)
class BacktestReport:
    series: str
    folds: int
    freq: str
    model: MethodScore
    same_hour_yesterday: MethodScore
    same_hour_last_week: MethodScore
    fit_seconds_mean: float
    fit_seconds_max: float
    models_used: dict[str, int]
    predict_seconds_mean: float = 0.0
    origins: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def beats_baselines(self) -> bool:
        return self.model.mape < min(self.same_hour_yesterday.mape, self.same_hour_last_week.mape)

    def as_dict(self) -> dict:
        return {"series": self.series, "folds": self.folds, "freq": self.freq,
                "model": self.model.as_dict(), "same_hour_yesterday": self.same_hour_yesterday.as_dict(),
                "same_hour_last_week": self.same_hour_last_week.as_dict(),
                "fit_seconds_mean": round(self.fit_seconds_mean, 3),
                "fit_seconds_max": round(self.fit_seconds_max, 3),
                "predict_seconds_mean": round(self.predict_seconds_mean, 3),
                "models_used": self.models_used, "beats_baselines": self.beats_baselines,
                "origins": self.origins, "notes": self.notes}

    def table(self) -> str:
        rows = [("method", "MAPE %", "sMAPE %", "peak err %", "peak hour off h")]
        for s in (self.model, self.same_hour_yesterday, self.same_hour_last_week):
            rows.append((s.method, f"{s.mape:.2f}", f"{s.smape:.2f}", f"{s.peak_error_pct:.2f}",
                         f"{s.peak_hour_offset_h:.2f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(f"{self.folds} day-ahead folds on {self.series}; fit time per series "
                     f"mean {self.fit_seconds_mean:.2f} s, max {self.fit_seconds_max:.2f} s; models {self.models_used}")
        return "\n".join(lines)


def backtest_day_ahead(series: pd.Series, *, folds: int = 10, every_days: int = 7,
                       end: pd.Timestamp | None = None, options: ForecastOptions = ForecastOptions(),
                       executor: Executor | None = None, name: str = "series",
                       temperature: pd.Series | None = None,
                       progress: Callable[[str], None] | None = None) -> BacktestReport:
    """Evaluate ``folds`` day-ahead forecasts, origins ``every_days`` apart ending at ``end``.

    The last origin is the last midnight with a full day of actuals after it (or ``end``).
    Each origin needs a week of history before it for the weekly baseline.
    """
    if folds < 1:
        raise ForecastError(f"folds must be at least 1, got {folds}")
    if every_days < 1:
        raise ForecastError(f"every_days must be at least 1, got {every_days}")
    try:
        series = as_load_series(series)
    except SeriesError as exc:
        raise ForecastError(f"series: {exc}") from None
    freq = series.index.freqstr
    per_day = steps_per_day(freq)
    last_origin = (series.index[-1] + pd.Timedelta(seconds=SUPPORTED_FREQS[freq])).floor("D") - pd.Timedelta(days=1)
    if end is not None:
        end = pd.Timestamp(end)
        end = end.tz_localize("UTC") if end.tz is None else end.tz_convert("UTC")
        last_origin = min(last_origin, end.floor("D"))
    origins = [last_origin - pd.Timedelta(days=every_days * i) for i in range(folds)][::-1]
    earliest = series.index[0] + pd.Timedelta(days=8)
    origins = [o for o in origins if o >= earliest]
    if not origins:
        raise ForecastError(f"series {name}: need at least 9 days of data for a day-ahead backtest")
    jobs, actuals, yesterday, last_week = [], [], [], []
    for origin in origins:
        history = series[series.index < origin]
        window = pd.date_range(origin, periods=per_day, freq=freq, tz="UTC")
        actuals.append(series.reindex(window).to_numpy())
        yesterday.append(series.reindex(window - pd.Timedelta(days=1)).to_numpy())
        last_week.append(series.reindex(window - pd.Timedelta(days=7)).to_numpy())
        jobs.append(ForecastJob("backtest", origin.isoformat(), history, per_day, temperature, options))
    if progress:
        progress(f"backtest {name}: fitting {len(jobs)} folds")
    outcomes = run_forecast_jobs(jobs, executor)
    predicted, fit_times, predict_times, models, notes = [], [], [], {}, []
    for outcome in outcomes:
        if outcome.forecast is None:
            raise ForecastError(f"fold {outcome.key}: {outcome.error}")
        predicted.append(outcome.forecast.frame["yhat"].to_numpy())
        fit_times.append(outcome.forecast.fit_seconds)
        predict_times.append(outcome.forecast.predict_seconds)
        models[outcome.forecast.model] = models.get(outcome.forecast.model, 0) + 1
        notes.extend(n for n in outcome.forecast.notes if n not in notes)
    return BacktestReport(
        series=name, folds=len(origins), freq=freq,
        model=_score("forecast", actuals, predicted, per_day),
        same_hour_yesterday=_score("same_hour_yesterday", actuals, yesterday, per_day),
        same_hour_last_week=_score("same_hour_last_week", actuals, last_week, per_day),
        fit_seconds_mean=float(np.mean(fit_times)), fit_seconds_max=float(np.max(fit_times)),
        models_used=models, predict_seconds_mean=float(np.mean(predict_times)), origins=[o.isoformat() for o in origins], notes=notes)


def _score(method: str, actuals: list[np.ndarray], predicted: list[np.ndarray], per_day: int) -> MethodScore:
    a = np.concatenate(actuals)
    p = np.concatenate(predicted)
    peak_err, peak_off = [], []
    steps_per_hour = per_day / 24
    for act, pred in zip(actuals, predicted):
        peak_err.append(abs(pred.max() - act.max()) / abs(act.max()) * 100 if act.max() else 0.0)
        peak_off.append(abs(int(np.argmax(pred)) - int(np.argmax(act))) / steps_per_hour)
    return MethodScore(method, mape(a, p), smape(a, p), float(np.mean(peak_err)), float(np.mean(peak_off)))
