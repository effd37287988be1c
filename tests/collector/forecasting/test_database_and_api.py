"""Forecast jobs, carbon and the policy sandbox against a migrated PostgreSQL, and their API routes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from collector.api.app import create_app
from collector.auth import install_identity
from collector.forecasting import ForecastOptions, store
from collector.forecasting.jobs import SeriesRef, forecast_series_from_database
from collector.settings import CollectorSettings
from collector.weather import JsonHttpClient, OpenMeteoProvider

from .conftest import DAYS, NOW, run

def test_actual_load_sums_meters_by_feeder_region_and_system(grid_db):
    start, end = (NOW - pd.Timedelta(days=2)).to_pydatetime(), NOW.to_pydatetime()

    async def read(conn):
        return {kind_key: await store.actual_load(conn, *kind_key, start, end)
                for kind_key in (("feeder", "f-n"), ("region", "north"), ("region", "south"), ("system", "all"))}
    series = run(grid_db, read)
    assert len(series[("system", "all")]) == 48
    pd.testing.assert_series_equal(series[("feeder", "f-n")], series[("region", "north")])
    total = series[("region", "north")] + series[("region", "south")]      # south's region comes via its feeder
    np.testing.assert_allclose(total.to_numpy(), series[("system", "all")].to_numpy())


def test_unknown_series_is_refused(grid_db):
    async def read(conn):
        return await store.actual_load(conn, "feeder", "f-nowhere", NOW.to_pydatetime(), NOW.to_pydatetime())
    with pytest.raises(store.UnknownSeries, match="no feeder 'f-nowhere'"):
        run(grid_db, read)


def test_forecast_job_stores_a_run_per_series_and_reports_series_without_data(grid_db, fake_api):
    fake_api.route("/v1/", lambda p, q: (503, {"error": True, "reason": "maintenance"}, {}))
    weather = OpenMeteoProvider(http=JsonHttpClient(sleep=lambda s: None, max_retries=0, timeout_s=5),
                                forecast_url=fake_api.base_url, archive_url=fake_api.base_url)
    results = forecast_series_from_database(
        grid_db, [SeriesRef("region", "north"), SeriesRef("region", "south"), SeriesRef("region", "east")],
        horizon_hours=24, history_days=DAYS, now=NOW, weather=weather, options=ForecastOptions(model="ets"))
    by_key = {r.key: r for r in results}
    assert by_key["east"].error == "no actual load in the history window"
    north = by_key["north"]
    assert north.error is None and north.points == 24 and north.model == "ets"
    assert any("weather unavailable (open-meteo" in n and "maintenance" in n for n in north.notes)

    async def read(conn):
        return await store.stored_forecast(conn, "region", "north", NOW.to_pydatetime(),
                                           (NOW + pd.Timedelta(days=2)).to_pydatetime())
    stored = run(grid_db, read)
    assert stored["run_id"] == north.run_id and len(stored["points"]) == 24
    assert stored["points"][0]["ts"] == NOW.isoformat() and stored["points"][0]["horizon"] == 1
    assert all(p["yhat_lower"] <= p["yhat"] <= p["yhat_upper"] for p in stored["points"])
    assert any("without temperature" in n for n in stored["notes"])


def test_carbon_actuals_replace_forecasts_and_regions_fall_back_to_the_system_figure(grid_db):
    hours = pd.date_range(NOW - pd.Timedelta(hours=3), periods=3, freq="h")
    forecast = pd.DataFrame({"hour_start": hours, "intensity_g_per_kwh": [300.0, 310, 320], "is_forecast": True})
    actual = pd.DataFrame({"hour_start": hours[:2], "intensity_g_per_kwh": [250.0, 260], "is_forecast": False})
    regional = pd.DataFrame({"hour_start": hours[:1], "intensity_g_per_kwh": [100.0], "is_forecast": False})

    async def go(conn):
        await store.store_carbon_intensity(conn, "system", forecast, "test")
        await store.store_carbon_intensity(conn, "system", actual, "test")
        await store.store_carbon_intensity(conn, "system", forecast, "test")     # a late forecast changes nothing
        await store.store_carbon_intensity(conn, "north", regional, "test")
        return (await store.stored_carbon_intensity(conn, "system", hours[0], NOW),
                await store.stored_carbon_intensity(conn, "north", hours[0], NOW))
    system, north = run(grid_db, go)
    assert system.tolist() == [250.0, 260.0, 320.0]
    assert north.tolist() == [100.0, 260.0, 320.0]


# ----------------------------------------------------------------------------- API

@pytest.fixture
def api(grid_db, tmp_path):
    settings = CollectorSettings(database_url=grid_db, data_dir=tmp_path)
    app = create_app(settings, database_url=grid_db)
    ctx = install_identity(app, grid_db, env={"GRIDSIGHT_JWT_SECRET": "forecast-tests-secret-" + "x" * 40})
    keys = {role: {"X-API-Key": ctx.store.create_api_key(f"{role}-key", role)[1]}
            for role in ("analyst", "policymaker", "technician")}
    with TestClient(app) as client:
        client.keys = keys
        yield client
    ctx.store.engine.dispose()


def test_on_demand_forecast_route_fits_and_can_store_the_run(api):
    body = {"series_kind": "feeder", "series_key": "f-n", "horizon_hours": 24, "history_days": 10,
            "model": "ets", "store": True}
    r = api.post("/forecasts/run", json=body, headers=api.keys["analyst"])
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["model"] == "ets" and len(result["points"]) == 24 and result["run_id"]
    assert result["peak"]["yhat"] == max(p["yhat"] for p in result["points"])
    stored = api.get("/forecasts", params={"series_kind": "feeder", "series_key": "f-n", "start": NOW.isoformat(),
                                           "end": (NOW + pd.Timedelta(days=1)).isoformat()},
                     headers=api.keys["policymaker"])
    assert stored.status_code == 200 and stored.json()["run_id"] == result["run_id"]


@pytest.mark.parametrize("body, status, field", [
    ({"series_kind": "feeder", "series_key": "f-nowhere"}, 404, "series_key"),
    ({"series_kind": "region", "series_key": "east", "model": "ets"}, 422, "history_days"),
    ({"horizon_hours": 0}, 422, "horizon_hours"),
    ({"series_kind": "street"}, 422, "series_kind"),
])
def test_forecast_route_names_the_field_at_fault(api, body, status, field):
    r = api.post("/forecasts/run", json=body, headers=api.keys["analyst"])
    assert r.status_code == status, r.text
    assert r.json()["detail"][0]["loc"][-1] == field


def test_stored_forecast_route_answers_404_when_nothing_is_stored(api):
    r = api.get("/forecasts", params={"start": NOW.isoformat(), "end": (NOW + pd.Timedelta(days=1)).isoformat()},
                headers=api.keys["analyst"])
    assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["query", "series_key"]


def test_policy_sandbox_route_reports_each_region_before_and_after(api):
    body = {"start": (NOW - pd.Timedelta(days=7)).isoformat(), "end": NOW.isoformat(),
            "params": {"efficiency_pct": 10, "carbon_g_per_kwh": 200}}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["policymaker"])
    assert r.status_code == 200, r.text
    regions = {row["region"]: row for row in r.json()["regions"]}
    assert set(regions) == {"north", "south"}
    north = regions["north"]
    assert north["energy_kwh_after"] == pytest.approx(0.9 * north["energy_kwh_before"])
    assert north["co2_kg_before"] == pytest.approx(north["energy_kwh_before"] * 0.2)
    assert r.json()["notes"] == ["CO2 from carbon_g_per_kwh: no carbon intensity stored for these hours"]


def test_policy_sandbox_route_names_a_bad_parameter(api):
    body = {"start": (NOW - pd.Timedelta(days=1)).isoformat(), "end": NOW.isoformat(), "params": {"tou_share": 3}}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "tou_share"]
    assert "between 0 and 1" in r.json()["detail"][0]["msg"]


def test_a_sandbox_date_outside_the_representable_range_is_a_422_naming_it(api):
    # 0001-01-01 at +01:00 is before the earliest UTC datetime: converting it used to raise a 500
    body = {"start": "0001-01-01T00:00:00+01:00", "end": NOW.isoformat()}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 422, r.text
    assert "start" in r.text and "representable" in r.text


def test_policy_sandbox_on_stored_region_forecasts(api):
    for region in ("north", "south"):
        r = api.post("/forecasts/run", json={"series_kind": "region", "series_key": region, "horizon_hours": 24,
                                             "model": "ets", "store": True}, headers=api.keys["analyst"])
        assert r.status_code == 200, r.text
    body = {"start": NOW.isoformat(), "end": (NOW + pd.Timedelta(days=1)).isoformat(), "source": "forecast",
            "params": {"dr_threshold_share_of_peak": 0.8}}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 200, r.text
    for row in r.json()["regions"]:
        assert row["peak_kw_after"] == pytest.approx(0.8 * row["peak_kw_before"])


def test_carbon_emissions_route_by_region_and_meter_access(api, grid_db):
    hours = pd.date_range(NOW - pd.Timedelta(days=1), NOW, freq="h", inclusive="left")
    frame = pd.DataFrame({"hour_start": hours, "intensity_g_per_kwh": 250.0, "is_forecast": False})
    run(grid_db, lambda conn: store.store_carbon_intensity(conn, "system", frame, "test"))
    params = {"start": hours[0].isoformat(), "end": NOW.isoformat()}
    r = api.get("/carbon/emissions", params={**params, "by": "region"}, headers=api.keys["policymaker"])
    assert r.status_code == 200, r.text
    rows = {row["region"]: row for row in r.json()["rows"]}
    assert rows["north"]["co2_kg"] == pytest.approx(rows["north"]["kwh"] * 0.25)
    assert api.get("/carbon/emissions", params={**params, "by": "meter"},
                   headers=api.keys["policymaker"]).status_code == 403
    assert api.get("/carbon/emissions", params={**params, "by": "meter"},
                   headers=api.keys["analyst"]).status_code == 200
    intensity = api.get("/carbon/intensity", params=params, headers=api.keys["analyst"]).json()
    assert len(intensity["hours"]) == 24
    missing = api.get("/carbon/emissions", params={"start": (NOW - pd.Timedelta(days=3)).isoformat(),
                                                   "end": NOW.isoformat()}, headers=api.keys["analyst"])
    assert missing.status_code == 422 and "no carbon intensity for region" in missing.json()["detail"][0]["msg"]


def test_forecast_policy_and_carbon_routes_refuse_technicians_and_anonymous_callers(api):
    params = {"start": NOW.isoformat(), "end": (NOW + pd.Timedelta(hours=1)).isoformat()}
    for method, path in (("GET", "/forecasts"), ("POST", "/forecasts/run"), ("GET", "/policy/parameters"),
                         ("POST", "/policy/sandbox"), ("GET", "/carbon/intensity"), ("GET", "/carbon/emissions")):
        assert api.request(method, path, params=params).status_code == 401
        assert api.request(method, path, params=params, headers=api.keys["technician"]).status_code == 403


def test_forecast_job_uses_and_stores_temperature_when_the_provider_answers(grid_db, fake_api):
    def hourly(path, q):
        times = pd.date_range(q["start_date"], pd.Timestamp(q["end_date"]) + pd.Timedelta(hours=23), freq="h")
        return 200, {"utc_offset_seconds": 0, "timezone": "GMT",
                     "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
                     "hourly": {"time": [t.strftime("%Y-%m-%dT%H:%M") for t in times],
                                "temperature_2m": [12.0 + 8 * np.sin(t.hour / 24 * 2 * np.pi) for t in times]}}, {}
    fake_api.route("/v1/", hourly)
    weather = OpenMeteoProvider(http=JsonHttpClient(sleep=lambda s: None, timeout_s=5),
                                forecast_url=fake_api.base_url, archive_url=fake_api.base_url)
    [result] = forecast_series_from_database(grid_db, [SeriesRef("region", "north")], horizon_hours=24,
                                             history_days=DAYS, now=NOW, weather=weather,
                                             options=ForecastOptions(model="prophet"))
    assert result.error is None and result.model == "prophet"
    assert result.forecast.used_temperature and result.notes == []
    count = run(grid_db, lambda conn: conn.fetchval(
        "SELECT count(*) FROM weather_observations WHERE location = 'region:north' AND source = 'open-meteo'"))
    assert count >= DAYS * 24


@pytest.mark.parametrize("change, field", [
    ({"regions": ["north", "no such; region"]}, "regions"),
    ({"end": (NOW - pd.Timedelta(days=3)).isoformat()}, "end"),
])
def test_policy_sandbox_route_names_bad_regions_and_ranges(api, change, field):
    body = {"start": (NOW - pd.Timedelta(days=2)).isoformat(), "end": NOW.isoformat(), "params": {}, **change}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field]


def test_policy_sandbox_answers_404_for_a_region_the_registry_does_not_hold(api):
    body = {"start": (NOW - pd.Timedelta(days=2)).isoformat(), "end": NOW.isoformat(), "params": {},
            "regions": ["north", "atlantis"]}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["body", "regions"]
    assert "atlantis" in r.json()["detail"][0]["msg"]


# ----------------------------------------------------------------------------- one figure everywhere

def _store_intensities(grid_db, hours):
    system = pd.DataFrame({"hour_start": hours, "intensity_g_per_kwh": 400.0, "is_forecast": False})
    north = pd.DataFrame({"hour_start": hours, "intensity_g_per_kwh": 100.0, "is_forecast": False})

    async def go(conn):
        await store.store_carbon_intensity(conn, "system", system, "test")
        await store.store_carbon_intensity(conn, "north", north, "test")
    run(grid_db, go)


def test_api_cli_tabpy_and_tableau_charge_each_region_its_own_intensity_else_the_systems(api, grid_db):
    from dashboards.tabpy_endpoints import carbon_co2_kg

    from .test_cli import gridsight

    hours = pd.date_range(NOW - pd.Timedelta(days=1), NOW, freq="h", inclusive="left")
    _store_intensities(grid_db, hours)
    span = {"start": hours[0].isoformat(), "end": NOW.isoformat()}
    r = api.get("/carbon/emissions", params={**span, "by": "region"}, headers=api.keys["policymaker"])
    assert r.status_code == 200, r.text
    by_api = {row["region"]: row["co2_kg"] for row in r.json()["rows"]}
    cli = gridsight("carbon", "emissions", "--by", "region", "--json", "--start", span["start"], "--end", span["end"],
                    database_url=grid_db)
    assert cli.returncode == 0, cli.stderr
    by_cli = {row["region"]: row["co2_kg"] for row in __import__("json").loads(cli.stdout)["rows"]}

    async def views(conn):
        await conn.execute("SELECT gridsight_refresh_tableau_rollups()")   # as collector maintenance does
        tableau = await conn.fetch("SELECT region, sum(co2_kg) AS co2 FROM tableau.carbon_by_region "
                                   "WHERE hour_start >= $1 AND hour_start < $2 GROUP BY 1", hours[0], NOW)
        rows = await conn.fetch("SELECT region, kwh, intensity_g_per_kwh FROM tableau.regional_hourly "
                                "WHERE hour_start >= $1 AND hour_start < $2", hours[0], NOW)
        return {t["region"]: t["co2"] for t in tableau}, rows
    by_tableau, rows = run(grid_db, views)
    per_row = carbon_co2_kg([r["kwh"] for r in rows], [r["intensity_g_per_kwh"] for r in rows])   # as TabPy runs it
    by_tabpy: dict[str, float] = {}
    for row, co2 in zip(rows, per_row):
        by_tabpy[row["region"]] = by_tabpy.get(row["region"], 0.0) + co2
    kwh = {row["region"]: row["kwh"] for row in r.json()["rows"]}
    assert by_api["north"] == pytest.approx(kwh["north"] * 0.1)          # north's own 100 g/kWh
    assert by_api["south"] == pytest.approx(kwh["south"] * 0.4)          # south has none: the system's 400
    for other in (by_cli, by_tableau, by_tabpy):
        assert set(other) == set(by_api)
        for region, co2 in by_api.items():
            assert other[region] == pytest.approx(co2, rel=1e-9)


def test_policy_sandbox_gives_identical_figures_in_the_cli_and_the_api(api, grid_db):
    from .test_cli import gridsight

    hours = pd.date_range(NOW - pd.Timedelta(days=2), NOW, freq="h", inclusive="left")
    _store_intensities(grid_db, hours)
    params = {"efficiency_pct": 5, "tou_share": 0.2, "ev_vehicles": 30}
    body = {"start": hours[0].isoformat(), "end": NOW.isoformat(), "params": params}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 200, r.text
    assert r.json()["notes"] == []
    sets = [a for k, v in params.items() for a in ("--set", f"{k}={v}")]
    cli = gridsight("policy", *sets, "--start", body["start"], "--end", body["end"], "--json", database_url=grid_db)
    assert cli.returncode == 0, cli.stderr
    api_rows = {row["region"]: row for row in r.json()["regions"]}
    cli_rows = {row["region"]: row for row in __import__("json").loads(cli.stdout)["regions"]}
    assert set(api_rows) == set(cli_rows) == {"north", "south"}
    for region, row in api_rows.items():
        for metric, value in row.items():
            if metric != "region":
                assert cli_rows[region][metric] == pytest.approx(value, rel=1e-12), (region, metric)
    north = api_rows["north"]
    assert north["co2_kg_before"] == pytest.approx(north["energy_kwh_before"] * 0.1)   # north's own intensity


def test_time_of_use_windows_are_in_each_regions_local_time(api, grid_db):
    async def configure(conn):
        await conn.execute("UPDATE regions SET timezone = 'America/New_York', tou_peak_hours = '17-20', "
                           "tou_offpeak_hours = '1-4' WHERE id = 'north'")
    run(grid_db, configure)
    body = {"start": (NOW - pd.Timedelta(days=3)).floor("D").isoformat(), "end": NOW.floor("D").isoformat(),
            "params": {"tou_share": 0.5}, "regions": ["north"]}
    r = api.post("/policy/sandbox", json=body, headers=api.keys["analyst"])
    assert r.status_code == 200, r.text

    async def load(conn):
        return await store.regional_load(conn, pd.Timestamp(body["start"]).to_pydatetime(),
                                         pd.Timestamp(body["end"]).to_pydatetime(), ["north"])
    frame = run(grid_db, load)
    from collector.policy import RegionPolicy, run_sandbox

    result = run_sandbox(frame, {"tou_share": 0.5}, regions={"north": RegionPolicy("America/New_York", "17-20", "1-4")})
    detail = result.load.assign(local_hour=result.load["ts"].dt.tz_convert("America/New_York").dt.hour)
    moved = detail[detail.kwh_after < detail.kwh_before - 1e-9]["local_hour"].unique()
    gained = detail[detail.kwh_after > detail.kwh_before + 1e-9]["local_hour"].unique()
    assert set(moved) <= {17, 18, 19, 20} and set(moved)
    assert set(gained) <= {1, 2, 3, 4} and set(gained)
    assert r.json()["regions"][0]["peak_kw_after"] == pytest.approx(result.summary.iloc[0]["peak_kw_after"])


def test_a_stored_forecast_says_which_model_was_chosen_and_why(api):
    r = api.post("/forecasts/run", json={"series_kind": "region", "series_key": "north", "horizon_hours": 24,
                                         "history_days": DAYS, "store": True}, headers=api.keys["analyst"])
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["selection"]["chosen"] == made["model"]
    stored = api.get("/forecasts", params={"series_kind": "region", "series_key": "north", "start": NOW.isoformat(),
                                           "end": (NOW + pd.Timedelta(days=1)).isoformat()},
                     headers=api.keys["analyst"]).json()
    assert stored["model"] == made["model"]
    assert stored["selection"]["window_mape"] == made["selection"]["window_mape"]
    assert stored["chosen_because"] == made["selection"]["reason"] and "MAPE over the last" in stored["chosen_because"]
    assert all(p["yhat_lower"] >= 0 for p in stored["points"])


def test_half_hourly_forecasts_are_stored_with_their_interval(grid_db):
    from collector.forecasting import forecast_load

    from .conftest import synthetic_load

    fc = forecast_load(synthetic_load(20, freq="30min"), 48,
                       options=ForecastOptions(candidates=("holt_winters", "scaled_naive", "seasonal_naive")))

    async def go(conn):
        run_id = await store.store_forecast(conn, "system", "all", fc)
        return run_id, await store.stored_forecast(conn, "system", "all", fc.frame.index[0], fc.frame.index[-1] + pd.Timedelta(hours=1))
    run_id, stored = run(grid_db, go)
    assert stored["run_id"] == str(run_id) and stored["interval_s"] == 1800 and len(stored["points"]) == 48
