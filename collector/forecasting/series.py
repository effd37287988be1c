"""Load series as the forecasters see them: a regular, UTC-indexed pandas Series of energy per interval.

Everything downstream (Prophet, the statsmodels fallback, the backtest, the policy sandbox)
assumes a gap-free index at one frequency, so the checks and the repair (short gaps filled by
interpolation, long gaps refused) live here once rather than in each consumer.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from gridsight.errors import GridsightError

__all__ = ["SeriesError", "SUPPORTED_FREQS", "as_load_series", "steps_per_day", "freq_of"]

#: pandas offset alias -> seconds. Meters report 15-minute intervals; rollups are hourly; UK and much
#: of the EU settle in half-hours.
SUPPORTED_FREQS: dict[str, int] = {"h": 3600, "30min": 1800, "15min": 900}


class SeriesError(GridsightError, ValueError):
    """A load series that cannot be forecast (too short, irregular, gaps, non-finite values)."""


def freq_of(index: pd.DatetimeIndex) -> str:
    """The supported frequency alias of a regular index, inferred from its most common step."""
    if len(index) < 3:
        raise SeriesError(f"need at least 3 points to infer the interval, got {len(index)}")
    steps = np.diff(index.as_unit("s").asi8)
    step = int(pd.Series(steps).mode().iloc[0])
    for alias, seconds in SUPPORTED_FREQS.items():
        if seconds == step:
            return alias
    raise SeriesError(f"interval of {step} s is not supported; use hourly, 30-minute or 15-minute data")


def steps_per_day(freq: str) -> int:
    return 86400 // SUPPORTED_FREQS[freq]


def as_load_series(values: pd.Series | Iterable[float], index: Iterable | None = None, *,
                   freq: str | None = None, max_gap_steps: int = 6, name: str = "load") -> pd.Series:
    """A regular UTC series from timestamps and values, or raise :class:`SeriesError` saying why.

    Naive timestamps are taken as UTC; numbers are taken as Unix seconds. Duplicate timestamps
    are averaged. Missing steps up to ``max_gap_steps`` long are interpolated (a lost packet
    must not stop a forecast); longer gaps are refused because interpolating a day invents load.
    """
    if index is None and not isinstance(values, pd.Series):
        raise SeriesError("values need timestamps: pass a Series with a datetime index or index=")
    try:
        if index is not None:
            raw = values if isinstance(values, (pd.Series, np.ndarray)) else list(values)
            series = pd.Series(np.asarray(raw, dtype="float64"), index=_utc_index(index))
        else:
            series = pd.Series(values.to_numpy(dtype="float64"), index=_utc_index(values.index))
    except (ValueError, TypeError) as exc:
        if isinstance(exc, SeriesError):
            raise
        raise SeriesError(f"load values are not numbers: {exc}") from None
    series = series.sort_index()
    series = series.groupby(level=0).mean()
    if series.isna().all() or len(series) == 0:
        raise SeriesError("series is empty")
    if not np.isfinite(series.dropna().to_numpy()).all():
        raise SeriesError("series holds infinite values")
    freq = freq or freq_of(series.index)
    if freq not in SUPPORTED_FREQS:
        raise SeriesError(f"frequency {freq!r} is not supported; use one of {sorted(SUPPORTED_FREQS)}")
    full = pd.date_range(series.index[0].floor(freq), series.index[-1].floor(freq), freq=freq, tz="UTC")
    series.index = series.index.floor(freq)
    series = series.groupby(level=0).mean().reindex(full)
    missing = series.isna().to_numpy()
    if missing.any():
        longest, where = _longest_run(missing)
        if longest > max_gap_steps:
            raise SeriesError(f"gap of {longest} missing steps (from {series.index[where].isoformat()}); "
                              f"at most {max_gap_steps} are filled")
        series = series.interpolate(limit_direction="both")
    series.index.freq = freq
    series.name = name
    return series


def _utc_index(index: Iterable) -> pd.DatetimeIndex:
    idx = index if isinstance(index, pd.DatetimeIndex) else pd.Index(list(index) if not hasattr(index, "dtype") else index)
    try:
        if not isinstance(idx, pd.DatetimeIndex):
            if pd.api.types.is_numeric_dtype(idx.dtype):
                idx = pd.to_datetime(np.asarray(idx, dtype="float64"), unit="s", utc=True)
            else:
                idx = pd.DatetimeIndex(pd.to_datetime(idx, utc=True))
    except (ValueError, TypeError) as exc:
        raise SeriesError(f"timestamps are not dates: {exc}") from None
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    return idx.tz_convert("UTC").as_unit("ns")


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """Length and start position of the longest run of True in ``mask``."""
    best = best_start = run = 0
    for i, m in enumerate(mask):
        run = run + 1 if m else 0
        if run > best:
            best, best_start = run, i - run + 1
    return best, best_start
