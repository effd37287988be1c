"""Where fits run: a local process pool by default, a Dask cluster when a scheduler is configured.

Both are handed out as a ``concurrent.futures.Executor`` (Dask's ``Client.get_executor()``
speaks that protocol), so the forecasting code submits work one way and a utility with
thousands of feeders scales out by setting ``scheduler_address`` — no code path changes.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from collector.forecasting.forecast import forecast_load
from collector.forecasting.types import Forecast, ForecastError, ForecastOptions

__all__ = ["ForecastJob", "ForecastOutcome", "open_executor", "run_forecast_jobs"]


@dataclass(frozen=True)
class ForecastJob:
    """One series to forecast: ``kind`` is feeder, region or system; ``key`` its id."""

    kind: str
    key: str
    history: pd.Series
    horizon: int
    temperature: pd.Series | None = None
    options: ForecastOptions = ForecastOptions()
    weather_note: str | None = None   # why temperature is missing, when a provider failed


@dataclass(frozen=True)
class ForecastOutcome:
    kind: str
    key: str
    forecast: Forecast | None
    error: str | None = None


@contextlib.contextmanager
def open_executor(scheduler_address: str | None = None, max_workers: int | None = None,
                  connect_timeout_s: float = 10.0) -> Iterator[Executor]:
    """An executor for forecast fits; closed on exit.

    ``scheduler_address`` (e.g. ``tcp://10.0.0.5:8786``) connects to an existing Dask
    cluster; otherwise a local process pool of ``max_workers`` (default: CPU count) runs fits.
    """
    if scheduler_address:
        try:
            from distributed import Client
        except ImportError:
            raise ForecastError("a Dask scheduler is configured but 'distributed' is not installed; "
                                "pip install distributed") from None
        try:
            client = Client(scheduler_address, timeout=f"{connect_timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ForecastError(f"cannot reach Dask scheduler {scheduler_address}: {exc}") from None
        try:
            yield client.get_executor()
        finally:
            client.close()
        return
    workers = max_workers or max(1, min(os.cpu_count() or 1, 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool


def _run_job(job: ForecastJob) -> ForecastOutcome:
    try:
        forecast = forecast_load(job.history, job.horizon, temperature=job.temperature, options=job.options)
    except ForecastError as exc:
        return ForecastOutcome(job.kind, job.key, None, str(exc))
    except (ValueError, RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        # A model library failing on one odd series (optimizer, singular matrix) must not stop the fleet.
        return ForecastOutcome(job.kind, job.key, None, f"model failed: {type(exc).__name__}: {exc}")
    if job.weather_note:
        forecast = forecast.with_notes(job.weather_note)
    return ForecastOutcome(job.kind, job.key, forecast)


def run_forecast_jobs(jobs: Sequence[ForecastJob], executor: Executor | None = None) -> list[ForecastOutcome]:
    """Forecast every job, in order; one series failing is reported and does not stop the rest."""
    if executor is None:
        return [_run_job(job) for job in jobs]
    futures = [executor.submit(_run_job, job) for job in jobs]
    return [future.result() for future in futures]
