"""Interval features: the one definition the gateway and the training pipeline share.

The agent calls :func:`interval_stats` once per meter per interval and feeds the result to a
:class:`FeatureBuilder`; training and offline scoring call :func:`batch_features`, which runs
the very same builder over history. Training and the edge therefore cannot disagree.

Features are scale-free (log ratios, z-scores, shares, hours), so one model serves a 300 W
flat and a 3 MW factory: every meter is compared with its *own* hour-of-day and hour-of-week
profile, its recent level and its typical day. A meter's first day has no profile yet, and
its features are neutral (0 for log ratios and z-scores) rather than alarming.

numpy and the standard library only: this module runs on the gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "IntervalStats",
    "interval_stats",
    "FeatureBuilder",
    "DEFAULT_FEATURES",
    "FEATURE_DESCRIPTIONS",
    "batch_features",
]

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "level_vs_hour_of_day": "log of kWh over the meter's own hour-of-day profile (EWMA)",
    "level_vs_hour_of_week": "log of kWh over the meter's own hour-of-week profile (EWMA)",
    "z_vs_hour_of_day": "z-score of kWh against the hour-of-day profile's EWMA mean and spread",
    "level_vs_recent": "log of kWh over the meter's recent level (EWMA, about 6 hours)",
    "step_vs_previous": "log of kWh over the previous interval's kWh",
    "day_vs_typical_day": "log of the trailing 24 h energy over the meter's typical day",
    "flatline_hours": "hours the interval energy has not changed (stuck register, outage, frozen load)",
    "zero_hours": "hours the meter has recorded no energy at all",
    "spike_ratio": "peak over mean instantaneous power within the interval (1 without power data)",
    "night_share": "share of the trailing 24 h energy used in the meter's own six quietest profile hours",
}
DEFAULT_FEATURES: tuple[str, ...] = tuple(FEATURE_DESCRIPTIONS)

# EWMA weights. The hour-of-day profile adapts over about ten days of that hour, the
# hour-of-week profile over about four weeks, the recent level over about six hours.
_ALPHA_HOD = 0.1
_ALPHA_HOW = 0.25
_RECENT_HOURS = 6.0
_TYPICAL_DAY_ALPHA = 0.1
# A bin's profile is trusted after this many days (weeks) of that hour; before that the
# coarser profile stands in (hour-of-week -> hour-of-day), or the feature is neutral (0).
_MIN_BIN_DAYS = 2
_MAX_RUN_HOURS = 48.0
_CLIP = 10.0
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class IntervalStats:
    """One meter's consumption over one interval, reduced from its raw readings."""

    meter_id: str
    interval_start: float
    interval_s: int
    kwh: float  # energy consumed in the interval (register delta)
    readings: int
    power_w_mean: float | None
    power_w_max: float | None
    power_w_min: float | None
    power_w_std: float | None


def interval_stats(meter_id: str, interval_start: float, interval_s: int, ts: np.ndarray,
                   energy_kwh: np.ndarray, power_w: np.ndarray | None,
                   prev_energy_kwh: float | None) -> IntervalStats:
    """Reduce one meter's readings of one interval to :class:`IntervalStats`.

    ``kwh`` is the last register value minus ``prev_energy_kwh`` (the last value of the
    previous interval), or minus the first value in this interval when there is none. A
    register that goes backwards (meter replaced, rollover, reset) contributes nothing for
    that step instead of a negative consumption; non-finite values are ignored.
    """
    ts = np.asarray(ts, dtype=np.float64)
    energy = np.asarray(energy_kwh, dtype=np.float64)
    if ts.shape != energy.shape:
        raise ValueError("ts and energy_kwh must have the same length")
    order = np.argsort(ts, kind="stable")
    energy = energy[order]
    energy = energy[np.isfinite(energy)]
    kwh = 0.0
    if energy.size:
        chain = energy if prev_energy_kwh is None or not math.isfinite(prev_energy_kwh) \
            else np.concatenate(([prev_energy_kwh], energy))
        steps = np.diff(chain)
        kwh = float(steps[steps > 0].sum())
    p_mean = p_max = p_min = p_std = None
    if power_w is not None:
        p = np.asarray(power_w, dtype=np.float64)
        p = p[np.isfinite(p)]
        if p.size:
            p_mean, p_max, p_min, p_std = float(p.mean()), float(p.max()), float(p.min()), float(p.std())
    return IntervalStats(meter_id, float(interval_start), int(interval_s), kwh, int(ts.size),
                         p_mean, p_max, p_min, p_std)


class _MeterHistory:
    """Everything the builder remembers about one meter; plain lists so it serialises to JSON."""

    __slots__ = ("hod_mean", "hod_var", "hod_n", "how_mean", "how_n", "recent", "level",
                 "level_n", "prev_kwh", "prev_start", "flat_s", "zero_s", "day_kwh",
                 "day_hod", "typical_day", "day_seen_s")

    def __init__(self) -> None:
        self.hod_mean = [0.0] * 24
        self.hod_var = [0.0] * 24
        self.hod_n = [0] * 24
        self.how_mean = [0.0] * 168
        self.how_n = [0] * 168
        self.recent: float | None = None
        self.level = 0.0  # long-run mean interval kWh: the meter's size, for scale-free floors
        self.level_n = 0
        self.prev_kwh: float | None = None
        self.prev_start: float | None = None
        self.flat_s = 0.0
        self.zero_s = 0.0
        self.day_kwh: list[float] = []  # trailing 24 h, one entry per interval
        self.day_hod: list[int] = []
        self.typical_day: float | None = None
        self.day_seen_s = 0.0

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, obj: dict) -> "_MeterHistory":
        h = cls()
        for k in cls.__slots__:
            if k in obj:
                setattr(h, k, obj[k])
        if len(h.hod_mean) != 24 or len(h.how_mean) != 168 or len(h.day_kwh) != len(h.day_hod):
            raise ValueError("feature state has the wrong shape")
        return h


def _log_ratio(value: float, reference: float, floor: float) -> float:
    return float(np.clip(math.log((value + floor) / (reference + floor)), -_CLIP, _CLIP))


class FeatureBuilder:
    """Turns a stream of :class:`IntervalStats` into feature vectors, remembering per-meter history.

    Call :meth:`features` once per meter-interval in time order; it returns the vector for
    that interval (computed from history *before* it) and then learns from it.
    """

    def __init__(self, feature_names: Sequence[str], interval_s: int = 900) -> None:
        unknown = [n for n in feature_names if n not in FEATURE_DESCRIPTIONS]
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; known: {', '.join(DEFAULT_FEATURES)}")
        if not 1 <= int(interval_s) <= _DAY_S:
            raise ValueError(f"interval_s must be 1..86400, got {interval_s}")
        self.feature_names = tuple(feature_names)
        self.interval_s = int(interval_s)
        self._meters: dict[str, _MeterHistory] = {}
        self._day_len = max(1, _DAY_S // self.interval_s)
        self._recent_alpha = min(1.0, 2.0 / (_RECENT_HOURS * 3600.0 / self.interval_s + 1.0))
        self._level_alpha = min(1.0, self.interval_s / (7.0 * _DAY_S))
        self._min_bin = _MIN_BIN_DAYS * max(1, 3600 // self.interval_s)

    def features(self, stats: IntervalStats) -> np.ndarray:
        """The feature vector (float32, ``feature_names`` order) of ``stats``; then update history."""
        h = self._meters.get(stats.meter_id)
        if h is None:
            h = self._meters[stats.meter_id] = _MeterHistory()
        values = self._compute(h, stats)
        self._learn(h, stats)
        return np.array([values[n] for n in self.feature_names], dtype=np.float32)

    # ---------------------------------------------------------------- computation

    def _bins(self, start: float) -> tuple[int, int]:
        hour = int(start // 3600)
        return hour % 24, (hour // 24 + 3) % 7 * 24 + hour % 24  # 1970-01-01 was a Thursday

    def _compute(self, h: _MeterHistory, s: IntervalStats) -> dict[str, float]:
        kwh = max(0.0, s.kwh)
        floor = 0.05 * h.level + 1e-9
        hod, how = self._bins(s.interval_start)
        contiguous = h.prev_start is not None and 0 < s.interval_start - h.prev_start <= 1.5 * self.interval_s

        hod_ref = h.hod_mean[hod] if h.hod_n[hod] >= self._min_bin else None
        how_ref = h.how_mean[how] if h.how_n[how] >= self._min_bin else hod_ref
        v: dict[str, float] = {}
        v["level_vs_hour_of_day"] = 0.0 if hod_ref is None else _log_ratio(kwh, hod_ref, floor)
        v["level_vs_hour_of_week"] = 0.0 if how_ref is None else _log_ratio(kwh, how_ref, floor)
        if h.hod_n[hod] >= self._min_bin + 1:
            spread = math.sqrt(h.hod_var[hod]) + floor
            v["z_vs_hour_of_day"] = float(np.clip((kwh - h.hod_mean[hod]) / spread, -_CLIP, _CLIP))
        else:
            v["z_vs_hour_of_day"] = 0.0
        v["level_vs_recent"] = 0.0 if h.recent is None else _log_ratio(kwh, h.recent, floor)
        v["step_vs_previous"] = _log_ratio(kwh, h.prev_kwh, floor) if contiguous and h.prev_kwh is not None else 0.0

        day = h.day_kwh[-(self._day_len - 1):] + [kwh] if contiguous else [kwh]
        if h.typical_day is not None and len(day) >= self._day_len:
            v["day_vs_typical_day"] = _log_ratio(sum(day), h.typical_day, floor * self._day_len)
        else:
            v["day_vs_typical_day"] = 0.0

        unchanged = contiguous and h.prev_kwh is not None and abs(kwh - h.prev_kwh) <= max(1e-9, 1e-3 * h.level)
        v["flatline_hours"] = min(_MAX_RUN_HOURS, (h.flat_s + s.interval_s) / 3600.0) if unchanged else 0.0
        is_zero = kwh <= max(1e-9, 1e-3 * h.level) and h.level_n > 0
        v["zero_hours"] = min(_MAX_RUN_HOURS, ((h.zero_s if contiguous else 0.0) + s.interval_s) / 3600.0) \
            if is_zero else 0.0

        if s.power_w_mean is not None and s.power_w_max is not None and s.power_w_mean > 1e-6:
            v["spike_ratio"] = float(min(_CLIP * 2, max(1.0, s.power_w_max / s.power_w_mean)))
        else:
            v["spike_ratio"] = 1.0
        v["night_share"] = self._night_share(h, day, contiguous, hod)
        return v

    def _night_share(self, h: _MeterHistory, day: list[float], contiguous: bool, hod: int) -> float:
        """Energy share of the meter's six quietest hours over the trailing day; neutral 0.25 early."""
        if min(h.hod_n) < self._min_bin or len(day) < self._day_len:
            return 0.25
        quiet = set(np.argsort(np.asarray(h.hod_mean), kind="stable")[:6].tolist())
        hods = (h.day_hod[-(self._day_len - 1):] + [hod]) if contiguous else [hod]
        total = sum(day)
        if total <= 1e-9:
            return 0.25
        return float(sum(k for k, b in zip(day, hods) if b in quiet) / total)

    def _learn(self, h: _MeterHistory, s: IntervalStats) -> None:
        kwh = max(0.0, s.kwh)
        hod, how = self._bins(s.interval_start)
        contiguous = h.prev_start is not None and 0 < s.interval_start - h.prev_start <= 1.5 * self.interval_s
        tol = max(1e-9, 1e-3 * h.level)
        unchanged = contiguous and h.prev_kwh is not None and abs(kwh - h.prev_kwh) <= tol
        h.flat_s = h.flat_s + s.interval_s if unchanged else 0.0
        is_zero = kwh <= tol and h.level_n > 0
        h.zero_s = ((h.zero_s if contiguous else 0.0) + s.interval_s) if is_zero else 0.0

        if h.hod_n[hod] == 0:
            h.hod_mean[hod], h.hod_var[hod] = kwh, 0.0
        else:
            delta = kwh - h.hod_mean[hod]
            h.hod_mean[hod] += _ALPHA_HOD * delta
            h.hod_var[hod] = (1 - _ALPHA_HOD) * (h.hod_var[hod] + _ALPHA_HOD * delta * delta)
        h.hod_n[hod] += 1
        h.how_mean[how] = kwh if h.how_n[how] == 0 else h.how_mean[how] + _ALPHA_HOW * (kwh - h.how_mean[how])
        h.how_n[how] += 1
        h.recent = kwh if h.recent is None else h.recent + self._recent_alpha * (kwh - h.recent)
        h.level_n += 1
        h.level += max(self._level_alpha, 1.0 / h.level_n) * (kwh - h.level)

        if not contiguous:
            h.day_kwh, h.day_hod = [], []
        h.day_kwh.append(kwh)
        h.day_hod.append(hod)
        if len(h.day_kwh) > self._day_len:
            del h.day_kwh[: len(h.day_kwh) - self._day_len]
            del h.day_hod[: len(h.day_hod) - self._day_len]
        if len(h.day_kwh) == self._day_len:
            total = sum(h.day_kwh)
            h.typical_day = total if h.typical_day is None else \
                h.typical_day + _TYPICAL_DAY_ALPHA * self.interval_s / _DAY_S * (total - h.typical_day)
        h.prev_kwh = kwh
        h.prev_start = s.interval_start

    # ---------------------------------------------------------------- persistence

    def state(self) -> dict:
        """JSON-able snapshot of every meter's history (the agent persists it across restarts)."""
        return {"version": 1, "interval_s": self.interval_s, "feature_names": list(self.feature_names),
                "meters": {m: h.to_json() for m, h in self._meters.items()}}

    def load_state(self, state: dict) -> None:
        """Restore a :meth:`state` snapshot; a snapshot for another interval length is refused."""
        if not isinstance(state, dict) or state.get("version") != 1:
            raise ValueError("feature state is not a version-1 snapshot")
        if state.get("interval_s") != self.interval_s:
            raise ValueError(f"feature state is for {state.get('interval_s')} s intervals, "
                             f"this builder uses {self.interval_s} s")
        meters = state.get("meters")
        if not isinstance(meters, dict):
            raise ValueError("feature state has no meters table")
        restored = {}
        for meter_id, obj in meters.items():
            if not isinstance(obj, dict):
                raise ValueError(f"feature state for meter {meter_id!r} is not an object")
            try:
                restored[str(meter_id)] = _MeterHistory.from_json(obj)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"feature state for meter {meter_id!r}: {exc}") from None
        self._meters = restored


def batch_features(stats: Iterable[IntervalStats], feature_names: Sequence[str] = DEFAULT_FEATURES,
                   interval_s: int = 900) -> tuple[np.ndarray, list[IntervalStats]]:
    """Features of many meter-intervals through one :class:`FeatureBuilder`, in time order.

    Returns the matrix (float32, one row per interval) and the stats in the same row order
    (sorted by interval start, then meter), for training and offline scoring.
    """
    ordered = sorted(stats, key=lambda s: (s.interval_start, s.meter_id))
    builder = FeatureBuilder(feature_names, interval_s)
    X = np.empty((len(ordered), len(builder.feature_names)), dtype=np.float32)
    for i, s in enumerate(ordered):
        X[i] = builder.features(s)
    return X, ordered
