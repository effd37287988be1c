"""A feature builder remembers only the per-meter history its features read.

The gateway's feature state for 200 meters is most of what grows in the agent after start-up;
history for features the model does not use (hour-of-week profiles, the trailing day, same-hour
lists of previous days) must not be kept, and choosing what to keep must not change any value.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.features import (DEFAULT_FEATURES, FEATURE_DESCRIPTIONS, LEGACY_DEFAULT_FEATURES, FeatureBuilder,
                                 IntervalStats)

DAY = 86_400
T0 = 1_735_689_600
ALL = tuple(FEATURE_DESCRIPTIONS)
LEGACY_ONLY = ("hod_mean", "hod_var", "hod_n", "how_mean", "how_n", "cv_mean", "cv_n", "day_kwh", "day_hod",
               "day_how", "days_3h", "days_6h", "days_24h", "day_zero_runs", "day_flat_runs")


def _history(days: int = 10) -> list[IntervalStats]:
    """Two meters with gaps, zero runs, a stuck register, a spike, voltage and power."""
    rng = np.random.default_rng(5)
    out = []
    for m, size in (("a", 1.0), ("b", 40.0)):
        for i in range(days * 96):
            if m == "b" and 300 <= i < 340:
                continue  # a 10 h gap
            t = T0 + i * 900
            hour = (t % DAY) / 3600
            kwh = size * (0.3 + np.exp(-((hour - 19) / 3) ** 2)) * rng.lognormal(0, 0.08)
            if m == "a" and (i % 96) < 8 and i > 500:
                kwh = 0.0  # a nightly zero run
            if m == "a" and 700 <= i < 740:
                kwh = 0.5  # stuck
            if m == "b" and i == 800:
                kwh *= 6
            v = 230.0 * (1 + 0.01 * rng.standard_normal())
            out.append(IntervalStats(m, t, 900, float(kwh), 3, 800.0, 2000.0, 100.0, 50.0, v * 0.99, v))
    return sorted(out, key=lambda s: (s.interval_start, s.meter_id))


def _run(builder: FeatureBuilder, history: list[IntervalStats]) -> np.ndarray:
    return np.array([builder.features(s) for s in history])


def test_the_default_features_keep_no_history_of_the_previous_features():
    builder = FeatureBuilder(DEFAULT_FEATURES)
    _run(builder, _history())
    for meter in builder._meters.values():
        for name in LEGACY_ONLY:
            assert getattr(meter, name) == [], name
        assert meter.typical_day is None and meter.month_day is None and meter.recent is None
    kept = len(json.dumps(builder.state()))
    everything = FeatureBuilder(ALL)
    _run(everything, _history())
    assert kept < len(json.dumps(everything.state())) / 2


@pytest.fixture(scope="module")
def all_features() -> tuple[list[IntervalStats], np.ndarray]:
    history = _history(9)
    return history, _run(FeatureBuilder(ALL), history)


@pytest.mark.parametrize("name", ALL)
def test_each_feature_alone_has_the_values_it_has_among_all(name, all_features):
    history, together = all_features
    alone = _run(FeatureBuilder([name]), history)[:, 0]
    assert np.array_equal(alone, together[:, ALL.index(name)])


@pytest.mark.parametrize("names", [DEFAULT_FEATURES, LEGACY_DEFAULT_FEATURES])
def test_a_snapshot_of_everything_loads_into_a_builder_that_keeps_less(names):
    """An agent upgraded from a version that kept every part drops what its model does not read
    and continues exactly as if it had never kept it."""
    history = _history()
    first, rest = history[:len(history) // 2], history[len(history) // 2:]
    old = FeatureBuilder(ALL)
    _run(old, first)
    snapshot = json.loads(json.dumps(old.state()))
    del snapshot["parts"]  # written before parts were chosen
    upgraded = FeatureBuilder(names)
    upgraded.load_state(snapshot)
    never = FeatureBuilder(names)
    _run(never, first)
    assert np.array_equal(_run(upgraded, rest), _run(never, rest))


def test_a_model_that_needs_more_history_starts_those_parts_afresh():
    history = _history()
    first, rest = history[:len(history) // 2], history[len(history) // 2:]
    default = FeatureBuilder(DEFAULT_FEATURES)
    _run(default, first)
    legacy = FeatureBuilder(LEGACY_DEFAULT_FEATURES)
    legacy.load_state(json.loads(json.dumps(default.state())))
    meter = legacy._meters["a"]
    assert meter.days_3h == [[] for _ in range(24)] and meter.day_kwh == []
    assert len(meter.day_zero_runs) == len(meter.day_peaks) > 0  # aligned with the kept daily peaks
    X = _run(legacy, rest)
    assert np.isfinite(X).all()
    assert all(len(v) > 0 for v in legacy._meters["a"].days_3h)
    # what both keep (peaks, voltage) carried over: the same as a legacy builder that saw everything
    full = FeatureBuilder(LEGACY_DEFAULT_FEATURES)
    _run(full, first)
    shared = [LEGACY_DEFAULT_FEATURES.index(n) for n in ("peak_vs_days", "voltage_vs_recent", "voltage_min_pu")]
    assert np.array_equal(X[:, shared], _run(full, rest)[:, shared])


def test_a_snapshot_naming_an_unknown_part_is_refused():
    builder = FeatureBuilder(DEFAULT_FEATURES)
    builder.features(IntervalStats("a", T0, 900, 1.0, 3, None, None, None, None))
    state = builder.state()
    state["parts"] = ["profile", "tea_leaves"]
    with pytest.raises(ValueError, match="unknown history parts"):
        FeatureBuilder(DEFAULT_FEATURES).load_state(state)
