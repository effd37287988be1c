"""The policy sandbox: each policy changes peak, energy, cost and CO2 the way a planner expects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from collector.policy import (
    DemandResponse,
    EVAdoption,
    Efficiency,
    PolicyError,
    Scenario,
    Tariff,
    TimeOfUseShift,
    apply_scenario,
    day_profile_after,
    load_after_for_rows,
    run_sandbox,
    scenario_from_params,
)


def regional_load(days: int = 7, freq: str = "h") -> pd.DataFrame:
    """Two regions with an evening peak (17-20 UTC) on a flat base."""
    index = pd.date_range("2026-03-02", periods=days * (24 if freq == "h" else 96), freq=freq, tz="UTC")
    step_h = 1.0 if freq == "h" else 0.25
    evening = np.isin(index.hour, [17, 18, 19, 20])
    frames = []
    for region, base in (("north", 100.0), ("south", 60.0)):
        kw = np.where(evening, base * 2.0, base)
        frames.append(pd.DataFrame({"region": region, "ts": index, "kwh": kw * step_h}))
    return pd.concat(frames, ignore_index=True)


def row(result, region: str) -> pd.Series:
    return result.summary.set_index("region").loc[region]


def test_no_policy_leaves_every_figure_unchanged():
    result = run_sandbox(regional_load(), {})
    north = row(result, "north")
    assert north["peak_kw_before"] == north["peak_kw_after"] == 200.0
    assert north["energy_kwh_change"] == 0 and north["cost_change"] == 0 and north["co2_kg_change"] == 0


def test_time_of_use_shift_lowers_the_peak_and_keeps_the_energy():
    result = run_sandbox(regional_load(), {"tou_share": 0.25})
    north = row(result, "north")
    assert north["peak_kw_after"] == pytest.approx(150.0)          # 200 kW peak hours lose a quarter
    assert north["energy_kwh_after"] == pytest.approx(north["energy_kwh_before"])
    assert north["cost_after"] < north["cost_before"]               # energy moved from 0.30 to 0.12 hours
    moved_per_day = 4 * 200 * 0.25
    night = result.load[(result.load.region == "north") & (result.load.ts.dt.hour == 3)]
    assert night["kwh_after"].iloc[0] == pytest.approx(100 + moved_per_day / 6)


def test_demand_response_clips_load_above_the_threshold_and_sheds_that_energy():
    result = run_sandbox(regional_load(), {"dr_threshold_kw": 150})
    north, south = row(result, "north"), row(result, "south")
    assert north["peak_kw_after"] == pytest.approx(150.0)
    assert north["energy_kwh_change"] == pytest.approx(-7 * 4 * 50.0)
    assert south["peak_kw_after"] == pytest.approx(120.0)            # below the threshold: untouched
    assert south["energy_kwh_change"] == 0


def test_demand_response_as_share_of_each_regions_own_peak():
    result = run_sandbox(regional_load(), {"dr_threshold_share_of_peak": 0.9})
    assert row(result, "north")["peak_kw_after"] == pytest.approx(180.0)
    assert row(result, "south")["peak_kw_after"] == pytest.approx(108.0)


def test_efficiency_cuts_energy_cost_and_co2_by_the_same_percentage():
    result = run_sandbox(regional_load(), {"efficiency_pct": 10, "carbon_g_per_kwh": 250})
    north = row(result, "north")
    for metric in ("peak_kw", "energy_kwh", "cost", "co2_kg"):
        assert north[f"{metric}_after"] == pytest.approx(0.9 * north[f"{metric}_before"])
    assert north["co2_kg_before"] == pytest.approx(north["energy_kwh_before"] * 0.25)


def test_ev_adoption_adds_the_daily_charging_energy_mostly_in_the_evening():
    result = run_sandbox(regional_load(days=2), {"ev_vehicles": 100, "ev_kwh_per_day": 8})
    north = row(result, "north")
    assert north["energy_kwh_change"] == pytest.approx(2 * 100 * 8)
    assert north["peak_kw_after"] > north["peak_kw_before"]
    added = result.load[result.load.region == "north"].assign(d=lambda f: f.kwh_after - f.kwh_before)
    assert added.groupby(added.ts.dt.hour)["d"].sum().idxmax() in (19, 20)


def test_overnight_ev_charging_combined_with_time_of_use_does_not_raise_the_peak():
    result = run_sandbox(regional_load(days=2), {"ev_vehicles": 20, "ev_profile": "overnight", "tou_share": 0.1})
    assert row(result, "north")["peak_kw_after"] < row(result, "north")["peak_kw_before"]


def test_fifteen_minute_load_reports_peaks_in_kw():
    result = run_sandbox(regional_load(days=1, freq="15min"), {})
    assert row(result, "north")["peak_kw_before"] == pytest.approx(200.0)
    assert row(result, "north")["energy_kwh_before"] == pytest.approx(20 * 100 + 4 * 200)


def test_hourly_carbon_series_weights_each_hour():
    load = regional_load(days=1)
    hours = pd.date_range("2026-03-02", periods=24, freq="h", tz="UTC")
    intensity = pd.Series(np.where(hours.hour < 12, 100.0, 300.0), index=hours)
    result = run_sandbox(load, {}, carbon_intensity=intensity)
    north = load[load.region == "north"]
    expected = (north.kwh * np.where(north.ts.dt.hour < 12, 0.1, 0.3)).sum()
    assert row(result, "north")["co2_kg_before"] == pytest.approx(expected)


@pytest.mark.parametrize("params, parameter", [
    ({"tou_share": 1.5}, "tou_share"),
    ({"tou_share": "a lot"}, "tou_share"),
    ({"tou_share": 0.2, "tou_peak_hours": "17-25"}, "tou_peak_hours"),
    ({"tou_share": 0.2, "tou_offpeak_hours": "18"}, "tou_offpeak_hours"),
    ({"tou_peak_hours": "17-20"}, "tou_peak_hours"),
    ({"dr_threshold_kw": -5}, "dr_threshold_kw"),
    ({"dr_threshold_kw": 100, "dr_threshold_share_of_peak": 0.9}, "dr_threshold_kw"),
    ({"dr_threshold_share_of_peak": 0}, "dr_threshold_share_of_peak"),
    ({"efficiency_pct": 120}, "efficiency_pct"),
    ({"ev_vehicles": -3}, "ev_vehicles"),
    ({"ev_vehicles": 2.5}, "ev_vehicles"),
    ({"ev_vehicles": 10, "ev_profile": "midday"}, "ev_profile"),
    ({"ev_vehicles": 10, "ev_kwh_per_day": 1000}, "ev_kwh_per_day"),
    ({"price_peak": -0.1}, "price_peak"),
    ({"carbon_g_per_kwh": -1}, "carbon_g_per_kwh"),
    ({"solar_panels": 10}, "solar_panels"),
])
def test_bad_parameters_are_refused_naming_the_parameter(params, parameter):
    with pytest.raises(PolicyError) as info:
        scenario_from_params(params)
    assert info.value.parameter == parameter
    assert str(info.value).startswith(parameter)


@pytest.mark.parametrize("load", [
    pd.DataFrame({"region": ["a"], "kwh": [1.0]}),
    pd.DataFrame({"region": [], "ts": [], "kwh": []}),
    pd.DataFrame({"region": ["a", "a"], "ts": ["2026-01-01T00:00Z", "2026-01-01T01:00Z"], "kwh": [1.0, -2.0]}),
    pd.DataFrame({"region": ["a", "a"], "ts": ["2026-01-01T00:00Z", "2026-01-01T00:05Z"], "kwh": [1.0, 2.0]}),
    pd.DataFrame({"region": ["a"], "ts": ["yesterday-ish"], "kwh": [1.0]}),
])
def test_unusable_load_is_refused_as_the_load_parameter(load):
    with pytest.raises(PolicyError) as info:
        run_sandbox(load, {"efficiency_pct": 5})
    assert info.value.parameter == "load"


def test_scenario_objects_and_flat_parameters_give_the_same_answer():
    load = regional_load()
    by_params = run_sandbox(load, {"tou_share": 0.2, "dr_threshold_kw": 170, "efficiency_pct": 3, "ev_vehicles": 40,
                                   "price_peak": 0.3, "price_offpeak": 0.12})
    scenario = Scenario(tou=TimeOfUseShift(0.2), demand_response=DemandResponse(threshold_kw=170),
                        efficiency=Efficiency(3), ev=EVAdoption(40), tariff=Tariff.peak_offpeak(0.3, 0.12))
    by_objects = apply_scenario(load, scenario)
    pd.testing.assert_frame_equal(by_params.summary, by_objects.summary)


def test_tabpy_row_function_returns_the_after_load_in_input_order():
    load = regional_load(days=1).sample(frac=1.0, random_state=3)
    after = load_after_for_rows(load.region.tolist(), load.ts.astype(str).tolist(), load.kwh.tolist(),
                                efficiency_pct=50)
    assert after == pytest.approx((load.kwh * 0.5).tolist())


def test_tableau_day_profile_applies_the_slider_percentages():
    hours = list(range(24))
    avg = [2.0 if h in (17, 18, 19, 20) else 1.0 for h in hours]
    after = day_profile_after(hours, avg, [50] * 24, tou_shift_pct=[10] * 24, dr_cap_pct=[100] * 24,
                              efficiency_pct=[0] * 24, ev_adoption_pct=[0] * 24)
    assert after[18] == pytest.approx(1.8)
    assert sum(after) == pytest.approx(sum(avg))
    with_ev = day_profile_after(hours, avg, [50] * 24, ev_adoption_pct=[20] * 24)
    assert sum(with_ev) - sum(avg) == pytest.approx(10 * 7.0)        # 10 of 50 meters get an EV


def test_tableau_day_profile_refuses_a_slider_out_of_range():
    with pytest.raises(PolicyError) as info:
        day_profile_after(list(range(24)), [1.0] * 24, [10] * 24, dr_cap_pct=[140] * 24)
    assert info.value.parameter == "dr_cap_pct"


def test_time_of_use_windows_follow_the_regions_local_clock_not_utc():
    from collector.policy import run_sandbox

    ts = pd.date_range("2026-01-12", periods=72, freq="h", tz="UTC")
    load = pd.DataFrame({"region": "east-coast", "ts": ts, "kwh": 10.0})
    params = {"tou_share": 0.5, "tou_timezone": "America/New_York"}
    result = run_sandbox(load, params).load
    local = result["ts"].dt.tz_convert("America/New_York").dt.hour
    assert set(local[result.kwh_after < 10.0 - 1e-9]) == {17, 18, 19, 20}     # 22:00-01:00 UTC in January
    assert set(local[result.kwh_after > 10.0 + 1e-9]) == {0, 1, 2, 3, 4, 5}
    own = run_sandbox(load, {"tou_share": 0.5, "region_tou": '{"east-coast": {"timezone": "America/New_York", '
                                                              '"peak": "16-18", "offpeak": "2-3"}}'}).load
    local = own["ts"].dt.tz_convert("America/New_York").dt.hour
    assert set(local[own.kwh_after < 10.0 - 1e-9]) == {16, 17, 18}
    with pytest.raises(PolicyError, match="tou_timezone: unknown time zone 'Mars/Olympus'"):
        run_sandbox(load, {"tou_share": 0.5, "tou_timezone": "Mars/Olympus"})
