"""Carbon intensity providers (loopback server in the Carbon Intensity API's format) and accounting."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from collector.carbon import (
    CarbonError,
    CarbonIntensityError,
    CsvCarbonIntensity,
    NationalGridESOProvider,
    co2_avoided,
    emissions_by,
)
from collector.weather import JsonHttpClient


def half_hours(start: str, end: str, with_actual: bool) -> list[dict]:
    out = []
    for t in pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="30min", inclusive="left"):
        forecast = 200 + (t.hour * 2) + (10 if t.minute else 0)
        out.append({"from": t.strftime("%Y-%m-%dT%H:%MZ"),
                    "to": (t + pd.Timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%MZ"),
                    "intensity": {"forecast": forecast, "actual": forecast - 4 if with_actual else None,
                                  "index": "moderate"}})
    return out


def national(path, q):
    _, _, start, end = path.split("/")
    return 200, {"data": half_hours(start, end, with_actual=True)}, {}


def regional(path, q):
    parts = path.split("/")
    start, end, region = parts[3], parts[4], int(parts[6])
    return 200, {"data": {"regionid": region, "dnoregion": "UKPN London", "shortname": "London",
                          "data": [dict(item, generationmix=[{"fuel": "gas", "perc": 40.1}])
                                   for item in half_hours(start, end, with_actual=False)]}}, {}


def client() -> JsonHttpClient:
    return JsonHttpClient(sleep=lambda s: None, timeout_s=5)


def test_national_intensity_is_averaged_to_hours_using_actuals(fake_api):
    fake_api.route("/intensity/", national)
    hourly = NationalGridESOProvider(http=client(), base_url=fake_api.base_url).hourly_intensity(
        datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert len(hourly) == 24
    first = hourly.iloc[0]
    assert first["hour_start"] == pd.Timestamp("2026-03-01T00:00Z")
    assert first["intensity_g_per_kwh"] == pytest.approx((196 + 206) / 2)
    assert not hourly["is_forecast"].any()


def test_long_spans_are_fetched_in_fourteen_day_pieces(fake_api):
    fake_api.route("/intensity/", national)
    hourly = NationalGridESOProvider(http=client(), base_url=fake_api.base_url).hourly_intensity(
        datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 2, 1, tzinfo=timezone.utc))
    assert len(hourly) == 31 * 24 and hourly["hour_start"].is_unique
    assert fake_api.hits("/intensity/") == 3


def test_regional_forecast_only_figures_are_marked_as_forecast(fake_api):
    fake_api.route("/regional/intensity/", regional)
    hourly = NationalGridESOProvider(13, http=client(), base_url=fake_api.base_url).hourly_intensity(
        datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 3, 1, 6, tzinfo=timezone.utc))
    assert len(hourly) == 6 and hourly["is_forecast"].all()
    assert fake_api.requests[0][0].endswith("/regionid/13")


def test_api_outage_is_a_carbon_intensity_error_naming_the_provider(fake_api):
    fake_api.route("/intensity/", lambda p, q: (500, {"error": {"code": "500", "message": "Internal error"}}, {}))
    provider = NationalGridESOProvider(http=JsonHttpClient(sleep=lambda s: None, max_retries=1, timeout_s=5),
                                       base_url=fake_api.base_url)
    with pytest.raises(CarbonIntensityError, match="national-grid-eso: .*HTTP 500: Internal error"):
        provider.hourly_intensity(datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 3, 2, tzinfo=timezone.utc))


def test_unknown_region_is_refused():
    with pytest.raises(CarbonIntensityError, match="region_id"):
        NationalGridESOProvider(42)


def test_csv_intensity_and_its_errors(tmp_path):
    good = tmp_path / "ci.csv"
    good.write_text("hour_start,intensity_g_per_kwh\n2026-03-01T00:00Z,300\n2026-03-01T01:00Z,250\n")
    hourly = CsvCarbonIntensity(good).hourly_intensity(datetime(2026, 3, 1, tzinfo=timezone.utc),
                                                       datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert hourly["intensity_g_per_kwh"].tolist() == [300, 250]
    bad = tmp_path / "bad.csv"
    bad.write_text("when,g\n2026-03-01T00:00Z,300\n")
    with pytest.raises(CarbonIntensityError, match="needs columns"):
        CsvCarbonIntensity(bad).hourly_intensity(datetime(2026, 3, 1, tzinfo=timezone.utc),
                                                 datetime(2026, 3, 2, tzinfo=timezone.utc))


def consumption() -> pd.DataFrame:
    ts = pd.date_range("2026-03-01", periods=4, freq="15min", tz="UTC").append(
        pd.date_range("2026-03-01T01:00Z", periods=4, freq="15min"))
    rows = []
    for meter, feeder, region in (("m1", "f1", "north"), ("m2", "f1", "north"), ("m3", "f2", "south")):
        for t in ts:
            rows.append({"meter_id": meter, "feeder_id": feeder, "region": region, "ts": t, "kwh": 0.5})
    return pd.DataFrame(rows)


def test_emissions_per_meter_feeder_and_region_use_each_hours_intensity():
    intensity = pd.Series([200.0, 400.0], index=pd.to_datetime(["2026-03-01T00:00Z", "2026-03-01T01:00Z"]))
    per_meter = emissions_by(consumption(), intensity, ["meter_id"]).set_index("meter_id")
    assert per_meter.loc["m1", "kwh"] == 4.0
    assert per_meter.loc["m1", "co2_kg"] == pytest.approx(2.0 * 0.2 + 2.0 * 0.4)
    per_feeder = emissions_by(consumption(), intensity, ["feeder_id"]).set_index("feeder_id")
    assert per_feeder.loc["f1", "co2_kg"] == pytest.approx(2 * 1.2)
    per_region = emissions_by(consumption(), intensity, ["region"]).set_index("region")
    assert per_region.loc["south", "intensity_g_per_kwh"] == pytest.approx(300.0)


def test_emissions_refuse_hours_without_intensity():
    intensity = pd.Series([200.0], index=pd.to_datetime(["2026-03-01T00:00Z"]))
    with pytest.raises(CarbonError, match="2026-03-01T01:00"):
        emissions_by(consumption(), intensity, ["region"])


def test_co2_avoided_counts_reductions_against_the_stated_baseline():
    hours = pd.date_range("2026-03-01", periods=24, freq="h", tz="UTC")
    intensity = pd.Series(np.where(hours.hour >= 17, 500.0, 200.0), index=hours)
    baseline = pd.Series(10.0, index=hours)
    actual = baseline.where(hours.hour < 17, 8.0)           # 2 kWh less in each evening hour
    avoided = co2_avoided(actual, baseline, intensity, baseline="same day without the DR programme")
    assert avoided.kwh_avoided == pytest.approx(7 * 2.0)
    assert avoided.co2_kg_avoided == pytest.approx(7 * 2.0 * 0.5)
    assert avoided.baseline == "same day without the DR programme"


def test_co2_avoided_needs_a_stated_baseline():
    hours = pd.date_range("2026-03-01", periods=2, freq="h", tz="UTC")
    s = pd.Series(1.0, index=hours)
    with pytest.raises(CarbonError, match="state the baseline"):
        co2_avoided(s, s, s, baseline=" ")
