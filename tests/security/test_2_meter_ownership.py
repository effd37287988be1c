"""Item 2: a gateway cannot write data for another gateway's meter, nor re-home it by sending.

A meter belongs to the gateway the registry binds it to; a message about another gateway's meter is
dead-lettered as ``meter_not_owned`` (payload kept, a log line, a counter) and ``meters.gateway_id``
only changes through the registry (technician or admin)."""

from __future__ import annotations

import dataclasses
import pytest

from collector_kit import NOW, flag, message, summary
from security_support import MqttSession, create_account, gateway_password, sql, start_collector, wait_until

REGISTRY = {"format": "gridsight-registry/1",
            "gateways": [{"id": "gw-a"}, {"id": "gw-b"}],
            "meters": [{"id": "gw-a-m0", "gateway": "gw-a"}, {"id": "gw-b-m0", "gateway": "gw-b"}]}


def _send(fleet, port, gateway_id: str, *msgs) -> None:
    session = MqttSession(port, fleet, gateway_id, gateway_password(fleet, gateway_id),
                          fleet.gateway_dir(gateway_id), gateway_id)
    try:
        for m in msgs:
            session.publish(*message(m))
    finally:
        session.close()


@pytest.mark.slow
def test_a_gateway_cannot_write_or_rehome_another_gateways_meter(shipped_broker, database_url, tmp_path):
    fleet, _, port = shipped_broker
    collector = start_collector(fleet, port, database_url, tmp_path / "collector")
    try:
        for user, role in (("root", "admin"), ("tech", "technician")):
            create_account(database_url, user, role)
        admin = collector.login("root")
        status, body, _ = collector.api("PUT", "/registry", headers=admin, body=REGISTRY)
        assert status == 200, body
        # gw-a reports its own meter and gw-b's meter (77.7 kWh) in one summary, and a flag for gw-b's meter
        own = summary("gw-a", 1, meters=1)
        forged_row = dataclasses.replace(own.meters[0], meter_id="gw-b-m0", kwh=77.7)
        forged = dataclasses.replace(own, seq=2, meters=(own.meters[0], forged_row))
        forged_flag = dataclasses.replace(flag("gw-a", 3), meter_id="gw-b-m0")
        honest = summary("gw-a", 4, meters=1, interval_start=NOW - 1800)
        _send(fleet, port, "gw-a", own, forged, forged_flag, honest)
        wait_until(lambda: sql(database_url, "SELECT count(*) FROM ingest_log WHERE gateway_id = 'gw-a' AND seq = 4")
                   [0][0], 60, "gw-a's honest summary")
        wait_until(lambda: len(sql(database_url, "SELECT 1 FROM ingest_log WHERE gateway_id = 'gw-a'")) +
                   len(sql(database_url, "SELECT 1 FROM dead_letters WHERE gateway_id = 'gw-a'")) >= 4,
                   60, "every gw-a message stored or dead-lettered")

        assert sql(database_url, "SELECT gateway_id FROM meters WHERE id = 'gw-b-m0'") == [("gw-b",)]
        assert sql(database_url, "SELECT count(*) FROM interval_summaries WHERE meter_id = 'gw-b-m0'") == [(0,)]
        assert sql(database_url, "SELECT count(*) FROM anomaly_flags WHERE meter_id = 'gw-b-m0'") == [(0,)]
        letters = sql(database_url, "SELECT reason, payload FROM dead_letters WHERE gateway_id = 'gw-a' ORDER BY id")
        assert [r for r, _ in letters] == ["meter_not_owned", "meter_not_owned"]
        assert all(b"gw-b-m0" in bytes(p) for _, p in letters), "the dead letter keeps the payload"
        status, metrics, _ = collector.api("GET", "/metrics")
        assert 'gridsight_collector_dead_letters_total{reason="meter_not_owned"} 2' in metrics
        assert "meter_not_owned" in collector.log() and "gw-b-m0" in collector.log()
        status, series, _ = collector.api("GET", "/consumption", headers=admin,
                                          query={"meter_id": "gw-b-m0", "start": NOW - 86400, "end": NOW + 3600})
        assert status in (200, 404)
        assert "77.7" not in str(series)

        # re-homing is the registry's job, by a technician: afterwards gw-a may report that meter
        moved = {**REGISTRY, "meters": [{"id": "gw-a-m0", "gateway": "gw-a"}, {"id": "gw-b-m0", "gateway": "gw-a"}]}
        status, body, _ = collector.api("PUT", "/registry", headers=collector.login("tech"), body=moved)
        assert status == 200, body
        assert sql(database_url, "SELECT gateway_id FROM meters WHERE id = 'gw-b-m0'") == [("gw-a",)]
    finally:
        collector.stop()
