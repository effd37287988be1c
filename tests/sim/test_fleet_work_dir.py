"""A fleet run's work directory: reruns in the same place start clean; other people's files are safe."""
from __future__ import annotations

import pytest

from firmware_sim.fleet_run import FleetRunError, prepare_work_dir


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
