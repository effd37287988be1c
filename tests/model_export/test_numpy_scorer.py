"""The numpy scorer evaluates the signed model file itself and scores as onnxruntime does:
within 1e-9 on the self-test rows and on a readings file, with the same labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge_agent.scorer import ModelError, Scorer, scorer_kind
from model_export.offline import score_readings


@pytest.mark.slow
def test_numpy_and_onnxruntime_scores_agree_on_the_self_test_rows_and_a_readings_file(trained_model, fleet_csv):
    numpy_scorer = Scorer.load(trained_model, kind="numpy")
    ort_scorer = Scorer.load(trained_model, kind="onnxruntime")
    assert (numpy_scorer.kind, ort_scorer.kind) == ("numpy", "onnxruntime")
    X = np.asarray(numpy_scorer.metadata["selftest"]["X"], dtype=np.float32)
    a, la = numpy_scorer.score(X)
    b, lb = ort_scorer.score(X)
    assert np.max(np.abs(a - b)) <= 1e-9 and (la == lb).all()
    rows_numpy = score_readings(numpy_scorer, fleet_csv)
    rows_ort = score_readings(ort_scorer, fleet_csv)
    assert len(rows_numpy) == len(rows_ort) > 1000
    diffs = [abs(p.score - q.score) for p, q in zip(rows_numpy, rows_ort)]
    assert max(diffs) <= 1e-9
    assert [r.anomalous for r in rows_numpy] == [r.anomalous for r in rows_ort]
    assert any(r.anomalous for r in rows_numpy)        # labels compared where they matter, not all False


@pytest.mark.slow
def test_gridsight_scorer_chooses_the_evaluator_and_a_bad_value_is_one_line(trained_model, tmp_path, fleet_csv):
    assert scorer_kind({"GRIDSIGHT_SCORER": "numpy"}) == "numpy"
    assert scorer_kind({}) == "onnxruntime"          # installed in this environment
    with pytest.raises(ModelError, match="expected auto, numpy or onnxruntime"):
        scorer_kind({"GRIDSIGHT_SCORER": "gpu"})
    for kind in ("numpy", "onnxruntime"):
        done = subprocess.run([sys.executable, "-m", "gridsight", "model", "score", "--model", str(trained_model),
                               "--readings", str(fleet_csv), "--out", str(tmp_path / f"{kind}.csv")],
                              capture_output=True, text=True, env={**os.environ, "GRIDSIGHT_SCORER": kind})
        assert done.returncode == 0 and f"on the {kind} scorer" in done.stderr, done.stderr
    assert (tmp_path / "numpy.csv").read_text() == (tmp_path / "onnxruntime.csv").read_text()


def test_a_tampered_file_is_refused_by_the_numpy_scorer_in_one_line(trained_model, tmp_path):
    data = bytearray(trained_model.read_bytes())
    data[len(data) // 3] ^= 0x55
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        Scorer.load(broken, kind="numpy")
    assert "\n" not in str(err.value) and str(broken) in str(err.value)
    (tmp_path / "not-onnx.onnx").write_bytes(b"hello world")
    with pytest.raises(ModelError, match="numpy scorer cannot evaluate"):
        Scorer.load(tmp_path / "not-onnx.onnx", kind="numpy")


def test_the_agent_status_says_which_scorer_runs(trained_model, tmp_path):
    from edge_agent.config import AgentSettings
    from edge_agent.runtime import Agent, NullTransport
    from gridsight.settings import load_settings

    settings = load_settings(AgentSettings, env={"GRIDSIGHT_GATEWAY_ID": "gw-s", "GRIDSIGHT_AGENT_DATA_DIR":
                                                 str(tmp_path / "d"), "GRIDSIGHT_MODEL__PATH": str(trained_model),
                                                 "GRIDSIGHT_INTERVAL_S": "900"})
    os.environ["GRIDSIGHT_SCORER"] = "numpy"
    try:
        agent = Agent(settings, transport=NullTransport(), readers=[])
    finally:
        del os.environ["GRIDSIGHT_SCORER"]
    status = agent.status()
    assert status["scorer"] == "numpy" and status["counters"]["scorer_numpy"] == 1
    json.dumps(status, default=str)
    agent.shutdown(0.1)
