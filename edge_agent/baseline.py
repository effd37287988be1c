"""One meter's last four weeks, hour by local hour, and what a normal hour looks like on each day type.

:class:`MeterBaseline` keeps the energy of every local hour of the last 28 days in one float32
array (28 x 24 = 2.7 kB a meter, whatever the interval: 15-minute readings add up into their hour),
with the day type of each day and what each hour was expected to be when it was measured. Once a day it works out, for each day type (weekday, Saturday,
Sunday or holiday) and hour, the median energy of the completed days and its spread (1.4826 x the
median absolute deviation). Medians of four weeks keep a shift or dip that lasts days visible for
its whole length: it moves the median only once it covers about half of that day type's days
(ten weekdays), where a median of the last seven days absorbs it after four.

A day type with fewer than three completed days borrows the profile of all days (so one
anomalous day cannot be half of a two-day median), and with fewer than
two completed days of any type there is no profile yet (features stay neutral).

:meth:`MeterBaseline.cells` gives the trailing hours ending in the current interval: energy,
expected energy and spread, so features can compare the last 1, 3 or 24 hours at any interval.
A past hour keeps the expectation it had when it was measured (the profile of the days before
its day), never one its own day helped to make: with three days of history, yesterday is one of
the three values whose median today's profile is, and compared with it would look normal however
far it was off.
numpy only: this module runs on the gateway.
"""

from __future__ import annotations

import base64
import math
import warnings

import numpy as np

from edge_agent.medians import nanmedian, nanmedian_columns

__all__ = ["MeterBaseline", "DAYS_KEPT", "BYTES_PER_METER"]

DAYS_KEPT = 28
_MIN_DAY_TYPE_DAYS = 3
_MIN_DAYS = 2
_MAD_TO_SD = 1.4826
BYTES_PER_METER = 2 * DAYS_KEPT * 24 * 4 + DAYS_KEPT * 5 + 2 * 3 * 24 * 4


def _pack(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _unpack(text: str, dtype, shape) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(text), dtype=dtype)
    if a.size != int(np.prod(shape)):
        raise ValueError("baseline state has the wrong shape")
    return a.reshape(shape).copy()


class MeterBaseline:
    """Energy per local hour of the last 28 days, and per-day-type hourly medians and spreads."""

    __slots__ = ("hours", "expected", "days", "kinds", "profile", "spread", "profile_day", "typical")

    def __init__(self) -> None:
        self.hours = np.full((DAYS_KEPT, 24), np.nan, dtype=np.float32)  # kWh per local hour
        self.expected = np.full((DAYS_KEPT, 24), np.nan, dtype=np.float32)  # its profile value back then
        self.days = np.full(DAYS_KEPT, -1, dtype=np.int32)  # local day ordinal held by each row
        self.kinds = np.zeros(DAYS_KEPT, dtype=np.int8)  # its day type
        self.profile = np.full((3, 24), np.nan, dtype=np.float32)  # median kWh per day type and hour
        self.spread = np.full((3, 24), np.nan, dtype=np.float32)  # robust sd of the same
        self.profile_day = -1  # the day the profile was worked out on
        self.typical = math.nan  # median energy of an hour cell: the meter's typical level

    @property
    def ready(self) -> bool:
        return self.typical == self.typical  # not NaN

    def days_before(self, today: int) -> int:
        """How many days of the last four weeks before ``today`` hold data (what the profile is made of)."""
        return int(((self.days >= 0) & (self.days < today) & (self.days >= today - DAYS_KEPT)).sum())

    def add(self, day: int, hour: int, kind: int, kwh: float) -> None:
        """Count ``kwh`` into local hour ``hour`` of local day ``day``."""
        r = day % DAYS_KEPT
        if self.days[r] != day:
            self.days[r], self.kinds[r] = day, kind
            self.hours[r] = np.nan
            self.expected[r] = np.nan
        cell = self.hours[r, hour]
        if cell != cell:
            self.hours[r, hour] = kwh
            self.expected[r, hour] = self.profile[kind, hour] if self.profile_day == day else np.nan
        else:
            self.hours[r, hour] = cell + kwh

    def refresh(self, today: int) -> None:
        """Work out the profiles from the completed days before ``today`` (does nothing twice a day)."""
        if self.profile_day == today:
            return
        self.profile_day = today
        done = (self.days >= 0) & (self.days < today) & (self.days >= today - DAYS_KEPT)
        if int(done.sum()) < _MIN_DAYS:
            self.profile[:] = np.nan
            self.spread[:] = np.nan
            self.typical = math.nan
            return
        rows, kinds = self.hours[done], self.kinds[done]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an hour with no data on any day is NaN
            all_med = nanmedian_columns(rows)
            all_mad = nanmedian_columns(np.abs(rows - all_med))
            for k in range(3):
                same = rows[kinds == k]
                if same.shape[0] >= _MIN_DAY_TYPE_DAYS:
                    med = nanmedian_columns(same)
                    mad = nanmedian_columns(np.abs(same - med))
                    missing = ~np.isfinite(med)
                    med[missing], mad[missing] = all_med[missing], all_mad[missing]
                else:
                    med, mad = all_med, all_mad
                self.profile[k], self.spread[k] = med, _MAD_TO_SD * mad
            typical = nanmedian(rows)
            if not typical > 0:
                typical = float(np.nanmean(rows))
        self.typical = typical if math.isfinite(typical) else math.nan

    def cells(
        self, day: int, hour: int, kind: int, hours: int, kwh: float, fraction: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The trailing ``hours`` local hours ending in the current interval, oldest first.

        Returns (energy, expected energy, variance of the expectation) per hour; NaN where either
        is unknown. The current hour counts what it has so far plus ``kwh`` (this interval, not
        added yet) against ``fraction`` of its expected energy. None without a profile yet.
        """
        if not self.ready:
            return None
        n_days = max(0, hours - hour - 1 + 23) // 24 + 1
        actual = np.full(n_days * 24, np.nan, dtype=np.float64)
        expected = np.full(n_days * 24, np.nan, dtype=np.float64)
        spread = np.full(n_days * 24, np.nan, dtype=np.float64)
        for i in range(n_days):
            d = day - (n_days - 1 - i)
            r = d % DAYS_KEPT
            here = self.days[r] == d
            k = int(self.kinds[r]) if here else (kind if d == day else -1)
            if k < 0:
                continue
            if here:
                actual[i * 24 : (i + 1) * 24] = self.hours[r]
            expected[i * 24 : (i + 1) * 24] = self.expected[r] if here and d < day else self.profile[k]
            spread[i * 24 : (i + 1) * 24] = self.spread[k]
        end = (n_days - 1) * 24 + hour + 1
        a, e, s = actual[end - hours : end], expected[end - hours : end], spread[end - hours : end]
        a[-1] = (0.0 if a[-1] != a[-1] else a[-1]) + kwh
        e[-1] *= fraction
        s[-1] *= fraction
        bad = ~(np.isfinite(a) & np.isfinite(e) & np.isfinite(s))
        a[bad] = e[bad] = s[bad] = np.nan
        return a, e, s * s

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        return {
            "hours": _pack(self.hours),
            "expected": _pack(self.expected),
            "days": _pack(self.days),
            "kinds": _pack(self.kinds),
            "profile_day": int(self.profile_day),
        }

    @classmethod
    def from_json(cls, obj: dict) -> "MeterBaseline":
        b = cls()
        b.hours = _unpack(obj["hours"], np.float32, (DAYS_KEPT, 24))
        b.days = _unpack(obj["days"], np.int32, (DAYS_KEPT,))
        b.kinds = _unpack(obj["kinds"], np.int8, (DAYS_KEPT,))
        if "expected" in obj:  # a snapshot from before expectations were kept has none for its past hours
            b.expected = _unpack(obj["expected"], np.float32, (DAYS_KEPT, 24))
        day = int(obj.get("profile_day", -1))
        if day >= 0:
            b.refresh(day)
        return b
