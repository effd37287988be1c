"""A localhost Prometheus endpoint: the agent's counters and each meter's latest values.

``GET /metrics`` answers the text exposition format (version 0.0.4): ``gridsight_agent_<counter>``
for every status counter, and per meter (label ``meter``) the latest import and export energy,
power, voltage and current (per phase where the meter gives them), gas/water volume, the last
interval's score and whether it was flagged. The server binds 127.0.0.1 by default; it serves
nothing but this page.
"""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from gridsight.wire import PHASE_FIELDS

__all__ = ["MetricsEndpoint", "render"]

log = logging.getLogger(__name__)

_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_]")
_METER_FIELDS = {
    "energy_kwh": ("gridsight_meter_import_kwh", "counter", "cumulative imported energy"),
    "export_kwh": ("gridsight_meter_export_kwh", "counter", "cumulative exported energy"),
    "power_w": ("gridsight_meter_power_w", "gauge", "net active power (negative while exporting)"),
    "voltage_v": ("gridsight_meter_voltage_v", "gauge", "voltage (phase 1 or single phase)"),
    "voltage_l1_v": ("gridsight_meter_phase_voltage_v", "gauge", "voltage per phase"),
    "current_l1_a": ("gridsight_meter_phase_current_a", "gauge", "current per phase"),
    "power_l1_w": ("gridsight_meter_phase_power_w", "gauge", "active power per phase"),
    "volume_m3": ("gridsight_meter_volume_m3", "counter", "cumulative gas or water volume"),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(gateway_id: str, counters: dict[str, float], meters: dict[str, dict]) -> str:
    """The exposition text for agent ``counters`` and the latest values of ``meters``."""
    lines = []
    for key, value in sorted(counters.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = "gridsight_agent_" + _NAME_SAFE.sub("_", key)
        lines += [f"# TYPE {name} gauge", f'{name}{{gateway="{_escape(gateway_id)}"}} {float(value)!r}']
    series: dict[str, list[str]] = {}
    helps: dict[str, tuple[str, str]] = {}
    for meter_id, values in sorted(meters.items()):
        label = f'gateway="{_escape(gateway_id)}",meter="{_escape(meter_id)}"'
        for field, (name, kind, text) in _METER_FIELDS.items():
            per_phase = field.endswith("_l1_v") or field.endswith("_l1_a") or field.endswith("_l1_w")
            for phase in (1, 2, 3) if per_phase else (None,):
                key = field.replace("_l1_", f"_l{phase}_") if phase else field
                latest = values.get(key)
                if latest is None:
                    continue
                extra = f',phase="L{phase}"' if phase else ""
                series.setdefault(name, []).append(f"{name}{{{label}{extra}}} {float(latest)!r}")
                helps[name] = (kind, text)
        for key, name, text in (
            ("score", "gridsight_meter_anomaly_score", "last interval's score (lower = more anomalous)"),
            ("anomalous", "gridsight_meter_anomalous", "1 if the last interval was flagged"),
        ):
            if values.get(key) is not None:
                series.setdefault(name, []).append(f"{name}{{{label}}} {float(values[key])!r}")
                helps[name] = ("gauge", text)
    for name, rows in series.items():
        kind, text = helps[name]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *rows]
    return "\n".join(lines) + "\n"


class MetricsEndpoint:
    """Serves :func:`render` of the agent's status and the meters' latest values until closed."""

    name = "metrics"

    def __init__(self, gateway_id: str, status: Callable[[], dict], *, port: int, host: str = "127.0.0.1") -> None:
        self.gateway_id = gateway_id
        self.status = status
        self.meters: dict[str, dict] = {}
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = endpoint.page().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:  # requests are not worth a log line each
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("local metrics on http://%s:%d/metrics", host, self.port)

    def page(self) -> str:
        try:
            counters = self.status().get("counters", {})
        except Exception as exc:  # the page must render even if status fails
            log.warning("metrics: status unavailable: %s", exc)
            counters = {}
        with self._lock:
            meters = {k: dict(v) for k, v in self.meters.items()}
        return render(self.gateway_id, counters, meters)

    def observe(self, readings: list, scored: list) -> None:
        with self._lock:
            for r in readings:
                latest = self.meters.setdefault(r.meter_id, {})
                for field in (
                    "energy_kwh",
                    "export_kwh",
                    "power_w",
                    "voltage_v",
                    "volume_m3",
                    *PHASE_FIELDS,
                ):
                    value = getattr(r, field)
                    if value is not None:
                        latest[field] = value
            for s in scored:
                for m in s.meters:
                    latest = self.meters.setdefault(m.meter_id, {})
                    latest["score"] = m.score
                    latest["anomalous"] = None if m.anomalous is None else int(m.anomalous)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
