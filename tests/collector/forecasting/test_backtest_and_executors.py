"""Rolling-origin day-ahead backtests and running fits on a process pool or a Dask cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collector.forecasting import (
    ForecastError,
    ForecastJob,
    ForecastOptions,
    backtest_day_ahead,
    mape,
    open_executor,
    run_forecast_jobs,
    smape,
)

from .conftest import synthetic_load

pytestmark = pytest.mark.slow  # make test-fast leaves it out


def test_mape_and_smape_are_percentages_and_smape_survives_zero_load():
    actual = np.array([100.0, 200.0, 0.0])
    predicted = np.array([110.0, 180.0, 0.0])
    assert mape(actual, predicted) == pytest.approx(10.0)
    assert smape(np.array([0.0, 100.0]), np.array([10.0, 100.0])) == pytest.approx(100.0)


def test_day_ahead_backtest_scores_the_forecast_against_both_naive_baselines():
    weekly = synthetic_load(7, seed=1)
    series = pd.concat([weekly.set_axis(weekly.index + pd.Timedelta(days=7 * k)) for k in range(4)])
    report = backtest_day_ahead(series, folds=2, every_days=3, name="feeder-7",
                                options=ForecastOptions(model="ets"))
    assert report.folds == 2 and report.origins[-1] == "2026-02-01T00:00:00+00:00"
    assert report.same_hour_last_week.mape == pytest.approx(0.0)       # the series repeats weekly
    assert report.same_hour_yesterday.mape > 0
    assert report.models_used == {"ets": 2} and report.fit_seconds_mean > 0
    as_dict = report.as_dict()
    assert set(as_dict["model"]) == {"method", "mape", "smape", "peak_error_pct", "peak_hour_offset_h"}
    assert "same_hour_yesterday" in report.table()


def test_prophet_day_ahead_forecast_beats_both_baselines_on_a_noisy_feeder():
    rng = np.random.default_rng(6)
    level = [0.0]
    for _ in range(27):                            # weather: daily level shifts that persist for days
        level.append(0.7 * level[-1] + rng.normal(0, 0.04))
    series = synthetic_load(28, seed=6) * (1 + np.repeat(level, 24))
    report = backtest_day_ahead(series, folds=4, every_days=2, options=ForecastOptions(model="prophet"))
    assert report.models_used == {"prophet": 4}
    assert report.beats_baselines


def test_backtest_needs_nine_days():
    with pytest.raises(ForecastError, match="at least 9 days"):
        backtest_day_ahead(synthetic_load(6), folds=2)


def jobs() -> list[ForecastJob]:
    options = ForecastOptions(model="ets")
    good = [ForecastJob("feeder", f"f{i}", synthetic_load(4, seed=i), 24, options=options) for i in range(3)]
    bad = ForecastJob("feeder", "broken", synthetic_load(1), 24, options=options)
    return good[:2] + [bad] + good[2:]


def check(outcomes) -> None:
    assert [o.key for o in outcomes] == ["f0", "f1", "broken", "f2"]
    assert all(o.forecast is not None and len(o.forecast.frame) == 24 for o in outcomes if o.key != "broken")
    broken = outcomes[2]
    assert broken.forecast is None and "at least 2 days" in broken.error


def test_local_process_pool_forecasts_every_series_and_reports_the_one_that_failed():
    with open_executor(max_workers=2) as executor:
        check(run_forecast_jobs(jobs(), executor))


def test_a_configured_dask_scheduler_runs_the_same_jobs():
    distributed = pytest.importorskip("distributed", reason="the [collector] extra installs distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        with open_executor(scheduler_address=cluster.scheduler_address) as executor:
            check(run_forecast_jobs(jobs(), executor))


def test_unreachable_dask_scheduler_is_a_forecast_error():
    with pytest.raises(ForecastError, match="cannot reach Dask scheduler"):
        with open_executor(scheduler_address="tcp://127.0.0.1:9", connect_timeout_s=1):
            pass
