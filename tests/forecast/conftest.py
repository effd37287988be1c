"""Fixtures for the forecasting area: a loopback HTTP server that answers like the public
weather and carbon-intensity APIs, and synthetic load series (tests never read shared data)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

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
    index = pd.date_range(start, periods=days * (24 if freq == "h" else 96), freq=freq, tz="UTC")
    hour = index.hour + index.minute / 60
    daily = 1.0 + 0.35 * np.exp(-((hour - 8) ** 2) / 4) + 0.6 * np.exp(-((hour - 19) ** 2) / 5)
    weekly = np.where(index.dayofweek >= 5, 0.85, 1.0)
    load = 100.0 * daily * weekly
    if temperature is not None:
        t = temperature.reindex(index, method="nearest").to_numpy()
        load = load + 6.0 * np.clip(t - 20.0, 0, None)
    load = load * (1 + rng.normal(0, 0.02, len(index)))
    step_h = 1.0 if freq == "h" else 0.25
    return pd.Series(load * step_h, index=index, name="kwh")
