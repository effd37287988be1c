"""The shared interval features: register deltas, warm-up, scale-free, profile-relative, persistent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.features import (DEFAULT_FEATURES, FeatureBuilder, IntervalStats, batch_features,
                                 interval_stats)

DAY = 86_400
T0 = 1_735_689_600


def _stats(meter: str, start: float, kwh: float, power=None) -> IntervalStats:
    mean, peak = (power if power else (None, None))
    return IntervalStats(meter, start, 900, kwh, 3, mean, peak, None, None)


def _daily(meter: str, days: int, size: float = 1.0, seed: int = 0) -> list[IntervalStats]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(days * 96):
        start = T0 + i * 900
        hour = (start % DAY) / 3600
        kwh = size * (0.4 + np.exp(-((hour - 18) / 3) ** 2)) * rng.lognormal(0, 0.05)
        out.append(_stats(meter, start, float(kwh)))
    return out


def test_interval_kwh_is_the_register_delta_from_the_previous_interval():
    stats = interval_stats("m1", T0, 900, np.array([T0 + 10, T0 + 500]), np.array([100.5, 100.9]),
                           np.array([1000.0, 3000.0]), prev_energy_kwh=100.0)
    assert stats.kwh == pytest.approx(0.9)
    assert stats.readings == 2
    assert stats.power_w_mean == pytest.approx(2000.0) and stats.power_w_max == 3000.0


def test_interval_without_previous_register_counts_from_its_first_reading():
    stats = interval_stats("m1", T0, 900, np.array([T0 + 500, T0 + 10]), np.array([100.9, 100.5]), None, None)
    assert stats.kwh == pytest.approx(0.4)
    assert stats.power_w_mean is None


def test_register_reset_adds_no_negative_consumption():
    stats = interval_stats("m1", T0, 900, np.array([T0 + 1, T0 + 2, T0 + 3]), np.array([50.2, 0.1, 0.3]),
                           None, prev_energy_kwh=50.0)
    assert stats.kwh == pytest.approx(0.2 + 0.2)


def test_first_day_features_are_neutral():
    builder = FeatureBuilder(DEFAULT_FEATURES)
    rows = np.array([builder.features(s) for s in _daily("m1", 1)])
    named = dict(zip(DEFAULT_FEATURES, rows.T))
    assert rows[0].tolist() == [0.25 if n == "night_share" else 0.0 for n in DEFAULT_FEATURES]
    for name in ("level_vs_hour_of_day", "level_vs_hour_of_week", "z_vs_hour_of_day", "level_6h_vs_profile",
                 "day_vs_typical_day", "day_vs_typical_month", "variability_vs_typical"):
        assert np.all(named[name] == 0.0), name
    # The recent level is known from the second interval on; a normal day stays moderate.
    for name in ("level_vs_recent",):
        assert np.all(np.abs(named[name]) < 1.0), name
    assert np.all(named["night_share"] == 0.25)
    assert np.all(named["zero_hours"] == 0.0)
    assert np.all(named["flatline_hours"] <= 0.25)  # two equal intervals in a row happen by chance


def test_features_do_not_depend_on_meter_size():
    small, _ = batch_features(_daily("m1", 10, size=0.2, seed=3))
    large, _ = batch_features(_daily("m1", 10, size=2000.0, seed=3))
    assert np.allclose(small, large, atol=1e-4)


def test_a_drop_against_the_meters_own_profile_shows_as_a_large_negative_level():
    history = _daily("m1", 10)
    builder = FeatureBuilder(DEFAULT_FEATURES)
    for s in history:
        builder.features(s)
    last = history[-1]
    normal = builder.features(_stats("m1", last.interval_start + 900, last.kwh))
    dropped = builder.features(_stats("m1", last.interval_start + 1800, last.kwh * 0.05))
    i = DEFAULT_FEATURES.index("level_vs_hour_of_day")
    assert abs(normal[i]) < 0.3
    assert dropped[i] < -2.0


def test_hours_of_zero_consumption_accumulate():
    history = _daily("m1", 3)
    builder = FeatureBuilder(DEFAULT_FEATURES)
    for s in history:
        builder.features(s)
    start = history[-1].interval_start
    rows = [builder.features(_stats("m1", start + 900 * (k + 1), 0.0)) for k in range(8)]
    assert rows[-1][DEFAULT_FEATURES.index("zero_hours")] == pytest.approx(2.0)


def test_spike_ratio_uses_peak_over_mean_power():
    builder = FeatureBuilder(["spike_ratio"])
    assert builder.features(_stats("m1", T0, 1.0, power=(1000.0, 6000.0)))[0] == pytest.approx(6.0)
    assert builder.features(_stats("m1", T0 + 900, 1.0))[0] == 1.0


def test_state_survives_a_json_round_trip_and_continues_identically():
    history = _daily("m1", 4) + _daily("m2", 4, size=5.0)
    history.sort(key=lambda s: s.interval_start)
    first, rest = history[: len(history) // 2], history[len(history) // 2:]
    a = FeatureBuilder(DEFAULT_FEATURES)
    for s in first:
        a.features(s)
    b = FeatureBuilder(DEFAULT_FEATURES)
    b.load_state(json.loads(json.dumps(a.state())))
    assert np.array_equal(np.array([a.features(s) for s in rest]), np.array([b.features(s) for s in rest]))


def test_state_for_another_interval_length_is_refused():
    a = FeatureBuilder(DEFAULT_FEATURES, interval_s=900)
    a.features(_stats("m1", T0, 1.0))
    with pytest.raises(ValueError, match="900 s intervals"):
        FeatureBuilder(DEFAULT_FEATURES, interval_s=3600).load_state(a.state())


def test_unknown_feature_names_are_refused():
    with pytest.raises(ValueError, match="unknown feature 'phase_of_moon'"):
        FeatureBuilder(["phase_of_moon"])


def test_batch_features_equal_the_streaming_builder_in_time_order():
    history = _daily("m2", 3, size=3.0) + _daily("m1", 3)
    X, ordered = batch_features(reversed(history))
    builder = FeatureBuilder(DEFAULT_FEATURES)
    streamed = np.array([builder.features(s) for s in ordered])
    assert [s.interval_start for s in ordered] == sorted(s.interval_start for s in ordered)
    assert np.array_equal(X, streamed)
    assert X.dtype == np.float32 and X.shape == (len(history), len(DEFAULT_FEATURES))


def test_every_feature_is_finite_and_explainable_on_a_meter_with_gaps_and_power():
    from edge_agent.features import FEATURE_DESCRIPTIONS
    from edge_agent.scorer import describe_features

    history = [s for i, s in enumerate(_daily("m1", 4)) if not 100 <= i < 130]  # a 7.5 h gap
    history = [IntervalStats(s.meter_id, s.interval_start, 900, s.kwh, 3, 800.0, 2400.0, 10.0, 300.0)
               for s in history]
    X, _ = batch_features(history, list(FEATURE_DESCRIPTIONS))
    assert np.isfinite(X).all()
    for name in FEATURE_DESCRIPTIONS:
        assert describe_features({name: 9.0}) is not None, name
