"""Day-type features on real-meter quirks: weekly patterns, holidays, DST, long shifts, outages logged
as a small constant, stuck registers with coarse resolution, and any interval length."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge_agent.baseline import BYTES_PER_METER, MeterBaseline
from edge_agent.features import LEGACY_DEFAULT_FEATURES, FeatureBuilder, IntervalStats
from edge_agent.site_calendar import SiteCalendar, holiday_ordinals

H = 3600
PARIS = ZoneInfo("Europe/Paris")
NAMES = ("dev_vs_daytype", "dev_3h_vs_recent", "dev_24h_vs_daytype", "dev_72h_vs_daytype", "level_vs_daytype",
         "level_24h_vs_daytype", "near_zero_hours_vs_habit", "constant_hours_vs_habit")


def office_kwh(local: datetime, rng: np.random.Generator, size: float = 300.0) -> float:
    """A commercial building: open 08-18 local on weekdays, a lower Saturday, base load otherwise."""
    open_hours = 8 <= local.hour < 18
    level = 1.0 if local.weekday() < 5 and open_hours else 0.6 if local.weekday() == 5 and open_hours else 0.35
    return float(size * level * rng.lognormal(0, 0.03))


def series(start: datetime, days: int, interval_s: int = H, seed: int = 0, zone=PARIS, kwh=office_kwh):
    rng = np.random.default_rng(seed)
    t0 = start.replace(tzinfo=zone).timestamp()
    out = []
    for i in range(days * 86_400 // interval_s):
        t = t0 + i * interval_s
        out.append(IntervalStats("m1", t, interval_s, kwh(datetime.fromtimestamp(t, zone), rng) * interval_s / H, 1,
                                 None, None, None, None))
    return out


def run(stats, names=NAMES, interval_s: int = H, calendar: SiteCalendar | None = None) -> list[dict[str, float]]:
    builder = FeatureBuilder(names, interval_s, calendar)
    return [dict(zip(names, builder.features(s).tolist())) for s in stats]


def test_a_public_holiday_is_compared_with_sundays_when_the_site_country_is_known():
    # 2024-05-01 (Wednesday) is a public holiday in France: the office is closed, as on a Sunday
    history = series(datetime(2024, 3, 25), 45, seed=1)
    closed = [s if datetime.fromtimestamp(s.interval_start, PARIS).date() != datetime(2024, 5, 1).date() else
              IntervalStats(s.meter_id, s.interval_start, H, 0.35 * 300, 1, None, None, None, None) for s in history]
    calendar = SiteCalendar("Europe/Paris", holiday_ordinals("FR", [2024]))
    with_holidays = run(closed, calendar=calendar)
    without = run(closed, calendar=SiteCalendar("Europe/Paris"))
    noon = [i for i, s in enumerate(closed) if datetime.fromtimestamp(s.interval_start, PARIS) ==
            datetime(2024, 5, 1, 12, tzinfo=PARIS)][0]
    assert abs(with_holidays[noon]["dev_vs_daytype"]) < 1.5
    assert without[noon]["dev_vs_daytype"] < -2.5


def test_weekends_and_mondays_are_not_anomalous_against_their_own_day_type():
    rows = run(series(datetime(2024, 1, 1), 42, seed=2), calendar=SiteCalendar("Europe/Paris"))
    late = rows[28 * 24:]
    for name in ("dev_vs_daytype", "dev_24h_vs_daytype", "level_24h_vs_daytype"):
        assert max(abs(r[name]) for r in late) < 2.2, name


def test_a_daylight_saving_change_does_not_shift_the_local_profile():
    # Europe/Paris moves to summer time on 2024-03-31: the office still opens at 08:00 local
    stats = series(datetime(2024, 2, 20), 50, seed=3)
    local = run(stats, calendar=SiteCalendar("Europe/Paris"))
    utc = run(stats, calendar=SiteCalendar("UTC"))
    after = [i for i, s in enumerate(stats) if datetime(2024, 4, 2, tzinfo=PARIS).timestamp() <= s.interval_start
             < datetime(2024, 4, 4, tzinfo=PARIS).timestamp()]
    assert max(abs(local[i]["level_vs_daytype"]) for i in after) < 0.2
    assert max(abs(utc[i]["level_vs_daytype"]) for i in after) > 0.5  # an hour off at opening and closing


def test_a_level_shift_stays_visible_for_its_whole_length():
    stats = series(datetime(2024, 1, 1), 50, seed=4)
    shift_start = datetime(2024, 2, 5, tzinfo=PARIS).timestamp()  # a Monday, ten days at 0.7x
    shifted = [IntervalStats(s.meter_id, s.interval_start, H, s.kwh * (0.7 if shift_start <= s.interval_start
                             < shift_start + 10 * 86_400 else 1.0), 1, None, None, None, None) for s in stats]
    rows = run(shifted, calendar=SiteCalendar("Europe/Paris"))
    legacy = run(shifted, LEGACY_DEFAULT_FEATURES, calendar=SiteCalendar("Europe/Paris"))
    day9 = [i for i, s in enumerate(shifted) if shift_start + 8.5 * 86_400 <= s.interval_start
            < shift_start + 9.5 * 86_400]
    assert np.median([rows[i]["level_24h_vs_daytype"] for i in day9]) < np.log(0.8)
    assert np.median([rows[i]["dev_24h_vs_daytype"] for i in day9]) < -1.5
    # the previous default's median of the last seven days has absorbed it by then
    assert np.median([legacy[i]["day_vs_days"] for i in day9]) > np.log(0.9)


def test_an_outage_logged_as_a_small_constant_is_near_zero_and_the_old_zero_feature_missed_it():
    stats = series(datetime(2024, 1, 1), 30, seed=5)
    start = datetime(2024, 1, 24, 9, tzinfo=PARIS).timestamp()
    out = [IntervalStats(s.meter_id, s.interval_start, H, 1.0 if start <= s.interval_start < start + 20 * H
                         else s.kwh, 1, None, None, None, None) for s in stats]
    rows = run(out, NAMES + ("zero_hours_vs_days",), calendar=SiteCalendar("Europe/Paris"))
    last = [i for i, s in enumerate(out) if s.interval_start == start + 19 * H][0]
    assert rows[last]["near_zero_hours_vs_habit"] == pytest.approx(20.0)
    assert rows[last]["zero_hours_vs_days"] == 0.0  # 1.0 on a meter averaging 300 is not "zero"
    assert max(r["near_zero_hours_vs_habit"] for r in rows[:last - 20]) == 0.0


def test_a_stuck_register_shows_beyond_the_runs_a_coarse_meter_has_anyway():
    def coarse(local, rng):  # 0.25 kWh steps: quiet nights repeat the same value for hours
        return float(np.round(office_kwh(local, rng, size=2.0) / 0.25) * 0.25)

    stats = series(datetime(2024, 1, 1), 30, seed=6, kwh=coarse)
    normal = run(stats, calendar=SiteCalendar("Europe/Paris"))
    # the weekend's 38 unchanged hours are a habit once two weekends have been seen
    assert max(r["constant_hours_vs_habit"] for r in normal[15 * 24:]) < 3.0
    start = 25 * 24
    stuck = stats[:start] + [IntervalStats("m1", s.interval_start, H, stats[start - 1].kwh, 1, None, None, None, None)
                             for s in stats[start:start + 80]]
    rows = run(stuck, calendar=SiteCalendar("Europe/Paris"))
    assert rows[-1]["constant_hours_vs_habit"] > 40.0


def test_a_constant_load_read_through_a_rounded_register_counts_as_unchanged():
    # a household register in Wh: a tamper holding the load at 0.4035 kW gives 15-minute deltas of
    # 0.100 or 0.101 kWh (both ends of each interval are rounded), never the same value for long
    def home(local, rng):  # kWh an hour; series() takes a quarter of it for each 15 minutes
        return 4 * float(np.round(0.075 * rng.lognormal(0, 0.4), 3))

    stats = series(datetime(2024, 1, 1), 20, interval_s=900, seed=8, kwh=home)
    start = 18 * 96
    register = np.round(1234.5678 + 0.4035 * 0.25 * np.arange(49), 3)
    held = [IntervalStats("m1", s.interval_start, 900, float(d), 1, None, None, None, None)
            for s, d in zip(stats[start:start + 48], np.diff(register))]
    assert len({round(h.kwh, 6) for h in held}) == 2
    rows = run(stats[:start] + held, interval_s=900, calendar=SiteCalendar("Europe/Paris"))
    assert rows[-1]["constant_hours_vs_habit"] > 8.0


@pytest.mark.parametrize("interval_s", [900, 1800, 3600])
def test_windows_are_hours_so_every_interval_sees_the_same_shift(interval_s):
    stats = series(datetime(2024, 1, 1), 36, interval_s=interval_s, seed=7)
    shift_start = datetime(2024, 2, 1, tzinfo=PARIS).timestamp()
    shifted = [IntervalStats(s.meter_id, s.interval_start, interval_s, s.kwh * (1.4 if s.interval_start >= shift_start
                                                                                  else 1.0), 1, None, None, None, None)
               for s in stats]
    rows = run(shifted, interval_s=interval_s, calendar=SiteCalendar("Europe/Paris"))
    day2 = [i for i, s in enumerate(shifted) if shift_start + 1.5 * 86_400 <= s.interval_start]
    level = np.median([rows[i]["level_24h_vs_daytype"] for i in day2])
    assert level == pytest.approx(np.log(1.4), abs=0.08)
    before = [i for i, s in enumerate(shifted) if 28 * 86_400 < s.interval_start - stats[0].interval_start
              and s.interval_start < shift_start]
    assert np.median([abs(rows[i]["dev_vs_daytype"]) for i in before]) < 1.5


def test_four_weeks_of_history_per_meter_take_a_few_kilobytes_at_any_interval():
    b = MeterBaseline()
    arrays = (b.hours.nbytes + b.expected.nbytes + b.days.nbytes + b.kinds.nbytes + b.profile.nbytes
              + b.spread.nbytes)
    assert arrays == BYTES_PER_METER < 8192
    for k in range(28 * 96):  # four weeks of 15-minute intervals add into the same cells
        b.add(738_000 + k // 96, (k % 96) // 4, 0, 0.25)
    assert b.hours.shape == (28, 24) and float(np.nansum(b.hours)) == pytest.approx(28 * 96 * 0.25)


def test_with_few_days_of_history_yesterday_is_judged_against_the_days_before_it():
    # A meter installed on Thursday with guests over the weekend (twice its usual load). On Monday
    # its profile is the median of Thursday to Sunday, which the weekend itself has moved to 1.5x;
    # Sunday was expected at Thursday to Saturday's median (1x) and must still show as doubled.
    stats = series(datetime(2024, 1, 4), 5, seed=4, kwh=lambda local, rng: 2.0 * rng.lognormal(0, 0.02))
    weekend = {datetime(2024, 1, 6).date(), datetime(2024, 1, 7).date()}
    guests = [IntervalStats(s.meter_id, s.interval_start, H, s.kwh * (2.0 if datetime.fromtimestamp(
        s.interval_start, PARIS).date() in weekend else 1.0), 1, None, None, None, None) for s in stats]
    rows = run(guests, names=("shift_24h_vs_daytype",), calendar=SiteCalendar("Europe/Paris"))
    monday_1am = [i for i, s in enumerate(guests)
                  if datetime.fromtimestamp(s.interval_start, PARIS) == datetime(2024, 1, 8, 1, tzinfo=PARIS)][0]
    assert rows[monday_1am]["shift_24h_vs_daytype"] == pytest.approx(np.log(2.0), abs=0.1)


def test_near_nothing_imported_while_the_meter_exports_is_the_sun_not_an_outage():
    # a PV home imports almost nothing on sunny afternoons; its export register says why
    def pv_home(local: datetime, rng: np.random.Generator) -> float:
        return 0.001 if 10 <= local.hour < 16 else 0.5 * rng.lognormal(0, 0.1)

    stats = series(datetime(2024, 6, 1), 10, seed=5, kwh=pv_home)
    sunny = [IntervalStats(s.meter_id, s.interval_start, H, s.kwh, 1, None, None, None, None,
                           export_kwh=1.2 if s.kwh < 0.01 else 0.0) for s in stats]
    names = ("near_zero_hours_vs_habit", "constant_hours_vs_habit")
    # day 9: a longer sunny stretch than ever (10-18 h); with the export seen it is not an outage
    longer = [IntervalStats(s.meter_id, s.interval_start, H, 0.001, 1, None, None, None, None, export_kwh=1.2)
              if s.interval_start >= stats[0].interval_start + 8 * 86_400 and 10 <= datetime.fromtimestamp(
                  s.interval_start, PARIS).hour < 18 else s for s in sunny]
    assert max(r["near_zero_hours_vs_habit"] for r in run(longer, names=names)) == 0.0
    blind = [IntervalStats(s.meter_id, s.interval_start, H, s.kwh, 1, None, None, None, None) for s in longer]
    assert max(r["near_zero_hours_vs_habit"] for r in run(blind, names=names)) > 0.0


def noisy_home_kwh(local: datetime, rng: np.random.Generator) -> float:
    """A home: quiet nights (fridge, standby), noisy mornings and evenings, and days that differ by a
    third (out all day, guests, cooking): whole-day level lognormal(0, 0.3), hours lognormal(0, 0.5)."""
    if local.hour < 6:
        return float(0.3 * rng.lognormal(0, 0.08))
    day = np.random.default_rng(local.toordinal()).lognormal(0, 0.3)  # one level per day
    busy = 2.0 if 7 <= local.hour < 9 or 18 <= local.hour < 23 else 0.8
    return float(busy * day * rng.lognormal(0, 0.5))


def test_a_night_load_on_a_noisy_home_is_many_sds_of_its_quiet_night_hours():
    # The home's whole-day usual deviation is set by its evenings; a night-time load of one mean
    # hour (+0.8 kWh on a 0.3 kWh night) is one or two of those, but many sds of the night hours.
    stats = series(datetime(2024, 1, 1), 42, seed=8, kwh=noisy_home_kwh)
    night = datetime(2024, 2, 6, tzinfo=PARIS).timestamp()  # a Tuesday, 00:00-05:00
    loaded = [IntervalStats(s.meter_id, s.interval_start, H, s.kwh + (0.8 if night <= s.interval_start < night + 5 * H
                                                                       else 0.0), 1, None, None, None, None)
              for s in stats]
    names = ("z_vs_daytype", "dev_vs_daytype")
    rows = run(loaded, names=names, calendar=SiteCalendar("Europe/Paris"))
    hit = [i for i, s in enumerate(loaded) if night <= s.interval_start < night + 5 * H]
    normal = [i for i, s in enumerate(loaded) if s.interval_start >= stats[0].interval_start + 21 * 86_400
              and not night - 6 * H <= s.interval_start < night + 12 * H]

    def separation(name: str) -> float:  # share of normal hours scoring at or above the night load's weakest
        weakest = min(abs(rows[i][name]) for i in hit)
        return float(np.mean([abs(rows[i][name]) >= weakest for i in normal]))

    assert separation("z_vs_daytype") < 0.015
    assert separation("dev_vs_daytype") > 0.03  # in whole-day usual deviations it is a lively evening


def test_a_week_long_shift_on_a_noisy_home_shows_to_its_end_in_the_median_hour_of_seven_days():
    # a 0.75x week (a heat pump off, half the family away) on a home whose days vary by a third
    stats = series(datetime(2024, 1, 1), 56, seed=9, kwh=noisy_home_kwh)
    start = datetime(2024, 2, 12, tzinfo=PARIS).timestamp()  # a Monday, seven days
    shifted = [IntervalStats(s.meter_id, s.interval_start, H, s.kwh * (0.75 if start <= s.interval_start
                             < start + 7 * 86_400 else 1.0), 1, None, None, None, None) for s in stats]
    rows = run(shifted, names=("shift_168h_vs_daytype",), calendar=SiteCalendar("Europe/Paris"))
    last_days = [i for i, s in enumerate(shifted) if start + 5 * 86_400 <= s.interval_start < start + 7 * 86_400]
    normal = [i for i, s in enumerate(shifted) if stats[0].interval_start + 21 * 86_400 <= s.interval_start < start]

    shift = [rows[i]["shift_168h_vs_daytype"] for i in last_days]
    # to its last hour, though the four-week weekday medians have begun to take it in
    assert max(shift) < np.log(0.95) and np.median(shift) < np.log(0.9)
    assert np.mean([rows[i]["shift_168h_vs_daytype"] <= np.median(shift) for i in normal]) < 0.02


def test_the_hour_s_spread_counts_only_once_a_week_of_days_is_behind_it():
    # Three days in, an hour's MAD is half the difference of two or three values: an ordinary evening
    # would be many "sds". The z-score stays neutral until seven days are behind the profile.
    stats = series(datetime(2024, 1, 1), 10, seed=10, kwh=noisy_home_kwh)
    rows = run(stats, names=("z_vs_daytype",), calendar=SiteCalendar("Europe/Paris"))
    t0 = stats[0].interval_start
    early = [r["z_vs_daytype"] for r, s in zip(rows, stats) if s.interval_start < t0 + 7 * 86_400]
    later = [r["z_vs_daytype"] for r, s in zip(rows, stats) if s.interval_start >= t0 + 7 * 86_400]
    assert early == [0.0] * len(early)
    assert np.mean([v != 0.0 for v in later]) > 0.9
