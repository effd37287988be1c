"""Forecast benchmark: day-ahead accuracy of the chosen model next to Holt-Winters and the naive baselines.

Two real public series, each on held-out days the model settings were not tuned on:

* PJM East hourly load (MW), the last year of the file (2017-08-03 .. 2018-08-02). The goal's
  "full backtest": 28 origins 13 days apart ending 2018-08-02 (each weekday 4 times), a day-ahead
  (24 h) forecast from each midnight. ``--pjm-daily`` adds every day of that year (365 origins):
  the same protocol with thirteen times the days, a steadier figure. The lag regression's
  settings and the selection's (window, ensemble members, weighting, margin) were chosen on
  every day of 2014-08 .. 2016-08; the held-out year was not used for choosing anything.
* England and Wales half-hourly demand (MW), 5 June .. 27 August 2000 (Taylor 2003, as shipped
  in the pmdarima package): every day of the last four weeks; the settings were checked on the
  five weeks before them. Real half-hourly settlement data, not interpolated hourly data.

Each run backtests, on the same origins and with the same information: the chosen model
("auto": per series and origin, the candidate or ensemble with the lowest day-ahead MAPE over
the previous 21 days), each candidate alone (Prophet, the lag regression, Holt-Winters with a
weekly season, last week scaled to yesterday's level), and last week's and yesterday's values.
It prints MAPE per method, MAPE per weekday, the coverage of the calibrated 80% interval and
the wall time with the machine's load average.

    .venv/bin/python bench/forecast.py --quick      # about a minute on a quiet machine: 14 + 4 origins, 120-day Prophet fits
    .venv/bin/python bench/forecast.py              # 28 + 28 origins, 400-day Prophet fits
    .venv/bin/python bench/forecast.py --pjm-daily  # and every day of PJM's held-out year
    .venv/bin/python bench/forecast.py --train      # the training days only (cheap candidates): what settings were chosen on
    .venv/bin/python bench/forecast.py --train --quick  # the same on PJM's last 112 training days

``--train`` (``--train-coverage`` is the same) is how the settings were chosen: it backtests
only the days they may be chosen on (PJM every day of 2014-08-03 .. 2016-08-01; the
half-hourly series' five weeks before its held-out four) with the cheap candidates (no
Prophet), and prints each candidate's MAPE (the lag regression's previous settings beside its
current ones), the choice's MAPE per selection window, and the 50 %, 80 % and 95 % intervals'
coverage and interval score per method (pooled or per step of the day) and widening factor.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from collector.forecasting import regression_model, selection  # noqa: E402
from collector.forecasting.backtest import BacktestReport, backtest_day_ahead, mape  # noqa: E402
from collector.forecasting.calendar import holiday_dates  # noqa: E402
from collector.forecasting.executor import open_executor  # noqa: E402
from collector.forecasting.series import as_load_series, steps_per_day  # noqa: E402
from collector.forecasting.types import ForecastError, ForecastOptions  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
PJM_CSV = str(DATA / "pjm_east_PJME_hourly_2002_2018.csv.gz")
TAYLOR_CSV = str(DATA / "taylor_england_wales_halfhourly_2000.csv.gz")


def load_csv(path: str) -> pd.Series:
    frame = pd.read_csv(path)
    return pd.Series(frame.iloc[:, 1].to_numpy(dtype="float64"), index=pd.to_datetime(frame.iloc[:, 0]))


def print_report(title: str, report: BacktestReport) -> None:
    print(f"\n{title}")
    rows = [("method", "MAPE %", "sMAPE %", "peak err %")]
    labels = {"forecast": "chosen model (auto)", "holt_winters": "Holt-Winters, weekly season",
              "same_hour_last_week": "seasonal naive (last week)", "same_hour_yesterday": "naive (yesterday)",
              "scaled_naive": "last week x yesterday's level", "prophet": "Prophet alone",
              "seasonal_naive": "seasonal naive, holidays as Sundays",
              "lag_regression": "lag regression (yesterday, last week, day type)"}
    for s in (report.model, *report.candidates.values(), report.same_hour_last_week, report.same_hour_yesterday):
        rows.append((labels.get(s.method, s.method), f"{s.mape:.2f}", f"{s.smape:.2f}", f"{s.peak_error_pct:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()
    print(report.weekday_table())
    print(f"\n{report.interval_width:.0%} interval covered {report.interval_coverage:.1%} of actuals; "
          f"models chosen {report.models_used}")


def summary(report: BacktestReport) -> dict:
    hw = report.candidates.get("holt_winters")
    ours, naive = report.by_weekday["forecast"], report.by_weekday["same_hour_last_week"]
    return {
        "series": report.series, "folds": report.folds, "freq": report.freq,
        "origins": [report.origins[0], report.origins[-1]],
        "chosen_mape": round(report.model.mape, 3),
        "holt_winters_mape": round(hw.mape, 3) if hw else None,
        "seasonal_naive_mape": round(report.same_hour_last_week.mape, 3),
        "yesterday_mape": round(report.same_hour_yesterday.mape, 3),
        "candidates_mape": {m: round(s.mape, 3) for m, s in report.candidates.items()},
        "by_weekday": {m: {d: round(v, 3) for d, v in row.items()} for m, row in report.by_weekday.items()},
        "every_weekday_at_or_below_naive": all(ours[d] <= naive[d] for d in ours),
        "beats_holt_winters": bool(hw and report.model.mape < hw.mape),
        "beats_seasonal_naive": report.model.mape < report.same_hour_last_week.mape,
        "interval_coverage": round(report.interval_coverage, 4), "models_used": report.models_used,
        "wall_s": None,
    }


#: The last day of PJM's training part and the first origin of its held-out year.
PJM_TRAIN_END = "2016-08-01"
PJM_TRAIN_DAYS = 730
CHEAP = ("lag_regression", "holt_winters", "scaled_naive", "seasonal_naive")
FACTORS = (1.0, 1.05, 1.1, 1.15, 1.2)
WIDTHS = (0.5, 0.8, 0.95)
#: Interval methods --train compares: one conformal quantile pair for every step of the day
#: ("pooled"), or errors scaled by their step of the day's typical size first ("by_step").
INTERVAL_METHODS = ("pooled", "by_step")
#: Selection windows --train compares (days of day-ahead errors the choice rests on).
SELECTION_WINDOWS = (7, 14, 21, 28)


def _paths_chunk(job: tuple) -> tuple[selection.CandidatePaths, list]:
    """The cheap candidates' paths at ``origins``, and the lag regression's with its previous settings."""
    series, origins, per_day, options = job
    paths = selection.candidate_paths(series, origins, [per_day] * len(origins), options, None, CHEAP)
    holidays = holiday_dates(options.country, series.index[0], origins[-1] + pd.Timedelta(days=40))
    previous = []
    for origin in origins:
        past = series[series.index < origin].iloc[-regression_model.PREVIOUS_SETTINGS.history_days * per_day:]
        try:
            previous.append(regression_model.lag_regression(past.to_numpy(), past.index, per_day, per_day, holidays,
                                                            regression_model.PREVIOUS_SETTINGS))
        except ForecastError:
            previous.append(None)
    return paths, previous


def _winkler(actual: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: float) -> float:
    """Interval score (Winkler 1972) relative to the actual, %: width plus 2/alpha times each miss.

    Lower is better; it rewards a narrow interval only as long as it keeps covering."""
    alpha = 1 - width
    score = (hi - lo) + 2 / alpha * (np.clip(lo - actual, 0, None) + np.clip(actual - hi, 0, None))
    return float(np.mean(score / actual) * 100)


def train_figures(args, executor, progress) -> dict:
    """Accuracy and interval coverage on the training days only.

    The candidates' day-ahead paths are computed once (the backtest's own window of four
    weeks before each origin included); each origin's choice is made exactly as the backtest
    makes it, and every interval method, width and factor is applied to the same choice. The
    lag regression's previous settings run beside it on the same origins.
    """
    taylor = load_csv(args.halfhourly_csv)
    weeks = args.halfhourly_weeks or 4
    tune_end = taylor.index[-1].tz_localize(None).floor("D") - pd.Timedelta(days=7 * weeks + 1)
    pjm_days = 112 if args.quick else PJM_TRAIN_DAYS    # quick: the last 16 weeks of the training part
    runs = {"pjm_train": (load_csv(args.pjm_csv), pjm_days, pd.Timestamp(PJM_TRAIN_END), "US"),
            "halfhourly_tune": (taylor, 35, tune_end, "GB")}
    out = {}
    for name, (raw, folds, end, country) in runs.items():
        series = as_load_series(raw)
        freq = series.index.freqstr
        per_day = steps_per_day(freq)
        end = end.tz_localize("UTC")
        origins = [end - pd.Timedelta(days=k) for k in range(folds)][::-1]
        needed = [end - pd.Timedelta(days=k) for k in range(folds + 2 * max(SELECTION_WINDOWS))][::-1]
        needed = [o for o in needed if o - pd.Timedelta(days=8) >= series.index[0]]
        options = ForecastOptions(country=country, candidates=CHEAP)
        keep = pd.Timedelta(days=selection.HISTORY_DAYS_NEEDED + 1)
        chunks = [needed[i:i + 30] for i in range(0, len(needed), 30)]
        jobs = [(series[(series.index >= c[0] - keep) & (series.index < c[-1])], c, per_day, options) for c in chunks]
        progress(f"train {name}: {len(needed)} origins x {len(CHEAP)} cheap candidates")
        paths = selection.CandidatePaths(needed, {m: [] for m in CHEAP})
        previous: list = []
        for result, prev in executor.map(_paths_chunk, jobs):
            for m in CHEAP:
                paths.forecasts[m].extend(result.forecasts[m])
            previous.extend(prev)
        actuals = [series.reindex(pd.date_range(o, periods=per_day, freq=freq)).to_numpy() for o in needed]
        keys = [(w, method, f) for w in WIDTHS for method in INTERVAL_METHODS for f in FACTORS]
        inside: dict[tuple, list] = {k: [] for k in keys}
        scores: dict[tuple, list] = {k: [] for k in keys}
        predicted, observed, at = [], [], []
        by_window: dict[int, list] = {w: [] for w in SELECTION_WINDOWS}
        position = {o: i for i, o in enumerate(needed)}
        for origin in origins:
            if origin not in position:
                continue
            choice = selection.choose(paths, actuals, position[origin])
            yhat = np.clip(choice.forecast[:per_day], 0.0, None)
            actual = actuals[position[origin]]
            predicted.append(yhat)
            observed.append(actual)
            at.append(position[origin])
            for window in SELECTION_WINDOWS:
                other = choice if window == selection.WINDOW_DAYS else selection.choose(paths, actuals, position[origin],
                                                                                         window=window)
                by_window[window].append(np.clip(other.forecast[:per_day], 0.0, None))
            if len(choice.residuals) < 10:
                continue
            for w, method, f in keys:
                lo, hi = selection.choice_interval(choice, yhat, w, per_day, method=method, inflation=f)
                inside[(w, method, f)].append((actual >= lo) & (actual <= hi))
                scores[(w, method, f)].append(_winkler(actual, lo, hi, w))
        seen = np.concatenate(observed)
        # each candidate over the origins it could forecast (the regression needs 22 days of history)
        made = {m: [i for i in at if paths.forecasts[m][i] is not None] for m in CHEAP}
        made["lag_regression_previous_settings"] = [i for i in at if previous[i] is not None]
        candidates = {}
        for m, where in made.items():
            if where:
                got = previous if m == "lag_regression_previous_settings" else paths.forecasts[m]
                candidates[m] = {"mape": round(mape(np.concatenate([actuals[i] for i in where]),
                                                    np.concatenate([got[i] for i in where])), 3), "origins": len(where)}
        out[name] = {"origins": [str(origins[0].date()), str(origins[-1].date())], "folds": len(predicted),
                     "chosen_mape": round(mape(seen, np.concatenate(predicted)), 3),
                     "candidates_mape": candidates,
                     "chosen_mape_by_window": {w: round(mape(seen, np.concatenate(p)), 3) for w, p in by_window.items()},
                     "coverage": {f"{w:.2f}/{m}@{f:.2f}": round(float(np.mean(np.concatenate(v))), 4)
                                  for (w, m, f), v in inside.items()},
                     "interval_score_pct": {f"{w:.2f}/{m}@{f:.2f}": round(float(np.mean(v)), 3)
                                            for (w, m, f), v in scores.items()}}
    return out


def print_train_figures(figures: dict) -> None:
    in_use = f"{selection.INTERVAL_METHOD}@{selection.INTERVAL_INFLATION}"
    for name, row in figures.items():
        print(f"\n{name}: {row['folds']} daily origins {row['origins'][0]} .. {row['origins'][1]} (training days), "
              f"cheap candidates, chosen model MAPE {row['chosen_mape']:.2f} %")
        print("candidates alone, MAPE % (origins): " + ", ".join(f"{m} {v['mape']:.2f} ({v['origins']})"
                                                               for m, v in row["candidates_mape"].items()))
        print(f"chosen model's MAPE by selection window (in use: {selection.WINDOW_DAYS} days): "
              + ", ".join(f"{w} days {v:.2f}" for w, v in row["chosen_mape_by_window"].items()))
        print(f"interval coverage (interval score %, lower is better); in use: {in_use}")
        print("interval / method    " + "  ".join(f"x{f:<14.2f}" for f in FACTORS))
        for w in WIDTHS:
            for method in INTERVAL_METHODS:
                cells = [f"{row['coverage'][f'{w:.2f}/{method}@{f:.2f}']:6.1%} ({row['interval_score_pct'][f'{w:.2f}/{method}@{f:.2f}']:5.2f})"
                         for f in FACTORS]
                print(f"{w:>7.0%} {method:<12} " + "  ".join(f"{c:<15}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="14 half-hourly and 4 PJM origins, 120-day Prophet fits")
    parser.add_argument("--pjm-csv", default=os.environ.get("GRIDSIGHT_PJM_CSV", PJM_CSV), help="hourly load CSV")
    parser.add_argument("--halfhourly-csv", default=TAYLOR_CSV, help="half-hourly load CSV")
    parser.add_argument("--pjm-folds", type=int, help="PJM origins (default 28, quick 4)")
    parser.add_argument("--halfhourly-weeks", type=int, help="weeks of daily half-hourly origins (default 4, quick 2)")
    parser.add_argument("--pjm-every-days", type=int, default=13,
                        help="days between PJM origins (13: each weekday equally often)")
    parser.add_argument("--workers", type=int, default=2, help="process pool size")
    parser.add_argument("--max-history-days", type=int,
                        help="history Prophet and Holt-Winters fits see (default 400, quick 120); the lag "
                             "regression reads up to 3 years for the same season of earlier years")
    parser.add_argument("--pjm-daily", action="store_true",
                        help="also backtest PJM from every midnight of the held-out year (365 origins)")
    parser.add_argument("--train", "--train-coverage", dest="train", action="store_true",
                        help="only the training days (cheap candidates): each candidate's and the choice's MAPE, the "
                             "regression's previous settings beside it, interval coverage per method and widening")
    args = parser.parse_args()
    pjm_folds = args.pjm_folds or (4 if args.quick else 28)
    weeks = args.halfhourly_weeks or (2 if args.quick else 4)
    history = args.max_history_days or (120 if args.quick else 400)
    command = (f".venv/bin/python bench/forecast.py{' --quick' if args.quick else ''} --pjm-folds {pjm_folds} "
               f"--pjm-every-days {args.pjm_every_days} --halfhourly-weeks {weeks} --workers {args.workers} "
               f"--max-history-days {history}{' --pjm-daily' if args.pjm_daily else ''}")
    if args.train:
        command = (f".venv/bin/python bench/forecast.py --train{' --quick' if args.quick else ''} "
                   f"--workers {args.workers}")
    print(f"reproduce: {command}", file=sys.stderr)
    for path in (args.pjm_csv, args.halfhourly_csv):
        if not Path(path).exists():
            print(f"bench/forecast.py: error: {path} does not exist", file=sys.stderr)
            return 2
    progress = lambda line: print(f"  {line}", file=sys.stderr, flush=True)  # noqa: E731
    load_before = os.getloadavg()[0]
    if args.train:
        started = time.perf_counter()
        with open_executor(max_workers=args.workers) as executor:
            figures = train_figures(args, executor, progress)
        wall = time.perf_counter() - started
        print_train_figures(figures)
        load_after = os.getloadavg()[0]
        print(f"\n(machine load average {load_before:.1f} at the start, {load_after:.1f} at the end, on "
              f"{os.cpu_count()} cores; {wall:.0f} s)")
        print(f"reproduce: {command}")
        print(json.dumps({"bench": "forecast_train", "inflation_in_use": selection.INTERVAL_INFLATION,
                          "interval_method_in_use": selection.INTERVAL_METHOD,
                          **figures, "cpu_load_avg_1m": round(load_after, 1), "wall_s": round(wall, 1),
                          "command": command}))
        return 0
    walls: dict[str, float] = {}
    with open_executor(max_workers=args.workers) as executor:
        started = time.perf_counter()
        taylor = backtest_day_ahead(load_csv(args.halfhourly_csv), weeks=weeks, name="england_wales_halfhourly_2000",
                                    options=ForecastOptions(country="GB", max_history_days=history),
                                    executor=executor, progress=progress)
        walls["halfhourly"] = time.perf_counter() - started
        pjm_series = load_csv(args.pjm_csv)
        pjm_options = ForecastOptions(country="US", max_history_days=history)
        started = time.perf_counter()
        pjm = backtest_day_ahead(pjm_series, folds=pjm_folds, every_days=args.pjm_every_days, name="pjm_east_hourly",
                                 options=pjm_options, executor=executor, progress=progress)
        walls["pjm"] = time.perf_counter() - started
        daily = None
        if args.pjm_daily:
            started = time.perf_counter()
            daily = backtest_day_ahead(pjm_series, folds=365, name="pjm_east_hourly_daily", options=pjm_options,
                                       executor=executor, progress=progress)
            walls["pjm_daily"] = time.perf_counter() - started
    print_report(f"England and Wales half-hourly demand, held-out last {weeks} weeks ({taylor.folds} daily origins "
                 f"{taylor.origins[0][:10]} .. {taylor.origins[-1][:10]}; {walls['halfhourly']:.0f} s)", taylor)
    print_report(f"PJM East hourly load, held-out last year ({pjm.folds} origins {args.pjm_every_days} days apart "
                 f"{pjm.origins[0][:10]} .. {pjm.origins[-1][:10]}; {walls['pjm']:.0f} s)", pjm)
    if daily is not None:
        print_report(f"PJM East hourly load, every day of the held-out year ({daily.folds} origins "
                     f"{daily.origins[0][:10]} .. {daily.origins[-1][:10]}; {walls['pjm_daily']:.0f} s)", daily)
    print("\nHalf-hourly check: real half-hourly settlement data (not hourly PJM interpolated to half-hours).")
    load_after = os.getloadavg()[0]
    print(f"(machine load average {load_before:.1f} at the start, {load_after:.1f} at the end, on "
          f"{os.cpu_count()} cores: wall times move with it; total {sum(walls.values()):.0f} s)")
    print(f"reproduce: {command}")
    figures = {"bench": "forecast", "quick": args.quick, "workers": args.workers, "max_history_days": history,
               "cpu_load_avg_1m": round(load_after, 1), "cpu_load_avg_1m_start": round(load_before, 1),
               "halfhourly": summary(taylor), "pjm": summary(pjm),
               "wall_s": round(sum(walls.values()), 1), "command": command}
    figures["halfhourly"]["wall_s"] = round(walls["halfhourly"], 1)
    figures["pjm"]["wall_s"] = round(walls["pjm"], 1)
    if daily is not None:
        figures["pjm_daily"] = summary(daily)
        figures["pjm_daily"]["wall_s"] = round(walls["pjm_daily"], 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
