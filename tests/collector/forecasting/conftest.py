"""Fixtures for the forecasting area: a loopback HTTP server that answers like the public
weather and carbon-intensity APIs, and synthetic load series (tests never read shared data)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import asyncio

import asyncpg
import numpy as np
import pandas as pd
import pytest

Route = Callable[[str, dict], tuple[int, object, dict]]


@dataclass
class FakeApi:
    """Routes by path prefix; each route returns (status, json body, headers). Records requests."""

    base_url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict]] = field(default_factory=list)

    def route(self, prefix: str, handler: Route) -> None:
        self.routes[prefix] = handler

    def hits(self, prefix: str) -> int:
        return sum(1 for path, _ in self.requests if path.startswith(prefix))


@pytest.fixture
def fake_api():
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            api.requests.append((parts.path, query))
            for prefix in sorted(api.routes, key=len, reverse=True):
                if parts.path.startswith(prefix):
                    status, body, headers = api.routes[prefix](parts.path, query)
                    break
            else:
                status, body, headers = 404, {"cod": "404", "message": "not found"}, {}
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


def synthetic_load(days: int, *, freq: str = "h", start: str = "2026-01-05", seed: int = 7,
                   temperature: pd.Series | None = None) -> pd.Series:
    """Feeder-like load in kWh per step: daily double peak, weekend dip, noise, optional
    cooling response to temperature."""
    rng = np.random.default_rng(seed)
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    index = pd.date_range(start, periods=days * int(pd.Timedelta(days=1) / step), freq=freq, tz="UTC")
    hour = index.hour + index.minute / 60
    daily = 1.0 + 0.35 * np.exp(-((hour - 8) ** 2) / 4) + 0.6 * np.exp(-((hour - 19) ** 2) / 5)
    weekly = np.where(index.day_of_week >= 5, 0.85, 1.0)
    load = 100.0 * daily * weekly
    if temperature is not None:
        t = temperature.reindex(index, method="nearest").to_numpy()
        load = load + 6.0 * np.clip(t - 20.0, 0, None)
    load = load * (1 + rng.normal(0, 0.02, len(index)))
    step_h = step / pd.Timedelta(hours=1)
    return pd.Series(load * step_h, index=index, name="kwh")


NOW = pd.Timestamp.now(tz="UTC").floor("h")
DAYS = 16
METERS = {"m-n1": ("s-n", "north"), "m-n2": ("s-n", "north"), "m-s1": ("s-s", "south")}


def run(database_url: str, coro_fn):
    async def go():
        conn = await asyncpg.connect(database_url)
        try:
            return await coro_fn(conn)
        finally:
            await conn.close()
    return asyncio.run(go())


@pytest.fixture
def grid_db(database_url) -> str:
    """Two regions, a feeder each, three meters with 16 days of hourly rollups up to now."""
    from collector.db import migrate

    migrate(database_url)
    start = NOW - pd.Timedelta(days=DAYS)

    async def fill(conn):
        await conn.execute("""
            INSERT INTO regions (id, name) VALUES ('north', 'North'), ('south', 'South'), ('east', 'East');
            INSERT INTO feeders (id, region_id, name) VALUES ('f-n', 'north', 'North 1'), ('f-s', 'south', 'South 1');
            INSERT INTO sites (id, name, region_id, feeder_id, lat, lon) VALUES
                ('s-n', 'North site', 'north', 'f-n', 53.4, -2.2), ('s-s', 'South site', NULL, 'f-s', 50.8, -0.1);
            INSERT INTO gateways (id, site_id) VALUES ('gw-n', 's-n'), ('gw-s', 's-s');""")
        records = []
        for i, (meter, (site, _)) in enumerate(METERS.items()):
            await conn.execute("INSERT INTO meters (id, gateway_id, site_id) VALUES ($1, $2, $3)",
                               meter, "gw-n" if site == "s-n" else "gw-s", site)
            load = synthetic_load(DAYS, start=str(start.tz_localize(None)), seed=i) / 100.0
            records += [(meter, ts.to_pydatetime(), float(v), 4, 60) for ts, v in load.items()]
        await conn.copy_records_to_table("readings_hourly", records=records,
                                         columns=["meter_id", "bucket", "kwh", "intervals", "readings"])
    run(database_url, fill)
    return database_url


