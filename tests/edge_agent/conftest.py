"""Fixtures of the agent's tests: a model trained by model_export, a subscriber on the test broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from meter_data import T0, Subscriber, recording


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A small Isolation Forest trained by model_export on two weeks of normal load (900 s intervals)."""
    from model_export.pipeline import train_and_export

    out = tmp_path_factory.mktemp("model") / "model.onnx"
    train_and_export(recording(4, T0 - 14 * 86_400, 14 * 86_400, 300), out, n_estimators=50, version="test-1")
    return out


@pytest.fixture
def subscriber(mosquitto):
    sub = Subscriber(mosquitto.port)
    yield sub
    sub.close()


