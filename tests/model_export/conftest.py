"""Model-area fixtures: a synthetic fleet, a trained model and a signing key pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_fleet import Fleet, make_fleet


@pytest.fixture
def fleet() -> Fleet:
    return make_fleet()


@pytest.fixture
def fleet_csv(tmp_path, fleet) -> Path:
    return fleet.write_interval_csv(tmp_path / "readings.csv", with_class=True)


@pytest.fixture
def trained_model(tmp_path, fleet_csv) -> Path:
    from model_export.pipeline import train_and_export

    out = tmp_path / "model.onnx"
    train_and_export(fleet_csv, out, n_estimators=30, max_samples=128, version="v1", name="gridsight-test")
    return out


@pytest.fixture
def keypair(tmp_path) -> tuple[Path, Path]:
    from model_export.signing import generate_keypair

    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub.pem"
    generate_keypair(private, public)
    return private, public
