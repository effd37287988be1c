"""What a forecast is and what a caller may ask of one: the types every model module shares.

Kept apart from :mod:`collector.forecasting.forecast` (which picks and runs the models) so the
model modules import these types without importing the module that imports them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from gridsight.errors import GridsightError

__all__ = ["Forecast", "ForecastError", "ForecastOptions", "MODELS", "AUTO_CANDIDATES"]

#: Every model a caller may name. "auto" picks per series by a backtest over recent days.
MODELS = ("auto", "prophet", "lag_regression", "holt_winters", "scaled_naive", "seasonal_naive", "ensemble", "ets")

#: The candidates "auto" compares (the ensemble combines the others, weighted by inverse error).
AUTO_CANDIDATES = ("prophet", "lag_regression", "holt_winters", "scaled_naive", "seasonal_naive")


class ForecastError(GridsightError, ValueError):
    """A forecast that cannot be made with the given inputs; the message says which input."""


@dataclass(frozen=True)
class ForecastOptions:
    """Choices a utility tunes per deployment; the defaults suit feeder and system load."""

    country: str | None = "US"          # public holidays of this ISO country code
    interval_width: float = 0.8         # central prediction interval
    model: str = "auto"                 # one of MODELS
    max_history_days: int = 400         # fit time grows with history; 400 days carry the yearly shape
    residual_correction: bool = True    # Prophet: carry the recent level error forward (weather persistence)
    candidates: tuple[str, ...] = AUTO_CANDIDATES

    def __post_init__(self) -> None:
        if not 0.0 < self.interval_width < 1.0:
            raise ForecastError(f"interval_width must be between 0 and 1, got {self.interval_width}")
        if self.model not in MODELS:
            raise ForecastError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.max_history_days < 2:
            raise ForecastError(f"max_history_days must be at least 2, got {self.max_history_days}")
        unknown = [c for c in self.candidates if c not in AUTO_CANDIDATES]
        if unknown or not self.candidates:
            raise ForecastError(f"candidates must be among {', '.join(AUTO_CANDIDATES)}, got {self.candidates!r}")


@dataclass(frozen=True)
class Forecast:
    """Predicted load per future step with its prediction interval.

    ``frame`` is indexed by UTC step start and has columns ``yhat``, ``yhat_lower``,
    ``yhat_upper`` in the history's unit (kWh per step, or MW for system load); none is negative.
    ``selection`` says, for a chosen model, which one and why (window errors, ensemble weights).
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
    selection: dict | None = None

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
