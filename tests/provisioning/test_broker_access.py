"""The shipped Mosquitto configuration and the provisioned password/ACL files, tested on a real
broker: a gateway writes and reads only its own topics; anonymous and unknown clients are refused."""

from __future__ import annotations

import pytest

from gridsight import wire
from provisioning import broker as broker_files
from provisioning.fleet import Fleet
from provisioning.ca import FleetCA

from broker_support import connect, start_broker


@pytest.fixture
def fleet_broker(tmp_path):
    fleet = Fleet(tmp_path / "fleet")
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1", "localhost"], fleet.broker_dir)
    collector_password = fleet.add_collector("collector")
    for gw in ("gw-a", "gw-b"):
        fleet.create_gateway(gw, "mqtts://127.0.0.1:8883")
    mosquitto, port = start_broker(fleet, tmp_path / "mosquitto")
    sessions = []

    def login(user: str, password: str | None = None, cert: bool = True):
        if password is None:
            password = collector_password if user == "collector" else \
                (fleet.gateway_dir(user) / "mqtt.password").read_text().strip()
        cert_dir = (fleet.broker_dir / user if user == "collector" else fleet.gateway_dir(user)) if cert else None
        s = connect(port, fleet, user, password, cert_dir)
        sessions.append(s)
        return s

    yield fleet, mosquitto, port, login
    for s in sessions:
        s.close()
    mosquitto.close()


def _summary_topic(gw: str) -> str:
    return wire.topic_for(gw, "summary")


def test_a_gateway_publishes_its_own_topics_and_the_collector_receives_them(fleet_broker):
    fleet, _, _, login = fleet_broker
    collector, gw_a = login("collector"), login("gw-a")
    assert collector.connected == 0 and gw_a.connected == 0
    collector.subscribe("gridsight/v1/#")
    gw_a.publish(_summary_topic("gw-a"), b"mine")
    assert collector.wait_for(_summary_topic("gw-a")) == [(_summary_topic("gw-a"), b"mine")]


def test_gateway_a_cannot_publish_as_gateway_b(fleet_broker):
    fleet, _, _, login = fleet_broker
    collector = login("collector")
    collector.subscribe("gridsight/v1/#")
    forged = [wire.topic_for("gw-b", kind) for kind in wire.UPWARD_KINDS]
    forged += [wire.command_topic("gw-b", "model"), wire.fleet_command_topic("model"), "gridsight/v2/gw-a/summary"]
    outcomes = {topic: login("gw-a").attempt(topic, b"forged") for topic in forged}
    assert set(outcomes.values()) == {"refused"}, outcomes
    login("gw-a").publish(_summary_topic("gw-a"), b"sentinel")      # after every forged attempt was answered
    received = collector.wait_for(_summary_topic("gw-a"))
    assert received == [(_summary_topic("gw-a"), b"sentinel")]


def test_gateway_a_cannot_read_gateway_b_commands(fleet_broker):
    fleet, _, _, login = fleet_broker
    collector, gw_a = login("collector"), login("gw-a")
    gw_a.subscribe("gridsight/v1/gw-b/cmd/#")
    gw_a.subscribe("gridsight/v1/#")
    collector.publish(wire.command_topic("gw-b", "model"), b"for b")
    collector.publish(wire.command_topic("gw-a", "model"), b"for a")
    received = gw_a.wait_for(wire.command_topic("gw-a", "model"))
    assert [t for t, _ in received] == [wire.command_topic("gw-a", "model")]


def test_gateway_a_cannot_read_other_gateways_data(fleet_broker):
    fleet, _, _, login = fleet_broker
    gw_a, gw_b, collector = login("gw-a"), login("gw-b"), login("collector")
    gw_a.subscribe("gridsight/v1/#")
    gw_b.publish(_summary_topic("gw-b"), b"b's consumption")
    collector.publish(wire.command_topic("gw-a", "ping"), b"sentinel")
    received = gw_a.wait_for(wire.command_topic("gw-a", "ping"))
    assert [t for t, _ in received] == [wire.command_topic("gw-a", "ping")]


def test_fleet_commands_reach_every_gateway(fleet_broker):
    fleet, _, _, login = fleet_broker
    gw_a, gw_b, collector = login("gw-a"), login("gw-b"), login("collector")
    for gw in (gw_a, gw_b):
        gw.subscribe("gridsight/v1/fleet/cmd/#")
    collector.publish(wire.fleet_command_topic("model"), b"new model")
    for gw in (gw_a, gw_b):
        assert gw.wait_for(wire.fleet_command_topic("model")) == [(wire.fleet_command_topic("model"), b"new model")]


def test_anonymous_clients_are_refused(fleet_broker):
    fleet, _, port, _ = fleet_broker
    from broker_support import connect as raw_connect
    anonymous = raw_connect(port, fleet, None, None, fleet.gateway_dir("gw-a"))
    try:
        assert anonymous.connected not in (0,), "an anonymous client was accepted"
    finally:
        anonymous.close()


def test_a_wrong_password_is_refused(fleet_broker):
    _, _, _, login = fleet_broker
    assert login("gw-a", password="guessed-password").connected not in (0,)


def test_another_gateways_password_does_not_open_this_account(fleet_broker):
    fleet, _, _, login = fleet_broker
    b_password = (fleet.gateway_dir("gw-b") / "mqtt.password").read_text().strip()
    assert login("gw-a", password=b_password).connected not in (0,)


def test_a_client_without_a_fleet_certificate_is_refused(fleet_broker):
    _, _, _, login = fleet_broker
    assert login("gw-a", cert=False).connected is None


def test_a_certificate_from_another_ca_is_refused(fleet_broker, tmp_path):
    fleet, _, port, _ = fleet_broker
    rogue = FleetCA.init(tmp_path / "rogue-ca")
    rogue.issue_client("gw-a", tmp_path / "rogue-gw")
    password = (fleet.gateway_dir("gw-a") / "mqtt.password").read_text().strip()
    from broker_support import connect as raw_connect
    session = raw_connect(port, fleet, "gw-a", password, tmp_path / "rogue-gw")
    try:
        assert session.connected is None
    finally:
        session.close()


def test_a_revoked_gateway_is_refused_after_the_broker_reloads(fleet_broker):
    fleet, mosquitto, _, login = fleet_broker
    fleet.revoke_gateway("gw-b")
    mosquitto.stop()
    mosquitto.start()
    assert login("gw-b").connected not in (0,)
    assert login("gw-a").connected == 0


def test_hashes_written_without_mosquitto_passwd_are_accepted_by_the_broker(tmp_path):
    fleet = Fleet(tmp_path / "fleet")
    FleetCA.init(fleet.ca_dir)
    fleet.ca().issue_server(["127.0.0.1"], fleet.broker_dir)
    fleet.create_gateway("gw-c", "mqtts://127.0.0.1:8883")
    broker_files.set_password(fleet.passwd_file, "gw-c", "portable-password-123", tool=None)
    assert broker_files.read_users(fleet.passwd_file)["gw-c"].startswith("$7$101$")
    mosquitto, port = start_broker(fleet, tmp_path / "mosquitto")
    try:
        ok = connect(port, fleet, "gw-c", "portable-password-123", fleet.gateway_dir("gw-c"))
        bad = connect(port, fleet, "gw-c", "portable-password-12", fleet.gateway_dir("gw-c"))
        assert ok.connected == 0 and bad.connected not in (0,)
        ok.close()
        bad.close()
    finally:
        mosquitto.close()


def test_the_acl_grants_each_gateway_only_its_own_prefix(tmp_path):
    text = broker_files.render_acl(["gw-a", "gw-b"], ["collector"])
    block_a = text.split("user gw-a\n")[1].split("\n\n")[0]
    assert "gw-b" not in block_a
    assert all(line.split()[-1].startswith(("gridsight/v1/gw-a/", "gridsight/v1/fleet/cmd/"))
               for line in block_a.splitlines())
    assert "topic read gridsight/v1/fleet/cmd/#" in block_a
    assert not any(line.startswith("topic write gridsight/v1/fleet") for line in block_a.splitlines())




def test_a_payload_claiming_another_gateway_is_refused_by_the_collectors_decoder(fleet_broker):
    fleet, _, _, login = fleet_broker
    collector, gw_a = login("collector"), login("gw-a")
    collector.subscribe("gridsight/v1/#")
    lie = wire.encode(wire.GatewayStatus(gateway_id="gw-b", seq=1, model_version=None, sent_at=1.8e9, online=True))
    gw_a.publish(wire.topic_for("gw-a", "status"), lie)       # its own topic: the broker lets it through
    [(topic, payload)] = collector.wait_for(wire.topic_for("gw-a", "status"))
    with pytest.raises(wire.WireError) as refused:
        wire.decode(topic, payload)
    assert refused.value.field == "gateway_id"


def test_a_disconnected_collector_gets_every_queued_qos1_message_beyond_mosquittos_default_1000(fleet_broker):
    fleet, _, port, login = fleet_broker
    password = (fleet.broker_dir / "collector.password").read_text().strip()
    from broker_support import connect as raw_connect

    def collector():
        return raw_connect(port, fleet, "collector", password, fleet.broker_dir / "collector",
                           client_id="collector-replica-1", session_expiry_s=3600)

    first = collector()
    first.subscribe("gridsight/v1/+/raw")
    first.close()                                   # persistent session: the broker queues for it
    gw_a = login("gw-a")
    topic = wire.topic_for("gw-a", "raw")
    for i in range(2500):
        gw_a.client.publish(topic, str(i).encode(), qos=1)
    gw_a.publish(topic, b"last")
    back = collector()
    assert back.connected == 0
    payloads: list[bytes] = []
    while not payloads or payloads[-1] != b"last":
        payloads += [p for _, p in back.wait_for(topic, timeout=30)]
    back.close()
    assert sorted(int(p) for p in payloads if p != b"last") == list(range(2500))
