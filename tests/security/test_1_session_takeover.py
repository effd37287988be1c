"""Item 1: a gateway's login cannot take over the collector's session or kick another gateway.

Client ids are bound to broker accounts (``use_username_as_clientid`` in the shipped config), so a
client id a gateway asks for is replaced by its own account name."""

from __future__ import annotations

import queue
import pytest

from collector_kit import message, summary
from collector.settings import CollectorSettings
from security_support import MqttSession, gateway_password, register_gateways, sql, start_collector, wait_until


@pytest.mark.slow
def test_a_gateway_using_the_collectors_client_id_gets_no_session_and_no_message_is_lost(
        shipped_broker, database_url, tmp_path):
    fleet, _, port = shipped_broker
    collector = start_collector(fleet, port, database_url, tmp_path / "collector")
    register_gateways(database_url, "gw-a", "gw-b")
    try:
        # the id the collector connects with, as an attacker can predict it from the host name
        settings = CollectorSettings(replica_id="r1", mqtt_username="collector-1")
        attacker = MqttSession(port, fleet, "gw-a", gateway_password(fleet, "gw-a"), fleet.gateway_dir("gw-a"),
                               settings.client_id, resume=True, session_expiry_s=3600)
        try:
            assert attacker.connack == 0
            assert attacker.session_present is False, "a gateway resumed the collector's persistent session"
            genuine = MqttSession(port, fleet, "gw-b", gateway_password(fleet, "gw-b"), fleet.gateway_dir("gw-b"),
                                  "gw-b")
            topic, payload = message(summary("gw-b", 1, meters=1))
            genuine.publish(topic, payload)      # PUBACK: the agent deletes it from its outbox
            genuine.close()
            wait_until(lambda: sql(database_url, "SELECT count(*) FROM ingest_log WHERE gateway_id = 'gw-b'")[0][0],
                       60, "gw-b's message to be stored")
            try:
                stolen = attacker.messages.get(timeout=1)
            except queue.Empty:
                stolen = None
            assert stolen is None, f"the attacker received the collector's message {stolen}"
        finally:
            attacker.close()
    finally:
        collector.stop()


def test_the_collectors_client_id_is_its_broker_account():
    settings = CollectorSettings(replica_id="r7", mqtt_username="collector-7")
    assert settings.client_id == "collector-7"


def test_a_gateway_using_another_gateways_client_id_does_not_kick_it(shipped_broker):
    fleet, _, port = shipped_broker
    victim = MqttSession(port, fleet, "gw-b", gateway_password(fleet, "gw-b"), fleet.gateway_dir("gw-b"), "gw-b")
    watcher = MqttSession(port, fleet, "collector-1",
                          (fleet.broker_dir / "collector-1.password").read_text().strip(),
                          fleet.broker_dir / "collector-1", "collector-1")
    try:
        watcher.subscribe("gridsight/v1/+/summary")
        attacker = MqttSession(port, fleet, "gw-a", gateway_password(fleet, "gw-a"), fleet.gateway_dir("gw-a"),
                               "gw-b")
        attacker.close()
        topic, payload = message(summary("gw-b", 2, meters=1))
        victim.publish(topic, payload)
        assert watcher.messages.get(timeout=15)[0] == topic
        assert not victim.disconnected.is_set(), "gw-a's login with client id gw-b disconnected gw-b"
    finally:
        victim.close()
        watcher.close()


def test_provisioning_makes_one_broker_account_per_collector_replica(tmp_path):
    import subprocess
    import sys

    from provisioning.ca import FleetCA
    from provisioning.fleet import Fleet

    fleet = Fleet(tmp_path / "fleet")
    FleetCA.init(fleet.ca_dir)
    for replica in ("1", "2"):
        result = subprocess.run([sys.executable, "-m", "gridsight", "provision", "collector-account", "--fleet",
                                 str(fleet.root), "--replica", replica], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"MQTT_USERNAME=collector-{replica}" in result.stdout
    acl = fleet.acl_file.read_text()
    assert "user collector-1\n" in acl and "user collector-2\n" in acl
    assert all((fleet.broker_dir / f"collector-{r}" / "client.crt").is_file() for r in ("1", "2"))
