"""Offline scoring and evaluation for analysts, threshold calibration and per-class models."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from edge_agent.features import batch_features
from edge_agent.scorer import Scorer, select_scorer
from model_export.pipeline import TrainingError, calibration_contamination, train_and_export
from model_export.readings import interval_series, read_readings_csv


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridsight", "model", *args], capture_output=True, text=True,
                          timeout=240)


def _labels_csv(path, fleet):
    """Labels in the simulator's format from the synthetic fleet's injected spans."""
    from datetime import datetime, timezone

    def iso(t):
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter_id", "start", "end", "kind"])
        for m, label in fleet.anomalous.items():
            ts = fleet.ts(m)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], label.astype(int), [0]))))
            for a, b in zip(edges[::2], edges[1::2]):
                w.writerow([m, iso(ts[a]), iso(ts[b - 1] + fleet.interval_s), "injected"])
    return path


@pytest.mark.slow
def test_score_cli_writes_one_row_per_meter_interval_with_score_and_flag(tmp_path, trained_model, fleet, fleet_csv):
    out = tmp_path / "scored.csv"
    proc = _cli("score", "--model", str(trained_model), "--readings", str(fleet_csv), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == sum(v.size for v in fleet.kwh.values())
    scorer = Scorer.load(trained_model)
    assert list(rows[0]) == ["meter_id", "interval_start", "interval_s", "kwh", "readings", "score", "anomalous",
                             "reason", *scorer.feature_names]
    flagged = [r for r in rows if r["anomalous"] == "1"]
    assert flagged and all(float(r["score"]) < 0 for r in flagged)
    assert "flagged" in proc.stderr  # progress and summary go to stderr


@pytest.mark.slow
def test_offline_scores_equal_the_gateway_scorer_on_the_same_features(trained_model, fleet_csv):
    from model_export.offline import score_readings

    scorer = Scorer.load(trained_model)
    stats, _ = interval_series(read_readings_csv(fleet_csv), 900)
    X, _ = batch_features(stats, scorer.feature_names, scorer.interval_s)
    direct, _ = scorer.score(X)
    assert np.array_equal(np.array([r.score for r in score_readings(scorer, fleet_csv)]), direct)


@pytest.mark.slow
def test_evaluate_cli_reports_precision_recall_and_auc_against_labels(tmp_path, trained_model, fleet, fleet_csv):
    labels = _labels_csv(tmp_path / "labels.csv", fleet)
    proc = _cli("evaluate", "--model", str(trained_model), "--readings", str(fleet_csv), "--labels", str(labels))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["events"] == 4 * len(fleet.kwh)
    assert report["roc_auc"] > 0.8 and report["precision"] > 0.5
    assert 0 < report["events_detected"] <= report["events"]


@pytest.mark.slow
def test_a_false_alarm_budget_sets_the_flag_rate_on_normal_data(tmp_path):
    from model_fleet import make_fleet

    fleet = make_fleet(meters=4, days=21, anomalies=False, seed=3)
    path = fleet.write_interval_csv(tmp_path / "normal.csv")
    result = train_and_export(path, tmp_path / "m.onnx", n_estimators=50, false_alarms_per_meter_month=20)
    scorer = Scorer.load(result.path)
    stats, _ = interval_series(read_readings_csv(path), 900)
    X, ordered = batch_features(stats, scorer.feature_names, 900)
    _, flags = scorer.score(X)
    warm = np.array([s.interval_start - fleet.start >= 86_400 for s in ordered])
    meter_months = warm.sum() / 2880
    # 20 alarms: at least about 20 flags a meter-month, at most about three times as many (the cap on the
    # flagged share of training rows; a run of up to 3 h is one alarm)
    per_month = flags[warm].sum() / meter_months
    assert 15 <= per_month <= 66
    assert per_month == pytest.approx(result.expected_flags_per_meter_month, rel=0.3)


def test_contradictory_or_impossible_calibration_targets_are_refused():
    with pytest.raises(TrainingError, match="not both"):
        calibration_contamination(900, contamination=0.01, false_alarms_per_meter_month=3)
    with pytest.raises(TrainingError, match=r"\(0, 0.5\]"):
        calibration_contamination(900, contamination=0.9)
    with pytest.raises(TrainingError, match="above 0"):
        calibration_contamination(900, false_alarms_per_meter_month=0)


@pytest.mark.slow
def test_by_class_training_writes_one_model_per_class_selected_by_metadata(tmp_path, fleet_csv):
    out = tmp_path / "models"
    proc = _cli("train", "--readings", str(fleet_csv), "--out", str(out), "--by-class", "--n-estimators", "10",
                "--version", "v1")
    assert proc.returncode == 0, proc.stderr
    scorers = [Scorer.load(p) for p in sorted(out.glob("*.onnx"))]
    assert {s.meter_class for s in scorers} == {"commercial", "residential"}
    assert {s.name for s in scorers} == {"gridsight-iforest-commercial", "gridsight-iforest-residential"}
    general = Scorer.load(train_and_export(fleet_csv, tmp_path / "general.onnx", n_estimators=10).path)
    assert select_scorer([*scorers, general], "Commercial").meter_class == "commercial"
    assert select_scorer([*scorers, general], "pv") is general
    assert select_scorer(scorers, None) is None


def test_training_a_class_missing_from_the_data_is_refused(tmp_path, fleet_csv):
    proc = _cli("train", "--readings", str(fleet_csv), "--out", str(tmp_path / "m.onnx"), "--meter-class", "pv")
    assert proc.returncode == 2 and "no meters of class 'pv'" in proc.stderr
