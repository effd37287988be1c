"""Demand forecasting: a model chosen per series by its own backtest, backtests, parallel fits.

    from collector.forecasting import forecast_load, backtest_day_ahead, open_executor
    fc = forecast_load(hourly_kwh, horizon=48)   # fc.frame: yhat, yhat_lower, yhat_upper; fc.selection: why
    report = backtest_day_ahead(hourly_kwh)      # 28 daily origins: MAPE per weekday vs naive baselines

Database jobs (read actuals from readings_hourly, store into forecasts) are in
:mod:`collector.forecasting.store` and :mod:`collector.forecasting.jobs`.
"""

from collector.forecasting.backtest import BacktestReport, MethodScore, backtest_day_ahead, mape, smape
from collector.forecasting.executor import ForecastJob, ForecastOutcome, open_executor, run_forecast_jobs
from collector.forecasting.forecast import Forecast, ForecastError, ForecastOptions, forecast_load
from collector.forecasting.series import SeriesError, as_load_series

__all__ = ["BacktestReport", "MethodScore", "backtest_day_ahead", "mape", "smape", "ForecastJob", "ForecastOutcome",
           "open_executor", "run_forecast_jobs", "Forecast", "ForecastError", "ForecastOptions", "forecast_load",
           "SeriesError", "as_load_series"]
