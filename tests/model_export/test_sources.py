"""Training straight from where the collector keeps readings: PostgreSQL and the raw archive."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import pytest

import numpy as np

from gridsight import wire
from edge_agent.scorer import Scorer
from model_fleet import make_fleet


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", "model", *args], capture_output=True, text=True,
                          timeout=240)


def _register_readings(days: int = 4) -> list[wire.Reading]:
    fleet = make_fleet(meters=3, days=days, anomalies=False, seed=9)
    out = []
    for m, kwh in fleet.kwh.items():
        register = np.cumsum(kwh) + 500.0
        for t, e in zip(fleet.ts(m) + fleet.interval_s - 1, register):
            out.append(wire.Reading(m, float(t), float(e), power_w=1000.0))
    return out


@pytest.mark.slow
def test_train_from_the_collector_database_readings(tmp_path, database_url):
    import psycopg

    from collector.db import migrate

    migrate(database_url, "0001_core")
    readings = _register_readings()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT gridsight_ensure_partitions('readings', to_timestamp(%s), to_timestamp(%s))",
                     (readings[0].ts - 86_400, readings[-1].ts + 86_400))
        with conn.cursor().copy("COPY readings (meter_id, ts, energy_kwh, power_w, gateway_id, seq) FROM STDIN") as cp:
            for i, r in enumerate(readings):
                cp.write_row((r.meter_id, dt.datetime.fromtimestamp(r.ts, dt.timezone.utc), r.energy_kwh,
                              r.power_w, "gw-1", i))
    classes = tmp_path / "classes.csv"
    classes.write_text("meter_id,meter_class\nm00,residential\nm01,residential\nm02,commercial\n")
    out = tmp_path / "m.onnx"
    proc = _cli("train", "--database-url", database_url, "--out", str(out), "--n-estimators", "10",
                "--meter-classes", str(classes), "--meter-class", "residential")
    assert proc.returncode == 0, proc.stderr
    scorer = Scorer.load(out)
    assert scorer.meter_class == "residential"
    assert '"meters": 2' in scorer.metadata["data_quality"]


@pytest.mark.slow
def test_train_from_the_raw_archive_skipping_damaged_objects(tmp_path):
    from collector.archive import ArchivedMessage, LocalDirStore, archive_key, encode_object

    store = LocalDirStore(tmp_path / "archive")
    readings = _register_readings()
    by_day: dict[dt.date, list] = {}
    for r in readings:
        by_day.setdefault(dt.datetime.fromtimestamp(r.ts, dt.timezone.utc).date(), []).append(r)
    seq = 0
    for day, rows in sorted(by_day.items()):
        messages = []
        for i in range(0, len(rows), 500):
            chunk = wire.RawChunk("gw-1", seq, None, rows[i].ts, tuple(rows[i:i + 500]))
            messages.append(ArchivedMessage(wire.topic_for("gw-1", "raw"), rows[i].ts, wire.encode(chunk)))
            seq += 1
        data, sha = encode_object(messages)
        store.put(archive_key(day, "gw-1", seq - len(messages), seq - 1, sha), data, sha)
    first, last = min(by_day), max(by_day)
    damaged = archive_key(last, "gw-2", 0, 0, "0" * 64)
    (tmp_path / "archive" / damaged).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "archive" / damaged).write_bytes(b"not gzip")

    out = tmp_path / "m.onnx"
    proc = _cli("train", "--archive-dir", str(tmp_path / "archive"), "--since", first.isoformat(),
                "--until", last.isoformat(), "--out", str(out), "--n-estimators", "10")
    assert proc.returncode == 0, proc.stderr
    assert '"intervals": 1152' in Scorer.load(out).metadata["data_quality"]  # 3 meters x 4 days x 96
    assert "skipped 1" in proc.stderr


def test_archive_training_needs_a_period(tmp_path):
    proc = _cli("train", "--archive-dir", str(tmp_path), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 2 and "--since and --until" in proc.stderr
