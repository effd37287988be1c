"""Rolling-origin day-ahead evaluation against the baselines every planner already has.

At each origin (a UTC midnight) the model sees only the load before it and forecasts the next
day. By default the origins are every day of the last four weeks, so every weekday is scored
as often as every other, and the report breaks the error down by weekday. The naive baselines
get the same information: the same step yesterday and the same step last week. Under "auto"
each candidate (Holt-Winters with a weekly season among them) is scored on the same origins
too, and the share of actuals inside the prediction interval is reported: a forecast that
cannot beat those, or whose 80% interval does not cover about 80%, is not worth running.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from collector.forecasting.executor import ForecastJob, run_forecast_jobs
from collector.forecasting.forecast import align_temperature
from collector.forecasting.selection import HISTORY_DAYS_NEEDED, WINDOW_DAYS, CandidatePaths, candidate_paths, choice_interval, choose
from collector.forecasting.series import SUPPORTED_FREQS, SeriesError, as_load_series, steps_per_day
from collector.forecasting.types import AUTO_CANDIDATES, ForecastError, ForecastOptions

__all__ = ["BacktestReport", "MethodScore", "backtest_day_ahead", "mape", "smape", "WEEKDAYS", "DEFAULT_WEEKS"]

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Default backtest: a day-ahead forecast from every midnight of the last four weeks.
DEFAULT_WEEKS = 4


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
    candidates: dict[str, MethodScore] = field(default_factory=dict)
    by_weekday: dict[str, dict[str, float]] = field(default_factory=dict)   # method -> weekday -> MAPE
    interval_width: float = 0.8
    interval_coverage: float | None = None
    folds_with_temperature: int = 0                 # folds whose forecast used the temperature regressor

    @property
    def beats_baselines(self) -> bool:
        return self.model.mape < min(self.same_hour_yesterday.mape, self.same_hour_last_week.mape)

    def as_dict(self) -> dict:
        return {"series": self.series, "folds": self.folds, "freq": self.freq,
                "model": self.model.as_dict(), "same_hour_yesterday": self.same_hour_yesterday.as_dict(),
                "same_hour_last_week": self.same_hour_last_week.as_dict(),
                "candidates": {m: s.as_dict() for m, s in self.candidates.items()},
                "by_weekday": {m: {d: round(v, 3) for d, v in row.items()} for m, row in self.by_weekday.items()},
                "interval_width": self.interval_width,
                "interval_coverage": None if self.interval_coverage is None else round(self.interval_coverage, 4),
                "folds_with_temperature": self.folds_with_temperature,
                "fit_seconds_mean": round(self.fit_seconds_mean, 3),
                "fit_seconds_max": round(self.fit_seconds_max, 3),
                "predict_seconds_mean": round(self.predict_seconds_mean, 3),
                "models_used": self.models_used, "beats_baselines": self.beats_baselines,
                "origins": self.origins, "notes": self.notes}

    def table(self) -> str:
        rows = [("method", "MAPE %", "sMAPE %", "peak err %", "peak hour off h")]
        scores = [self.model, self.same_hour_yesterday, self.same_hour_last_week, *self.candidates.values()]
        for s in scores:
            rows.append((s.method, f"{s.mape:.2f}", f"{s.smape:.2f}", f"{s.peak_error_pct:.2f}",
                         f"{s.peak_hour_offset_h:.2f}"))
        lines = _aligned(rows)
        lines.append("")
        lines.extend(self.weekday_table().splitlines())
        lines.append("")
        if self.interval_coverage is not None:
            lines.append(f"{self.interval_width:.0%} prediction interval covered {self.interval_coverage:.1%} of actuals")
        if self.folds_with_temperature:
            lines.append(f"{self.folds_with_temperature} of {self.folds} folds used temperature")
        lines.append(f"{self.folds} day-ahead folds on {self.series}; fit time per series "
                     f"mean {self.fit_seconds_mean:.2f} s, max {self.fit_seconds_max:.2f} s; models {self.models_used}")
        return "\n".join(lines)

    def weekday_table(self) -> str:
        """MAPE % per weekday of the forecast day (columns) for each method (rows)."""
        days = [d for d in WEEKDAYS if any(d in row for row in self.by_weekday.values())]
        rows = [("MAPE % by weekday", *days)]
        for method, row in self.by_weekday.items():
            rows.append((method, *(f"{row[d]:.2f}" if d in row else "-" for d in days)))
        return "\n".join(_aligned(rows))


def _aligned(rows: list[tuple]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def backtest_day_ahead(series: pd.Series, *, folds: int | None = None, every_days: int = 1,
                       weeks: int = DEFAULT_WEEKS, end: pd.Timestamp | None = None,
                       options: ForecastOptions = ForecastOptions(), executor: Executor | None = None,
                       name: str = "series", temperature: pd.Series | None = None,
                       progress: Callable[[str], None] | None = None) -> BacktestReport:
    """Evaluate day-ahead forecasts from ``folds`` origins ``every_days`` apart ending at ``end``.

    By default the origins are every midnight of the last ``weeks`` weeks (``folds = 7 * weeks``).
    The last origin is the last midnight with a full day of actuals after it (or ``end``).
    Each origin needs eight days of history before it for the baselines.
    """
    folds = 7 * weeks if folds is None else folds
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
    temp = None
    notes: list[str] = []
    if temperature is not None:
        temp, reason = align_temperature(temperature, series.index, per_day, freq)
        if temp is None:
            notes.append(f"backtest made without temperature: {reason}")
    actuals = [series.reindex(pd.date_range(o, periods=per_day, freq=freq)).to_numpy() for o in origins]
    yesterday = [series.reindex(pd.date_range(o - pd.Timedelta(days=1), periods=per_day, freq=freq)).to_numpy()
                 for o in origins]
    last_week = [series.reindex(pd.date_range(o - pd.Timedelta(days=7), periods=per_day, freq=freq)).to_numpy()
                 for o in origins]
    if options.model in ("prophet", "ets"):
        run = _fixed_model(series, origins, per_day, options, temp, executor, name, progress)
    else:
        run = _chosen_models(series, origins, per_day, options, temp, executor, name, progress)
    predicted, lower, upper, chosen, candidate_paths_at, fit_times, predict_times, run_notes, with_temp = run
    notes.extend(n for n in run_notes if n not in notes)
    models_used: dict[str, int] = {}
    for m in chosen:
        models_used[m] = models_used.get(m, 0) + 1
    candidates = {}
    by_weekday = {"forecast": _by_weekday(origins, actuals, predicted),
                  "same_hour_last_week": _by_weekday(origins, actuals, last_week),
                  "same_hour_yesterday": _by_weekday(origins, actuals, yesterday)}
    for model, paths in candidate_paths_at.items():
        if all(p is not None for p in paths):
            candidates[model] = _score(model, actuals, paths, per_day)
            by_weekday[model] = _by_weekday(origins, actuals, paths)
    a = np.concatenate(actuals)
    coverage = float(np.mean((a >= np.concatenate(lower)) & (a <= np.concatenate(upper))))
    return BacktestReport(
        series=name, folds=len(origins), freq=freq,
        model=_score("forecast", actuals, predicted, per_day),
        same_hour_yesterday=_score("same_hour_yesterday", actuals, yesterday, per_day),
        same_hour_last_week=_score("same_hour_last_week", actuals, last_week, per_day),
        fit_seconds_mean=float(np.mean(fit_times)), fit_seconds_max=float(np.max(fit_times)),
        models_used=models_used, predict_seconds_mean=float(np.mean(predict_times)),
        origins=[o.isoformat() for o in origins], notes=notes, candidates=candidates, by_weekday=by_weekday,
        interval_width=options.interval_width, interval_coverage=coverage, folds_with_temperature=with_temp)


def _fixed_model(series, origins, per_day, options, temperature, executor, name, progress):
    """One named model (Prophet or ETS) refitted at every origin, with its own interval."""
    jobs = []
    for origin in origins:
        history = series[series.index < origin]
        temp = None
        if temperature is not None:
            temp = temperature[temperature.index < origin + pd.Timedelta(days=1)]
        jobs.append(ForecastJob("backtest", origin.isoformat(), history, per_day, temp, options))
    if progress:
        progress(f"backtest {name}: fitting {len(jobs)} folds")
    outcomes = run_forecast_jobs(jobs, executor)
    predicted, lower, upper, chosen, fit_times, predict_times, notes = [], [], [], [], [], [], []
    with_temp = 0
    for outcome in outcomes:
        if outcome.forecast is None:
            raise ForecastError(f"fold {outcome.key}: {outcome.error}")
        frame = outcome.forecast.frame
        predicted.append(frame["yhat"].to_numpy())
        lower.append(frame["yhat_lower"].to_numpy())
        upper.append(frame["yhat_upper"].to_numpy())
        chosen.append(outcome.forecast.model)
        fit_times.append(outcome.forecast.fit_seconds)
        predict_times.append(outcome.forecast.predict_seconds)
        notes.extend(n for n in outcome.forecast.notes if n not in notes)
        with_temp += int(outcome.forecast.used_temperature)
    return predicted, lower, upper, chosen, {}, fit_times, predict_times, notes, with_temp


def _paths_job(job: tuple) -> CandidatePaths:
    series, origins, per_day, options, temperature, models = job
    return candidate_paths(series, origins, [per_day] * len(origins), options, temperature, models)


def _chosen_models(series, origins, per_day, options, temperature, executor, name, progress):
    """Every candidate at every origin and the window before it; the choice made as "auto" makes it."""
    if options.model == "auto":
        models = options.candidates
    elif options.model == "ensemble":
        models = AUTO_CANDIDATES
    else:
        models = (options.model,)
    needed = sorted({o - pd.Timedelta(days=k) for o in origins for k in range(2 * WINDOW_DAYS + 1)})
    needed = [o for o in needed if o - pd.Timedelta(days=8) >= series.index[0]]
    # Runs of consecutive days, at most 15 each (one forecast's selection window): one job each.
    chunks: list[list[pd.Timestamp]] = []
    for o in needed:
        if chunks and o - chunks[-1][-1] == pd.Timedelta(days=1) and len(chunks[-1]) < 2 * WINDOW_DAYS + 1:
            chunks[-1].append(o)
        else:
            chunks.append([o])
    keep = pd.Timedelta(days=max(options.max_history_days, HISTORY_DAYS_NEEDED) + 1)
    jobs = [(series[(series.index >= c[0] - keep) & (series.index < c[-1])], c, per_day, options,
             temperature, models) for c in chunks]
    if progress:
        progress(f"backtest {name}: {len(needed)} origins x {len(models)} candidate models in {len(jobs)} jobs")
    started = time.perf_counter()
    results = list(executor.map(_paths_job, jobs)) if executor is not None else [_paths_job(j) for j in jobs]
    wall = time.perf_counter() - started
    paths = CandidatePaths(needed, {m: [] for m in models}, {m: 0.0 for m in models})
    notes: list[str] = []
    for r in results:
        for m in models:
            paths.forecasts[m].extend(r.forecasts[m])
            paths.fit_seconds[m] += r.fit_seconds[m]
        notes.extend(n for n in r.notes if n not in notes)
    freq = series.index.freqstr
    day_actuals = [series.reindex(pd.date_range(o, periods=per_day, freq=freq)).to_numpy() for o in needed]
    position = {o: i for i, o in enumerate(needed)}
    predicted, lower, upper, chosen = [], [], [], []
    with_temp = 0
    at_origin: dict[str, list] = {m: [] for m in models}
    for origin in origins:
        i = position[origin]
        choice = choose(paths, day_actuals, i)     # counts only days measured before `origin`
        yhat = np.clip(choice.forecast[:per_day], 0.0, None)
        try:
            lo, hi = choice_interval(choice, yhat, options.interval_width, per_day)
        except ForecastError:
            lo, hi = yhat * 0.9, yhat * 1.1
            note = "some folds had too few past errors to calibrate an interval (used +-10%)"
            if note not in notes:
                notes.append(note)
        predicted.append(yhat)
        lower.append(lo)
        upper.append(hi)
        chosen.append(choice.model)
        with_temp += int(temperature is not None and (choice.model == "prophet"
                                                      or bool(choice.weights and "prophet" in choice.weights)))
        for m in models:
            at_origin[m].append(paths.forecasts[m][i])
    per_series = sum(paths.fit_seconds.values()) / max(1, len(needed)) * (2 * WINDOW_DAYS + 1)
    if progress:
        progress(f"backtest {name}: candidates took {wall:.1f} s wall")
    return predicted, lower, upper, chosen, at_origin, [per_series], [0.0], notes, with_temp


def _by_weekday(origins: list[pd.Timestamp], actuals: list[np.ndarray], predicted: list[np.ndarray]) -> dict:
    out = {}
    for d, day in enumerate(WEEKDAYS):
        idx = [i for i, o in enumerate(origins) if o.day_of_week == d]
        if idx:
            out[day] = mape(np.concatenate([actuals[i] for i in idx]), np.concatenate([predicted[i] for i in idx]))
    return out


def _score(method: str, actuals: list[np.ndarray], predicted: list[np.ndarray], per_day: int) -> MethodScore:
    a = np.concatenate(actuals)
    p = np.concatenate(predicted)
    peak_err, peak_off = [], []
    steps_per_hour = per_day / 24
    for act, pred in zip(actuals, predicted):
        peak_err.append(abs(pred.max() - act.max()) / abs(act.max()) * 100 if act.max() else 0.0)
        peak_off.append(abs(int(np.argmax(pred)) - int(np.argmax(act))) / steps_per_hour)
    return MethodScore(method, mape(a, p), smape(a, p), float(np.mean(peak_err)), float(np.mean(peak_off)))
