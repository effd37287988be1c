"""A fleet run's work directory: reruns in the same place start clean; other people's files are safe."""
from __future__ import annotations

import pytest

from firmware_sim.fleet_run import FleetRunError, prepare_work_dir

pytestmark = pytest.mark.slow  # make test-fast leaves it out


def test_a_rerun_in_the_same_work_dir_starts_from_nothing(tmp_path):
    work = tmp_path / "sim-fleet"
    prepare_work_dir(work)
    (work / "keys").mkdir()
    (work / "keys" / "models.key").write_text("previous run's signing key")
    (work / "gateways" / "gw-0000").mkdir(parents=True)
    (work / "gateways" / "gw-0000" / "outbox.sqlite").write_bytes(b"stale sequence numbers")

    prepare_work_dir(work)

    assert not (work / "keys").exists() and not (work / "gateways").exists()
    assert work.is_dir()


def test_a_work_dir_holding_someone_elses_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")

    with pytest.raises(FleetRunError, match="not empty"):
        prepare_work_dir(tmp_path)

    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_an_empty_or_missing_work_dir_is_used_as_it_is(tmp_path):
    prepare_work_dir(tmp_path / "new" / "dir")
    prepare_work_dir(tmp_path / "new" / "dir")  # and again: now it is a previous run's
    assert (tmp_path / "new" / "dir").is_dir()


def test_the_first_and_the_rollout_model_train_on_one_history_written_once(tmp_path):
    from firmware_sim.fleet_run import FleetRun
    from firmware_sim.scenario import load_scenario

    scenario = load_scenario(None, {"fleet": {"gateways": 1, "meters_per_gateway": 2, "mode": "inprocess"},
                                    "model": {"train_days": 2, "train_meters": 2},
                                    "events": [{"action": "model_rollout", "at_hours": 1}]})
    lines: list[str] = []
    run = FleetRun(scenario, tmp_path / "work", progress=lines.append)
    (tmp_path / "work").mkdir()
    run._prepare_models()
    csvs = sorted(p.name for p in (tmp_path / "work").glob("*.csv"))
    assert csvs == ["train.csv"]
    assert (tmp_path / "work" / "model-v1.onnx").read_bytes() != (tmp_path / "work" / "model-v2.onnx").read_bytes()
    training = [line for line in lines if line.startswith("fleet: training")]
    assert len(training) == 2 and training[0] != training[1]
    assert "first model sim-v1" in training[0] and "rollout model sim-v2" in training[1]
