"""The short-history fallback: additive exponential smoothing with a daily season (statsmodels ETS).

With a few days of data Prophet over-fits its many seasonal terms; ETS needs only two daily
cycles, updates its level quickly and still gives a prediction interval.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from collector.forecasting.types import Forecast, ForecastError, ForecastOptions
from collector.forecasting.series import steps_per_day

__all__ = ["fit_predict_ets", "MODEL_VERSION"]

RECIPE = "gs1"


def _version() -> str:
    import statsmodels
    return statsmodels.__version__


MODEL_VERSION = f"ets-statsmodels-{_version()}+{RECIPE}"


def fit_predict_ets(history: pd.Series, horizon: int, freq: str, options: ForecastOptions) -> Forecast:
    """Fit ETS(A, Ad, A) with a daily season and predict ``horizon`` steps with intervals."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    per_day = steps_per_day(freq)
    started = time.perf_counter()
    y = pd.Series(history.to_numpy(dtype="float64"), index=pd.RangeIndex(len(history)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fit is checked below
        model = ETSModel(y, error="add", trend="add", damped_trend=True, seasonal="add",
                         seasonal_periods=per_day, initialization_method="heuristic"
                         if len(y) >= 2 * per_day + 10 else "estimated")
        fitted = model.fit(disp=False, maxiter=200)
        fitted_at = time.perf_counter()
        prediction = fitted.get_prediction(start=len(y), end=len(y) + horizon - 1)
        summary = prediction.summary_frame(alpha=1.0 - options.interval_width)
    fit_seconds = fitted_at - started
    predict_seconds = time.perf_counter() - fitted_at
    index = pd.date_range(history.index[-1], periods=horizon + 1, freq=freq, tz="UTC")[1:]
    mean = summary["mean"].to_numpy()
    if not np.isfinite(mean).all():
        raise ForecastError("exponential smoothing did not converge on this history")
    frame = pd.DataFrame({"yhat": mean, "yhat_lower": summary["pi_lower"].to_numpy(),
                          "yhat_upper": summary["pi_upper"].to_numpy()}, index=index)
    frame.index.name = "ts"
    return Forecast(frame=frame, model="ets", model_version=MODEL_VERSION, freq=freq,
                    interval_width=options.interval_width, fit_seconds=fit_seconds,
                    predict_seconds=predict_seconds)
