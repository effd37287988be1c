"""Interval features: the one definition the gateway and the training pipeline share.

The agent calls :func:`interval_stats` once per meter per interval and feeds the result to a
:class:`FeatureBuilder`; training and offline scoring call :func:`batch_features`, which runs
the very same builder over history. Training and the edge therefore cannot disagree.

Features are scale-free (log ratios, z-scores, shares, hours, per-unit voltage), so one model
serves a 300 W flat and a 3 MW factory: every meter is compared with its *own* previous days at
the same hour, its own profiles, recent level and typical day. A meter's first days have no
history yet, and its features are neutral (0 for log ratios, 1 for per-unit voltage) rather
than alarming.

numpy and the standard library only: this module runs on the gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from edge_agent.baseline import MeterBaseline
from edge_agent.medians import median
from edge_agent.site_calendar import SiteCalendar

__all__ = [
    "IntervalStats",
    "interval_stats",
    "FeatureBuilder",
    "DEFAULT_FEATURES",
    "FEATURE_DESCRIPTIONS",
    "batch_features",
    "LEGACY_DEFAULT_FEATURES",
    "VOLTAGE_FEATURES",
]

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "level_vs_hour_of_day": "log of kWh over the meter's own hour-of-day profile (EWMA)",
    "level_vs_hour_of_week": "log of kWh over the meter's own hour-of-week profile (EWMA)",
    "z_vs_hour_of_day": "z-score of kWh against the hour-of-day profile's EWMA mean and spread",
    "level_vs_recent": "log of kWh over the meter's recent level (EWMA, about 6 hours)",
    "level_3h_vs_profile": "log of the trailing 3 h energy over what the profile expects for those hours",
    "level_6h_vs_profile": "log of the trailing 6 h energy over what the profile expects for those hours",
    "day_vs_typical_day": "log of the trailing 24 h energy over the meter's typical day",
    "day_vs_typical_month": "log of the trailing 24 h energy over the meter's typical day of the last month (drift)",
    "variability_vs_typical": "log of the trailing 3 h coefficient of variation over its usual value at this hour",
    "flatline_hours": "hours the interval energy has not changed beyond the register's resolution",
    "zero_hours": "hours the meter has recorded no energy at all",
    "night_share": "share of the trailing 24 h energy used in the meter's own six quietest profile hours",
    "excess_vs_level": "kWh above (or below) the profile's expectation, in units of the meter's mean interval",
    "excess_3h_vs_level": "trailing 3 h energy above (or below) the profile's expectation, in mean intervals",
    "step_vs_previous": "log of kWh over the previous interval's kWh",
    "spike_ratio": "peak over mean instantaneous power within the interval (1 without power data)",
    "level_3h_vs_days": "log of the trailing 3 h energy over its median at this hour on the previous days (up to 7)",
    "level_6h_vs_days": "log of the trailing 6 h energy over its median at this hour on the previous days (up to 7)",
    "day_vs_days": "log of the trailing 24 h energy over its median at this hour on the previous days (up to 7)",
    "peak_vs_days": "log of kWh over the largest interval of the previous days, when above it (else 0)",
    "zero_hours_vs_days": "hours of zero consumption beyond the meter's longest zero run of the previous days",
    "flatline_hours_vs_days": "hours of unchanged consumption beyond the meter's longest such run of the previous days",
    "voltage_min_pu": "lowest voltage in the interval, per unit of the meter's nominal voltage (1 without voltage data)",
    "voltage_vs_recent": "log of the interval's lowest voltage over the meter's recent mean voltage (EWMA, about 6 hours)",
    "voltage_mean_pu": "mean voltage in the interval, per unit of the meter's nominal voltage (1 without voltage data)",
    "export_share": "exported over imported plus exported energy in the interval (0 without an export register)",
    "level_vs_daytype": "log of kWh over the median of the same local hour on the same day type (last 4 weeks)",
    "z_vs_daytype": "robust z-score of kWh against the same local hour on the same day type (last 4 weeks)",
    "z_3h_vs_daytype": "robust z-score of the trailing 3 h energy against the same hours on their day types",
    "z_24h_vs_daytype": "robust z-score of the trailing 24 h energy against the same hours on their day types",
    "level_3h_vs_daytype": "log of the trailing 3 h energy over the same hours' medians on their day types",
    "level_24h_vs_daytype": "log of the trailing 24 h energy over the same hours' medians on their day types",
    "level_72h_vs_daytype": "log of the trailing 72 h energy over the same hours' medians on their day types",
    "dev_vs_daytype": "level_vs_daytype in units of the meter's usual such deviation (about 2 weeks)",
    "dev_3h_vs_recent": "log of the trailing 3 h energy over its day-type expectation scaled to the 6 h before, in usual deviations",
    "shift_24h_vs_daytype": "median over the last 24 h of each hour's log ratio to the same hour on its day type",
    "shift_72h_vs_daytype": "median over the last 72 h of each hour's log ratio to the same hour on its day type",
    "shift_168h_vs_daytype": "median over the last 7 days of each hour's log ratio to the same hour on its day type",
    "dev_24h_vs_daytype": "median over the last 24 h of each hour's log ratio to its day-type hour, in usual deviations",
    "dev_72h_vs_daytype": "median over the last 72 h of each hour's log ratio to its day-type hour, in usual deviations",
    "near_zero_hours_vs_habit": "hours below 2 % of the meter's typical level, beyond its usual such run (last 3 weeks)",
    "constant_hours_vs_habit": "hours unchanged within the meter's resolution, beyond its usual such run (last 3 weeks)",
}
VOLTAGE_FEATURES: tuple[str, ...] = ("voltage_vs_recent", "voltage_min_pu", "voltage_mean_pu")
# The default set compares the interval, the last 3, 24 and 72 hours with the same local hours on
# the same day type (weekday, Saturday, Sunday or holiday) over four weeks, each as a log ratio in
# units of the meter's own usual deviation: a 0.6x dip is many usual deviations on a steady
# commercial base load and one on a household, and one model ranks both fairly. The 3 h window's
# expectation follows the 6 hours before it (weather and season out, so dips, spikes, night loads
# and the first hours of a shift stand out); the 24 h and 72 h windows (median hour, so an evening's
# EV charge does not move them) keep a shift of days visible. The 3 h window is also compared
# plainly, with a quarter of the typical hour on both sides, for sustained drops on noisy homes.
# Two more were measured on bench/detection_real.py's tuning split and left out of the default
# for the simulator's sake (docs/benchmarks.md, real-data detection): z_vs_daytype (the hour against
# its own hour's spread: night loads on homes) and shift_168h_vs_daytype (the median hour of seven
# days: shifts of a week on homes) raise real-data ROC-AUC but cost the simulator's fleet, whose
# meters have three days of history, recall and precision.
# Runs near zero (below 2 % of the meter's typical level: an outage logged as a small constant) and
# runs of unchanged readings (a stuck register) count beyond the meter's own usual runs. Peaks above
# the previous days and voltage complete it; training leaves out features with no data behind them
# (voltage in a file without voltage). bench/detection_real.py compares it on real load with
# injected anomalies, and bench/detection.py on the simulator, with LEGACY_DEFAULT_FEATURES.
DEFAULT_FEATURES: tuple[str, ...] = (
    "dev_vs_daytype",
    "dev_3h_vs_recent",
    "level_3h_vs_daytype",
    "dev_24h_vs_daytype",
    "dev_72h_vs_daytype",
    "peak_vs_days",
    "near_zero_hours_vs_habit",
    "constant_hours_vs_habit",
    "voltage_vs_recent",
    "voltage_min_pu",
    "voltage_mean_pu",
)
# The previous default (same hours of the previous seven days, whatever their weekday, in UTC).
LEGACY_DEFAULT_FEATURES: tuple[str, ...] = (
    "level_3h_vs_days",
    "level_6h_vs_days",
    "day_vs_days",
    "peak_vs_days",
    "zero_hours_vs_days",
    "flatline_hours_vs_days",
    "voltage_vs_recent",
    "voltage_min_pu",
    "voltage_mean_pu",
)

# EWMA weights per day (hour-of-day) and per week (hour-of-week): the hour-of-day profile
# adapts over about ten days, the hour-of-week profile over about four weeks, the recent
# level over about six hours.
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
_NEUTRAL = {"spike_ratio": 1.0, "night_share": 0.25, "voltage_min_pu": 1.0, "voltage_mean_pu": 1.0}
# Comparisons with the same hour of the previous days use the median of up to this many days,
# trusted from three on (one anomalous day among them cannot move a median of three).
_DAYS_KEPT = 7
_MIN_DAYS = 3
# Their log ratios add a quarter of the meter's mean energy to both sides: a rooftop-PV home whose
# daytime import swings between nothing (sun) and its normal use (cloud), or an EV charged one
# evening and not the next, must not look like theft or a spike; injected anomalies move the
# energy by several times the mean and still stand out (tuned on the simulator's fleet).
_DAYS_FLOOR = 0.25
# Near zero is below this share of the meter's typical level (an outage logged as 1.0 on a meter
# averaging 300 is 0.3 %); runs beyond habit compare with the second-longest completed run of the
# last _RUN_DAYS days, so one earlier outage does not become the habit.
_NEAR_ZERO = 0.02
_RUN_DAYS = 21  # three weeks: a weekly run (a closed weekend) is seen at least twice
# Floors of the day-type comparisons, in units of the meter's typical hour: a meter whose hour
# never varies still needs a few percent to count as a change.
_Z_FLOOR = 0.05
# A robust spread (MAD) of an hour is trusted once a week of days is behind the profile: of two or
# three days' values, half their difference can be nearly nothing, and every ordinary upward
# interval of a home three days old would count as many sds (the simulator's fleet, 72 h of history).
_Z_MIN_DAYS = 7
_RATIO_FLOOR = 0.05
# Hours of day-type cells worked out per interval: the 72 h windows and the 24 h before the 3 h
# windows, with room; the seven-day median needs more, only when a model reads it.
_CELL_HOURS = 96
_CELL_HOURS_WEEK = 192
# Standard nominal voltages (IEC 60038 and North American service voltages): a meter's nominal is
# the one nearest its long-run mean, so per-unit values mean the same on 120 V and 230 V services.
_NOMINAL_V = (100.0, 110.0, 115.0, 120.0, 127.0, 208.0, 220.0, 230.0, 240.0, 277.0, 400.0, 480.0)


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
    # Voltage (V, average over phases as the meter reports it); None when the meter gives none.
    # A three-phase meter's minimum is its lowest phase, so one lost phase shows as a deep sag.
    voltage_v_min: float | None = None
    voltage_v_mean: float | None = None
    export_kwh: float | None = None  # energy exported in the interval (export register delta; PV homes)


def interval_stats(
    meter_id: str,
    interval_start: float,
    interval_s: int,
    ts: np.ndarray,
    energy_kwh: np.ndarray,
    power_w: np.ndarray | None,
    prev_energy_kwh: float | None,
    *,
    voltage_v: np.ndarray | None = None,
    phase_voltage_min_v: np.ndarray | None = None,
    export_kwh: np.ndarray | None = None,
    prev_export_kwh: float | None = None,
) -> IntervalStats:
    """Reduce one meter's readings of one interval to :class:`IntervalStats`.

    ``kwh`` is the last register value minus ``prev_energy_kwh`` (the last value of the
    previous interval), or minus the first value in this interval when there is none. A
    register that goes backwards (meter replaced, rollover, reset) contributes nothing for
    that step instead of a negative consumption; non-finite values are ignored.
    ``phase_voltage_min_v`` (each reading's lowest phase voltage, three-phase meters) sets the
    interval's minimum voltage; ``export_kwh`` (the export register) gives the exported energy
    the same way ``kwh`` is computed.
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
        chain = (
            energy
            if prev_energy_kwh is None or not math.isfinite(prev_energy_kwh)
            else np.concatenate(([prev_energy_kwh], energy))
        )
        steps = np.diff(chain)
        kwh = float(steps[steps > 0].sum())
    p_mean = p_max = p_min = p_std = None
    if power_w is not None:
        p = np.asarray(power_w, dtype=np.float64)
        p = p[np.isfinite(p)]
        if p.size:
            p_mean, p_max, p_min, p_std = float(p.mean()), float(p.max()), float(p.min()), float(p.std())
    v_min = v_mean = None
    if voltage_v is not None:
        v = np.asarray(voltage_v, dtype=np.float64)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size:
            v_min, v_mean = float(v.min()), float(v.mean())
    if phase_voltage_min_v is not None:
        low = np.asarray(phase_voltage_min_v, dtype=np.float64)
        low = low[np.isfinite(low)]
        if low.size:
            v_min = float(low.min())
    exported = None
    if export_kwh is not None:
        exported = _register_delta(np.asarray(export_kwh, dtype=np.float64)[order], prev_export_kwh)
    return IntervalStats(
        meter_id,
        float(interval_start),
        int(interval_s),
        kwh,
        int(ts.size),
        p_mean,
        p_max,
        p_min,
        p_std,
        v_min,
        v_mean,
        exported,
    )


def _register_delta(values: np.ndarray, prev: float | None) -> float | None:
    """Growth of a cumulative register over sorted ``values`` (after ``prev``); None if it has no value."""
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    chain = values if prev is None or not math.isfinite(prev) else np.concatenate(([prev], values))
    steps = np.diff(chain)
    return float(steps[steps > 0].sum())


# Parts of a meter's history that only some features read; the rest (level, resolution, the
# previous interval, the day-type baseline, runs, peaks, voltage) every builder keeps. A builder
# keeps only the parts its features need: the default set carries no hour-of-day/-week profiles,
# trailing day or same-hour lists of previous days (about 20 kB a meter after a week, 4 MB for
# 200 meters). A model swapped in that needs a part its predecessor did not starts it afresh.
_PARTS: dict[str, tuple[str, ...]] = {
    "profile": ("hod_mean", "hod_var", "hod_n", "how_mean", "how_n", "cv_mean", "cv_n", "recent"),
    "window": ("day_kwh", "day_hod", "day_how", "typical_day", "month_day"),
    "days": ("days_3h", "days_6h", "days_24h"),
    "day_runs": ("flat_s", "zero_s", "day_zero_runs", "day_flat_runs"),
}
ALL_PARTS = frozenset(_PARTS)
_FEATURE_PARTS: dict[str, tuple[str, ...]] = {
    "level_vs_hour_of_day": ("profile",),
    "level_vs_hour_of_week": ("profile",),
    "z_vs_hour_of_day": ("profile",),
    "level_vs_recent": ("profile",),
    "excess_vs_level": ("profile",),
    "level_3h_vs_profile": ("profile", "window"),
    "level_6h_vs_profile": ("profile", "window"),
    "excess_3h_vs_level": ("profile", "window"),
    "variability_vs_typical": ("profile", "window"),
    "night_share": ("profile", "window"),
    "day_vs_typical_day": ("window",),
    "day_vs_typical_month": ("window",),
    "level_3h_vs_days": ("window", "days"),
    "level_6h_vs_days": ("window", "days"),
    "day_vs_days": ("window", "days"),
    "flatline_hours": ("day_runs",),
    "zero_hours": ("day_runs",),
    "zero_hours_vs_days": ("day_runs",),
    "flatline_hours_vs_days": ("day_runs",),
}


def history_parts(feature_names: Iterable[str]) -> frozenset[str]:
    """The parts of per-meter history (beyond the core every builder keeps) these features read."""
    return frozenset(p for n in feature_names for p in _FEATURE_PARTS.get(n, ()))


class _MeterHistory:
    """Everything the builder remembers about one meter; plain lists so it serialises to JSON.

    Parts not in ``parts`` stay empty (lists) or None and are never updated."""

    __slots__ = (
        "hod_mean",
        "hod_var",
        "hod_n",
        "how_mean",
        "how_n",
        "cv_mean",
        "cv_n",
        "recent",
        "level",
        "level_n",
        "quantum",
        "prev_kwh",
        "prev_start",
        "flat_s",
        "zero_s",
        "day_kwh",
        "day_hod",
        "day_how",
        "typical_day",
        "month_day",
        "days_3h",
        "days_6h",
        "days_24h",
        "day_index",
        "day_peaks",
        "day_zero_runs",
        "day_flat_runs",
        "volt_mean",
        "volt_recent",
        "volt_n",
        "baseline",
        "low_s",
        "const_s",
        "abs_step",
        "run_days",
        "low_runs",
        "const_runs",
        "usual",
    )

    def __init__(self, parts: frozenset[str] = ALL_PARTS) -> None:
        self.hod_mean = [0.0] * 24
        self.hod_var = [0.0] * 24
        self.hod_n = [0] * 24
        self.how_mean = [0.0] * 168
        self.how_n = [0] * 168
        self.cv_mean = [0.0] * 24
        self.cv_n = [0] * 24
        self.recent: float | None = None
        self.level = 0.0  # long-run mean interval kWh: the meter's size, for scale-free floors
        self.level_n = 0
        self.quantum: float | None = None  # smallest kWh change seen: the register's resolution
        self.prev_kwh: float | None = None
        self.prev_start: float | None = None
        self.flat_s = 0.0
        self.zero_s = 0.0
        self.day_kwh: list[float] = []  # trailing 24 h, one entry per contiguous interval
        self.day_hod: list[int] = []
        self.day_how: list[int] = []
        self.typical_day: float | None = None
        self.month_day: float | None = None  # typical day with a month's memory
        # Trailing 3 h / 6 h / 24 h energy at the end of each hour of the day, last _DAYS_KEPT days.
        self.days_3h: list[list[float]] = [[] for _ in range(24)]
        self.days_6h: list[list[float]] = [[] for _ in range(24)]
        self.days_24h: list[list[float]] = [[] for _ in range(24)]
        self.day_index: int | None = None  # the UTC day the lists below are collecting
        self.day_peaks: list[float] = []  # largest interval kWh per day, today last
        self.day_zero_runs: list[float] = []  # longest zero run (s) per day, today last
        self.day_flat_runs: list[float] = []  # longest unchanged run (s) per day, today last
        self.volt_mean: float | None = None  # long-run mean voltage: which nominal the meter is on
        self.volt_n = 0
        self.volt_recent: float | None = None  # recent mean voltage (EWMA, about 6 hours)
        self.baseline = MeterBaseline()  # four weeks by local hour and day type
        self.low_s = 0.0  # current run below _NEAR_ZERO of the typical level
        self.const_s = 0.0  # current run of readings unchanged within resolution
        self.abs_step: float | None = None  # typical |change| between intervals (EWMA)
        self.run_days: list[int] = []  # local days of the lists below, last _RUN_DAYS
        self.low_runs: list[float] = []  # longest completed near-zero run (s) per day
        self.const_runs: list[float] = []  # longest completed unchanged run (s) per day
        self.usual: dict[str, list[float]] = {}  # feature -> [usual |raw value|, samples]
        for part in ALL_PARTS - parts:
            self._clear(part)

    def _clear(self, part: str) -> None:
        for k in _PARTS[part]:
            value = getattr(self, k)
            setattr(self, k, [] if isinstance(value, list) else 0.0 if isinstance(value, float) else None)

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in self.__slots__}
        out["baseline"] = self.baseline.to_json()
        return out

    @classmethod
    def from_json(
        cls, obj: dict, parts: frozenset[str] = ALL_PARTS, saved: frozenset[str] = ALL_PARTS
    ) -> "_MeterHistory":
        """A meter's history from :meth:`to_json`; of the ``parts`` wanted, those not ``saved``
        start afresh, and saved parts not wanted are dropped."""
        h = cls(parts)
        skip = {k for part in ALL_PARTS - (parts & saved) for k in _PARTS[part]}
        for k in cls.__slots__:
            if k in obj and k not in skip:
                setattr(h, k, obj[k])
        h.baseline = (
            MeterBaseline.from_json(obj["baseline"]) if isinstance(obj.get("baseline"), dict) else MeterBaseline()
        )
        if "day_runs" in parts - saved:  # aligned with the day peaks the core kept
            h.day_zero_runs, h.day_flat_runs = [0.0] * len(h.day_peaks), [0.0] * len(h.day_peaks)
        if (
            ("profile" in parts and (len(h.hod_mean) != 24 or len(h.how_mean) != 168 or len(h.cv_mean) != 24))
            or not len(h.day_kwh) == len(h.day_hod) == len(h.day_how)
            or ("days" in parts and not len(h.days_3h) == len(h.days_6h) == len(h.days_24h) == 24)
            or ("day_runs" in parts and not len(h.day_peaks) == len(h.day_zero_runs) == len(h.day_flat_runs))
            or not len(h.run_days) == len(h.low_runs) == len(h.const_runs)
        ):
            raise ValueError("feature state has the wrong shape")
        return h


def _log_ratio(value: float, reference: float, floor: float) -> float:
    return float(min(_CLIP, max(-_CLIP, math.log((value + floor) / (reference + floor)))))


class _Interval:
    """What one interval means for one meter's history, worked out once for computing and learning."""

    __slots__ = (
        "kwh",
        "hod",
        "how",
        "day",
        "contiguous",
        "floor",
        "days_floor",
        "unchanged",
        "is_zero",
        "window",
        "cv",
        "local_day",
        "local_hour",
        "fraction",
        "kind",
        "typical",
        "is_low",
        "is_const",
        "cells",
        "raw",
    )

    def __init__(
        self, h: _MeterHistory, s: IntervalStats, interval_s: int, day_len: int, calendar: SiteCalendar
    ) -> None:
        self.kwh = max(0.0, s.kwh)
        hour = int(s.interval_start // 3600)
        self.hod = hour % 24
        self.day = hour // 24
        self.how = (hour // 24 + 3) % 7 * 24 + self.hod  # 1970-01-01 was a Thursday
        self.contiguous = h.prev_start is not None and 0 < s.interval_start - h.prev_start <= 1.5 * interval_s
        self.floor = 0.05 * h.level + 1e-9
        self.days_floor = _DAYS_FLOOR * h.level + 1e-9
        # The register's resolution is the smallest change seen, trusted once a day has been seen.
        quantum = h.quantum if h.quantum is not None and h.level_n >= day_len else 0.0
        tolerance = max(1e-9, 2e-3 * h.level, 1.01 * quantum)
        self.unchanged = self.contiguous and h.prev_kwh is not None and abs(self.kwh - h.prev_kwh) <= tolerance
        self.is_zero = h.level_n > 0 and self.kwh <= max(1e-9, 1e-3 * h.level)
        # trailing window including this interval, oldest first
        if self.contiguous:
            self.window = (
                h.day_kwh[-(day_len - 1) :] + [self.kwh],
                h.day_hod[-(day_len - 1) :] + [self.hod],
                h.day_how[-(day_len - 1) :] + [self.how],
            )
        else:
            self.window = ([self.kwh], [self.hod], [self.how])
        self.cv: float | None = None
        # Local time for the day-type comparisons; the baseline's profile is of the days before today.
        self.local_day, self.local_hour, second, self.kind = calendar.locate(s.interval_start)
        self.fraction = min(1.0, (second + interval_s) / 3600.0)  # share of the hour this one completes
        self.cells: tuple[np.ndarray, ...] | None = None
        self.raw: dict[str, float] = {}  # features measured in usual units: their raw values, to learn
        h.baseline.refresh(self.local_day)
        b = h.baseline
        self.typical = b.typical * min(1.0, interval_s / 3600.0) if b.ready else h.level
        # A meter that exports in the interval imports little because its own panels supply the
        # house: near-nothing or unchanged import is then the sun, not an outage or a stuck register.
        exporting = s.export_kwh is not None and s.export_kwh > 0.0
        self.is_low = h.level_n > 0 and self.kwh < _NEAR_ZERO * self.typical and not exporting
        step = abs(self.kwh - h.prev_kwh) if h.prev_kwh is not None else math.inf
        # Two readings of a constant load differ by up to one resolution step (each end of the interval
        # is rounded), so one step is still "unchanged" on a meter whose intervals usually move by ten
        # steps or more; on a coarse register (a step a large share of its usual change) half a step.
        fine = quantum > 0.0 and (h.abs_step or 0.0) >= 10.0 * quantum
        const_tol = max(1e-9, 1.01 * quantum if fine else 0.5 * quantum, 0.01 * (h.abs_step or 0.0))
        self.is_const = self.contiguous and step <= const_tol and not exporting


class FeatureBuilder:
    """Turns a stream of :class:`IntervalStats` into feature vectors, remembering per-meter history.

    Call :meth:`features` once per meter-interval in time order; it returns the vector for
    that interval (computed from history *before* it) and then learns from it.
    """

    def __init__(
        self, feature_names: Sequence[str], interval_s: int = 900, calendar: SiteCalendar | None = None
    ) -> None:
        unknown = [n for n in feature_names if n not in FEATURE_DESCRIPTIONS]
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; known: {', '.join(FEATURE_DESCRIPTIONS)}")
        if not 1 <= int(interval_s) <= _DAY_S:
            raise ValueError(f"interval_s must be 1..86400, got {interval_s}")
        self.feature_names = tuple(feature_names)
        self.interval_s = int(interval_s)
        self.calendar = calendar or SiteCalendar()
        self._meters: dict[str, _MeterHistory] = {}
        self.parts = history_parts(self.feature_names)
        self._cell_hours = _CELL_HOURS_WEEK if "shift_168h_vs_daytype" in self.feature_names else _CELL_HOURS
        per_hour = max(1, 3600 // self.interval_s)
        self._day_len = max(1, _DAY_S // self.interval_s)
        self._six_hours = max(1, 6 * 3600 // self.interval_s)
        self._three_hours = max(3, 3 * 3600 // self.interval_s)
        self._recent_alpha = min(1.0, 2.0 / (_RECENT_HOURS * 3600.0 / self.interval_s + 1.0))
        self._level_alpha = min(1.0, self.interval_s / (7.0 * _DAY_S))
        self._min_bin = _MIN_BIN_DAYS * per_hour
        self._usual_alpha = min(1.0, self.interval_s / (14.0 * _DAY_S))
        # A profile bin is updated per_hour times a day; the weights above are per day (per week).
        self._alpha_hod = 1.0 - (1.0 - _ALPHA_HOD) ** (1.0 / per_hour)
        self._alpha_how = 1.0 - (1.0 - _ALPHA_HOW) ** (1.0 / per_hour)

    def features(self, stats: IntervalStats) -> np.ndarray:
        """The feature vector (float32, ``feature_names`` order) of ``stats``; then update history."""
        h = self._meters.get(stats.meter_id)
        if h is None:
            h = self._meters[stats.meter_id] = _MeterHistory(self.parts)
        iv = _Interval(h, stats, self.interval_s, self._day_len, self.calendar)
        iv.cv = self._window_cv(iv)
        out = np.empty(len(self.feature_names), dtype=np.float32)
        for i, name in enumerate(self.feature_names):
            out[i] = getattr(self, "_f_" + name)(h, stats, iv)
        self._learn(h, stats, iv)
        return out

    # ---------------------------------------------------------------- one method per feature

    def _expected(self, h: _MeterHistory, hod: int, how: int) -> float | None:
        """What the meter usually uses in this hour of the week (or of the day), if known yet."""
        if h.how_n[how] >= self._min_bin:
            return h.how_mean[how]
        if h.hod_n[hod] >= self._min_bin:
            return h.hod_mean[hod]
        return None

    def _f_level_vs_hour_of_day(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        if h.hod_n[iv.hod] < self._min_bin:
            return 0.0
        return _log_ratio(iv.kwh, h.hod_mean[iv.hod], iv.floor)

    def _f_level_vs_hour_of_week(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        ref = self._expected(h, iv.hod, iv.how)
        return 0.0 if ref is None else _log_ratio(iv.kwh, ref, iv.floor)

    def _f_z_vs_hour_of_day(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        if h.hod_n[iv.hod] < self._min_bin + 1:
            return 0.0
        spread = math.sqrt(h.hod_var[iv.hod]) + iv.floor
        return float(min(_CLIP, max(-_CLIP, (iv.kwh - h.hod_mean[iv.hod]) / spread)))

    def _f_level_vs_recent(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return 0.0 if h.recent is None else _log_ratio(iv.kwh, h.recent, iv.floor)

    def _f_level_3h_vs_profile(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._window_vs_profile(h, iv, self._three_hours)

    def _f_level_6h_vs_profile(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._window_vs_profile(h, iv, self._six_hours)

    def _f_excess_vs_level(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        ref = self._expected(h, iv.hod, iv.how)
        if ref is None or h.level <= 1e-9:
            return 0.0
        return float(min(_CLIP, max(-_CLIP, (iv.kwh - ref) / h.level)))

    def _f_excess_3h_vs_level(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        window = self._window_and_expected(h, iv, self._three_hours)
        if window is None or h.level <= 1e-9:
            return 0.0
        kwh, expected = window
        return float(min(_CLIP, max(-_CLIP, (kwh - expected) / (self._three_hours * h.level))))

    def _window_vs_profile(self, h: _MeterHistory, iv: _Interval, n: int) -> float:
        """Trailing ``n`` intervals' energy against the profile's expectation for the same hours."""
        window = self._window_and_expected(h, iv, n)
        if window is None:
            return 0.0
        kwh, expected = window
        return _log_ratio(kwh, expected, iv.floor * n)

    def _window_and_expected(self, h: _MeterHistory, iv: _Interval, n: int) -> tuple[float, float] | None:
        """Energy of the trailing ``n`` intervals and the profile's sum for the same hours, if both are known."""
        kwh, hods, hows = (w[-n:] for w in iv.window)
        if len(kwh) < n:
            return None
        expected = 0.0
        for hod, how in zip(hods, hows):
            ref = self._expected(h, hod, how)  # type: ignore[arg-type]  # hour indices, whole numbers
            if ref is None:
                return None
            expected += ref
        return sum(kwh), expected

    def _f_day_vs_typical_month(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        day = iv.window[0]
        if h.month_day is None or len(day) < self._day_len or h.level_n < 7 * self._day_len:
            return 0.0
        return _log_ratio(sum(day), h.month_day, iv.floor * self._day_len)

    def _f_day_vs_typical_day(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        day = iv.window[0]
        if h.typical_day is None or len(day) < self._day_len:
            return 0.0
        return _log_ratio(sum(day), h.typical_day, iv.floor * self._day_len)

    def _window_cv(self, iv: _Interval) -> float | None:
        """Coefficient of variation of the trailing three hours (plain Python: 12 numbers)."""
        kwh = iv.window[0][-self._three_hours :]
        if len(kwh) < self._three_hours:
            return None
        mean = sum(kwh) / len(kwh)
        std = math.sqrt(sum((k - mean) ** 2 for k in kwh) / len(kwh))
        return std / (mean + iv.floor)

    def _f_variability_vs_typical(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        cv = iv.cv
        if cv is None or h.cv_n[iv.hod] < self._min_bin:
            return 0.0
        return _log_ratio(cv, h.cv_mean[iv.hod], 0.02)

    def _f_flatline_hours(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return min(_MAX_RUN_HOURS, (h.flat_s + s.interval_s) / 3600.0) if iv.unchanged else 0.0

    def _f_zero_hours(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        if not iv.is_zero:
            return 0.0
        return min(_MAX_RUN_HOURS, ((h.zero_s if iv.contiguous else 0.0) + s.interval_s) / 3600.0)

    def _f_night_share(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        """Energy share of the meter's six quietest profile hours over the trailing day; 0.25 early."""
        day, hods, _ = iv.window
        if min(h.hod_n) < self._min_bin or len(day) < self._day_len:
            return _NEUTRAL["night_share"]
        total = sum(day)
        if total <= 1e-9:
            return _NEUTRAL["night_share"]
        quiet = set(sorted(range(24), key=lambda b: h.hod_mean[b])[:6])
        return float(sum(k for k, b in zip(day, hods) if b in quiet) / total)

    def _f_step_vs_previous(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        if not iv.contiguous or h.prev_kwh is None:
            return 0.0
        return _log_ratio(iv.kwh, h.prev_kwh, iv.floor)

    def _f_spike_ratio(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        if s.power_w_mean is None or s.power_w_max is None or s.power_w_mean <= 1e-6:
            return _NEUTRAL["spike_ratio"]
        return float(min(2 * _CLIP, max(1.0, s.power_w_max / s.power_w_mean)))

    def _vs_days(self, iv: _Interval, days: list[list[float]], n: int) -> float:
        """Trailing ``n`` intervals' energy against its median at this hour on the previous days."""
        kwh = iv.window[0][-n:]
        past = days[iv.hod]
        if len(kwh) < n or len(past) < _MIN_DAYS:
            return 0.0
        return _log_ratio(sum(kwh), median(past), iv.days_floor * n)

    def _f_level_3h_vs_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._vs_days(iv, h.days_3h, self._three_hours)

    def _f_level_6h_vs_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._vs_days(iv, h.days_6h, self._six_hours)

    def _f_day_vs_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._vs_days(iv, h.days_24h, self._day_len)

    def _previous_days(self, h: _MeterHistory, values: list[float], iv: _Interval) -> list[float]:
        return values[:-1] if h.day_index == iv.day else values

    def _f_peak_vs_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        peaks = self._previous_days(h, h.day_peaks, iv)
        if len(peaks) < _MIN_DAYS - 1:
            return 0.0
        return max(0.0, _log_ratio(iv.kwh, max(peaks), iv.floor))

    def _f_zero_hours_vs_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        runs = self._previous_days(h, h.day_zero_runs, iv)
        if not iv.is_zero or len(runs) < _MIN_DAYS - 1:
            return 0.0
        run = (h.zero_s if iv.contiguous else 0.0) + s.interval_s
        return min(_MAX_RUN_HOURS, max(0.0, run - max(runs)) / 3600.0)

    def _f_flatline_hours_vs_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        runs = self._previous_days(h, h.day_flat_runs, iv)
        if not iv.unchanged or len(runs) < _MIN_DAYS - 1:
            return 0.0
        return min(_MAX_RUN_HOURS, max(0.0, h.flat_s + s.interval_s - max(runs)) / 3600.0)

    def _nominal_v(self, h: _MeterHistory, s: IntervalStats) -> float | None:
        mean = h.volt_mean if h.volt_mean is not None else s.voltage_v_mean
        if mean is None:
            return None
        return min(_NOMINAL_V, key=lambda v: abs(v - mean))

    def _f_voltage_min_pu(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        nominal = self._nominal_v(h, s)
        if nominal is None or s.voltage_v_min is None:
            return _NEUTRAL["voltage_min_pu"]
        return float(min(2.0, s.voltage_v_min / nominal))

    def _f_voltage_vs_recent(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        if s.voltage_v_min is None or h.volt_recent is None:
            return 0.0
        return _log_ratio(s.voltage_v_min, h.volt_recent, 0.0)

    def _f_export_share(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        # a PV home's import drops while it exports: seen together, low import is its habit, not theft
        if not s.export_kwh or s.export_kwh <= 0:
            return 0.0
        return float(s.export_kwh / (s.export_kwh + max(s.kwh, 0.0)))

    def _f_voltage_mean_pu(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        nominal = self._nominal_v(h, s)
        if nominal is None or s.voltage_v_mean is None:
            return _NEUTRAL["voltage_mean_pu"]
        return float(min(2.0, s.voltage_v_mean / nominal))

    def _cells(self, h: _MeterHistory, iv: _Interval):
        """The last _CELL_HOURS (or _CELL_HOURS_WEEK) local hours (energy, expected, variance), worked out once per interval."""
        if iv.cells is None:
            iv.cells = (
                h.baseline.cells(iv.local_day, iv.local_hour, iv.kind, self._cell_hours, iv.kwh, iv.fraction) or ()
            )
        return iv.cells

    def _vs_daytype(
        self, h: _MeterHistory, iv: _Interval, hours: int, adjusted: int = 0
    ) -> tuple[float, float, float, float] | None:
        """(energy, expected, variance, hours covered) of the trailing ``hours``; ``adjusted`` (hours)
        scales the expectation by how that many hours before them compared with theirs (weather, season)."""
        b = h.baseline
        if hours <= 1 and self.interval_s < 3600:  # the interval alone, against its share of the hour
            if not b.ready:
                return None
            expected = float(b.profile[iv.kind, iv.local_hour])
            spread = float(b.spread[iv.kind, iv.local_hour])
            if not (math.isfinite(expected) and math.isfinite(spread)):
                return None
            share = self.interval_s / 3600.0
            return iv.kwh, expected * share, (spread * share) ** 2, share
        cells = self._cells(h, iv)
        if not cells:
            return None
        a, e, v = (c[-hours:] for c in cells)
        if a[-1] != a[-1]:
            return None
        ok = a == a
        covered = float(ok.sum()) - 1.0 + iv.fraction
        kwh, expected, variance = float(a[ok].sum()), float(e[ok].sum()), float(v[ok].sum())
        if adjusted:
            pa, pe = cells[0][-hours - adjusted : -hours], cells[1][-hours - adjusted : -hours]
            known = pa == pa
            if known.sum() < adjusted / 2:
                return None
            floor = _RATIO_FLOOR * b.typical * known.sum()
            scale = (float(pa[known].sum()) + floor) / (float(pe[known].sum()) + floor)
            expected, variance = expected * scale, variance * scale * scale
        return kwh, expected, variance, covered

    def _z_vs_daytype(self, h: _MeterHistory, iv: _Interval, hours: int, adjusted: int = 0) -> float:
        """Deviation from the day-type profile over its spread, as sign * log(1 + |z|); 0 until the
        profile has _Z_MIN_DAYS completed days behind it."""
        if h.baseline.days_before(iv.local_day) < _Z_MIN_DAYS:
            return 0.0
        found = self._vs_daytype(h, iv, hours, adjusted)
        if found is None:
            return 0.0
        kwh, expected, variance, covered = found
        scale = math.sqrt(variance) + _Z_FLOOR * h.baseline.typical * math.sqrt(covered) + 1e-9
        z = (kwh - expected) / scale
        return float(math.copysign(math.log1p(min(1e6, abs(z))), z))

    def _level_vs_daytype(
        self, h: _MeterHistory, iv: _Interval, hours: int, adjusted: int = 0, floor: float = _RATIO_FLOOR
    ) -> float:
        found = self._vs_daytype(h, iv, hours, adjusted)
        if found is None:
            return 0.0
        kwh, expected, _, covered = found
        return _log_ratio(kwh, expected, floor * h.baseline.typical * covered + 1e-9)

    def _f_level_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._level_vs_daytype(h, iv, 1, floor=_DAYS_FLOOR)

    def _f_z_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._z_vs_daytype(h, iv, 1)

    def _f_z_3h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._z_vs_daytype(h, iv, 3)

    def _f_z_24h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._z_vs_daytype(h, iv, 24)

    def _f_level_3h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._level_vs_daytype(h, iv, 3, floor=_DAYS_FLOOR)

    def _f_level_24h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._level_vs_daytype(h, iv, 24, floor=_DAYS_FLOOR)

    def _f_level_72h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._level_vs_daytype(h, iv, 72, floor=_DAYS_FLOOR)

    def _in_usual_units(self, h: _MeterHistory, iv: _Interval, name: str, raw: float) -> float:
        """``raw`` over the meter's usual size of it (a robust running mean of |raw| over about two
        weeks), as sign * log(1 + |ratio|): a 0.6x dip is many usual deviations on a steady
        building and one on a noisy household. 0 until six hours of it have been seen."""
        iv.raw[name] = raw
        usual = h.usual.get(name)
        if usual is None or usual[1] < self._six_hours:
            return 0.0
        ratio = raw / (usual[0] + 1e-3)
        return float(math.copysign(math.log1p(min(1e6, abs(ratio))), ratio))

    def _f_dev_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._in_usual_units(h, iv, "dev_vs_daytype", self._level_vs_daytype(h, iv, 1))

    def _f_dev_3h_vs_recent(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._in_usual_units(h, iv, "dev_3h_vs_recent", self._level_vs_daytype(h, iv, 3, adjusted=6))

    def _median_hour_vs_daytype(self, h: _MeterHistory, iv: _Interval, hours: int) -> float:
        """Median over the trailing ``hours`` of each hour's log ratio to its day-type expectation:
        a sustained shift or drop moves every hour, an evening's EV charge moves two."""
        cells = self._cells(h, iv)
        if not cells:
            return 0.0
        a, e = cells[0][-hours:], cells[1][-hours:]
        ok = a == a
        if a[-1] != a[-1] or ok.sum() < hours / 2:
            return 0.0
        weight = np.ones(hours)
        weight[-1] = iv.fraction
        floor = _RATIO_FLOOR * h.baseline.typical * weight[ok] + 1e-9
        ratios = np.log((a[ok] + floor) / (e[ok] + floor))
        return float(np.clip(median(ratios), -_CLIP, _CLIP))

    def _f_shift_24h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._median_hour_vs_daytype(h, iv, 24)

    def _f_shift_72h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._median_hour_vs_daytype(h, iv, 72)

    def _f_shift_168h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._median_hour_vs_daytype(h, iv, 168)

    def _f_dev_24h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._in_usual_units(h, iv, "dev_24h_vs_daytype", self._median_hour_vs_daytype(h, iv, 24))

    def _f_dev_72h_vs_daytype(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        return self._in_usual_units(h, iv, "dev_72h_vs_daytype", self._median_hour_vs_daytype(h, iv, 72))

    @staticmethod
    def _habit(runs: list[float]) -> float | None:
        """The second-longest completed run of the last days: one odd day does not make a habit."""
        if len(runs) < _MIN_DAYS - 1:
            return None
        return sorted(runs)[-2]

    def _f_near_zero_hours_vs_habit(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        habit = self._habit(h.low_runs)
        if not iv.is_low or habit is None:
            return 0.0
        run = (h.low_s if iv.contiguous else 0.0) + s.interval_s
        return min(_MAX_RUN_HOURS, max(0.0, run - habit) / 3600.0)

    def _f_constant_hours_vs_habit(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> float:
        habit = self._habit(h.const_runs)
        if not iv.is_const or habit is None:
            return 0.0
        return min(_MAX_RUN_HOURS, max(0.0, h.const_s + s.interval_s - habit) / 3600.0)

    # ---------------------------------------------------------------- learning

    def _learn_runs(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> None:
        """Near-zero and unchanged runs; a run is remembered on the local day it ends."""
        if not h.run_days or h.run_days[-1] != iv.local_day:
            h.run_days = (h.run_days + [iv.local_day])[-_RUN_DAYS:]
            h.low_runs = (h.low_runs + [0.0])[-_RUN_DAYS:]
            h.const_runs = (h.const_runs + [0.0])[-_RUN_DAYS:]
        low = ((h.low_s if iv.contiguous else 0.0) + s.interval_s) if iv.is_low else 0.0
        if not low and h.low_s:
            h.low_runs[-1] = max(h.low_runs[-1], h.low_s)
        h.low_s = low
        const = h.const_s + s.interval_s if iv.is_const else 0.0
        if not const and h.const_s:
            h.const_runs[-1] = max(h.const_runs[-1], h.const_s)
        h.const_s = const
        if iv.contiguous and h.prev_kwh is not None:
            step = abs(iv.kwh - h.prev_kwh)
            h.abs_step = step if h.abs_step is None else h.abs_step + self._level_alpha * (step - h.abs_step)
        h.baseline.add(iv.local_day, iv.local_hour, iv.kind, iv.kwh)
        for name, raw in iv.raw.items():
            usual = h.usual.get(name)
            if usual is None:
                h.usual[name] = [abs(raw), 1]
            elif raw != 0.0:  # no baseline yet: nothing learnt
                # winsorised, so an anomaly moves the usual size by at most a few times itself
                usual[0] += max(self._usual_alpha, 1.0 / (usual[1] + 1)) * (
                    min(abs(raw), 4 * usual[0] + 1e-3) - usual[0]
                )
                usual[1] += 1

    def _learn(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> None:
        kwh = iv.kwh
        if iv.contiguous and h.prev_kwh is not None:
            change = abs(kwh - h.prev_kwh)
            if change > 1e-6:
                h.quantum = change if h.quantum is None else min(h.quantum, change)
        parts = self.parts
        if "day_runs" in parts:
            h.flat_s = h.flat_s + s.interval_s if iv.unchanged else 0.0
            h.zero_s = ((h.zero_s if iv.contiguous else 0.0) + s.interval_s) if iv.is_zero else 0.0
        if "profile" in parts:
            self._learn_profiles(h, iv)
        h.level_n += 1
        h.level += max(self._level_alpha, 1.0 / h.level_n) * (kwh - h.level)
        if "window" in parts:
            self._learn_window(h, iv)
        self._learn_days(h, s, iv)
        self._learn_runs(h, s, iv)
        h.prev_kwh = kwh
        h.prev_start = s.interval_start

    def _learn_profiles(self, h: _MeterHistory, iv: _Interval) -> None:
        kwh, hod, how = iv.kwh, iv.hod, iv.how
        cv = iv.cv
        if cv is not None:
            h.cv_mean[hod] = cv if h.cv_n[hod] == 0 else h.cv_mean[hod] + self._alpha_hod * (cv - h.cv_mean[hod])
            h.cv_n[hod] += 1
        if h.hod_n[hod] == 0:
            h.hod_mean[hod], h.hod_var[hod] = kwh, 0.0
        else:
            delta = kwh - h.hod_mean[hod]
            h.hod_mean[hod] += self._alpha_hod * delta
            h.hod_var[hod] = (1 - self._alpha_hod) * (h.hod_var[hod] + self._alpha_hod * delta * delta)
        h.hod_n[hod] += 1
        h.how_mean[how] = kwh if h.how_n[how] == 0 else h.how_mean[how] + self._alpha_how * (kwh - h.how_mean[how])
        h.how_n[how] += 1
        h.recent = kwh if h.recent is None else h.recent + self._recent_alpha * (kwh - h.recent)

    def _learn_window(self, h: _MeterHistory, iv: _Interval) -> None:
        day, hods, hows = iv.window
        h.day_kwh, h.day_hod, h.day_how = day, hods, hows
        if len(day) >= self._day_len:
            total = sum(day)
            h.typical_day = (
                total
                if h.typical_day is None
                else h.typical_day + _TYPICAL_DAY_ALPHA * self.interval_s / _DAY_S * (total - h.typical_day)
            )
            h.month_day = (
                total if h.month_day is None else h.month_day + self.interval_s / (30 * _DAY_S) * (total - h.month_day)
            )

    def _learn_days(self, h: _MeterHistory, s: IntervalStats, iv: _Interval) -> None:
        """Same-hour energies, daily peaks and zero runs of the last days; the long-run voltage."""
        runs = "day_runs" in self.parts
        if h.day_index != iv.day:
            h.day_index = iv.day
            h.day_peaks = (h.day_peaks + [0.0])[-_DAYS_KEPT - 1 :]
            if runs:
                h.day_zero_runs = (h.day_zero_runs + [0.0])[-_DAYS_KEPT - 1 :]
                h.day_flat_runs = (h.day_flat_runs + [0.0])[-_DAYS_KEPT - 1 :]
        h.day_peaks[-1] = max(h.day_peaks[-1], iv.kwh)
        if runs:
            h.day_zero_runs[-1] = max(h.day_zero_runs[-1], h.zero_s)
            h.day_flat_runs[-1] = max(h.day_flat_runs[-1], h.flat_s)
        if "days" in self.parts and (s.interval_start + s.interval_s) % 3600 == 0:  # the hour is complete
            kwh = iv.window[0]
            for days, n in ((h.days_3h, self._three_hours), (h.days_6h, self._six_hours), (h.days_24h, self._day_len)):
                if len(kwh) >= n:
                    days[iv.hod] = (days[iv.hod] + [float(sum(kwh[-n:]))])[-_DAYS_KEPT:]
        if s.voltage_v_mean is not None and math.isfinite(s.voltage_v_mean):
            h.volt_recent = (
                s.voltage_v_mean
                if h.volt_recent is None
                else h.volt_recent + self._recent_alpha * (s.voltage_v_mean - h.volt_recent)
            )
            h.volt_n += 1
            h.volt_mean = (
                s.voltage_v_mean
                if h.volt_mean is None
                else h.volt_mean + max(self._level_alpha, 1.0 / h.volt_n) * (s.voltage_v_mean - h.volt_mean)
            )

    # ---------------------------------------------------------------- persistence

    def state(self) -> dict:
        """JSON-able snapshot of every meter's history (the agent persists it across restarts)."""
        return {
            "version": 2,
            "interval_s": self.interval_s,
            "feature_names": list(self.feature_names),
            "parts": sorted(self.parts),
            "meters": {m: h.to_json() for m, h in self._meters.items()},
        }

    def load_state(self, state: dict) -> None:
        """Restore a :meth:`state` snapshot; a snapshot of another layout or interval is refused."""
        if not isinstance(state, dict) or state.get("version") != 2:
            raise ValueError("feature state is not a version-2 snapshot")
        if state.get("interval_s") != self.interval_s:
            raise ValueError(
                f"feature state is for {state.get('interval_s')} s intervals, this builder uses {self.interval_s} s"
            )
        meters = state.get("meters")
        if not isinstance(meters, dict):
            raise ValueError("feature state has no meters table")
        saved = state.get("parts", sorted(ALL_PARTS))  # a snapshot from before parts were chosen kept all
        if not isinstance(saved, list) or not set(saved) <= ALL_PARTS:
            raise ValueError("feature state names unknown history parts")
        restored = {}
        for meter_id, obj in meters.items():
            if not isinstance(obj, dict):
                raise ValueError(f"feature state for meter {meter_id!r} is not an object")
            try:
                restored[str(meter_id)] = _MeterHistory.from_json(obj, self.parts, frozenset(saved))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"feature state for meter {meter_id!r}: {exc}") from None
        self._meters = restored


def batch_features(
    stats: Iterable[IntervalStats],
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    interval_s: int = 900,
    calendar: SiteCalendar | None = None,
) -> tuple[np.ndarray, list[IntervalStats]]:
    """Features of many meter-intervals through one :class:`FeatureBuilder`, in time order.

    Returns the matrix (float32, one row per interval) and the stats in the same row order
    (sorted by interval start, then meter), for training and offline scoring.
    """
    ordered = sorted(stats, key=lambda s: (s.interval_start, s.meter_id))
    builder = FeatureBuilder(feature_names, interval_s, calendar)
    X = np.empty((len(ordered), len(builder.feature_names)), dtype=np.float32)
    for i, s in enumerate(ordered):
        X[i] = builder.features(s)
    return X, ordered
