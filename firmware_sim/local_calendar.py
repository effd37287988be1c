"""Local days, weekdays and public holidays of a site, for load shapes that follow people.

Loads follow local clocks (breakfast at 7 local time, shops closed on public holidays) while
every timestamp in gridsight is UTC. A :class:`LocalCalendar` maps between the two for one
time zone and one country's holidays (the ``holidays`` package), with caching because the
same days are asked for by every meter of a region.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import numpy as np

__all__ = ["LocalCalendar", "EPOCH_DATE"]

EPOCH_DATE = date(1970, 1, 1)


class LocalCalendar:
    """Local day boundaries (as UTC instants) and holidays for one time zone and country.

    A local day is numbered by days since 1970-01-01 in local time; a DST change makes it
    23 or 25 hours long.
    """

    def __init__(self, tz: str = "America/New_York", country: str = "US") -> None:
        try:
            self.zone = ZoneInfo(tz)
        except Exception:
            raise ValueError(f"unknown time zone {tz!r}") from None
        try:
            holidays.country_holidays(country, years=2024)
        except NotImplementedError:
            raise ValueError(f"no public holidays known for country {country!r}") from None
        self.tz = tz
        self.country = country
        self._bounds = lru_cache(maxsize=4096)(self._day_bounds)
        self._holiday_years: dict[int, set[int]] = {}
        self._holiday_arrays: dict[tuple[int, int], np.ndarray] = {}

    def day_of(self, ts: float) -> int:
        """The local day number containing Unix time ``ts``."""
        local = datetime.fromtimestamp(ts, self.zone)
        return (local.date() - EPOCH_DATE).days

    def day_bounds(self, day: int) -> tuple[float, float]:
        """UTC start and end (exclusive) of local day ``day``."""
        return self._bounds(day)

    def _day_bounds(self, day: int) -> tuple[float, float]:
        d = EPOCH_DATE + timedelta(days=day)
        start = datetime.combine(d, time(0), self.zone).timestamp()
        end = datetime.combine(d + timedelta(days=1), time(0), self.zone).timestamp()
        return start, end

    def local_hours(self, ts: np.ndarray) -> np.ndarray:
        """Local clock hour (fractional, 0..24) of each UTC time in ``ts``."""
        ts = np.asarray(ts, dtype=float)
        if ts.size == 0:
            return ts.copy()
        first = self.zone.utcoffset(datetime.fromtimestamp(float(ts.min()), timezone.utc)
                                    .replace(tzinfo=None)).total_seconds()
        last = self.zone.utcoffset(datetime.fromtimestamp(float(ts.max()), timezone.utc)
                                   .replace(tzinfo=None)).total_seconds()
        if first == last:
            offsets = first
        else:
            hours = np.floor(ts / 3600.0)
            uniq = np.unique(hours)
            table = {h: datetime.fromtimestamp(h * 3600.0, self.zone).utcoffset().total_seconds() for h in uniq}
            offsets = np.array([table[h] for h in hours])
        return ((ts + offsets) / 3600.0) % 24.0

    def standard_offset_h(self) -> float:
        """UTC offset in January, hours (for closed-form daily temperatures)."""
        return datetime(2024, 1, 15, tzinfo=self.zone).utcoffset().total_seconds() / 3600.0

    def _holiday_days(self, year: int) -> set[int]:
        if year not in self._holiday_years:
            hol = holidays.country_holidays(self.country, years=year)
            self._holiday_years[year] = {(d - EPOCH_DATE).days for d in hol}
        return self._holiday_years[year]

    def holidays(self, days: np.ndarray) -> np.ndarray:
        """True for local days that are public holidays."""
        days = np.asarray(days, dtype=np.int64)
        if days.size == 0:
            return np.zeros(0, dtype=bool)
        y0 = (EPOCH_DATE + timedelta(days=int(days.min()))).year
        y1 = (EPOCH_DATE + timedelta(days=int(days.max()))).year
        key = (y0, y1)
        marked = self._holiday_arrays.get(key)
        if marked is None:
            found: set[int] = set()
            for y in range(y0, y1 + 1):
                found |= self._holiday_days(y)
            marked = self._holiday_arrays[key] = np.fromiter(found, dtype=np.int64, count=len(found))
        return np.isin(days, marked)

    @staticmethod
    def weekdays(days: np.ndarray) -> np.ndarray:
        """Monday=0 .. Sunday=6 of local day numbers (1970-01-01 was a Thursday)."""
        return (np.asarray(days, dtype=np.int64) + 3) % 7

    @staticmethod
    def day_of_year(days: np.ndarray) -> np.ndarray:
        """Approximate day of year (0..365) without calendar arithmetic per element."""
        return (np.asarray(days, dtype=float) - 0.0) % 365.2425
