"""`gridsight collector forecast|backtest|policy|weather|carbon` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from .conftest import NOW, synthetic_load


def gridsight(*args: str, database_url: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "gridsight", "collector", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_backtest_on_a_csv_prints_scores_for_the_model_and_both_baselines(tmp_path):
    path = tmp_path / "load.csv"
    series = synthetic_load(12)
    pd.DataFrame({"Datetime": series.index.strftime("%Y-%m-%d %H:%M:%S"), "MW": series.values}).to_csv(path, index=False)
    r = gridsight("backtest", "--csv", str(path), "--folds", "2", "--every-days", "1", "--model", "ets",
                  "--workers", "1", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["folds"] == 2 and report["models_used"] == {"ets": 2}
    assert {"model", "same_hour_yesterday", "same_hour_last_week"} <= set(report)
    assert "backtesting load.csv" in r.stderr


def test_backtest_names_a_missing_column_in_one_line(tmp_path):
    path = tmp_path / "load.csv"
    path.write_text("ts,kw\n2026-01-01T00:00Z,1\n2026-01-01T01:00Z,2\n")
    r = gridsight("backtest", "--csv", str(path), "--value-column", "MW")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == ("gridsight collector: error: --value-column 'MW' is not a column of "
                                                 f"{path} (columns: ts, kw)")


def test_policy_on_a_csv_and_a_bad_parameter(tmp_path):
    path = tmp_path / "regions.csv"
    index = pd.date_range("2026-03-02", periods=48, freq="h", tz="UTC")
    pd.DataFrame({"region": "north", "ts": index.strftime("%Y-%m-%dT%H:%MZ"),
                  "kwh": [200.0 if t.hour in (17, 18, 19, 20) else 100.0 for t in index]}).to_csv(path, index=False)
    r = gridsight("policy", "--csv", str(path), "--set", "tou_share=0.5", "--set", "ev_vehicles=10", "--json")
    assert r.returncode == 0, r.stderr
    north = json.loads(r.stdout)["regions"][0]
    assert north["peak_kw_after"] < north["peak_kw_before"]
    bad = gridsight("policy", "--csv", str(path), "--set", "ev_profile=midday")
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "gridsight collector: error: ev_profile: only applies with ev_vehicles"


@pytest.mark.slow
def test_forecast_command_stores_runs_for_every_region(grid_db):
    r = gridsight("forecast", "--kind", "region", "--model", "ets", "--horizon-hours", "12", "--workers", "2",
                  "--json", database_url=grid_db)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    by_key = {s["series_key"]: s for s in result["series"]}
    assert set(by_key) == {"north", "south"}
    assert all(s["points"] == 12 and s["run_id"] and s["peak"]["yhat"] > 0 for s in by_key.values())


def test_carbon_fetch_from_csv_then_emissions_by_region(grid_db, tmp_path):
    path = tmp_path / "ci.csv"
    hours = pd.date_range(NOW - pd.Timedelta(days=1), NOW, freq="h", inclusive="left")
    pd.DataFrame({"hour_start": hours.strftime("%Y-%m-%dT%H:%MZ"), "intensity_g_per_kwh": 300.0}).to_csv(path, index=False)
    span = ["--start", hours[0].isoformat(), "--end", NOW.isoformat()]
    fetched = gridsight("carbon", "fetch", "--provider", "csv", "--csv", str(path), *span, database_url=grid_db)
    assert fetched.returncode == 0, fetched.stderr
    assert "stored 24 hours of csv intensity for area 'system'" in fetched.stdout
    report = gridsight("carbon", "emissions", "--by", "region", "--json", *span, database_url=grid_db)
    assert report.returncode == 0, report.stderr
    rows = {row["region"]: row for row in json.loads(report.stdout)["rows"]}
    assert rows["south"]["co2_kg"] == pytest.approx(rows["south"]["kwh"] * 0.3)


def test_weather_command_reads_a_csv_and_stores_it(grid_db, tmp_path):
    path = tmp_path / "weather.csv"
    path.write_text("ts,temperature_c\n2026-07-01T00:00Z,18.5\n2026-07-01T01:00Z,17.0\n")
    r = gridsight("weather", "--weather", "csv", "--weather-csv", str(path), "--lat", "53.4", "--lon", "-2.2",
                  "--start", "2026-07-01", "--end", "2026-07-02", "--store", "s-n", database_url=grid_db)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("csv: 2 hours, 17.0 to 18.5")
    assert "stored 2 hourly temperatures as location 's-n'" in r.stderr


@pytest.mark.slow
def test_scheduled_forecast_runs_repeatedly_and_stores_each_run(grid_db):
    r = gridsight("forecast", "--kind", "system", "--model", "ets", "--horizon-hours", "6", "--workers", "1",
                  "--every", "1", "--max-runs", "2", "--json", database_url=grid_db)
    assert r.returncode == 0, r.stderr
    runs = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(runs) == 2
    run_ids = {run["series"][0]["run_id"] for run in runs}
    assert len(run_ids) == 2 and None not in run_ids


@pytest.mark.slow
def test_backtest_takes_holidays_by_country_and_temperature_from_a_csv_like_forecast(tmp_path):
    series = synthetic_load(16)
    load, temps = tmp_path / "load.csv", tmp_path / "temps.csv"
    pd.DataFrame({"ts": series.index.strftime("%Y-%m-%dT%H:%MZ"), "kwh": series.values}).to_csv(load, index=False)
    hours = pd.date_range(series.index[0], periods=len(series) + 48, freq="h")
    pd.DataFrame({"ts": hours.strftime("%Y-%m-%dT%H:%MZ"), "temperature_c": 12.0}).to_csv(temps, index=False)
    r = gridsight("backtest", "--csv", str(load), "--folds", "2", "--model", "prophet", "--country", "GB",
                  "--weather", "csv", "--weather-csv", str(temps), "--workers", "1", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["folds"] == 2 and report["folds_with_temperature"] == 2
    short = tmp_path / "short.csv"
    pd.DataFrame({"ts": hours[:48].strftime("%Y-%m-%dT%H:%MZ"), "temperature_c": 12.0}).to_csv(short, index=False)
    r = gridsight("backtest", "--csv", str(load), "--folds", "2", "--model", "prophet", "--weather", "csv",
                  "--weather-csv", str(short), "--workers", "1", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["folds_with_temperature"] == 0
    assert any("without temperature" in n for n in report["notes"])
    bad = gridsight("backtest", "--csv", str(load), "--country", "XX", "--model", "prophet", "--folds", "1")
    assert bad.returncode == 2 and "country 'XX'" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 3
