"""A small scenario end to end: simulated meters -> agent processes -> Mosquitto -> collector
-> PostgreSQL, with a power cycle, a broker restart, a partition and a collector crash on the way, scored
against the ground truth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware_sim.fleet_cli import score_run
from firmware_sim.fleet_run import FleetRun, FleetRunError
from firmware_sim.scenario import load_scenario

# make test-fast leaves it out; make test runs it after the parallel part, alone (serial): it drives
# whole fleets at 9000x real time, where other tests' load changes what it measures
pytestmark = [pytest.mark.slow, pytest.mark.serial]

SCENARIO = """
[run]
start = "2026-01-12T00:00:00Z"
hours = 12
warmup_hours = 72            # the agent compares each meter with the same hours of three previous days
speed = 9000

[fleet]
seed = 3
gateways = 2
meters_per_gateway = 3
anomaly_rate = 1.0
fault_rate = 0.0
kinds = ["tamper_zero", "spike", "night_load"]
mode = "process"

[model]
train_days = 5
train_meters = 6

[[events]]
action = "power_cycle"
at_hours = 1
duration_hours = 0.5
gateways = [0]

[[events]]
action = "broker_outage"     # Mosquitto forgets the collector's shared subscription across a restart
at_hours = 3
duration_hours = 1

[[events]]
action = "partition"
at_hours = 5
duration_hours = 1
gateways = [1]

[[events]]
action = "collector_restart"
at_hours = 7
duration_hours = 0.25

[[events]]
action = "model_rollout"
at_hours = 8
"""


@pytest.mark.slow
def test_a_faulty_run_loses_no_reading_stores_none_twice_and_finds_the_injected_anomalies(tmp_path, database_url):
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    run = FleetRun(load_scenario(path), tmp_path / "run", database_url=database_url, progress=lambda m: None)
    result = run.run()
    assert [a.split(" ", 2)[2] for a in result.applied] == [
        "power off (SIGKILL) [0]", "power on [0]", "broker down", "broker up", "partition [1]",
        "partition healed [1]", "collector killed", "collector restarted",
        "model model-v2.onnx announced over the air"]
    score, labels = score_run(result.labels_path, result.manifest_path, database_url)
    c = score.completeness
    assert c.produced == 6 * 84 * 60
    assert c.stored == c.produced, f"missing readings: {c.missing_by_meter}"
    assert c.duplicates == 0
    assert score.overall.events >= 6
    # measured 6/6 events at precision 1.0; the bar leaves one event's slack either way
    assert score.overall.recall >= 0.8, score.as_dict()["kinds"]
    assert score.overall.precision >= 0.8, score.as_dict()["kinds"]
    import psycopg
    with psycopg.connect(database_url) as conn:
        switched = dict(conn.execute("SELECT gateway_id, min(interval_start) FROM interval_summaries "
                                     "WHERE model_version = 'sim-v2' GROUP BY 1").fetchall())
    assert set(switched) == {"gw-0000", "gw-0001"}    # both agents verified and loaded the signed model
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["fleet"]["seed"] == 3 and manifest["produced_since"] < manifest["run_start"]
    # the QA report puts every injected delivery fault on its timeline, with per-region/gateway tables
    from firmware_sim.fleet_cli import write_report
    write_report(score, labels, database_url, tmp_path / "qa.html", [], result.manifest_path)
    html = (tmp_path / "qa.html").read_text()
    timeline = html.split('class="timeline"', 1)[1].split("</svg>", 1)[0]
    for row in ("power cycle (1)", "broker outage (1)", "partition (1)", "collector restart (1)",
                "model rollout (1)"):
        assert row in timeline, row
    assert "data-by='region'" in html and "data-by='gateway'" in html


def test_scenario_mistakes_are_reported_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[events]]\naction = "meteor_strike"\nat_hours = 1\n')
    done = subprocess.run([sys.executable, "-m", "gridsight", "sim", "fleet", "--scenario", str(bad),
                           "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "events[0].action" in done.stderr and "meteor_strike" in done.stderr
    bad.write_text('[fleet]\nmode = "inprocess"\n[[events]]\naction = "power_cycle"\nat_hours = 1\nduration_hours = 1\n')
    done = subprocess.run([sys.executable, "-m", "gridsight", "sim", "fleet", "--scenario", str(bad),
                           "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "power_cycle needs" in done.stderr
    with pytest.raises(FleetRunError, match="broker_outage needs"):
        bad.write_text('[[events]]\naction = "broker_outage"\nat_hours = 1\nduration_hours = 1\n')
        FleetRun(load_scenario(bad), tmp_path / "w", mqtt_port=1)


INPROCESS = """
[run]
start = "2026-03-02T00:00:00Z"
hours = 6
warmup_hours = 2
speed = 6000

[fleet]
seed = 5
gateways = 3
meters_per_gateway = 2
anomaly_rate = 0.0
fault_rate = 0.0
mode = "inprocess"

[model]
train_days = 2
train_meters = 6

[[events]]
action = "clock_jump"
at_hours = 1
duration_hours = 1
jump_s = 1200
gateways = [2]

[[events]]
action = "model_rollout"
at_hours = 3
"""


def test_in_process_agents_survive_a_clock_jump_and_switch_models_mid_run(tmp_path, database_url):
    import psycopg

    path = tmp_path / "scenario.toml"
    path.write_text(INPROCESS)
    run = FleetRun(load_scenario(path), tmp_path / "run", database_url=database_url, progress=lambda m: None)
    result = run.run()
    assert run.mode == "inprocess"
    assert [a.split(" ", 2)[2] for a in result.applied] == [
        "clock jump +1200 s [2]", "clock corrected [2]", "model rollout to model-v2.onnx"]
    score, _ = score_run(result.labels_path, result.manifest_path, database_url)
    assert score.completeness.stored == score.completeness.produced == 6 * 8 * 60
    assert score.completeness.duplicates == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT DISTINCT gateway_id, interval_start, model_version FROM interval_summaries "
                            "ORDER BY 1, 2").fetchall()
    assert {v for _, _, v in rows} == {"sim-v1", "sim-v2"}
    # each gateway switches once, forward: no interval scored by v1 after one scored by v2 (a gateway
    # that lagged under load may score a few earlier intervals with v2; it never goes back)
    by_gateway: dict[str, list[str]] = {}
    for gw, _, version in rows:
        by_gateway.setdefault(gw, []).append(version)
    for gw, versions in by_gateway.items():
        assert versions == sorted(versions), f"{gw} went back to v1 after v2"
    assert max(rows, key=lambda r: r[1])[2] == "sim-v2"
