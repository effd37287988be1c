"""Choosing a model per series by its own recent day-ahead backtest, and calibrating its interval.

At a forecast origin every candidate (Prophet, the lag regression, Holt-Winters, the scaled and
plain seasonal naive) is run day-ahead from each of the previous ``2 * window`` days, as if the forecast had
been made then, and scored against what was then measured. The inverse-error ensemble is
scored the same way, each of its days weighted by the errors of the window before that day. The
model with the lowest error over the last ``window`` days is chosen; the record says which,
with every candidate's error, so a planner can see why.

The prediction interval comes from the chosen model's own day-ahead errors over the last
``CALIBRATION_DAYS`` days (split-conformal on relative errors scaled by each step of the day's
typical error, widened by ``INTERVAL_INFLATION`` for what those days cannot show), so an 80%
interval covers about 80% of what follows, whatever the model's own error assumptions, and is
wide at the hours the model misses most. Nothing is negative: load is not.

Prophet is slow to fit, so within a run of consecutive origins it is refitted every
``PROPHET_REFIT_DAYS`` and only re-predicted (with its recent-error correction) at the origins
between; the cheap models (the lag regression, Holt-Winters, the naive ones: milliseconds to a
tenth of a second each) are refitted at every origin.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from collector.forecasting import baselines, regression_model
from collector.forecasting.calendar import holiday_dates
from collector.forecasting.series import steps_per_day
from collector.forecasting.types import ForecastError, ForecastOptions

__all__ = ["CandidatePaths", "Choice", "candidate_paths", "choose", "interval_from_residuals", "WINDOW_DAYS",
           "choice_interval", "step_scale", "INTERVAL_METHOD", "INTERVAL_INFLATION", "CALIBRATION_DAYS",
           "ENSEMBLE_MEMBERS", "PROPHET_REFIT_DAYS", "MIN_PROPHET_DAYS", "HISTORY_DAYS_NEEDED"]

#: Days of errors a choice (and an ensemble's weights) rests on: every weekday three times. Over
#: a single week the choice flipped between models on noise; on the training days (bench/forecast.py
#: --train) 21 days chose better than 7, 14 or 28 on both benchmark series (PJM East 3.26, 3.15,
#: 3.12, 3.13 %; half-hourly 1.19, 1.18, 1.16, 1.18 %; docs/benchmarks.md).
WINDOW_DAYS = 21
#: Days of the chosen model's errors its interval is calibrated on (see interval_from_residuals).
CALIBRATION_DAYS = 28
#: The ensemble combines this many of the best candidates of the window, weighted by 1 / MAPE**2.
ENSEMBLE_MEMBERS = 2
ENSEMBLE_POWER = 2.0
#: A single model is chosen over the ensemble only when its window MAPE is this much lower (0:
#: whichever is lower). Members, power and margin were tuned on the training part of the
#: benchmark series (docs/benchmarks.md); with the lag regression among the candidates a
#: margin in favour of the ensemble (the M4 finding, Makridakis et al., Int. J. Forecasting
#: 36(1), 2020) no longer paid: the regression is usually clearly best.
SINGLE_MODEL_MARGIN = 0.0
#: Prophet's refit cadence inside a run of consecutive origins: a forecast's selection backtest
#: (2 * WINDOW_DAYS + 1 origins) costs one Prophet fit (the slow part, ~15 s for 400 hourly
#: days), not twenty-nine; the origins after a fit re-predict with the newest errors.
PROPHET_REFIT_DAYS = 2 * WINDOW_DAYS + 1
#: The conformal quantiles of the last weeks' errors are widened by this factor. The days that
#: follow a window are not exchangeable with it (the weather turns, a regime changes) and the
#: window's errors are those of the model that was best on it, so the raw quantiles under-cover.
#: Chosen on the training days only (bench/forecast.py --train: PJM East every day of 2014-08 ..
#: 2016-08, and the half-hourly series' five tuning weeks, cheap candidates): the smallest of
#: 1.0, 1.05, 1.1, ... whose 80 % interval covered at least 80 % on both (by step of the day:
#: 1.0: 77.5 % / 82.0 %; 1.05: 79.5 % / 83.3 %; 1.1: 80.9 % / 84.7 %; the 95 % interval: 94.0 % on PJM).
INTERVAL_INFLATION = 1.1
#: "pooled": one pair of conformal quantiles for every step of the day; "by_step": the errors
#: divided by their step of the day's typical size first (see interval_from_residuals). On the
#: training days by step scored better (Winkler interval score of the 80 % interval, % of load:
#: PJM 15.7 against 17.6, half-hourly 5.8 against 5.9) at the same coverage.
INTERVAL_METHOD = "by_step"
#: Below this much history Prophet cannot separate weekly from daily shape.
MIN_PROPHET_DAYS = 14

_CHEAP = {"lag_regression": regression_model.lag_regression, "holt_winters": baselines.holt_winters,
          "scaled_naive": baselines.scaled_naive, "seasonal_naive": baselines.seasonal_naive}
#: History a candidate_paths caller should pass: the regression reads earlier years' seasons.
HISTORY_DAYS_NEEDED = regression_model.HISTORY_DAYS


@dataclass
class CandidatePaths:
    """Each candidate's forecast from each origin (None where it could not be made)."""

    origins: list[pd.Timestamp]
    forecasts: dict[str, list[np.ndarray | None]]
    fit_seconds: dict[str, float] = field(default_factory=dict)
    used_temperature: bool = False
    notes: list[str] = field(default_factory=list)


def candidate_paths(series: pd.Series, origins: Sequence[pd.Timestamp], horizons: Sequence[int],
                    options: ForecastOptions, temperature: pd.Series | None = None,
                    models: Sequence[str] | None = None) -> CandidatePaths:
    """Forecast ``horizons[i]`` steps from ``origins[i]`` with every candidate, seeing only the past.

    ``series`` is a regular UTC load series; ``temperature`` (Prophet only) is on its grid
    extended by the longest horizon.
    """
    freq = series.index.freqstr
    per_day = steps_per_day(freq)
    models = list(models or options.candidates)
    holidays = holiday_dates(options.country, series.index[0], origins[-1] + pd.Timedelta(days=40))
    out = CandidatePaths(list(origins), {m: [] for m in models}, {m: 0.0 for m in models},
                         used_temperature=temperature is not None and "prophet" in models)
    prophet_fit, prophet_fitted_at = None, None
    for origin, horizon in zip(origins, horizons):
        past = series[series.index < origin]
        history = past.iloc[-options.max_history_days * per_day:]
        days = len(history) / per_day
        for model in models:
            started = time.perf_counter()
            try:
                if model == "prophet":
                    if days < MIN_PROPHET_DAYS:
                        raise ForecastError("short history")
                    from collector.forecasting.prophet_model import fit_prophet, predict_prophet

                    if prophet_fit is None or origin - prophet_fitted_at >= pd.Timedelta(days=PROPHET_REFIT_DAYS):
                        prophet_fit = fit_prophet(history, freq, options, temperature)
                        prophet_fitted_at = origin
                    frame = predict_prophet(prophet_fit, history, horizon, freq, options, temperature,
                                            with_interval=False)
                    path = frame["yhat"].to_numpy()
                else:
                    seen = past.iloc[-regression_model.HISTORY_DAYS * per_day:] if model == "lag_regression" else history
                    path = _CHEAP[model](seen.to_numpy(), seen.index, horizon, per_day, holidays)
                out.forecasts[model].append(np.clip(path, 0.0, None))
            except (ForecastError, ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
                out.forecasts[model].append(None)
                if not isinstance(exc, ForecastError):
                    note = f"{model} failed at {origin:%Y-%m-%d}: {type(exc).__name__}"
                    if note not in out.notes:
                        out.notes.append(note)
            out.fit_seconds[model] += time.perf_counter() - started
    return out


@dataclass(frozen=True)
class Choice:
    """The model chosen at one origin, and why."""

    model: str
    forecast: np.ndarray
    window_mape: dict[str, float]
    weights: dict[str, float] | None
    residuals: np.ndarray            # relative day-ahead errors (actual / forecast - 1) of the chosen model
    window_days: int
    residual_steps: np.ndarray | None = None   # step of the day (0 .. per_day - 1) of each residual

    def reason(self) -> str:
        ranked = sorted(self.window_mape.items(), key=lambda kv: kv[1])
        lead = ("lowest day-ahead MAPE over the last" if ranked[0][0] == self.model else
                f"ensemble within {SINGLE_MODEL_MARGIN:.0%} of the best single model's day-ahead MAPE over the last")
        text = f"{lead} {self.window_days} days: " + ", ".join(f"{m} {v:.2f}%" for m, v in ranked)
        if self.weights:
            text += "; ensemble weights " + ", ".join(f"{m} {w:.2f}" for m, w in self.weights.items())
        return text

    def as_dict(self) -> dict:
        return {"chosen": self.model, "reason": self.reason(), "window_days": self.window_days,
                "window_mape": {m: round(v, 4) for m, v in self.window_mape.items()},
                "weights": {m: round(w, 4) for m, w in self.weights.items()} if self.weights else None}


def _day_mape(forecast: np.ndarray | None, actual: np.ndarray) -> float:
    if forecast is None or np.isnan(actual).any():
        return math.nan
    n = min(len(forecast), len(actual))
    a, f = actual[:n], forecast[:n]
    mask = a != 0
    return float(np.mean(np.abs(f[mask] - a[mask]) / np.abs(a[mask])) * 100) if mask.any() else math.nan


def _ensemble(forecasts: dict[str, np.ndarray | None], errors: dict[str, float]) -> tuple[np.ndarray | None, dict]:
    usable = sorted((e, m) for m, e in errors.items() if np.isfinite(e) and forecasts.get(m) is not None)
    usable = usable[:ENSEMBLE_MEMBERS]
    if len(usable) < 2:
        return None, {}
    raw = {m: 1.0 / max(e, 1e-6) ** ENSEMBLE_POWER for e, m in usable}
    total = sum(raw.values())
    weights = {m: w / total for m, w in raw.items()}
    n = min(len(forecasts[m]) for m in weights)
    return sum(w * forecasts[m][:n] for m, w in weights.items()), weights


def choose(paths: CandidatePaths, actuals: Sequence[np.ndarray], at: int, window: int = WINDOW_DAYS,
           calibration_days: int = CALIBRATION_DAYS) -> Choice:
    """The choice at origin index ``at`` from the errors of the origins before it.

    ``actuals[i]`` is the day after ``origins[i]`` (NaN where not yet measured); only origins
    whose whole day lies before ``origins[at]`` count.
    """
    origin = paths.origins[at]
    models = list(paths.forecasts)
    per_day = len(actuals[0])
    # Day-ahead errors of every candidate at every origin that is fully known at `origin`.
    known = [i for i in range(at) if paths.origins[i] + pd.Timedelta(days=1) <= origin][-2 * window:]
    errors = {m: {i: _day_mape(paths.forecasts[m][i], actuals[i]) for i in known} for m in models}
    ens_forecast: dict[int, np.ndarray] = {}
    at_weights: dict[str, float] | None = None
    for i in known + [at]:
        before = [j for j in known if paths.origins[j] + pd.Timedelta(days=1) <= paths.origins[i]][-window:]
        if len(before) < 3:
            continue
        week = {m: float(np.nanmean([errors[m][j] for j in before])) if any(np.isfinite(errors[m][j]) for j in before)
                else math.nan for m in models}
        forecast, weights = _ensemble({m: paths.forecasts[m][i] for m in models}, week)
        if forecast is not None:
            ens_forecast[i] = forecast
            if i == at:
                at_weights = weights
    errors["ensemble"] = {i: _day_mape(ens_forecast.get(i), actuals[i]) for i in known}
    recent = known[-window:]
    # Every model is scored on the same days: those of the window where all compared models have
    # a forecast. A model missing from more than half of the window (a short history) sits out.
    enough = max(min(3, len(recent)), (len(recent) + 1) // 2)
    scored = {}
    for m, errs in errors.items():
        current = ens_forecast.get(at) if m == "ensemble" else paths.forecasts[m][at]
        days = {i for i in recent if np.isfinite(errs[i])}
        if current is not None and len(days) >= enough:
            scored[m] = days
    common = [i for i in recent if all(i in days for days in scored.values())]
    while scored and len(common) < enough:
        scored.pop(min(scored, key=lambda m: len(scored[m])))
        common = [i for i in recent if all(i in days for days in scored.values())]
    window_mape = {m: float(np.mean([errors[m][i] for i in common])) for m in scored}
    recent = common
    if not window_mape:
        raise ForecastError(f"no candidate model has a backtest before {origin:%Y-%m-%d %H:%M}")
    best = min(window_mape, key=window_mape.get)
    if best != "ensemble" and "ensemble" in window_mape \
            and window_mape[best] > window_mape["ensemble"] * (1 - SINGLE_MODEL_MARGIN):
        best = "ensemble"
    forecast = ens_forecast[at] if best == "ensemble" else paths.forecasts[best][at]
    residuals, steps = [], []
    for i in known[-calibration_days:]:
        past = ens_forecast.get(i) if best == "ensemble" else paths.forecasts[best][i]
        if past is None or np.isnan(actuals[i]).any():
            continue
        n = min(len(past), per_day)
        ok = past[:n] > 0
        residuals.append(actuals[i][:n][ok] / past[:n][ok] - 1.0)
        steps.append(np.flatnonzero(ok))
    return Choice(best, forecast, window_mape, at_weights if best == "ensemble" else None,
                  np.concatenate(residuals) if residuals else np.array([]), len(recent),
                  np.concatenate(steps) if steps else np.array([], dtype="int64"))


def choice_interval(choice: Choice, yhat: np.ndarray, width: float, per_day: int, method: str = INTERVAL_METHOD,
                    inflation: float = INTERVAL_INFLATION) -> tuple[np.ndarray, np.ndarray]:
    """The interval of a chosen forecast from its own past errors, by ``method`` ("pooled" or
    "by_step", see ``INTERVAL_METHOD``) widened by ``inflation``."""
    steps = choice.residual_steps if method == "by_step" else None
    return interval_from_residuals(yhat, choice.residuals, width, per_day, inflation=inflation, steps=steps)


def step_scale(residuals: np.ndarray, steps: np.ndarray, per_day: int) -> np.ndarray:
    """Typical size of the relative error at each step of the day: the mean absolute error per
    step, smoothed over the two hours either side (a single day's miss at one hour is noise)."""
    overall = float(np.mean(np.abs(residuals))) if len(residuals) else 0.0
    sums = np.bincount(steps, weights=np.abs(residuals), minlength=per_day)[:per_day]
    counts = np.bincount(steps, minlength=per_day)[:per_day]
    k = max(1, per_day // 12)
    offsets = range(-k, k + 1)
    smooth_sums = sum(np.roll(sums, o) for o in offsets)
    smooth_counts = sum(np.roll(counts, o) for o in offsets)
    scale = np.where(smooth_counts > 0, smooth_sums / np.maximum(smooth_counts, 1), overall)
    return np.maximum(scale, max(overall, 1e-9) * 0.05)


def interval_from_residuals(yhat: np.ndarray, residuals: np.ndarray, width: float,
                            per_day: int, inflation: float = INTERVAL_INFLATION,
                            steps: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split-conformal interval on relative errors, widening with the square root of the lead day.

    The quantiles use the finite-sample level ceil((n + 1) q) / n so a short window does not
    under-cover, and are widened by ``inflation`` (see ``INTERVAL_INFLATION``). With ``steps``
    (the step of the day of each residual, the forecast starting at step 0) the errors are first
    divided by their step's typical size (:func:`step_scale`) and the interval scaled back by it:
    wider at the hours the model misses most (a summer afternoon's peak), narrower at night.
    Bounds are never negative.
    """
    if len(residuals) < 10:
        raise ForecastError("too few past errors to calibrate an interval")
    n = len(residuals)
    lo_q = max(0.0, math.floor((n + 1) * (1 - width) / 2) / n)
    hi_q = min(1.0, math.ceil((n + 1) * (1 + width) / 2) / n)
    step_of = np.arange(len(yhat)) % per_day
    if steps is not None and len(steps) == n:
        scale = step_scale(residuals, steps, per_day)
        lo, hi = np.quantile(residuals / scale[steps], [lo_q, hi_q])
        size = scale[step_of]
    else:
        lo, hi = np.quantile(residuals, [lo_q, hi_q])
        size = np.ones(len(yhat))
    lo, hi = min(lo, 0.0) * inflation, max(hi, 0.0) * inflation
    lead_day = np.arange(len(yhat)) // per_day + 1
    spread = np.sqrt(lead_day) * size
    lower = np.clip(yhat * (1 + lo * spread), 0.0, None)
    upper = np.clip(yhat * (1 + hi * spread), 0.0, None)
    return np.minimum(lower, yhat), np.maximum(upper, yhat)
