"""`gridsight collector forecast|backtest|policy|weather|carbon`: forecasting's subcommands.

Plugged into the collector CLI through ``collector.cli.PLUGINS``: :func:`register` adds the
parsers and each sets ``func(args, settings) -> int``. Results go to stdout (a table or, with
``--json``, one JSON object); progress goes to stderr; known errors become one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from typing import Any, Callable

import pandas as pd

from gridsight.cli import CLIError, positive_int

__all__ = ["register"]

PROG = "gridsight collector"


def _progress(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _known_errors(func: Callable[..., int]) -> Callable[..., int]:
    """Turn this area's typed errors into CLIError: one line, exit code 2."""
    @functools.wraps(func)
    def wrapper(args, settings) -> int:
        from collector.carbon import CarbonError, CarbonIntensityError
        from collector.forecasting.series import SeriesError
        from collector.forecasting.types import ForecastError
        from collector.forecasting.store import UnknownSeries
        from collector.policy import PolicyError
        from collector.weather import WeatherError
        try:
            return func(args, settings)
        except (ForecastError, SeriesError, UnknownSeries, PolicyError, WeatherError, CarbonError,
                CarbonIntensityError) as exc:
            raise CLIError(str(exc)) from None
        except OSError as exc:
            if exc.__class__.__module__.startswith("asyncpg") or "connect" in str(exc).lower():
                raise CLIError(f"cannot reach the database: {exc}") from None
            raise
    return wrapper


def _database_url(settings) -> str:
    from collector.services import embedded_database_url

    url = settings.database_url or embedded_database_url(settings)
    if url is None:
        raise CLIError(f"no database: DATABASE_URL is unset and no embedded PostgreSQL runs in {settings.data_dir}")
    return url


def _timestamp(text: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date or time (ISO 8601, UTC)") from None
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _executor(args, settings):
    from collector.forecasting.executor import open_executor

    address = args.scheduler or settings.dask_scheduler
    if address:
        _progress(f"fitting on the Dask cluster at {address}")
    return open_executor(address, args.workers)


def _options(args):
    from collector.forecasting.types import ForecastOptions

    defaults = ForecastOptions()
    return ForecastOptions(country=None if args.country in ("", "none") else args.country, model=args.model,
                           max_history_days=getattr(args, "max_history_days", None) or defaults.max_history_days)


def _weather(args, settings):
    if not args.weather:
        return None
    from collector.weather import provider_from_name
    from collector.weather.http import JsonHttpClient

    http = JsonHttpClient(cache_dir=args.weather_cache) if args.weather_cache else None
    return provider_from_name(args.weather, csv_path=args.weather_csv, http=http,
                              api_key=settings.secrets.openweathermap_api_key)


# ---------------------------------------------------------------------------- forecast

@_known_errors
def cmd_forecast(args, settings) -> int:
    from collector.forecasting.jobs import SeriesRef

    if args.key and len(args.kind or []) > 1:
        raise CLIError("--key needs exactly one --kind")
    if args.every is not None and args.every < 1:
        raise CLIError(f"--every must be at least 1 second, got {args.every:g}")
    kinds = args.kind or ["system"]
    series = [SeriesRef(kinds[0], args.key)] if args.key else None
    if args.every is None:
        return _forecast_once(args, settings, kinds, series)
    # Scheduled: one run now, then every --every seconds until SIGTERM/Ctrl-C (or --max-runs).
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    runs = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            _forecast_once(args, settings, kinds, series)
        except CLIError as exc:          # a failed cycle (database down) is retried at the next one
            _progress(f"forecast run failed: {exc}")
        runs += 1
        if args.max_runs and runs >= args.max_runs:
            break
        stop.wait(max(0.0, args.every - (time.monotonic() - started)))
    return 0


def _forecast_once(args, settings, kinds, series) -> int:
    from collector.forecasting.jobs import forecast_series_from_database

    started = time.perf_counter()
    with _executor(args, settings) as executor:
        results = forecast_series_from_database(
            _database_url(settings), series, kinds=kinds, horizon_hours=args.horizon_hours,
            history_days=args.history_days, freq=args.freq, options=_options(args), executor=executor,
            weather=_weather(args, settings), save=not args.no_store, progress=_progress)
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps({"series": [r.as_dict() for r in results], "failed": len(failed),
                          "seconds": round(time.perf_counter() - started, 3)}), flush=True)
    else:
        for r in results:
            if r.error:
                status = f"error: {r.error}"
            else:
                peak = r.forecast.peak()
                status = (f"{r.model} {r.points} steps, peak {peak['yhat']:.1f} kWh at {peak['ts']}, "
                          f"run {r.run_id or '(not stored)'}")
            print(f"{r.kind}:{r.key}  {status}", flush=True)
            if r.forecast is not None and r.forecast.selection:
                print(f"    chosen: {r.forecast.selection['reason']}", flush=True)
            for note in r.notes:
                print(f"    note: {note}", flush=True)
    if not results:
        raise CLIError("no series to forecast: no feeders/regions with meters yet")
    return 1 if failed and len(failed) == len(results) else 0


# ---------------------------------------------------------------------------- backtest

def _csv_series(path: str, ts_column: str | None, value_column: str | None) -> pd.Series:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise CLIError(f"{path} does not exist") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise CLIError(f"{path} is not readable CSV: {exc}") from None
    if frame.shape[1] < 2:
        raise CLIError(f"{path} needs a timestamp column and a load column")
    ts_column = ts_column or frame.columns[0]
    value_column = value_column or frame.columns[1]
    for name, option in ((ts_column, "--ts-column"), (value_column, "--value-column")):
        if name not in frame.columns:
            raise CLIError(f"{option} {name!r} is not a column of {path} (columns: {', '.join(frame.columns)})")
    try:
        index = pd.to_datetime(frame[ts_column], utc=True)
        values = pd.to_numeric(frame[value_column])
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{path}: bad values in {ts_column!r} or {value_column!r}: {exc}") from None
    return pd.Series(values.to_numpy(dtype="float64"), index=pd.DatetimeIndex(index))


@_known_errors
def cmd_backtest(args, settings) -> int:
    from collector.forecasting.backtest import backtest_day_ahead
    from collector.weather.providers import temperature_or_reason

    place: tuple[float, float] | None = (args.lat, args.lon) if args.lat is not None and args.lon is not None else None
    if args.csv:
        series = _csv_series(args.csv, args.ts_column, args.value_column)
        name = os.path.basename(args.csv)
    else:
        from collector.forecasting import store
        from collector.settings import asyncpg_dsn

        kind, key = args.kind or "system", args.key or "all"
        end = pd.Timestamp.now(tz="UTC").floor("h")
        start = end - pd.Timedelta(days=args.history_days)

        async def load() -> tuple[pd.Series, tuple[float, float] | None]:
            import asyncpg

            conn = await asyncpg.connect(asyncpg_dsn(_database_url(settings)))
            try:
                return (await store.actual_load(conn, kind, key, start.to_pydatetime(), end.to_pydatetime(), args.freq),
                        await store.series_location(conn, kind, key))
            finally:
                await conn.close()
        series, located = asyncio.run(load())
        place = place or located
        name = f"{kind}:{key}"
        if series.empty:
            raise CLIError(f"no actual load for {name} in the last {args.history_days} days")
    temperature = None
    provider = _weather(args, settings)
    if provider is not None:
        if place is None and provider.name == "csv":
            place = (0.0, 0.0)                  # a CSV of one place needs no coordinates
        index = pd.DatetimeIndex(pd.to_datetime(series.index, utc=True))
        temperature, note = temperature_or_reason(provider, place[0] if place else None, place[1] if place else None,
                                                  index.min(), index.max() + pd.Timedelta(days=2))
        if note:
            _progress(note.replace("forecast made", "backtest made"))
    folds = args.folds or 7 * args.weeks
    _progress(f"backtesting {name}: {folds} day-ahead folds, {args.every_days} day(s) apart, model {args.model}")
    with _executor(args, settings) as executor:
        report = backtest_day_ahead(series, folds=folds, every_days=args.every_days, end=args.end,
                                    options=_options(args), executor=executor, name=name,
                                    temperature=temperature, progress=_progress)
    print(json.dumps(report.as_dict()) if args.json else report.table())
    return 0


# ---------------------------------------------------------------------------- policy

def _param_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@_known_errors
def cmd_policy(args, settings) -> int:
    from collector.policy import PARAMETERS, run_sandbox, sandbox_with_stored_intensity

    if args.list_parameters:
        for name, meaning in PARAMETERS.items():
            print(f"{name:28} {meaning}")
        return 0
    params: dict[str, Any] = {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CLIError(f"--set takes NAME=VALUE, got {item!r}")
        params[name.strip()] = _param_value(value.strip())
    if args.csv:
        try:
            load = pd.read_csv(args.csv)
        except FileNotFoundError:
            raise CLIError(f"{args.csv} does not exist") from None
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise CLIError(f"{args.csv} is not readable CSV: {exc}") from None
    else:
        if args.start is None or args.end is None:
            raise CLIError("give --csv FILE, or --start and --end to use actual load from the database")
        from collector.forecasting import store
        from collector.settings import asyncpg_dsn

        async def fetch() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
            import asyncpg

            conn = await asyncpg.connect(asyncpg_dsn(_database_url(settings)))
            try:
                start, end = args.start.to_pydatetime(), args.end.to_pydatetime()
                return (await store.regional_load(conn, start, end, args.region or None),
                        await store.carbon_intensities(conn, start, end), await store.region_policies(conn))
            finally:
                await conn.close()
        load, intensities, regions = asyncio.run(fetch())
        if load.empty:
            raise CLIError(f"no regional load between {args.start} and {args.end}")
    if args.csv:
        result, notes = run_sandbox(load, params), []
    else:   # the computation of POST /policy/sandbox: identical figures for identical data
        result, notes = sandbox_with_stored_intensity(load, params, intensities, regions)
    for note in notes:
        _progress(f"note: {note}")
    if args.json:
        print(json.dumps({"parameters": params, "notes": notes, **result.as_dict()}, default=float))
    else:
        cols = ["region", "peak_kw_before", "peak_kw_after", "energy_kwh_before", "energy_kwh_after",
                "cost_before", "cost_after", "co2_kg_before", "co2_kg_after"]
        print(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    return 0


# ---------------------------------------------------------------------------- weather

@_known_errors
def cmd_weather(args, settings) -> int:
    provider = _weather(args, settings)
    if provider is None:
        raise CLIError("--weather PROVIDER is required (openweathermap, open-meteo or csv)")
    temps = provider.hourly_temperature(args.lat, args.lon, args.start, args.end)
    if args.store:
        from collector.forecasting import store
        from collector.settings import asyncpg_dsn

        async def save() -> int:
            import asyncpg

            conn = await asyncpg.connect(asyncpg_dsn(_database_url(settings)))
            try:
                return await store.store_weather(conn, args.store, args.lat, args.lon, temps, provider.name)
            finally:
                await conn.close()
        _progress(f"stored {asyncio.run(save())} hourly temperatures as location {args.store!r}")
    if args.json:
        print(json.dumps({"provider": provider.name, "hours": len(temps),
                          "temperature_c": {ts.isoformat(): v for ts, v in temps.items()}}))
    else:
        print(f"{provider.name}: {len(temps)} hours, {temps.min():.1f} to {temps.max():.1f} °C "
              f"(mean {temps.mean():.1f})")
    return 0


# ---------------------------------------------------------------------------- carbon

@_known_errors
def cmd_carbon(args, settings) -> int:
    from collector.forecasting import store
    from collector.settings import asyncpg_dsn

    if args.action == "fetch":
        from collector.carbon import CsvCarbonIntensity, NationalGridESOProvider

        if args.provider == "csv":
            if not args.csv:
                raise CLIError("--provider csv needs --csv FILE")
            provider = CsvCarbonIntensity(args.csv)
        else:
            provider = NationalGridESOProvider(args.region_id)
        hourly = provider.hourly_intensity(args.start, args.end)

        async def save() -> int:
            import asyncpg

            conn = await asyncpg.connect(asyncpg_dsn(_database_url(settings)))
            try:
                return await store.store_carbon_intensity(conn, args.area, hourly, provider.name)
            finally:
                await conn.close()
        written = asyncio.run(save())
        summary = {"provider": provider.name, "area": args.area, "hours": written,
                   "mean_g_per_kwh": round(float(hourly["intensity_g_per_kwh"].mean()), 2)}
        print(json.dumps(summary) if args.json else
              f"stored {written} hours of {provider.name} intensity for area {args.area!r} "
              f"(mean {summary['mean_g_per_kwh']} g/kWh)")
        return 0

    from collector.carbon import emissions_by

    async def gather() -> tuple[pd.DataFrame, pd.Series]:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(_database_url(settings)))
        try:
            consumption = await store.consumption_by(conn, args.start.to_pydatetime(), args.end.to_pydatetime())
            # each region at its own stored intensity, else the system's: as the API, TabPy and Tableau
            intensity = await store.carbon_intensities(conn, args.start.to_pydatetime(), args.end.to_pydatetime())
            return consumption, intensity
        finally:
            await conn.close()
    consumption, intensity = asyncio.run(gather())
    if consumption.empty:
        raise CLIError(f"no consumption between {args.start} and {args.end}")
    column = {"meter": "meter_id", "feeder": "feeder_id", "region": "region"}[args.by]
    result = emissions_by(consumption, intensity, [column])
    if args.json:
        print(json.dumps({"by": args.by, "rows": result.to_dict(orient="records")}, default=float))
    else:
        print(result.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    return 0


# ---------------------------------------------------------------------------- parsers

def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); default GRIDSIGHT_DASK_SCHEDULER, "
                                       "else a local process pool")
    p.add_argument("--workers", type=positive_int, help="local process pool size (default: CPU count)")
    from collector.forecasting.types import MODELS

    p.add_argument("--country", default="US", help="ISO country code for public holidays ('none' for no holidays; "
                                                  "default US)")
    p.add_argument("--model", choices=MODELS, default="auto",
                   help="auto (default): per series, the candidate (Prophet, the lag regression, Holt-Winters with "
                        "a weekly season, last week scaled to yesterday's level, last week, or their inverse-error "
                        "ensemble) with the lowest day-ahead error over the last 21 days; ets is the short-history "
                        "fallback")
    p.add_argument("--freq", choices=("h", "30min", "15min"), default="h",
                   help="database series: hourly, half-hourly or 15-minute steps (default h); a CSV's own "
                        "interval is inferred")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="forecast feeder/region/system load and store the runs",
                       description="Fit each series' recent actuals (readings_hourly) and store forecasts with "
                                   "prediction intervals in the forecasts table. Run it from a timer for "
                                   "scheduled forecasts, or by hand.")
    p.add_argument("--kind", action="append", choices=("feeder", "region", "system"),
                   help="series kind (repeatable; default system)")
    p.add_argument("--key", help="one feeder or region id (with a single --kind)")
    p.add_argument("--horizon-hours", type=positive_int, default=48, help="how far ahead (default 48)")
    p.add_argument("--history-days", type=positive_int, default=120, help="history to fit on (default 120)")
    p.add_argument("--weather", choices=("openweathermap", "open-meteo", "csv"),
                   help="temperature provider for the regressor (default: none)")
    p.add_argument("--weather-csv", help="CSV for --weather csv (ts, temperature_c)")
    p.add_argument("--weather-cache", help="directory caching provider responses")
    p.add_argument("--no-store", action="store_true", help="print only; do not write the forecasts table")
    p.add_argument("--every", type=float, metavar="SECONDS",
                   help="keep running: forecast now and then every SECONDS (e.g. 3600) until stopped")
    p.add_argument("--max-runs", type=positive_int, help="with --every: stop after this many runs")
    _fit_options(p)
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("backtest", help="rolling-origin day-ahead backtest vs naive baselines",
                       description="Day-ahead forecasts from every midnight of the last --weeks weeks (every "
                                   "weekday alike), scored by MAPE, sMAPE and peak error next to 'same hour "
                                   "yesterday', 'same hour last week' and each candidate model, with a table per "
                                   "weekday and the coverage of the prediction interval.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--csv", help="CSV of timestamps and load (first two columns unless named)")
    src.add_argument("--kind", choices=("feeder", "region", "system"), help="a series from the database")
    p.add_argument("--key", help="feeder or region id for --kind")
    p.add_argument("--ts-column", help="timestamp column of --csv")
    p.add_argument("--value-column", help="load column of --csv")
    p.add_argument("--weeks", type=positive_int, default=4,
                   help="daily origins over this many weeks (default 4: 28 origins, each weekday 4 times)")
    p.add_argument("--folds", type=positive_int, help="forecast origins (default 7 x --weeks)")
    p.add_argument("--every-days", type=positive_int, default=1, help="days between origins (default 1)")
    p.add_argument("--weather", choices=("openweathermap", "open-meteo", "csv"),
                   help="temperature regressor for Prophet, as in 'collector forecast' (default: none)")
    p.add_argument("--weather-csv", help="CSV for --weather csv (ts, temperature_c)")
    p.add_argument("--weather-cache", help="directory caching provider responses")
    p.add_argument("--lat", type=float, help="latitude for the weather provider (default: the series' sites)")
    p.add_argument("--lon", type=float, help="longitude for the weather provider")
    p.add_argument("--end", type=_timestamp, help="last origin (default: the last full day)")
    p.add_argument("--history-days", type=positive_int, default=400, help="database history to load (default 400)")
    p.add_argument("--max-history-days", type=positive_int,
                   help="history each fit sees (default 400: a year for the yearly shape; 200 fits 3x faster)")
    _fit_options(p)
    p.set_defaults(func=cmd_backtest)

    from collector.policy import PARAMETERS

    p = sub.add_parser("policy", help="apply policies to regional load: peak, energy, cost, CO2 before/after",
                       description="Parameters (--set NAME=VALUE): " + "; ".join(PARAMETERS))
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a policy parameter (repeatable)")
    p.add_argument("--csv", help="load CSV with region, ts, kwh (instead of the database)")
    p.add_argument("--start", type=_timestamp, help="start of actual load from the database")
    p.add_argument("--end", type=_timestamp, help="end (exclusive)")
    p.add_argument("--region", action="append", help="only these regions (repeatable)")
    p.add_argument("--list-parameters", action="store_true", help="print the parameters and their meaning")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_policy)

    p = sub.add_parser("weather", help="fetch hourly temperature from a provider (optionally store it)")
    p.add_argument("--weather", choices=("openweathermap", "open-meteo", "csv"), required=True, help="provider")
    p.add_argument("--weather-csv", help="CSV for --weather csv")
    p.add_argument("--weather-cache", help="directory caching provider responses")
    p.add_argument("--lat", type=float, required=True, help="latitude, degrees north")
    p.add_argument("--lon", type=float, required=True, help="longitude, degrees east")
    p.add_argument("--start", type=_timestamp, required=True, help="first hour, ISO 8601 (UTC if no offset)")
    p.add_argument("--end", type=_timestamp, required=True, help="end of the range, exclusive")
    p.add_argument("--store", metavar="LOCATION", help="store into weather_observations under this location")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_weather)

    p = sub.add_parser("carbon", help="fetch grid carbon intensity, or report emissions from consumption")
    p.add_argument("action", choices=("fetch", "emissions"))
    p.add_argument("--start", type=_timestamp, required=True, help="first hour, ISO 8601 (UTC if no offset)")
    p.add_argument("--end", type=_timestamp, required=True, help="end of the range, exclusive")
    p.add_argument("--provider", choices=("national-grid-eso", "csv"), default="national-grid-eso",
                   help="where carbon intensity comes from")
    p.add_argument("--csv", help="intensity CSV for --provider csv (hour_start, intensity_g_per_kwh)")
    p.add_argument("--region-id", type=int, help="National Grid ESO region 1..17 (default national)")
    p.add_argument("--area", default="system", help="fetch: store as this area, 'system' or a region id (default "
                                                    "system); emissions charge each region its own stored "
                                                    "intensity, else the system's")
    p.add_argument("--by", choices=("meter", "feeder", "region"), default="region", help="emissions grouping")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_carbon)
