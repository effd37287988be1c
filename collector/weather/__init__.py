"""Weather for forecasts: hourly temperature from OpenWeatherMap, Open-Meteo or a CSV file.

    from collector.weather import OpenMeteoProvider, temperature_or_reason
    temps, note = temperature_or_reason(OpenMeteoProvider(), 52.5, 13.4, start, end)
"""

from collector.weather.http import JsonHttpClient
from collector.weather.providers import (
    CsvWeatherProvider,
    OpenMeteoProvider,
    OpenWeatherMapProvider,
    WeatherError,
    WeatherProvider,
    provider_from_name,
    temperature_or_reason,
)

__all__ = ["JsonHttpClient", "CsvWeatherProvider", "OpenMeteoProvider", "OpenWeatherMapProvider",
           "WeatherError", "WeatherProvider", "provider_from_name", "temperature_or_reason"]
