"""Model-area fixtures: a synthetic fleet, a trained model and a signing key pair."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_fleet import Fleet, make_fleet


@pytest.fixture
def fleet() -> Fleet:
    return make_fleet()


@pytest.fixture
def fleet_csv(tmp_path, fleet) -> Path:
    return fleet.write_interval_csv(tmp_path / "readings.csv", with_class=True)


@pytest.fixture(scope="session")
def _model_trained_once(tmp_path_factory) -> Path:
    """The fleet's model, trained once per test session (training takes seconds; the fleet is
    deterministic, so every test would train the same bytes)."""
    from model_export.pipeline import train_and_export

    where = tmp_path_factory.mktemp("trained-once")
    readings = make_fleet().write_interval_csv(where / "readings.csv", with_class=True)
    out = where / "model.onnx"
    train_and_export(readings, out, n_estimators=30, max_samples=128, version="v1", name="gridsight-test")
    return out


@pytest.fixture
def trained_model(tmp_path, fleet_csv, _model_trained_once) -> Path:
    """A private copy of the fleet's trained model in the test's own directory (tests sign,
    corrupt or replace it there)."""
    out = tmp_path / "model.onnx"
    shutil.copyfile(_model_trained_once, out)
    return out


@pytest.fixture
def keypair(tmp_path) -> tuple[Path, Path]:
    from model_export.signing import generate_keypair

    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub.pem"
    generate_keypair(private, public)
    return private, public
