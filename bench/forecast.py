"""Forecast benchmark: day-ahead accuracy on PJM East hourly load, and fit/predict time per series.

Rolling-origin day-ahead backtest of the production forecaster (Prophet with seasonal daily
shapes, US holidays and recent-error carry-over) next to the two naive baselines and the
statsmodels ETS fallback on the same origins. Reports MAPE, sMAPE, daily-peak error, the
ratios to the baselines, and fit/predict seconds per series for Prophet and ETS.

    .venv/bin/python bench/forecast.py --quick      # ~1 minute: 4 origins, 200-day fits
    .venv/bin/python bench/forecast.py              # 26 origins two weeks apart (a year), 400-day fits

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

import pandas as pd  # noqa: E402

from collector.forecasting.backtest import backtest_day_ahead  # noqa: E402
from collector.forecasting.executor import open_executor  # noqa: E402
from collector.forecasting.forecast import ForecastOptions  # noqa: E402

DEFAULT_CSV = str(Path(__file__).resolve().parent / "data" / "pjm_east_PJME_hourly_2002_2018.csv.gz")


def load_pjm(path: str) -> pd.Series:
    frame = pd.read_csv(path)
    return pd.Series(frame.iloc[:, 1].to_numpy(dtype="float64"), index=pd.to_datetime(frame.iloc[:, 0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 origins (about a minute)")
    parser.add_argument("--csv", default=os.environ.get("GRIDSIGHT_PJM_CSV", DEFAULT_CSV),
                        help="hourly load CSV: timestamp, MW (default: PJM East)")
    parser.add_argument("--folds", type=int, help="forecast origins (default 26, quick 4)")
    parser.add_argument("--every-days", type=int, help="days between origins (default 14, quick 60)")
    parser.add_argument("--workers", type=int, default=2, help="process pool size")
    parser.add_argument("--max-history-days", type=int,
                        help="history each Prophet fit sees (default 400, the production default; quick 200)")
    args = parser.parse_args()
    folds = args.folds or (4 if args.quick else 26)
    every = args.every_days or (60 if args.quick else 14)
    args.max_history_days = args.max_history_days or (200 if args.quick else 400)
    command = (f".venv/bin/python bench/forecast.py{' --quick' if args.quick else ''} --folds {folds} "
               f"--every-days {every} --workers {args.workers} --max-history-days {args.max_history_days}")
    print(f"reproduce: {command}", file=sys.stderr)
    if not Path(args.csv).exists():
        print(f"bench/forecast.py: error: {args.csv} does not exist (set --csv or GRIDSIGHT_PJM_CSV)", file=sys.stderr)
        return 2
    series = load_pjm(args.csv)
    name = Path(args.csv).name.split(".")[0]
    print(f"{name}: {len(series)} hourly points {series.index[0]} .. {series.index[-1]}", file=sys.stderr)

    progress = lambda line: print(f"  {line}", file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    with open_executor(max_workers=args.workers) as executor:
        prophet = backtest_day_ahead(series, folds=folds, every_days=every, name=name, executor=executor,
                                     options=ForecastOptions(model="prophet", max_history_days=args.max_history_days),
                                     progress=progress)
        prophet_wall = time.perf_counter() - started
        started = time.perf_counter()
        ets = backtest_day_ahead(series, folds=folds, every_days=every, name=name, executor=executor,
                                 options=ForecastOptions(model="ets", max_history_days=28), progress=progress)
        ets_wall = time.perf_counter() - started

    print(f"\nDay-ahead rolling-origin backtest on {name} ({prophet.folds} origins, {every} days apart, "
          f"last {prophet.origins[-1][:10]})")
    rows = [("method", "MAPE %", "sMAPE %", "peak err %", "peak hour off h")]
    for label, score in (("prophet (gridsight)", prophet.model), ("ets fallback", ets.model),
                         ("same hour yesterday", prophet.same_hour_yesterday),
                         ("same hour last week", prophet.same_hour_last_week)):
        rows.append((label, f"{score.mape:.2f}", f"{score.smape:.2f}", f"{score.peak_error_pct:.2f}",
                     f"{score.peak_hour_offset_h:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    ratios = {
        "mape_vs_yesterday": prophet.model.mape / prophet.same_hour_yesterday.mape,
        "mape_vs_last_week": prophet.model.mape / prophet.same_hour_last_week.mape,
        "smape_vs_yesterday": prophet.model.smape / prophet.same_hour_yesterday.smape,
        "peak_error_vs_yesterday": prophet.model.peak_error_pct / prophet.same_hour_yesterday.peak_error_pct,
        "mape_vs_ets": prophet.model.mape / ets.model.mape,
        "fit_time_prophet_vs_ets": prophet.fit_seconds_mean / ets.fit_seconds_mean,
    }
    print(f"\nPer series: Prophet fit {prophet.fit_seconds_mean:.2f} s (max {prophet.fit_seconds_max:.2f}), "
          f"predict {prophet.predict_seconds_mean:.2f} s; ETS fit {ets.fit_seconds_mean:.2f} s, "
          f"predict {ets.predict_seconds_mean:.3f} s  ({args.workers} worker processes; wall "
          f"{prophet_wall:.1f} s and {ets_wall:.1f} s)")
    print("Ratios (lower is better for the forecast): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print(f"Beats both baselines on MAPE: {prophet.beats_baselines}")
    print(f"reproduce: {command}")
    figures = {
        "bench": "forecast", "series": name, "folds": prophet.folds, "every_days": every,
        "origins": [prophet.origins[0], prophet.origins[-1]], "quick": args.quick,
        "prophet": prophet.model.as_dict(), "ets": ets.model.as_dict(),
        "same_hour_yesterday": prophet.same_hour_yesterday.as_dict(),
        "same_hour_last_week": prophet.same_hour_last_week.as_dict(),
        "beats_baselines": prophet.beats_baselines,
        "prophet_fit_s_mean": round(prophet.fit_seconds_mean, 3), "prophet_fit_s_max": round(prophet.fit_seconds_max, 3),
        "prophet_predict_s_mean": round(prophet.predict_seconds_mean, 3),
        "ets_fit_s_mean": round(ets.fit_seconds_mean, 3), "ets_predict_s_mean": round(ets.predict_seconds_mean, 4),
        "workers": args.workers, "wall_s": round(prophet_wall + ets_wall, 1),
        "ratios": {k: round(v, 4) for k, v in ratios.items()}, "command": command,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
