"""Prometheus metrics of a collector replica, rendered in the text exposition format by hand.

A dozen counters, gauges and histograms do not justify a client library; this module keeps
them thread-safe (the MQTT thread, the writer and the API all touch them) and renders
``/metrics``. Every metric is described in the README (The collector, Metrics).
"""

from __future__ import annotations

import math
import threading
from typing import Iterable

__all__ = ["Metrics", "BATCH_BUCKETS", "LAG_BUCKETS"]

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_HELP = {
    "gridsight_collector_messages_received_total": ("counter", "MQTT messages received, by kind (topic kind or 'invalid')"),
    "gridsight_collector_messages_stored_total": ("counter", "Messages newly stored, by kind"),
    "gridsight_collector_duplicates_total": ("counter", "Messages whose (gateway_id, epoch, seq) was already stored with the same content; acked, nothing written"),
    "gridsight_collector_seq_conflicts_total": ("counter", "Messages whose (gateway_id, epoch, seq) was stored with other content; dead-lettered as seq_conflict"),
    "gridsight_collector_epochs_started_total": ("counter", "Gateways seen starting a new outbox epoch (a wiped or replaced data directory)"),
    "gridsight_collector_last_new_epoch_timestamp_seconds": ("gauge", "When this replica last saw a gateway start a new outbox epoch (Unix seconds)"),
    "gridsight_collector_rows_written_total": ("counter", "Rows written to PostgreSQL, by table"),
    "gridsight_collector_dead_letters_total": ("counter", "Messages sent to the dead_letters table, by reason"),
    "gridsight_collector_acks_total": ("counter", "PUBACKs sent to the broker after commit"),
    "gridsight_collector_db_errors_total": ("counter", "Batch transactions that failed and were retried"),
    "gridsight_collector_archive_objects_total": ("counter", "Archive objects uploaded"),
    "gridsight_collector_archive_failures_total": ("counter", "Archive upload attempts that failed (retried with backoff)"),
    "gridsight_collector_archive_pending": ("gauge", "Messages in archive_outbox not yet uploaded"),
    "gridsight_collector_inflight_messages": ("gauge", "Messages received but not yet acked"),
    "gridsight_collector_mqtt_connected": ("gauge", "1 while connected to the broker"),
    "gridsight_collector_database_up": ("gauge", "1 when the last database operation succeeded"),
    "gridsight_collector_ack_lag_seconds": ("histogram", "Receive-to-ack time of a message"),
    "gridsight_collector_batch_seconds": ("histogram", "Duration of one batch transaction"),
    "gridsight_collector_batch_messages": ("histogram", "Messages per batch"),
}
_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        for i, le in enumerate(self.buckets):
            if value <= le:
                self.counts[i] += n
        self.sum += value * n
        self.count += n


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Metrics:
    """The replica's metrics; ``inc``/``set``/``observe`` from any thread, ``render`` for scraping."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = {}
        self._hist: dict[str, _Histogram] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values.setdefault(name, {})[key] = float(value)

    def observe(self, name: str, value: float, n: int = 1) -> None:
        with self._lock:
            hist = self._hist.get(name)
            if hist is None:
                buckets = {"gridsight_collector_batch_seconds": BATCH_BUCKETS,
                           "gridsight_collector_batch_messages": _SIZE_BUCKETS}.get(name, LAG_BUCKETS)
                hist = self._hist[name] = _Histogram(buckets)
            hist.observe(value, n)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter/gauge series (0 when never set); histograms give their count."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            if name in self._hist:
                return float(self._hist[name].count)
            return self._values.get(name, {}).get(key, 0.0)

    def total(self, name: str) -> float:
        """Sum over all label sets of a counter."""
        with self._lock:
            return sum(self._values.get(name, {}).values())

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in _HELP.items():
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "histogram":
                    hist = self._hist.get(name)
                    buckets = hist.buckets if hist else ()
                    counts = hist.counts if hist else []
                    for le, c in zip(buckets, counts):
                        lines.append(f'{name}_bucket{{le="{_fmt(le)}"}} {c}')
                    count = hist.count if hist else 0
                    lines.append(f'{name}_bucket{{le="+Inf"}} {count}')
                    lines.append(f"{name}_sum {_fmt(hist.sum if hist else 0.0)}")
                    lines.append(f"{name}_count {count}")
                    continue
                series = self._values.get(name) or {(): 0.0}
                for key, v in sorted(series.items()):
                    lines.append(f"{name}{_labels(key)} {_fmt(v)}")
        return "\n".join(lines) + "\n"

    def names(self) -> Iterable[str]:
        return _HELP.keys()
