"""Training from readings files and reading lists: a working model, bad rows counted, bad files named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_agent.features import DEFAULT_FEATURES, VOLTAGE_FEATURES
from edge_agent.scorer import Scorer
from gridsight.wire import Reading
from model_export.pipeline import TrainingError, train_and_export
from model_export.readings import ReadingsError, interval_series, read_readings_csv

from model_fleet import T0, make_fleet


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", "model", *args], capture_output=True, text=True,
                          timeout=240)


@pytest.mark.slow
def test_train_cli_writes_a_model_the_gateway_scorer_loads(tmp_path, fleet_csv):
    out = tmp_path / "m.onnx"
    proc = _cli("train", "--readings", str(fleet_csv), "--out", str(out), "--n-estimators", "20",
                "--version", "2025.1", "--name", "pilot")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["parity_max_abs_diff"] < 1e-5
    scorer = Scorer.load(out)
    assert (scorer.name, scorer.version, scorer.interval_s) == ("pilot", "2025.1", 900)
    # the file has no voltage column: voltage features are left out, not constants in the model
    assert scorer.feature_names == tuple(n for n in DEFAULT_FEATURES if n not in VOLTAGE_FEATURES)
    assert json.loads(scorer.metadata["features_left_out"]) == list(VOLTAGE_FEATURES)
    assert report["expected_flags_per_meter_month"] > 0
    assert "expected flags per meter-month" in proc.stderr
    for key in ("training_window", "data_fingerprint", "created_at", "data_quality"):
        assert scorer.metadata[key]


@pytest.mark.slow
def test_the_trained_model_flags_injected_anomalies_more_than_normal_intervals(tmp_path, fleet, fleet_csv):
    from model_export.offline import score_readings

    result = train_and_export(fleet_csv, tmp_path / "m.onnx", n_estimators=50, contamination=0.02)
    scored = score_readings(Scorer.load(result.path), fleet_csv)
    truth = {(m, float(t)): bool(a) for m in fleet.kwh for t, a in zip(fleet.ts(m), fleet.anomalous[m])}
    flagged = np.array([r.anomalous for r in scored])
    labels = np.array([truth[(r.meter_id, r.interval_start)] for r in scored])
    assert flagged[labels].mean() > 5 * flagged[~labels].mean()


def test_register_csv_with_iso_times_trains_like_interval_data(tmp_path):
    fleet = make_fleet(meters=3, days=8, anomalies=False)
    path = fleet.write_register_csv(tmp_path / "register.csv")
    table = read_readings_csv(path)
    stats, quality = interval_series(table, 900)
    assert table.kind == "register"
    assert quality.intervals == sum(v.size for v in fleet.kwh.values())
    by_key = {(s.meter_id, s.interval_start): s.kwh for s in stats}
    first = fleet.kwh["m00"]
    assert by_key[("m00", T0 + 900 * 10)] == pytest.approx(first[10], rel=1e-4)
    assert train_and_export(table, tmp_path / "m.onnx", n_estimators=10).parity_max_abs_diff < 1e-5


def test_wire_readings_train_a_model(tmp_path):
    readings = []
    register = {"a": 10.0, "b": 5000.0}
    for i in range(96 * 3 * 3):
        ts = T0 + i * 300
        for meter, size in (("a", 0.1), ("b", 20.0)):
            register[meter] += size * (1.5 + np.sin(ts / 86_400 * 2 * np.pi))
            readings.append(Reading(meter, float(ts), register[meter], power_w=1000.0))
    result = train_and_export(readings, tmp_path / "m.onnx", n_estimators=10)
    assert result.quality.meters == 2 and result.quality.intervals == 2 * 96 * 3
    assert Scorer.load(result.path).version == result.version


def test_bad_rows_are_counted_not_silently_dropped(tmp_path):
    path = tmp_path / "r.csv"
    lines = ["meter_id,ts,kwh"]
    for i in range(200):
        lines.append(f"m1,{T0 + i * 900},1.0")
    lines += [f"m1,{T0 + 5 * 900},1.0",            # duplicate
              f"m1,{T0 + 200 * 900},-3",          # negative
              f"m1,{T0 + 201 * 900},999999",      # absurd for 15 minutes
              f"m1,{T0 + 202 * 900},",            # empty
              f"m1,{T0 + 210 * 900},1.0"]         # after a gap of 7 intervals (200..209 unusable)
    path.write_text("\n".join(lines) + "\n")
    stats, q = interval_series(read_readings_csv(path), 900)
    assert (q.duplicates, q.negative, q.absurd, q.empty_values) == (1, 1, 1, 1)
    assert q.intervals == 201 and q.gap_intervals == 10


@pytest.mark.parametrize("body,line,message", [
    ("meter_id,ts,kwh\nm1,2025-01-01T00:00:00Z,1\nm1,yesterday,1\n", 3, "bad ts"),
    ("meter_id,ts,kwh\nm1,1735689600,1\nm1,1735690500,lots\n", 3, "kwh is not a number"),
    ("meter_id,ts,kwh\nm1,1735689600,1\nm1,1735690500\n", 3, "expected at least 3 fields"),
    ("meter_id,ts,kwh\nm1,1735689600000,1\n", 2, "milliseconds"),
    ("meter,time,value\nm1,1735689600,1\n", 1, "no 'meter_id' column"),
])
def test_bad_input_files_are_refused_with_the_line_number(tmp_path, body, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ReadingsError, match=message) as err:
        read_readings_csv(path)
    assert err.value.line == line


def test_train_cli_reports_a_bad_file_in_one_line_and_fails(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("meter_id,ts,kwh\nm1,1735689600,1\nm1,not-a-time,1\n")
    proc = _cli("train", "--readings", str(path), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("gridsight model train: error:")
    assert "line 3" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_too_little_data_is_a_training_error(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("meter_id,ts,kwh\n" + "".join(f"m1,{T0 + i * 900},1\n" for i in range(5)))
    with pytest.raises(TrainingError, match="need at least 16"):
        train_and_export(path, tmp_path / "m.onnx")


def test_file_reduction_equals_the_agents_interval_stats_interval_by_interval():
    """Training reduces registers vectorised; it must agree with the agent's per-interval function."""
    from edge_agent.features import interval_stats
    from model_export.readings import ReadingTable

    rng = np.random.default_rng(5)
    ts = np.sort(T0 + rng.uniform(0, 86_400, 600))
    register = 100 + np.cumsum(rng.uniform(0, 0.05, ts.size))
    register[300:] -= 90  # a register reset
    power = rng.uniform(0, 3000, ts.size)
    power[::7] = np.nan
    volts = rng.uniform(200, 240, ts.size)
    volts[::5] = np.nan
    table = ReadingTable("register", ["m"] * ts.size, ts, register, power, voltage_v=volts)
    stats, quality = interval_series(table, 900)
    assert quality.register_resets == 1
    prev = None
    bins = np.floor(ts / 900) * 900
    for s in stats:
        sel = bins == s.interval_start
        # the agent's rule: chain from the previous reading unless it is more than an interval old
        last_before = ts[ts < s.interval_start].max() if (ts < s.interval_start).any() else None
        chained = prev if last_before is not None and ts[sel][0] - last_before <= 900 else None
        expected = interval_stats("m", s.interval_start, 900, ts[sel], register[sel], power[sel], chained,
                                  voltage_v=volts[sel])
        prev = float(register[sel][-1])
        assert s.kwh == pytest.approx(expected.kwh, abs=1e-9)
        assert s.readings == expected.readings
        for name in ("power_w_mean", "power_w_max", "power_w_min", "power_w_std", "voltage_v_min", "voltage_v_mean"):
            want = getattr(expected, name)
            assert getattr(s, name) == (None if want is None else pytest.approx(want, rel=1e-9)), name


def test_a_voltage_column_reaches_the_interval_stats(tmp_path):
    path = tmp_path / "r.csv"
    rows = [f"m1,{T0 + 60 * i},{100 + 0.01 * i},500,{230.0 if i != 7 else 170.0},2.2,0.97" for i in range(30)]
    path.write_text("meter_id,ts,energy_kwh,power_w,voltage_v,current_a,power_factor\n" + "\n".join(rows) + "\n")
    stats, _ = interval_series(read_readings_csv(path), 900)
    assert stats[0].voltage_v_min == 170.0 and stats[0].voltage_v_mean == pytest.approx(226.0)
    assert stats[1].voltage_v_min == stats[1].voltage_v_mean == 230.0


def test_the_default_model_keeps_the_size_contract(tmp_path, fleet_csv):
    """50 trees of at most 512 rows, depth capped at 9: at most 1,023 nodes a tree, 51,150 in all."""
    import onnx

    result = train_and_export(fleet_csv, tmp_path / "m.onnx")
    assert result.metadata["n_estimators"] == "50"
    ensemble = next(n for n in onnx.load(str(result.path)).graph.node if n.op_type == "TreeEnsembleRegressor")
    nodes = next(len(a.ints) for a in ensemble.attribute if a.name == "nodes_nodeids")
    rows = int(result.metadata["max_samples"])
    assert rows <= 512
    assert nodes <= 50 * (2 * rows - 1) <= 51_150


def test_parquet_readings_give_the_same_intervals_as_csv(tmp_path, fleet, fleet_csv):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    meters = [m for m in fleet.kwh for _ in fleet.kwh[m]]
    times = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for m in fleet.kwh for t in fleet.ts(m)]
    kwh = np.concatenate(list(fleet.kwh.values()))
    path = tmp_path / "readings.parquet"
    pq.write_table(pa.table({"meter_id": meters, "ts": pa.array(times, pa.timestamp("s", tz="UTC")), "kwh": kwh}),
                   path)
    from model_export.readings import read_readings

    from_parquet, _ = interval_series(read_readings(path), 900)
    from_csv, _ = interval_series(read_readings_csv(fleet_csv), 900)
    assert [(s.meter_id, s.interval_start) for s in from_parquet] == [(s.meter_id, s.interval_start) for s in from_csv]
    assert np.allclose([s.kwh for s in from_parquet], [s.kwh for s in from_csv], atol=1e-6)


def test_a_bad_parquet_row_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model_export.readings import read_readings

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"meter_id": ["m1", "m1"], "ts": ["2025-01-01T00:00:00Z", "soon"], "kwh": [1.0, 2.0]}),
                   path)
    with pytest.raises(ReadingsError, match="row 2: bad ts 'soon'"):
        read_readings(path)


def _hourly_csv(path, meters: int = 3, days: int = 35, outage: bool = True):
    """Hourly interval data in local time without a zone, as a utility exports it, 0.25 kWh steps."""
    from datetime import datetime, timedelta

    rng = np.random.default_rng(5)
    start = datetime(2024, 1, 1)
    lines = ["meter_id,ts,kwh"]
    for m in range(meters):
        size = (30.0, 120.0, 300.0)[m % 3]
        for h in range(days * 24):
            t = start + timedelta(hours=h)
            busy = t.weekday() < 5 and 8 <= t.hour < 18
            kwh = size * (1.0 if busy else 0.4) * rng.lognormal(0, 0.05)
            if outage and m == 0 and 30 * 24 <= h < 30 * 24 + 20:
                kwh = 1.0 * size / 300  # an outage logged as a small constant
            lines.append(f"meter-{m},{t:%Y-%m-%d %H:%M:%S},{round(kwh / 0.25) * 0.25}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_hourly_data_trains_without_naming_the_interval_and_scores_with_features_and_reasons(tmp_path):
    readings = _hourly_csv(tmp_path / "hourly.csv")
    out = tmp_path / "m.onnx"
    proc = _cli("train", "--readings", str(readings), "--out", str(out), "--n-estimators", "20",
                "--holiday-country", "FR")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["interval_s"] == 3600
    assert not set(VOLTAGE_FEATURES) & set(report["features"])
    scorer = Scorer.load(out)
    assert scorer.interval_s == 3600 and scorer.holiday_country == "FR" and scorer.time_zone == "UTC"

    scored = tmp_path / "scored.csv"
    proc = _cli("score", "--model", str(out), "--readings", str(readings), "--out", str(scored))
    assert proc.returncode == 0, proc.stderr
    import csv

    rows = list(csv.DictReader(scored.open()))
    assert list(rows[0])[-len(scorer.feature_names):] == list(scorer.feature_names)
    outage = [r for r in rows if r["meter_id"] == "meter-0" and r["interval_start"] == "2024-01-31T12:00:00Z"][0]
    assert outage["anomalous"] == "1" and outage["reason"]
    assert float(outage["near_zero_hours_vs_habit"]) >= 12.0


@pytest.mark.slow
def test_features_are_chosen_by_name_and_an_unknown_name_is_one_line(tmp_path):
    readings = _hourly_csv(tmp_path / "hourly.csv", outage=False)
    out = tmp_path / "m.onnx"
    proc = _cli("train", "--readings", str(readings), "--out", str(out), "--n-estimators", "10",
                "--features", "dev_24h_vs_daytype,level_vs_daytype,peak_vs_days")
    assert proc.returncode == 0, proc.stderr
    assert Scorer.load(out).feature_names == ("dev_24h_vs_daytype", "level_vs_daytype", "peak_vs_days")
    proc = _cli("train", "--readings", str(readings), "--out", str(out), "--features", "level_vs_daytype,phase_of_moon")
    assert proc.returncode == 2
    assert "unknown feature 'phase_of_moon'" in proc.stderr.strip().splitlines()[-1]


def test_a_bad_time_zone_or_holiday_country_is_a_one_line_training_error(tmp_path):
    readings = _hourly_csv(tmp_path / "hourly.csv", days=5, outage=False)
    proc = _cli("train", "--readings", str(readings), "--out", str(tmp_path / "m.onnx"), "--timezone", "Mars/Olympus")
    assert proc.returncode != 0 and "unknown time zone 'Mars/Olympus'" in proc.stderr
    proc = _cli("train", "--readings", str(readings), "--out", str(tmp_path / "m.onnx"), "--holiday-country", "XX")
    assert proc.returncode != 0 and "no public holidays known for country 'XX'" in proc.stderr


def test_a_long_anomaly_in_the_history_does_not_use_up_the_alarm_budget():
    from model_export.pipeline import alarm_threshold

    rng = np.random.default_rng(0)
    hours = 24 * 30 * 12  # twelve meter-months of hourly rows: a budget of 48 alarms
    scores = rng.normal(0.5, 0.02, hours)
    scores[100:148] = 0.1  # a two-day outage: the most isolated rows of all
    meters, starts = ["m"] * hours, np.arange(hours) * 3600.0
    threshold = alarm_threshold(scores, meters, starts, 3600, alarms_per_meter_month=4.0)
    flagged = scores < threshold
    # 48 hours are 16 alarms of 3 h: 32 alarms are left for the rest of the history
    assert flagged[100:148].all()
    assert 26 <= flagged.sum() - 48 <= 32
    # history without anomalies: about the budget, flags being isolated
    normal = rng.normal(0.5, 0.02, hours)
    clean = alarm_threshold(normal, meters, starts, 3600, alarms_per_meter_month=4.0)
    assert 40 <= (normal < clean).sum() <= 52
