"""Item 3: a gateway nobody registered is refused by default: its messages are dead-lettered as
``unknown_gateway`` and it is not added to the registry."""

from __future__ import annotations

import pytest

from collector_kit import message, summary
from collector.settings import CollectorSettings
from security_support import MqttSession, gateway_password, sql, start_collector, wait_until


@pytest.mark.slow
def test_the_collector_refuses_gateways_nobody_registered_by_default(shipped_broker, database_url, tmp_path):
    fleet, _, port = shipped_broker
    fleet.create_gateway("gx-hijack", "mqtts://127.0.0.1:8883")      # a broker account, never registered
    _, broker, _ = shipped_broker
    broker.stop()
    broker.start()                                                  # the broker re-reads passwd and acl
    collector = start_collector(fleet, port, database_url, tmp_path / "collector")
    try:
        session = MqttSession(port, fleet, "gx-hijack", gateway_password(fleet, "gx-hijack"),
                              fleet.gateway_dir("gx-hijack"), "gx-hijack")
        session.publish(*message(summary("gx-hijack", 1, meters=1)))
        session.close()
        wait_until(lambda: sql(database_url, "SELECT count(*) FROM dead_letters")[0][0] or
                   sql(database_url, "SELECT count(*) FROM ingest_log")[0][0], 60, "the message to be handled")
        assert sql(database_url, "SELECT reason FROM dead_letters") == [("unknown_gateway",)]
        assert sql(database_url, "SELECT count(*) FROM gateways WHERE id = 'gx-hijack'") == [(0,)]
        assert sql(database_url, "SELECT count(*) FROM meters") == [(0,)]
    finally:
        collector.stop()


def test_refuse_is_the_default_policy_and_register_stays_available():
    assert CollectorSettings().unknown_gateways == "refuse"
    assert CollectorSettings(unknown_gateways="register").unknown_gateways == "register"


def test_the_simulator_and_the_demo_register_their_gateways_explicitly(tmp_path):
    from firmware_sim.fleet_run import FleetRun
    from firmware_sim.scenario import load_scenario

    run = FleetRun(load_scenario(None), tmp_path / "fleet", database_url="postgresql://unused/db")
    run.broker_port = 1883                  # set when the run starts its broker
    assert run._collector_env()["GRIDSIGHT_COLLECTOR_UNKNOWN_GATEWAYS"] == "register"
