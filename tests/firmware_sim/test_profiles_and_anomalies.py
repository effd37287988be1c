"""Simulated meters: reproducible, physically consistent, and labelled truthfully."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.readers.base import MeterReader
from gridsight.settings import ConfigError
from firmware_sim.anomalies import CONSUMPTION_KINDS, DATA_FAULT_KINDS, LabelError, parse_time, read_labels_csv
from firmware_sim.fleet_model import Fleet
from firmware_sim.history import write_readings_csv
from firmware_sim.meter import SimulatedMeter
from firmware_sim.reader import SimulatedMeterReader

START = parse_time("2026-03-02T00:00:00Z")
END = parse_time("2026-03-09T00:00:00Z")


def poll(reader: SimulatedMeterReader, times) -> list:
    out = []
    for t in times:
        out.extend(reader.read(t))
    return out


def reader_options(**extra) -> dict:
    return {"seed": 7, "meters": 6, "anomalies": True, "anomaly_rate": 1.0, "fault_rate": 1.0,
            "start": "2026-03-02T00:00:00Z", "end": "2026-03-09T00:00:00Z", **extra}


def test_same_seed_gives_the_same_readings_whatever_the_polling_pattern():
    first = START + 2 * 86400
    minute = SimulatedMeterReader.from_config(reader_options())
    irregular = SimulatedMeterReader.from_config(reader_options())
    every_minute = poll(minute, np.arange(first, first + 86400 + 1, 60.0))
    rng = np.random.default_rng(0)
    ragged = np.cumsum(rng.uniform(30, 2000, 200)) + first
    ragged = np.concatenate([[first], ragged[ragged < first + 86400], [first + 86400]])
    every_now_and_then = poll(irregular, ragged)
    assert isinstance(minute, MeterReader)
    assert len(every_minute) > 6 * 1400
    key = lambda r: (r.meter_id, r.ts, r.energy_kwh)
    # the first poll backfills one step, so both start at the same reading
    assert sorted(every_minute, key=key) == sorted(every_now_and_then, key=key)


def test_different_seeds_give_different_meters():
    a = SimulatedMeterReader.from_config({"seed": 1}).read(START)
    b = SimulatedMeterReader.from_config({"seed": 2}).read(START)
    assert [r.energy_kwh for r in a] != [r.energy_kwh for r in b]


def healthy_fleet(classes=None, gateways=3) -> Fleet:
    return Fleet(11, gateways, 5, step_s=60, anomaly_rate=0, fault_rate=0, classes=classes)


def test_healthy_registers_only_go_forward_across_days_and_a_daylight_saving_change():
    fleet = healthy_fleet()
    dst_start = parse_time("2026-03-07T00:00:00Z")  # US clocks change on 2026-03-08
    for spec in fleet.meter_specs():
        ts, reg, *_ = fleet.meter(spec).series(dst_start, dst_start + 3 * 86400)
        assert ts.size == 3 * 1440
        assert np.all(np.diff(ts) == 60)
        assert np.all(np.diff(reg) >= 0), spec.meter_id


def test_voltage_current_and_power_factor_agree_with_power():
    fleet = healthy_fleet()
    for spec in fleet.meter_specs():
        meter = fleet.meter(spec)
        for r in meter.emitted(START, START + 6 * 3600).readings(spec.meter_id):
            assert 0.8 <= r.power_factor <= 1.0
            assert 200 < r.voltage_v < 250
            apparent = spec.phases * r.voltage_v * r.current_a * r.power_factor
            assert apparent == pytest.approx(abs(r.power_w), rel=0.01, abs=2.0)


def test_register_increase_matches_energy_of_the_power_drawn():
    fleet = healthy_fleet(classes=["commercial"], gateways=1)
    spec = next(fleet.meter_specs())
    ts, reg, power, *_ = fleet.meter(spec).series(START, START + 86400)
    assert reg[-1] - reg[0] == pytest.approx(power[1:].sum() * 60 / 3.6e6, abs=2e-6)


def test_rooftop_pv_homes_export_at_summer_noon_and_ev_homes_charge_in_the_evening():
    june = parse_time("2026-06-15T00:00:00Z")
    pv = healthy_fleet(classes=["residential_pv"], gateways=2)
    exported = 0
    for spec in pv.meter_specs():
        ts, reg, power, *_ = pv.meter(spec).series(june, june + 7 * 86400)
        exported += int((power < 0).sum())
        assert np.all(np.diff(reg) >= 0)
    assert exported > 0
    ev = healthy_fleet(classes=["residential_ev"], gateways=2)
    charging = 0
    for spec in ev.meter_specs():
        ts, reg, power, *_ = ev.meter(spec).series(june, june + 7 * 86400)
        charging += int((power > 7000).sum())
    assert charging > 60


def test_public_holidays_look_like_sundays_for_offices():
    fleet = healthy_fleet(classes=["commercial"], gateways=4)
    calendar = fleet.calendar
    july4 = calendar.day_of(parse_time("2025-07-04T16:00:00Z"))  # a Friday
    thursday = july4 - 1
    lower = 0
    for spec in fleet.meter_specs():
        profile = fleet.profile(spec)
        holiday, workday = profile.daily_kwh(np.array([july4, thursday]))
        lower += holiday < 0.85 * workday
    assert lower >= 18


def test_cold_weeks_cost_electric_heating_homes_more_than_mild_ones():
    fleet = healthy_fleet(classes=["residential"], gateways=6)
    january = np.arange(fleet.calendar.day_of(parse_time("2026-01-10T12:00:00Z")), fleet.calendar.day_of(parse_time("2026-01-10T12:00:00Z")) + 14)
    may = january + 120
    ratios = [fleet.profile(s).daily_kwh(january).sum() / fleet.profile(s).daily_kwh(may).sum()
              for s in fleet.meter_specs()]
    assert np.median(ratios) > 1.05


def one_kind_meter(kind: str) -> tuple[SimulatedMeter, SimulatedMeter]:
    """A meter with exactly one event of ``kind`` and the same meter without it."""
    classes = ["industrial"] if kind == "phase_loss" else ["residential"]
    fleet = Fleet(5, 1, 1, start=START, end=END, anomaly_rate=1.0 if kind in CONSUMPTION_KINDS else 0.0,
                  fault_rate=1.0 if kind in DATA_FAULT_KINDS else 0.0, kinds=[kind], classes=classes)
    spec = next(fleet.meter_specs())
    meter = fleet.meter(spec)
    assert meter.events and all(e.kind == kind for e in meter.events)
    return meter, SimulatedMeter(meter.profile, [])


@pytest.mark.parametrize("kind", CONSUMPTION_KINDS)
def test_a_consumption_anomaly_shows_inside_its_labelled_span_and_nowhere_else(kind):
    meter, clean = one_kind_meter(kind)
    ts, reg, power, volt, cur, pf = meter.series(START, END)
    cts, creg, cpower, cvolt, *_ = clean.series(START, END)
    inside = np.zeros(ts.size, dtype=bool)
    for e in meter.events:
        inside |= e.covers(ts)
    assert inside.any()
    # outside the labels the meter measures exactly what a healthy meter would
    np.testing.assert_array_equal(power[~inside], cpower[~inside])
    np.testing.assert_array_equal(volt[~inside], cvolt[~inside])
    # the register differs only by what the event took or added, never drifting outside
    offset = reg[~inside] - creg[~inside]
    after_each = np.split(offset, np.flatnonzero(np.diff(np.flatnonzero(~inside)) > 1) + 1)
    for piece in after_each:
        assert np.ptp(piece) < 2.5e-6   # registers count in mWh
    i = inside
    if kind == "theft":
        np.testing.assert_allclose(power[i], cpower[i] * meter.events[0].magnitude)
    elif kind == "tamper_zero":
        assert np.all(power[i] == 0) and np.ptp(reg[i]) == 0
    elif kind == "tamper_flatline":
        assert np.ptp(power[i]) == 0 and power[i][0] > 0
    elif kind == "tamper_reverse":
        assert np.all(np.diff(reg[i]) <= 0) and reg[i][-1] < reg[i][0]
    elif kind in ("spike", "night_load"):
        assert np.all(power[i] > cpower[i] + 2 * meter.profile.typical_w)
    elif kind == "drift":
        rel = power[i] / cpower[i] - 1
        assert abs(rel[-1]) > 0.45 and abs(rel[0]) < 0.05
    elif kind == "phase_loss":
        np.testing.assert_allclose(power[i], cpower[i] * 2 / 3)
        assert np.all(volt[i] < 0.7 * 230)
    elif kind == "voltage_sag":
        assert np.all(volt[i] < 0.82 * cvolt[i]) and np.all(power[i] < cpower[i])
    elif kind == "stuck":
        assert np.ptp(reg[i]) == 0 and np.ptp(power[i]) == 0 and np.ptp(cpower[i]) > 0


@pytest.mark.parametrize("kind", DATA_FAULT_KINDS)
def test_a_data_fault_changes_delivery_only_inside_its_labelled_span(kind):
    meter, clean = one_kind_meter(kind)
    event = meter.events[0]
    got = meter.emitted(START, END)
    want = clean.emitted(START, END)
    jumped = got.ts % 60 != 0   # a jumped meter clock is never on the reading grid
    true_ts = np.where(jumped, got.ts - event.magnitude, got.ts)
    assert jumped.any() == (kind == "clock_jump")
    inside_got = event.covers(true_ts)
    inside_want = event.covers(want.ts)
    np.testing.assert_array_equal(np.sort(got.ts[~inside_got]), want.ts[~inside_want])
    if kind == "gap":
        assert not inside_got.any() and inside_want.sum() > 30
    elif kind == "duplicate":
        assert inside_got.sum() == 2 * inside_want.sum()
        assert sorted(set(got.ts[inside_got])) == sorted(want.ts[inside_want])
    elif kind == "clock_jump":
        assert np.all(got.ts[inside_got] % 60 == 30)
        np.testing.assert_array_equal(got.energy_kwh[inside_got], want.energy_kwh[inside_want])
    elif kind == "out_of_order":
        assert np.any(np.diff(got.ts) < 0)
        assert sorted(got.ts.tolist()) == want.ts.tolist()
    # the measured values never change: a data fault is not a consumption anomaly
    assert set(got.energy_kwh.tolist()) <= set(want.energy_kwh.tolist())


def test_labels_file_round_trips_and_names_the_bad_line(tmp_path):
    fleet = Fleet(3, 4, 8, start=START, end=END, anomaly_rate=0.5, fault_rate=0.3)
    path = tmp_path / "labels.csv"
    n = fleet.write_labels(path)
    events = read_labels_csv(path)
    assert n == len(events) > 5
    assert path.read_text().splitlines()[0] == "meter_id,start,end,kind"
    assert path.read_text().splitlines()[1].split(",")[1].endswith("Z")
    assert {(e.meter_id, e.start, e.end, e.kind) for e in events} == \
        {(e.meter_id, e.start, e.end, e.kind) for e in fleet.labels()}
    bad = tmp_path / "bad.csv"
    bad.write_text("meter_id,start,end,kind\nm1,2026-03-02T00:00:00Z,2026-03-03T00:00:00Z,theft\n"
                   "m1,yesterday,2026-03-03T00:00:00Z,theft\n")
    with pytest.raises(LabelError, match=r"bad.csv:3: start"):
        read_labels_csv(bad)
    bad.write_text("meter_id,start,end,kind\nm1,2026-03-02T00:00:00Z,2026-03-03T00:00:00Z,gremlins\n")
    with pytest.raises(LabelError, match="gremlins"):
        read_labels_csv(bad)


@pytest.mark.parametrize("options, key", [
    ({"step_s": 7}, "step_s"),
    ({"colour": "red"}, "colour"),
    ({"anomalies": True, "end": "2026-01-02"}, "start"),
    ({"anomalies": True, "start": "2026-01-02", "end": "2026-01-01"}, "end"),
    ({"start": "next tuesday"}, "start"),
    ({"kinds": ["gremlins"]}, "kinds"),
    ({"tz": "Mars/Olympus"}, "tz"),
    ({"meters": 0}, "meters"),
])
def test_bad_reader_options_fail_naming_the_key(options, key):
    with pytest.raises(ConfigError) as err:
        SimulatedMeterReader.from_config(options)
    assert err.value.key == key


def test_reader_writes_its_gateways_labels_and_never_repeats_a_reading_when_the_clock_goes_back(tmp_path):
    labels = tmp_path / "gw.csv"
    reader = SimulatedMeterReader.from_config({**reader_options(fault_rate=0.0), "labels": str(labels)})
    events = read_labels_csv(labels)
    assert {e.meter_id for e in events} == {f"gw-0000-m{j:02d}" for j in range(6)}
    t = START + 86400
    assert len(reader.read(t)) == 6
    assert len(reader.read(t + 600)) == 60
    assert reader.read(t + 300) == []          # clock jumped back: nothing handed over twice
    assert len(reader.read(t + 660)) == 6


def test_history_file_is_read_back_by_the_agents_replay_reader(tmp_path):
    from edge_agent.readers.replay import ReplayReader

    fleet = Fleet(2, 1, 3, start=START, end=END, anomaly_rate=1.0, fault_rate=0.0)
    path = tmp_path / "history.csv"
    rows = write_readings_csv(fleet, START, START + 86400, 300, path, labels_path=tmp_path / "labels.csv")
    assert rows == 3 * 288
    replay = ReplayReader(path)
    got = replay.read(END)
    replay.close()
    assert len(got) == rows
    direct = fleet.with_step(300).meter(next(fleet.meter_specs())).emitted(START, START + 86400)
    first = [r for r in got if r.meter_id == "gw-0000-m00"]
    assert [r.energy_kwh for r in first] == np.round(direct.energy_kwh, 3).tolist()


def test_a_restarted_reader_resumes_where_the_agent_left_off_and_repeats_only_the_unconfirmed_batch(tmp_path):
    options = {**reader_options(fault_rate=0.0), "since": START + 86400, "state_path": str(tmp_path / "cursor.json")}
    t = START + 86400
    reader = SimulatedMeterReader.from_config(options)
    first = reader.read(t + 600)
    reader.commit()  # the agent stored the first batch
    first += reader.read(t + 1200)
    # kill -9: the second batch was handed over but never confirmed as stored
    restarted = SimulatedMeterReader.from_config(options)
    again = restarted.read(t + 1800)
    uninterrupted = SimulatedMeterReader.from_config({**reader_options(fault_rate=0.0), "since": t}).read(t + 1800)
    key = lambda r: (r.meter_id, r.ts)
    assert {key(r) for r in first} | {key(r) for r in again} == {key(r) for r in uninterrupted}
    assert len({key(r) for r in first} & {key(r) for r in again}) == 6 * 10
    restarted.close()  # a stop without a commit moves nothing: the same batch is handed over again
    assert {key(r) for r in SimulatedMeterReader.from_config(options).read(t + 1800)} == {key(r) for r in again}
    restarted.commit()
    assert SimulatedMeterReader.from_config(options).read(t + 1800) == []


# ---------------------------------------------------------------- meter channels (layout 2)

def _meter_of(meter_class, kinds=None, days=6, seed=3):
    from firmware_sim.fleet_model import Fleet

    start = 1_767_225_600.0
    fleet = Fleet(seed, 1, 12, start=start, end=start + days * 86400, step_s=60,
                  anomaly_rate=1.0 if kinds else 0.0, fault_rate=0.0, kinds=kinds, classes=[meter_class])
    return fleet.gateway_meters(0), start


def test_a_three_phase_meter_loses_one_phase_near_0_v_while_the_others_stay_normal():
    meters, start = _meter_of("commercial", kinds=["phase_loss"])
    meter = next(m for m in meters if any(e.kind == "phase_loss" for e in m.events))
    e = next(e for e in meter.events if e.kind == "phase_loss")
    inside = meter.emitted(e.start, e.start + 600, channels=True).readings(meter.meter_id)
    before = meter.emitted(e.start - 3600, e.start - 3000, channels=True).readings(meter.meter_id)
    phases = [(r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v) for r in inside]
    lost = int(e.start // 900) % 3
    assert all(p[lost] < 5.0 for p in phases)
    assert all(200.0 < v < 260.0 for p in phases for k, v in enumerate(p) if k != lost)
    assert all(min(r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v) > 200.0 for r in before)
    assert all(getattr(r, f"power_l{lost + 1}_w") == 0.0 for r in inside)


def test_pv_homes_export_register_only_grows_and_rises_while_power_is_negative():
    meters, start = _meter_of("residential_pv", days=3)
    meter = meters[0]
    readings = meter.emitted(start, start + 2 * 86400, channels=True).readings(meter.meter_id)
    elec = [r for r in readings if r.channel is None]
    export = [r.export_kwh for r in elec]
    assert all(b >= a for a, b in zip(export, export[1:])) and export[-1] > export[0]
    rising = [b.export_kwh > a.export_kwh for a, b in zip(elec, elec[1:])]
    exporting = [b.power_w < 0 for b in elec[1:]]
    assert sum(r and x for r, x in zip(rising, exporting)) >= 0.9 * sum(rising)


def test_tariff_registers_add_up_to_import_and_switch_to_tariff_1_at_the_weekend():
    meters, start = _meter_of("residential", days=8)   # 2026-01-01 is a Thursday
    meter = meters[0]
    readings = [r for r in meter.emitted(start, start + 7 * 86400, channels=True).readings(meter.meter_id)
                if r.channel is None]
    assert all(abs(r.import_t1_kwh + r.import_t2_kwh - r.energy_kwh) < 2e-3 for r in readings)
    assert {r.tariff for r in readings} == {1, 2}
    for a, b in zip(readings, readings[1:]):
        assert b.import_t1_kwh >= a.import_t1_kwh - 1e-6 and b.import_t2_kwh >= a.import_t2_kwh - 1e-6


def test_gas_heated_homes_relay_a_growing_gas_meter_every_five_minutes():
    meters, start = _meter_of("residential", days=2)
    meter = next(m for m in meters if m.profile.has_gas)
    gas = [r for r in meter.emitted(start, start + 3600, channels=True).readings(meter.meter_id) if r.channel]
    assert [r.ts - start for r in gas] == [300.0 * k for k in range(1, 13)]
    assert gas[0].meter_id == f"{meter.meter_id}-gas" and gas[-1].volume_m3 > gas[0].volume_m3
