"""QA scoring: event-level detection metrics and completeness, from the collector's real tables."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from firmware_sim.anomalies import AnomalyEvent, parse_time
from firmware_sim.fleet_model import Fleet, write_manifest
from firmware_sim.qa_score import Bars, FlaggedInterval, completeness, missed_bars, score_detection

H = 3600.0
T0 = parse_time("2026-02-02T00:00:00Z")


def test_an_event_counts_as_found_when_a_flag_overlaps_it_and_its_delay_is_measured_from_its_start():
    labels = [AnomalyEvent("m1", T0 + 10 * H, T0 + 20 * H, "theft"),
              AnomalyEvent("m2", T0 + 5 * H, T0 + 5.5 * H, "spike"),
              AnomalyEvent("m3", T0 + 30 * H, T0 + 31 * H, "stuck"),
              AnomalyEvent("m4", T0 + 40 * H, T0 + 42 * H, "gap")]
    flags = [FlaggedInterval("m1", T0 + 11 * H, T0 + 11.25 * H), FlaggedInterval("m1", T0 + 11.25 * H, T0 + 11.5 * H),
             FlaggedInterval("m2", T0 + 5.75 * H, T0 + 6 * H),       # after the spike, within tolerance
             FlaggedInterval("m5", T0 + 50 * H, T0 + 50.25 * H),    # nothing happened there
             FlaggedInterval("m4", T0 + 41 * H, T0 + 41.25 * H)]    # a data fault must not alarm either
    s = score_detection(labels, flags, meters=10, span_start=T0, span_end=T0 + 60 * H)
    assert (s.overall.events, s.overall.detected) == (3, 2)
    assert s.overall.recall == pytest.approx(2 / 3)
    assert len(s.detections) == 4                      # m1's two adjacent flags are one detection
    assert s.false_alarms == 2 and s.false_alarms_in_data_faults == 1
    assert s.overall.precision == pytest.approx(2 / 4)
    assert s.kinds["theft"].delays_s == [1.25 * H]
    assert s.kinds["spike"].delays_s == [1.0 * H]
    assert [e.meter_id for e in s.missed_events] == ["m3"]
    assert s.false_alarms_per_meter_month == pytest.approx(2 / (10 * 60 * H / (30 * 86400)))
    assert missed_bars(s, Bars()) == ["recall 0.667 is below 0.9", "precision 0.500 is below 0.8"]
    assert missed_bars(s, Bars(min_recall=0.6, min_precision=0.5)) == []


def test_per_kind_precision_is_exact_or_not_available_never_apportioned():
    labels = [AnomalyEvent("m1", T0 + 10 * H, T0 + 12 * H, "theft"), AnomalyEvent("m2", T0 + 5 * H, T0 + 6 * H, "spike")]
    hits = [FlaggedInterval("m1", T0 + 11 * H, T0 + 11.25 * H), FlaggedInterval("m2", T0 + 5 * H, T0 + 5.25 * H)]
    clean = score_detection(labels, hits, meters=3, span_start=T0, span_end=T0 + 60 * H)
    assert clean.kinds["theft"].precision == 1.0 and clean.kinds["spike"].precision == 1.0
    noisy = score_detection(labels, hits + [FlaggedInterval("m3", T0 + 30 * H, T0 + 30.25 * H)], meters=3,
                            span_start=T0, span_end=T0 + 60 * H)
    # the false alarm on m3 belongs to no kind, so no kind's precision is known; overall it is 2 of 3
    assert noisy.kinds["theft"].precision is None and noisy.kinds["spike"].precision is None
    assert noisy.overall.precision == pytest.approx(2 / 3)


def test_merge_rule_is_the_one_the_api_uses():
    from gridsight.anomaly_events import FlaggedInterval as Shared, merge_flags

    assert FlaggedInterval is Shared
    runs = merge_flags([Shared("m", 0, 900, -0.1, "a"), Shared("m", 2700, 3600, -0.3, "b"),   # gap 1800 s: one event
                        Shared("m", 5500, 6400, -0.2, "c")])                               # gap 1900 s: a new one
    assert [(r.start, r.end, r.flags, r.min_score, r.reason) for r in runs] == [(0, 3600, 2, -0.3, "b"),
                                                                               (5500, 6400, 1, -0.2, "c")]


def test_completeness_counts_missing_readings_and_stored_duplicates():
    produced = {"a": np.array([60.0, 120.0, 180.0]), "b": np.array([60.0, 120.0])}
    stored = {"a": np.array([60.0, 120.0, 120.0]), "b": np.array([60.0, 120.0, 120.0, 120.0])}
    c = completeness(produced, stored)
    assert (c.produced, c.stored, c.duplicates, c.missing_by_meter) == (5, 4, 3, {"a": 1})
    assert c.ratio == pytest.approx(0.8)


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


@pytest.fixture
def stored_run(database_url, tmp_path):
    """A collector database holding a small fleet's run: all flags but one event's, 5 readings lost, 2 doubled."""
    import psycopg

    from collector.db import migrate

    migrate(database_url, "0001_core")
    start, end = T0, T0 + 3 * 86400
    fleet = Fleet(4, 2, 3, start=start, end=end, anomaly_rate=1.0, fault_rate=0.0,
                  kinds=["theft", "spike", "stuck", "tamper_zero"])
    labels = fleet.labels()
    assert len(labels) == 6
    labels_path = tmp_path / "labels.csv"
    fleet.write_labels(labels_path)
    manifest = tmp_path / "run.json"
    write_manifest(manifest, fleet, start, end, fault_events=[
        {"action": "broker_outage", "start": start + 6 * 3600, "end": start + 7 * 3600, "gateways": None},
        {"action": "power_cycle", "start": start + 30 * 3600, "end": start + 30.5 * 3600, "gateways": ["gw-0001"]},
        {"action": "model_rollout", "start": start + 48 * 3600, "end": start + 48 * 3600, "gateways": None}])
    produced = fleet.handed_over(start, end)
    missed_event = labels[0]
    with psycopg.connect(database_url) as conn:
        for table in ("readings", "interval_summaries", "anomaly_flags"):
            conn.execute("SELECT gridsight_ensure_partitions(%s, %s, %s)", (table, _ts(start - 86400), _ts(end + 86400)))
        with conn.cursor() as cur:
            with cur.copy("COPY readings (meter_id, ts, energy_kwh, gateway_id, seq) FROM STDIN") as cp:
                for meter_id, times in produced.items():
                    keep = times[5:] if meter_id == "gw-0001-m02" else times
                    for t in keep:
                        cp.write_row((meter_id, _ts(t), 1.0, meter_id[:7], 1))
                for t in produced["gw-0000-m00"][100:102]:
                    cp.write_row(("gw-0000-m00", _ts(t), 1.0, "gw-0000", 2))
            with cur.copy("COPY interval_summaries (meter_id, interval_start, interval_s, kwh, readings, anomalous, "
                          "gateway_id, seq, received_at) FROM STDIN") as cp:
                for spec in fleet.meter_specs():
                    ts, reg, *_ = fleet.meter(spec).series(start, end)
                    for i in range(0, ts.size - 15, 15):
                        flagged = any(e.meter_id == spec.meter_id and e is not missed_event
                                      and e.start <= ts[i] < e.start + 900 for e in labels)
                        cp.write_row((spec.meter_id, _ts(ts[i] - 60), 900, reg[i + 14] - reg[i - 1] if i else 0.0,
                                      15, flagged, spec.gateway_id, 3, _ts(ts[i])))
            flags = [(e.meter_id, _ts(np.floor(e.start / 900) * 900)) for e in labels if e is not missed_event]
            flags.append(("gw-0000-m01", _ts(start + 86400 * 2.5)) if labels[0].meter_id != "gw-0000-m01"
                         else ("gw-0000-m02", _ts(start + 86400 * 2.5)))
            for meter_id, at in flags:
                cur.execute("INSERT INTO anomaly_flags (meter_id, interval_start, interval_s, score, threshold, kwh, "
                            "gateway_id, seq, sent_at, received_at) VALUES (%s, %s, 900, -0.2, 0, 1, %s, 4, %s, %s)",
                            (meter_id, at, meter_id[:7], at, at))
    return database_url, labels_path, manifest


def run_sim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", "sim", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_score_reads_the_collector_tables_and_fails_the_gate_when_a_bar_is_missed(stored_run, tmp_path):
    url, labels, manifest = stored_run
    out = tmp_path / "score.json"
    done = run_sim("score", "--labels", labels, "--database-url", url, "--manifest", manifest, "--json", out)
    assert done.returncode == 1, done.stderr
    figures = json.loads(out.read_text())
    assert figures["overall"]["events"] == 6 and figures["overall"]["detected"] == 5
    assert figures["false_alarms"] == 1
    assert figures["completeness"]["produced"] - figures["completeness"]["stored"] == 5
    assert figures["completeness"]["duplicates"] == 2
    assert figures["completeness"]["missing_by_meter"] == {"gw-0001-m02": 5}
    assert "recall 0.833 is below 0.9" in done.stderr and "2 duplicate readings" in done.stderr
    relaxed = run_sim("score", "--labels", labels, "--database-url", url, "--manifest", manifest,
                      "--min-recall", "0.8", "--min-precision", "0.8", "--min-completeness", "0.999",
                      "--max-duplicates", "2")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "PASS" in relaxed.stdout


def test_report_is_one_html_page_with_inline_plots_of_meters_events_and_flags(stored_run, tmp_path):
    url, labels, manifest = stored_run
    out = tmp_path / "qa.html"
    done = run_sim("report", "--labels", labels, "--database-url", url, "--manifest", manifest, "--out", out)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "FAIL" in html
    assert html.count("<svg") >= 4                   # confusion, delays and meter panels
    assert "missed " in html and "<circle" in html   # a missed event's meter is shown, flags marked
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    # every injected delivery fault is on the timeline, beside the labelled events
    timeline = html.split('class="timeline"', 1)[1].split("</svg>", 1)[0]
    for row in ("broker outage (1)", "power cycle (1)", "model rollout (1)", "event: theft"):
        assert row in timeline
    assert "on gw-0001" in timeline
    # per-region and per-gateway tables, and per-kind precision n/a (the run has a false alarm)
    assert "data-by='region'" in html and "data-by='gateway'" in html and "<td>gw-0001</td>" in html
    kinds = html.split("Scores by anomaly kind", 1)[1].split("</table>", 1)[0]
    assert kinds.count("<td>n/a</td>") >= 4 and "apportion" not in html
    # no axis label runs past the chart's edge: the last date is anchored inwards
    assert not re.search(r'<text x="8[4-9]\d\.\d" y="[^"]+" text-anchor="middle">\d\d-\d\d<', html)


def test_voltage_kinds_get_a_per_phase_voltage_trace_where_the_lost_phase_is_near_zero():
    from firmware_sim.qa_report import MeterPanel, VoltageTrace, render_report

    ts = T0 + 900 * np.arange(96)
    lost = (ts >= T0 + 10 * H) & (ts < T0 + 14 * H)
    volts = {"voltage_v": np.full(96, 231.0), "voltage_l1_v": np.where(lost, 0.4, 231.0),
             "voltage_l2_v": np.full(96, 230.0), "voltage_l3_v": np.full(96, 229.0)}
    event = AnomalyEvent("m1", T0 + 10 * H, T0 + 14 * H, "phase_loss")
    panel = MeterPanel("m1", ts, np.full(96, 0.2), np.zeros(96, dtype=bool), (event,), "detected phase_loss",
                       VoltageTrace(ts, volts))
    score = score_detection([event], [FlaggedInterval("m1", T0 + 10 * H, T0 + 10.25 * H)], meters=1,
                            span_start=T0, span_end=T0 + 24 * H)
    html = render_report(score, [event], [panel])
    assert "voltage per phase" in html
    traces = re.findall(r'class="trace" data-name="([^"]+)" points="([^"]+)"', html)
    assert {name for name, _ in traces} == {"single / L1 as sent", "L1", "L2", "L3"}
    l1 = [float(p.split(",")[1]) for name, pts in traces if name == "L1" for p in pts.split()]
    assert max(l1) - min(l1) > 100      # the lost phase drops to the bottom of the axis, the others stay up


def test_score_names_the_problem_in_one_line_when_inputs_are_bad(tmp_path, database_url):
    bad = tmp_path / "labels.csv"
    bad.write_text("meter,when\nx,y\n")
    done = run_sim("score", "--labels", bad, "--database-url", database_url)
    assert done.returncode == 2 and "header lacks" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    good = tmp_path / "good.csv"
    good.write_text("meter_id,start,end,kind\nm,2026-01-01T00:00:00Z,2026-01-02T00:00:00Z,theft\n")
    done = run_sim("score", "--labels", good, "--database-url", database_url)
    assert done.returncode == 2 and "collector migrate" in done.stderr
