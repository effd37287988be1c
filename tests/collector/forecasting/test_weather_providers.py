"""Weather providers against a loopback server speaking the real APIs' response formats."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from collector.weather import (
    CsvWeatherProvider,
    JsonHttpClient,
    OpenMeteoProvider,
    OpenWeatherMapProvider,
    WeatherError,
    temperature_or_reason,
)

NOW = datetime(2026, 6, 10, 12, tzinfo=timezone.utc)


class StepClock:
    """A clock that advances only when someone sleeps: rate limits without waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def http_client(clock: StepClock | None = None, **kw) -> JsonHttpClient:
    clock = clock or StepClock()
    return JsonHttpClient(clock=clock.now, sleep=clock.sleep, timeout_s=5, **kw)


def owm_history(path, q):
    start, end = int(q["start"]), int(q["end"])
    items = [{"dt": t, "main": {"temp": 10.0 + (t // 3600) % 24, "humidity": 70}, "weather": [{"main": "Clouds"}]}
             for t in range(start, end, 3600)]
    return 200, {"message": "Count: %d" % len(items), "cod": "200", "city_id": 0, "calctime": 0.01,
                 "cnt": len(items), "list": items}, {}


def owm_onecall(path, q):
    base = int(NOW.timestamp())
    return 200, {"lat": float(q["lat"]), "lon": float(q["lon"]), "timezone": "Europe/London",
                 "timezone_offset": 3600,
                 "hourly": [{"dt": base + i * 3600, "temp": 20.0 + i * 0.1, "feels_like": 19.0, "humidity": 60}
                            for i in range(48)]}, {}


def owm(fake_api, **kw):
    return OpenWeatherMapProvider("secret-key", http=http_client(**kw), base_url=fake_api.base_url,
                                  history_url=fake_api.base_url, now=lambda: NOW)


def test_openweathermap_joins_history_and_one_call_forecast_into_one_hourly_series(fake_api):
    fake_api.route("/data/2.5/history/city", owm_history)
    fake_api.route("/data/3.0/onecall", owm_onecall)
    start, end = datetime(2026, 6, 1, tzinfo=timezone.utc), datetime(2026, 6, 11, 12, tzinfo=timezone.utc)
    temps = owm(fake_api).hourly_temperature(51.5, -0.1, start, end)
    assert temps.index[0] == pd.Timestamp(start) and temps.index[-1] == pd.Timestamp("2026-06-11T11:00Z")
    assert len(temps) == 9 * 24 + 12 + 24 and temps.index.is_monotonic_increasing
    assert temps[pd.Timestamp(NOW)] == pytest.approx(20.0)
    assert fake_api.hits("/data/2.5/history/city") == 2        # nine days: a week per call
    assert all(q["appid"] == "secret-key" and q["units"] == "metric" for _, q in fake_api.requests)


def test_openweathermap_without_api_key_says_which_variable_to_set(monkeypatch):
    monkeypatch.delenv("OPENWEATHERMAP_API_KEY", raising=False)
    with pytest.raises(WeatherError, match="OPENWEATHERMAP_API_KEY"):
        OpenWeatherMapProvider().hourly_temperature(51.5, -0.1, NOW, NOW)


def test_openweathermap_invalid_key_is_reported_with_the_providers_message_and_no_key_leak(fake_api):
    fake_api.route("/data/3.0/onecall", lambda p, q: (401, {"cod": 401, "message": "Invalid API key."}, {}))
    with pytest.raises(WeatherError) as info:
        owm(fake_api).hourly_temperature(51.5, -0.1, NOW, datetime(2026, 6, 11, tzinfo=timezone.utc))
    assert "Invalid API key" in str(info.value) and "secret-key" not in str(info.value)


def test_rate_limited_request_waits_out_retry_after_then_succeeds(fake_api):
    calls = {"n": 0}

    def limited(path, q):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"cod": 429, "message": "Your account is temporary blocked"}, {"Retry-After": "7"}
        return owm_onecall(path, q)

    fake_api.route("/data/3.0/onecall", limited)
    clock = StepClock()
    temps = owm(fake_api, clock=clock).hourly_temperature(51.5, -0.1, NOW, datetime(2026, 6, 11, tzinfo=timezone.utc))
    assert len(temps) == 12 and 7.0 in clock.slept


def test_persistent_rate_limit_gives_up_after_the_retries(fake_api):
    fake_api.route("/v1/forecast", lambda p, q: (429, {"error": True, "reason": "Too many concurrent requests"},
                                                 {"Retry-After": "1"}))
    provider = OpenMeteoProvider(http=http_client(max_retries=2), forecast_url=fake_api.base_url,
                                 archive_url=fake_api.base_url, now=lambda: NOW)
    with pytest.raises(WeatherError, match="rate limited: Too many concurrent requests"):
        provider.hourly_temperature(52.5, 13.4, NOW, datetime(2026, 6, 11, tzinfo=timezone.utc))
    assert fake_api.hits("/v1/forecast") == 3


def open_meteo_hourly(path, q):
    days = pd.date_range(q["start_date"], q["end_date"], freq="D")
    times = pd.date_range(days[0], days[-1] + pd.Timedelta(hours=23), freq="h")
    return 200, {"latitude": float(q["latitude"]), "longitude": float(q["longitude"]), "generationtime_ms": 0.1,
                 "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 38.0,
                 "hourly_units": {"time": "iso8601", "temperature_2m": "°C"},
                 "hourly": {"time": [t.strftime("%Y-%m-%dT%H:%M") for t in times],
                            "temperature_2m": [15.0 + (1.0 if "archive" in path else 0.0) for _ in times]}}, {}


def test_open_meteo_uses_the_archive_for_old_days_and_the_forecast_api_for_recent_ones(fake_api):
    fake_api.route("/v1/archive", open_meteo_hourly)
    fake_api.route("/v1/forecast", open_meteo_hourly)
    provider = OpenMeteoProvider(http=http_client(), forecast_url=fake_api.base_url, archive_url=fake_api.base_url,
                                 now=lambda: NOW)
    temps = provider.hourly_temperature(52.5, 13.4, datetime(2026, 5, 25, tzinfo=timezone.utc),
                                        datetime(2026, 6, 12, tzinfo=timezone.utc))
    assert len(temps) == 18 * 24
    assert temps[pd.Timestamp("2026-05-25T00:00Z")] == 16.0       # archive
    assert temps[pd.Timestamp("2026-06-11T23:00Z")] == 15.0       # forecast
    archive_q = [q for p, q in fake_api.requests if p == "/v1/archive"][0]
    assert archive_q["hourly"] == "temperature_2m" and archive_q["end_date"] == "2026-06-05"


def test_repeated_requests_are_served_from_the_disk_cache_until_it_expires(fake_api, tmp_path):
    fake_api.route("/v1/forecast", open_meteo_hourly)
    clock = StepClock()
    make = lambda: OpenMeteoProvider(http=http_client(clock, cache_dir=tmp_path, cache_ttl_s=600),
                                     forecast_url=fake_api.base_url, archive_url=fake_api.base_url, now=lambda: NOW)
    args = (52.5, 13.4, NOW, datetime(2026, 6, 11, tzinfo=timezone.utc))
    first = make().hourly_temperature(*args)
    second = make().hourly_temperature(*args)           # a new process: the disk cache answers
    pd.testing.assert_series_equal(first, second)
    assert fake_api.hits("/v1/forecast") == 1
    clock.t += 601
    make().hourly_temperature(*args)
    assert fake_api.hits("/v1/forecast") == 2


def test_unexpected_response_shape_is_a_weather_error(fake_api):
    fake_api.route("/v1/forecast", lambda p, q: (200, {"hourly": {"time": ["2026-06-10T12:00"]}}, {}))
    provider = OpenMeteoProvider(http=http_client(), forecast_url=fake_api.base_url, archive_url=fake_api.base_url,
                                 now=lambda: NOW)
    with pytest.raises(WeatherError, match="unexpected response"):
        provider.hourly_temperature(52.5, 13.4, NOW, datetime(2026, 6, 11, tzinfo=timezone.utc))


def test_unreachable_provider_becomes_a_note_and_no_temperature():
    dead = OpenMeteoProvider(http=http_client(max_retries=1), forecast_url="http://127.0.0.1:9",
                             archive_url="http://127.0.0.1:9", now=lambda: NOW)
    temps, note = temperature_or_reason(dead, 52.5, 13.4, NOW, datetime(2026, 6, 11, tzinfo=timezone.utc))
    assert temps is None
    assert note.startswith("forecast made without temperature: weather unavailable (open-meteo")


def test_bad_coordinates_are_refused():
    with pytest.raises(WeatherError, match="latitude"):
        OpenMeteoProvider(now=lambda: NOW).hourly_temperature(123.0, 13.4, NOW, NOW)


def test_csv_provider_reads_iso_or_unix_timestamps_for_one_location(tmp_path):
    path = tmp_path / "weather.csv"
    path.write_text("ts,location,temperature_c\n"
                    "2026-06-10T00:00:00Z,depot,12.5\n2026-06-10T01:00:00Z,depot,13.0\n"
                    "2026-06-10T00:00:00Z,harbour,9.0\n")
    temps = CsvWeatherProvider(path, location="depot").hourly_temperature(
        0, 0, datetime(2026, 6, 10, tzinfo=timezone.utc), datetime(2026, 6, 10, 2, tzinfo=timezone.utc))
    assert temps.tolist() == [12.5, 13.0]
    unix = tmp_path / "unix.csv"
    unix.write_text("ts,temperature_c\n1781049600,4.0\n")
    assert CsvWeatherProvider(unix).hourly_temperature(0, 0, datetime(2026, 1, 1, tzinfo=timezone.utc),
                                                       datetime(2027, 1, 1, tzinfo=timezone.utc)).tolist() == [4.0]


@pytest.mark.parametrize("content, message", [
    ("time,temp\n2026-06-10T00:00Z,1\n", "lacks columns"),
    ("ts,temperature_c\nnot-a-date,1\n", "bad ts or temperature_c"),
])
def test_csv_provider_refuses_malformed_files(tmp_path, content, message):
    path = tmp_path / "w.csv"
    path.write_text(content)
    with pytest.raises(WeatherError, match=message):
        CsvWeatherProvider(path).hourly_temperature(0, 0, NOW, NOW)


def test_csv_provider_missing_file_is_a_weather_error(tmp_path):
    with pytest.raises(WeatherError, match="does not exist"):
        CsvWeatherProvider(tmp_path / "nope.csv").hourly_temperature(0, 0, NOW, NOW)
