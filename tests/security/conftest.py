"""Fixtures of the security tests: a provisioned fleet, Mosquitto running the shipped config, and the
collector as a real process. The identity and collector test helpers are imported by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
for _folder in ("collector/identity", "collector", "provisioning"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

from broker_support import start_broker  # noqa: E402
from security_support import provision_fleet  # noqa: E402


@pytest.fixture
def fleet(tmp_path):
    return provision_fleet(tmp_path / "fleet")


@pytest.fixture
def shipped_broker(fleet, tmp_path):
    """``(fleet, broker, port)``: Mosquitto with deploy/mosquitto/gridsight.conf, only ports and paths changed."""
    broker, port = start_broker(fleet, tmp_path / "mosquitto")
    yield fleet, broker, port
    broker.close()


@pytest.fixture(scope="session")
def signed_models(tmp_path_factory):
    """Two versions of a small model, each signed by the fleet's model key: ``(folder, key_path, public_key)``."""
    from model_export.signing import generate_keypair, sign_file
    from model_export.pipeline import train_and_export

    if str(_TESTS / "edge_agent") not in sys.path:
        sys.path.insert(0, str(_TESTS / "edge_agent"))
    from meter_data import T0, recording

    folder = tmp_path_factory.mktemp("published")
    keys = tmp_path_factory.mktemp("keys")
    generate_keypair(keys / "models.key", keys / "models.pub")
    for n in (1, 2):
        path = folder / f"model-v{n}.onnx"
        train_and_export(recording(3, T0 - 7 * 86_400, 7 * 86_400, 900), path, n_estimators=10, version=f"v{n}",
                         random_state=n)
        sign_file(path, keys / "models.key")
    return folder, keys / "models.key", keys / "models.pub"
