"""The shared interval features: register deltas, warm-up, scale-free, profile-relative, persistent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.features import (DEFAULT_FEATURES, FEATURE_DESCRIPTIONS, LEGACY_DEFAULT_FEATURES, FeatureBuilder,
                                 IntervalStats, batch_features, interval_stats)

DAY = 86_400
T0 = 1_735_689_600
ALL = list(FEATURE_DESCRIPTIONS)
NEUTRAL = {"night_share": 0.25, "spike_ratio": 1.0, "voltage_min_pu": 1.0, "voltage_mean_pu": 1.0}


def _stats(meter: str, start: float, kwh: float, power=None, volts=None) -> IntervalStats:
    mean, peak = (power if power else (None, None))
    v_min, v_mean = (volts if volts else (None, None))
    return IntervalStats(meter, start, 900, kwh, 3, mean, peak, None, None, v_min, v_mean)


def _daily(meter: str, days: int, size: float = 1.0, seed: int = 0, nominal_v: float | None = None,
           start: float = T0) -> list[IntervalStats]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(days * 96):
        t = start + i * 900
        hour = (t % DAY) / 3600
        kwh = size * (0.4 + np.exp(-((hour - 18) / 3) ** 2)) * rng.lognormal(0, 0.05)
        volts = None
        if nominal_v:
            v = nominal_v * (1.0 + 0.01 * np.sin(2 * np.pi * hour / 12) + 0.002 * rng.standard_normal())
            volts = (v * 0.995, v)
        out.append(_stats(meter, t, float(kwh), volts=volts))
    return out


def _builder_after(history: list[IntervalStats], names=DEFAULT_FEATURES) -> FeatureBuilder:
    builder = FeatureBuilder(names)
    for s in history:
        builder.features(s)
    return builder


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
    builder = FeatureBuilder(ALL)
    rows = np.array([builder.features(s) for s in _daily("m1", 1)])
    named = dict(zip(ALL, rows.T))
    assert rows[0].tolist() == [NEUTRAL.get(n, 0.0) for n in ALL]
    for name in ("level_vs_hour_of_day", "level_vs_hour_of_week", "z_vs_hour_of_day", "level_6h_vs_profile",
                 "day_vs_typical_day", "day_vs_typical_month", "variability_vs_typical", "level_3h_vs_days",
                 "level_6h_vs_days", "day_vs_days", "peak_vs_days", "zero_hours_vs_days", "flatline_hours_vs_days",
                 "voltage_vs_recent"):
        assert np.all(named[name] == 0.0), name
    # without voltage data the per-unit voltages stay at their neutral 1
    assert np.all(named["voltage_min_pu"] == 1.0) and np.all(named["voltage_mean_pu"] == 1.0)
    # The recent level is known from the second interval on; a normal day stays moderate.
    for name in ("level_vs_recent",):
        assert np.all(np.abs(named[name]) < 1.0), name
    assert np.all(named["night_share"] == 0.25)
    assert np.all(named["zero_hours"] == 0.0)
    assert np.all(named["flatline_hours"] <= 0.25)  # two equal intervals in a row happen by chance


def test_features_do_not_depend_on_meter_size():
    small, _ = batch_features(_daily("m1", 10, size=0.2, seed=3), ALL)
    large, _ = batch_features(_daily("m1", 10, size=2000.0, seed=3), ALL)
    assert np.allclose(small, large, atol=1e-4)


def test_a_drop_against_the_meters_own_profile_shows_as_a_large_negative_level():
    history = _daily("m1", 10)
    builder = _builder_after(history, ALL)
    last = history[-1]
    normal = builder.features(_stats("m1", last.interval_start + 900, last.kwh))
    dropped = builder.features(_stats("m1", last.interval_start + 1800, last.kwh * 0.05))
    i = ALL.index("level_vs_hour_of_day")
    assert abs(normal[i]) < 0.3
    assert dropped[i] < -2.0


def test_hours_of_zero_consumption_accumulate():
    history = _daily("m1", 3)
    builder = _builder_after(history, ALL)
    start = history[-1].interval_start
    rows = [builder.features(_stats("m1", start + 900 * (k + 1), 0.0)) for k in range(8)]
    assert rows[-1][ALL.index("zero_hours")] == pytest.approx(2.0)
    # the meter never stood still for long before, so all of it is beyond its habit
    assert rows[-1][ALL.index("zero_hours_vs_days")] == pytest.approx(2.0)


def _named(builder: FeatureBuilder, stats: IntervalStats) -> dict[str, float]:
    return dict(zip(builder.feature_names, builder.features(stats).tolist()))


def test_zero_runs_the_meter_has_every_day_are_its_habit_and_longer_ones_are_not():
    # a rooftop-PV home imports nothing from 10:00 to 16:00 every day
    history = [s if not 10 <= (s.interval_start % DAY) / 3600 < 16 else _stats(s.meter_id, s.interval_start, 0.0)
               for s in _daily("m1", 5)]
    builder = _builder_after(history, LEGACY_DEFAULT_FEATURES)
    day = history[-1].interval_start + 900
    rows = []
    for k in range(96):
        t = day + 900 * k
        hour = (t % DAY) / 3600
        rows.append(_named(builder, _stats("m1", t, 0.0 if 10 <= hour < 22 else 0.5)))  # 12 h of zeros
    at_16 = rows[int(16 * 4) - 1]
    assert at_16["zero_hours_vs_days"] == 0.0  # six hours, as every day
    assert rows[int(22 * 4) - 1]["zero_hours_vs_days"] == pytest.approx(6.0)


def test_a_night_load_stands_out_on_the_second_night_too():
    history = _daily("m1", 5)
    builder = _builder_after(history, LEGACY_DEFAULT_FEATURES)
    base = history[-1].interval_start + 900
    peaks = []
    for night in range(2):
        for k in range(96):
            t = base + night * DAY + 900 * k
            hour = (t % DAY) / 3600
            extra = 3.0 if 1 <= hour < 4 else 0.0  # three hours of a load the meter never had at night
            named = _named(builder, _stats("m1", t, 0.4 + extra))
            if hour == 3.75:
                peaks.append(named["level_3h_vs_days"])
    # the median of the previous days does not learn one anomalous night into the baseline
    assert peaks[0] > 1.5 and peaks[1] > 1.5


def test_a_spike_above_every_interval_of_the_previous_days_shows_and_normal_ones_do_not():
    history = _daily("m1", 4)
    builder = _builder_after(history)
    t = history[-1].interval_start + 900
    assert _named(builder, _stats("m1", t, history[-96].kwh))["peak_vs_days"] == 0.0
    assert _named(builder, _stats("m1", t + 900, 20.0))["peak_vs_days"] > 2.0


def test_a_voltage_sag_shows_in_per_unit_and_against_the_recent_voltage():
    history = _daily("m1", 3, nominal_v=230.0)
    builder = _builder_after(history)
    t = history[-1].interval_start + 900
    sag = _named(builder, _stats("m1", t, history[-96].kwh * 0.65, volts=(0.74 * 230.0, 0.75 * 230.0)))
    assert sag["voltage_min_pu"] == pytest.approx(0.74, abs=1e-6)
    assert sag["voltage_mean_pu"] == pytest.approx(0.75, abs=1e-6)
    assert sag["voltage_vs_recent"] < -0.25
    normal = _named(builder, _stats("m1", t + 900, history[-95].kwh, volts=(229.0, 230.5)))
    assert 0.98 < normal["voltage_min_pu"] < 1.02 and abs(normal["voltage_vs_recent"]) < 0.05


def test_per_unit_voltage_is_of_the_meters_own_nominal():
    builder = _builder_after(_daily("us", 2, nominal_v=120.0))
    named = _named(builder, _stats("us", T0 + 2 * DAY, 1.0, volts=(119.0, 120.5)))
    assert named["voltage_mean_pu"] == pytest.approx(120.5 / 120.0)


def test_interval_stats_reduce_voltage_to_its_minimum_and_mean():
    stats = interval_stats("m1", T0, 900, np.array([T0 + 1, T0 + 2, T0 + 3]), np.array([1.0, 1.1, 1.2]), None,
                           None, voltage_v=np.array([231.0, np.nan, 170.0]))
    assert stats.voltage_v_min == 170.0 and stats.voltage_v_mean == pytest.approx(200.5)
    assert interval_stats("m1", T0, 900, np.array([T0 + 1]), np.array([1.0]), None, None).voltage_v_min is None


def test_a_gap_in_the_data_does_not_look_like_an_anomaly():
    history = _daily("m1", 5, nominal_v=230.0)
    # eight hours of nothing (reader down, meter unreachable), then the meter resumes as before
    resumed = [s for s in _daily("m1", 2, nominal_v=230.0, seed=1, start=T0 + 5 * DAY) if s.interval_start >= T0 + 5 * DAY + 8 * 3600]
    names = LEGACY_DEFAULT_FEATURES + tuple(n for n in DEFAULT_FEATURES if n not in LEGACY_DEFAULT_FEATURES)
    builder = _builder_after(history, names)
    rows = np.array([builder.features(s) for s in resumed])
    named = dict(zip(names, rows.T))
    for name in ("level_3h_vs_days", "level_6h_vs_days", "day_vs_days"):
        assert np.all(np.abs(named[name]) < 0.5), name
    for name in ("peak_vs_days", "zero_hours_vs_days", "flatline_hours_vs_days", "near_zero_hours_vs_habit",
                 "constant_hours_vs_habit"):
        assert np.all(named[name] < 0.3), name
    assert np.all(np.abs(named["voltage_vs_recent"]) < 0.05)


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


def test_every_feature_is_finite_on_a_meter_with_gaps_power_and_voltage():
    history = [s for i, s in enumerate(_daily("m1", 4, nominal_v=230.0)) if not 100 <= i < 130]  # a 7.5 h gap
    history = [IntervalStats(s.meter_id, s.interval_start, 900, s.kwh, 3, 800.0, 2400.0, 10.0, 300.0,
                             s.voltage_v_min, s.voltage_v_mean) for s in history]
    X, _ = batch_features(history, ALL)
    assert np.isfinite(X).all()


def test_the_profile_features_have_flag_reasons():
    from edge_agent.scorer import describe_features

    for name in ALL:
        assert describe_features({name: 9.0}) is not None, name
