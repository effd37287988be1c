"""TabPy endpoints deployed with `gridsight dashboards tabpy-deploy` to a real TabPy server on
loopback with authentication, then called through `/evaluate` exactly as Tableau's
SCRIPT_REAL calls them: a script and `_argN` lists in, one number per row out."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from gridsight.local_services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gridsight", "dashboards", "tabpy-deploy"]
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400
USER, PASSWORD = "tableau", "s3cret-for-tests"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A small Isolation Forest trained on two weeks of simulated meters by model_export."""
    from gridsight.wire import Reading
    from firmware_sim.fleet_model import Fleet
    from model_export.pipeline import train_and_export

    fleet = Fleet(seed=6, gateways=1, meters_per_gateway=3, step_s=900, anomaly_rate=0, fault_rate=0)
    readings = []
    for spec in fleet.meter_specs():
        meter = fleet.meter(spec)
        for d in range(fleet.calendar.day_of(START), fleet.calendar.day_of(START + 14 * DAY)):
            s = meter.day(d)
            register = s.register_start + np.cumsum(s.step_kwh)
            readings += [Reading(spec.meter_id, float(t), float(e), float(p))
                         for t, e, p in zip(s.ts, register, s.power_w)]
    out = tmp_path_factory.mktemp("model") / "model.onnx"
    train_and_export(readings, out, n_estimators=50)
    return out


@pytest.fixture(scope="module")
def tabpy_work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tabpy")


@pytest.fixture(scope="module")
def tabpy(tabpy_work) -> str:
    from tabpy.tabpy_server.handlers.util import hash_password

    work = tabpy_work
    (work / "passwords.txt").write_text(f"{USER} {hash_password(USER, PASSWORD)}\n")
    port = free_port()
    (work / "tabpy.conf").write_text(f"""[TabPy]
TABPY_PORT = {port}
TABPY_PWD_FILE = {work / 'passwords.txt'}
TABPY_STATE_PATH = {work / 'state'}
TABPY_QUERY_OBJECT_PATH = {work / 'query_objects'}
TABPY_TRANSFER_PROTOCOL = http
TABPY_EVALUATE_ENABLE = true
TABPY_EVALUATE_TIMEOUT = 120
""")
    (work / "state").mkdir()
    log = work / "tabpy.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "support" / "tabpy_on_loopback.py"),
                                 str(work / "tabpy.conf")], stdout=fh, stderr=subprocess.STDOUT, cwd=work)
    try:
        wait_for_port(port, 60, proc, "TabPy", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)


def _deploy(url: str, *extra: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    env = {**os.environ, "TABPY_PASSWORD": password}
    return subprocess.run([*CLI, "--tabpy-url", url, "--username", USER, *extra], capture_output=True, text=True,
                          env=env, cwd=REPO)


def _evaluate(url: str, endpoint: str, *args, auth=(USER, PASSWORD)) -> httpx.Response:
    """POST /evaluate as the shipped workbooks' SCRIPT_REAL calculations do (dashboards.tabpy_endpoints.tableau_script)."""
    from dashboards.tabpy_endpoints import tableau_script

    body = {"script": tableau_script(endpoint, len(args)),
            "data": {f"_arg{i}": list(a) for i, a in enumerate(args, start=1)}}
    return httpx.post(f"{url}/evaluate", content=json.dumps(body), auth=auth, timeout=120,
                      headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def deployed(tabpy, model_file) -> str:
    done = _deploy(tabpy, "--model", str(model_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["anomaly_score", "load_forecast", "policy_sandbox", "carbon_co2_kg"]
    return tabpy


def _day_series(days: int, anomaly_day: int | None = None) -> tuple[list[str], list[float]]:
    """15-minute kWh of a household: a morning and an evening peak; one day optionally flat at zero (theft)."""
    ts, kwh = [], []
    for i in range(days * 96):
        t = START + i * 900
        hour = (i % 96) / 4
        value = 0.08 + 0.25 * math.exp(-((hour - 7.5) ** 2) / 2) + 0.45 * math.exp(-((hour - 19) ** 2) / 3)
        if anomaly_day is not None and i // 96 == anomaly_day:
            value = 0.0
        ts.append(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)))
        kwh.append(round(value, 4))
    return ts, kwh


def test_anomaly_score_endpoint_returns_the_agents_scores_row_for_row(deployed, model_file):
    from dashboards.tabpy_endpoints import score_series

    ts, kwh = _day_series(10, anomaly_day=8)
    answer = _evaluate(deployed, "anomaly_score", ts, kwh)
    assert answer.status_code == 200, answer.text
    scores = answer.json()
    assert len(scores) == len(kwh)
    assert scores == pytest.approx(score_series(model_file.read_bytes(), ts, kwh), abs=1e-6)
    normal, theft = np.mean(scores[7 * 96:8 * 96]), np.mean(scores[8 * 96:9 * 96])
    assert theft < normal  # lower = more anomalous


def test_policy_sandbox_endpoint_applies_the_sliders_like_collector_policy(deployed):
    from collector.policy import day_profile_after

    hours = list(range(24))
    load = [40 + 30 * math.sin(math.pi * h / 24) ** 2 for h in hours]
    meters = [100] * 24
    answer = _evaluate(deployed, "policy_sandbox", hours, load, meters, [0] * 24, [100] * 24, [10] * 24, [0] * 24)
    assert answer.status_code == 200, answer.text
    assert answer.json() == pytest.approx([v * 0.9 for v in load])
    shifted = _evaluate(deployed, "policy_sandbox", hours, load, meters, [20] * 24, [90] * 24, [5] * 24, [10] * 24)
    assert shifted.json() == pytest.approx(day_profile_after(hours, load, meters, 20, 90, 5, 10))


def test_policy_sandbox_endpoint_refuses_a_bad_slider_with_its_message_in_tabpys_error_response(deployed, tabpy_work):
    answer = _evaluate(deployed, "policy_sandbox", [0, 1], [1.0, 2.0], [5, 5], [0, 0], [100, 100], [150, 150], [0, 0])
    assert answer.status_code == 500, answer.text          # TabPy's error response, not 404 "did not respond"
    assert answer.json()["message"] == "Error processing script"
    assert "efficiency_pct: must be between 0 and 100, got 150" in answer.json()["info"]
    assert "efficiency_pct: must be between 0 and 100, got 150" in (tabpy_work / "tabpy.log").read_text()


def test_carbon_endpoint_uses_the_factor_of_every_other_carbon_figure(deployed):
    from collector.carbon import co2_kg

    answer = _evaluate(deployed, "carbon_co2_kg", [10.0, 2.5, 0.0], [400.0, 100.0, 250.0])
    assert answer.status_code == 200, answer.text
    assert answer.json() == pytest.approx([float(co2_kg(10.0, 400.0)), float(co2_kg(2.5, 100.0)), 0.0])
    assert answer.json() == pytest.approx([4.0, 0.25, 0.0])


@pytest.mark.slow
def test_load_forecast_endpoint_fills_the_future_rows_and_keeps_the_measured_ones(deployed):
    hours = 24 * 21
    ts = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + 3600 * i)) for i in range(hours + 24)]
    load = [100 + 40 * math.sin(2 * math.pi * (i % 24) / 24) for i in range(hours)]
    answer = _evaluate(deployed, "load_forecast", ts, load + [None] * 24)
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out[:hours] == pytest.approx(load)
    future = np.array(out[hours:], dtype=float)
    expected = np.array([100 + 40 * math.sin(2 * math.pi * (i % 24) / 24) for i in range(hours, hours + 24)])
    assert np.all(np.isfinite(future))
    assert np.mean(np.abs(future - expected)) < 10  # the daily shape is carried into the future


def test_evaluate_without_credentials_is_refused(deployed):
    answer = _evaluate(deployed, "policy_sandbox", [0], [1.0], [1], [0], [100], [0], [0], auth=None)
    assert answer.status_code == 401


def test_deploy_with_a_wrong_password_fails_in_one_line(tabpy):
    done = _deploy(tabpy, "--endpoints", "policy_sandbox", password="wrong")
    assert done.returncode == 2
    assert done.stderr.startswith("gridsight dashboards: error: TabPy at")
    assert len(done.stderr.strip().splitlines()) == 1


def test_deploy_refuses_a_corrupt_model_before_contacting_the_server(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    done = subprocess.run([*CLI, "--tabpy-url", f"http://127.0.0.1:{free_port()}", "--model", str(bad),
                           "--endpoints", "anomaly_score"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert "bad.onnx" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_deploy_to_a_server_that_is_not_there_says_so_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([*CLI, "--tabpy-url", url, "--endpoints", "policy_sandbox"], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == f"gridsight dashboards: error: TabPy at {url}: cannot connect (is TabPy running there?)"
