"""Item 6: model versions only move forward. An older model, even validly signed, is refused unless
a rollback signed by the model key names the target (and the version it rolls back from)."""

from __future__ import annotations

import dataclasses
import hashlib
import time

from gridsight.wire import ModelAnnouncement, decode_command, encode_command
from edge_agent.model_update import ModelUpdater


def _announcement(folder, n: int) -> ModelAnnouncement:
    path = folder / f"model-v{n}.onnx"
    return ModelAnnouncement("gridsight-iforest", f"v{n}", path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest(),
                             (folder / f"model-v{n}.onnx.sig").as_uri(), time.time())


def _updater(tmp_path, folder, public_key) -> ModelUpdater:
    return ModelUpdater(tmp_path / "models", public_key, gateway_id="gw-a", source_dir=folder)


def test_a_validly_signed_older_model_is_refused(tmp_path, signed_models):
    folder, _, public_key = signed_models
    updater = _updater(tmp_path, folder, public_key)
    assert updater.handle_announcement(_announcement(folder, 2))[0]
    ok, reason = updater.handle_announcement(_announcement(folder, 1))
    assert not ok and "older" in reason, reason
    assert updater.current_scorer().version == "v2"
    # and after a restart the agent still runs v2
    assert _updater(tmp_path, folder, public_key).current_scorer().version == "v2"


def test_a_signed_rollback_naming_the_target_moves_back_and_survives_the_wire(tmp_path, signed_models):
    from model_export.publish import rollback_announcement

    folder, private_key, public_key = signed_models
    updater = _updater(tmp_path, folder, public_key)
    assert updater.handle_announcement(_announcement(folder, 2))[0]
    cmd = rollback_announcement(folder / "model-v1.onnx", private_key, rollback_from="v2",
                                url=(folder / "model-v1.onnx").as_uri(),
                                signature_url=(folder / "model-v1.onnx.sig").as_uri())
    cmd = decode_command(encode_command(cmd))
    ok, reason = updater.handle_announcement(cmd)
    assert ok, reason
    assert updater.current_scorer().version == "v1"


def test_a_rollback_with_a_forged_or_replayed_signature_is_refused(tmp_path, signed_models):
    from model_export.publish import rollback_announcement

    folder, private_key, public_key = signed_models
    updater = _updater(tmp_path, folder, public_key)
    assert updater.handle_announcement(_announcement(folder, 2))[0]
    good = rollback_announcement(folder / "model-v1.onnx", private_key, rollback_from="v2",
                                 url=(folder / "model-v1.onnx").as_uri(),
                                 signature_url=(folder / "model-v1.onnx.sig").as_uri())
    forged = dataclasses.replace(good, rollback_signature="A" * 88)
    assert not updater.handle_announcement(forged)[0]
    other_origin = dataclasses.replace(good, rollback_from="v9")      # signature was for v2 -> v1
    assert not updater.handle_announcement(other_origin)[0]
    assert updater.current_scorer().version == "v2"


def test_gridsight_model_rollback_announces_a_signed_step_back_over_the_shipped_broker(
        shipped_broker, signed_models, tmp_path):
    import subprocess
    import sys

    from gridsight import wire
    from security_support import MqttSession, gateway_password

    fleet, _, port = shipped_broker
    folder, private_key, public_key = signed_models
    fleet.add_collector("publisher")        # its own account: the broker binds client ids to accounts
    _, broker, _ = shipped_broker
    broker.stop()
    broker.start()
    store = tmp_path / "store"
    model = folder / "model-v1.onnx"
    gridsight = [sys.executable, "-m", "gridsight", "model"]
    published = subprocess.run([*gridsight, "publish", str(model), "--store-dir", str(store)], capture_output=True,
                               text=True, timeout=120)
    assert published.returncode == 0, published.stderr
    gateway = MqttSession(port, fleet, "gw-a", gateway_password(fleet, "gw-a"), fleet.gateway_dir("gw-a"), "gw-a")
    try:
        gateway.subscribe(wire.fleet_command_topic("model"))
        result = subprocess.run(
            [*gridsight, "rollback", str(model), "--private-key", str(private_key), "--from", "v2",
             "--store-dir", str(store), "--mqtt-url", f"mqtts://127.0.0.1:{port}", "--mqtt-username", "publisher",
             "--mqtt-password-file", str(fleet.broker_dir / "publisher.password"),
             "--ca-file", str(fleet.ca_dir / "ca.crt"), "--cert-file", str(fleet.broker_dir / "publisher/client.crt"),
             "--key-file", str(fleet.broker_dir / "publisher/client.key")], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        topic, payload = gateway.messages.get(timeout=20)
    finally:
        gateway.close()
    updater = ModelUpdater(tmp_path / "models", public_key, gateway_id="gw-a", source_dir=folder)
    assert updater.handle_announcement(_announcement(folder, 2))[0]
    cmd = decode_command(payload)
    assert (cmd.version, cmd.rollback_from) == ("v1", "v2")
    updater.fetcher.source_dir = store            # the published copy is what the announcement names
    ok, reason = updater.handle_announcement(cmd)
    assert ok, reason
    assert updater.current_scorer().version == "v1"
