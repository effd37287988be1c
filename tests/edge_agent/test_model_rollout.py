"""A signed model announced on the broker replaces the agent's model; a tampered one does not."""

from __future__ import annotations

import hashlib
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.clock import ManualClock
from edge_agent.config import AgentSettings, ModelSettings, MqttSettings
from edge_agent.readers.replay import ReplayReader
from edge_agent.runtime import Agent
from gridsight.wire import ModelAnnouncement, encode_command, fleet_command_topic
from meter_data import T0, Subscriber, recording, wait_until, write_csv


@pytest.fixture(scope="module")
def signed_update(tmp_path_factory, model_path):
    """The fixture model as the gateway's initial model, and a newer model signed by the fleet key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from model_export.pipeline import train_and_export

    d = tmp_path_factory.mktemp("update")
    key = Ed25519PrivateKey.generate()
    (d / "fleet.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    train_and_export(recording(3, T0 - 7 * 86_400, 7 * 86_400, 900), d / "new.onnx", n_estimators=20,
                     version="test-2")
    data = (d / "new.onnx").read_bytes()
    (d / "new.onnx.sig").write_bytes(key.sign(data))
    return d, hashlib.sha256(data).hexdigest()


def publish_retained(port: int, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"operator-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def announce(d, sha256: str, **kw) -> bytes:
    return encode_command(ModelAnnouncement(kw.get("name", "gridsight-iforest"), kw.get("version", "test-2"),
                                            f"file://{d / 'new.onnx'}", sha256, f"file://{d / 'new.onnx.sig'}",
                                            T0, None))


def agent_with_ota(tmp_path, mosquitto, model_path, key_path) -> tuple[Agent, ManualClock]:
    clock = ManualClock(T0)
    settings = AgentSettings(gateway_id="gw-ota", data_dir=tmp_path / "data",
                             mqtt=MqttSettings(url=mosquitto.url, reconnect_min_s=0.1, reconnect_max_s=0.3),
                             model=ModelSettings(path=str(model_path), public_key=str(key_path),
                                                 source_dir=str(key_path.parent)))
    agent = Agent(settings, readers=[ReplayReader(write_csv(tmp_path / "r.csv", recording(2, T0, 7200, 60)))],
                  clock=clock)
    agent.transport.start()
    return agent, clock


def test_a_signed_announced_model_is_verified_and_scores_the_next_intervals(tmp_path, mosquitto, subscriber,
                                                                            model_path, signed_update):
    d, sha256 = signed_update
    agent, clock = agent_with_ota(tmp_path, mosquitto, model_path, d / "fleet.pub")
    try:
        assert agent.model_version == "test-1"
        assert wait_until(lambda: agent.transport.connected, 10)
        publish_retained(mosquitto.port, fleet_command_topic("model"), announce(d, sha256))
        assert wait_until(lambda: agent.model_version == "test-2", 20), agent.last_model_update
        while clock.now() < T0 + 3600:
            agent.tick()
            clock.advance(60)
    finally:
        agent.shutdown()
    assert subscriber.wait_for(lambda: len(subscriber.unique("summary")) >= 3)
    assert {s.model_version for s in subscriber.unique("summary")} == {"test-2"}
    assert agent.counters.model_updates == 1
    # a restarted agent comes back with the updated model, re-verified from disk
    again, _ = agent_with_ota(tmp_path, mosquitto, model_path, d / "fleet.pub")
    again.shutdown()
    assert again.model_version == "test-2"


def test_an_announcement_with_a_wrong_checksum_leaves_the_running_model_in_place(tmp_path, mosquitto, model_path,
                                                                                 signed_update):
    d, sha256 = signed_update
    agent, clock = agent_with_ota(tmp_path, mosquitto, model_path, d / "fleet.pub")
    try:
        assert wait_until(lambda: agent.transport.connected, 10)
        publish_retained(mosquitto.port, fleet_command_topic("model"), announce(d, "0" * 64))
        publish_retained(mosquitto.port, "gridsight/v1/gw-ota/cmd/model", b"{not json")
        assert wait_until(lambda: agent.counters.model_update_failures == 1 and agent.counters.bad_commands == 1, 20)
        agent.tick()
    finally:
        agent.shutdown()
    assert agent.model_version == "test-1"
    assert "checksum mismatch" in agent.last_model_update
