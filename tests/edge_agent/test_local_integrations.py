"""Local integrations on the gateway: Home Assistant MQTT discovery (real Mosquitto) and the metrics page."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.local.home_assistant import HomeAssistantDiscovery
from edge_agent.local.metrics import MetricsEndpoint
from edge_agent.scoring import FlagDraft, ScoredInterval
from gridsight.wire import MeterSummary, Reading

NOW = 1_767_225_600.0


class Retained:
    """Everything published under a topic filter, last payload per topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.seen: dict[str, str] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ha-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(30), "test subscriber did not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.seen[msg.topic] = msg.payload.decode()

    def wait(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self.seen):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _three_phase(meter_id: str = "shop-1") -> Reading:
    return Reading(meter_id, NOW, 1234.5, -850.0, 230.1, 2.5, export_kwh=99.5, voltage_l1_v=230.1,
                   voltage_l2_v=1.2, voltage_l3_v=229.5, power_l2_w=0.0)


def _scored(anomalous: bool) -> ScoredInterval:
    meters = (MeterSummary("shop-1", 0.2, 15, -800.0, 100.0, -0.31 if anomalous else 0.1, anomalous),)
    flags = (FlagDraft("shop-1", NOW, 900, -0.31, -0.2, 0.2, {}, "voltage 0.01 per unit of nominal (sag)"),) \
        if anomalous else ()
    return ScoredInterval(NOW, 900, "m-1", meters, flags)


def test_home_assistant_gets_a_device_per_meter_its_sensors_and_an_anomaly_with_its_reason(mosquitto):
    seen = Retained(mosquitto.port, "#")
    ha = HomeAssistantDiscovery("gw-7", mosquitto.url, state_s=0.0)
    try:
        ha.observe([_three_phase(), Reading("shop-1-gas", NOW, None, channel="gas", volume_m3=981.4)],
                   [_scored(True)])
        assert seen.wait(lambda s: "gridsight/local/gw-7/shop-1/anomaly_attributes" in s
                         and "homeassistant/sensor/gw-7/shop-1-gas_volume_m3/config" in s
                         and "gridsight/local/gw-7/shop-1/state" in s)
    finally:
        ha.close()
    try:
        assert seen.wait(lambda s: s.get("gridsight/local/gw-7/availability") == "offline")  # its last word
    finally:
        seen.close()
    export = json.loads(seen.seen["homeassistant/sensor/gw-7/shop-1_export_kwh/config"])
    assert (export["device_class"], export["state_class"], export["unit_of_measurement"]) == \
        ("energy", "total_increasing", "kWh")
    assert export["device"]["identifiers"] == ["gridsight_shop-1"]
    assert "homeassistant/sensor/gw-7/shop-1_voltage_l2_v/config" in seen.seen
    gas = json.loads(seen.seen["homeassistant/sensor/gw-7/shop-1-gas_volume_m3/config"])
    assert gas["device_class"] == "gas"
    anomaly = json.loads(seen.seen["homeassistant/binary_sensor/gw-7/shop-1_anomaly/config"])
    assert anomaly["device_class"] == "problem"
    assert seen.seen["gridsight/local/gw-7/shop-1/anomaly"] == "ON"
    assert json.loads(seen.seen["gridsight/local/gw-7/shop-1/anomaly_attributes"])["reason"].endswith("(sag)")
    assert json.loads(seen.seen["gridsight/local/gw-7/shop-1/state"])["voltage_l2_v"] == 1.2


def test_metrics_page_serves_agent_counters_and_per_phase_values_on_localhost_only():
    endpoint = MetricsEndpoint("gw-7", lambda: {"counters": {"readings": 42, "reader_errors": 1}}, port=0)
    try:
        endpoint.observe([_three_phase()], [_scored(False)])
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/", timeout=5)
    finally:
        endpoint.close()
    assert 'gridsight_agent_readings{gateway="gw-7"} 42.0' in body
    assert 'gridsight_meter_phase_voltage_v{gateway="gw-7",meter="shop-1",phase="L2"} 1.2' in body
    assert 'gridsight_meter_export_kwh{gateway="gw-7",meter="shop-1"} 99.5' in body
    assert 'gridsight_meter_anomalous{gateway="gw-7",meter="shop-1"} 0.0' in body
    assert endpoint.server.server_address[0] == "127.0.0.1"


def test_local_integrations_are_off_by_default_and_a_bad_setting_names_its_key():
    from edge_agent.config import AgentSettings, LocalSettings
    from edge_agent.local import build_local_integrations
    from gridsight.settings import ConfigError

    assert build_local_integrations(AgentSettings(gateway_id="gw-1"), dict) == []
    with pytest.raises(ConfigError, match="local.metrics_port"):
        LocalSettings(metrics_port=70000)


def test_home_assistant_broker_started_after_the_agent_still_gets_every_meter(tmp_path):
    from gridsight.local_services import LocalMosquitto, free_port

    port = free_port()
    ha = HomeAssistantDiscovery("gw-8", f"mqtt://127.0.0.1:{port}", state_s=0.0)
    broker = None
    try:
        ha.observe([_three_phase("late-1")], [])         # the broker is not up yet
        broker = LocalMosquitto(tmp_path / "mosquitto", port=port).start()
        seen = Retained(port, "homeassistant/#")
        try:
            assert seen.wait(lambda s: "homeassistant/sensor/gw-8/late-1_energy_kwh/config" in s, timeout=60)
        finally:
            seen.close()
    finally:
        ha.close()
        if broker is not None:
            broker.close()
