"""Public holidays by country, and the day each holiday behaves like.

Load on a public holiday looks like a Sunday's, and a holiday last week makes last week a poor
guide for this week. The weekly models therefore see holidays as Sundays: a holiday in the
history is replaced by the same day of the week before (so it teaches no weekday shape), and a
holiday to be forecast takes the shape of the latest Sunday.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from collector.forecasting.types import ForecastError

__all__ = ["holiday_dates", "is_holiday", "clean_holidays"]


@lru_cache(maxsize=64)
def _calendar(country: str, first_year: int, last_year: int) -> frozenset:
    import holidays

    try:
        days = holidays.country_holidays(country, years=range(first_year, last_year + 1))
    except (KeyError, NotImplementedError, AttributeError) as exc:
        raise ForecastError(f"country {country!r} has no holiday calendar: {exc}") from None
    return frozenset(pd.Timestamp(d) for d in days)


def holiday_dates(country: str | None, start: pd.Timestamp, end: pd.Timestamp) -> frozenset:
    """Midnights (naive dates) of public holidays of ``country`` between ``start`` and ``end``."""
    if not country:
        return frozenset()
    return _calendar(country, int(start.year), int(end.year))


def is_holiday(days: pd.DatetimeIndex, holidays: frozenset) -> np.ndarray:
    if not holidays:
        return np.zeros(len(days), dtype=bool)
    naive = days.tz_localize(None) if days.tz is not None else days
    marks = np.array([pd.Timestamp(d).as_unit("ns").value for d in holidays], dtype="int64")
    return np.isin(naive.normalize().as_unit("ns").asi8, marks)


def clean_holidays(values: np.ndarray, index: pd.DatetimeIndex, per_day: int, holidays: frozenset) -> np.ndarray:
    """``values`` with each holiday (whole day) replaced by the same steps a week earlier (or later)."""
    if not holidays or len(values) < 8 * per_day:
        return values
    out = values.copy()
    week = 7 * per_day
    for i in np.flatnonzero(is_holiday(index, holidays)):   # in time order: a chain of holidays resolves
        if i >= week:
            out[i] = out[i - week]
        elif i + week < len(out):
            out[i] = out[i + week]
    return out
