"""The batch writer against a real PostgreSQL: exactly-once, dead letters, partitions, rollups."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from collector.db.writer import BatchWriter, Received
from gridsight import wire

from collector_kit import NOW, flag, message, raw_chunk, scalar, sql, summary


def received(msg: wire.Message) -> Received:
    topic, payload = message(msg)
    return Received(topic, payload, time.time())


def write(url: str, items: list[Received], **kwargs):
    async def go():
        writer = BatchWriter(url, **{"unknown_gateways": "register", **kwargs})
        try:
            return await writer.write(items)
        finally:
            await writer.close()
    return asyncio.run(go())


def test_redelivered_messages_store_nothing_twice(collector_db):
    batch = [received(raw_chunk("gw-1", 1)), received(summary("gw-1", 2)), received(flag("gw-1", 3))]
    first = write(collector_db, batch + [batch[0]])
    second = write(collector_db, batch)

    assert first.duplicates == 1 and sum(first.stored.values()) == 3
    assert second.duplicates == 3 and sum(second.stored.values()) == 0
    assert scalar(collector_db, "SELECT count(*) FROM readings") == 40
    assert scalar(collector_db, "SELECT count(*) FROM interval_summaries") == 4
    assert scalar(collector_db, "SELECT count(*) FROM anomaly_flags") == 1
    assert scalar(collector_db, "SELECT count(*) FROM ingest_log") == 3
    assert scalar(collector_db, "SELECT sum(kwh) FROM readings_hourly") == pytest.approx(1.0)


@pytest.mark.parametrize("topic, payload, reason, field", [
    ("gridsight/v1/gw-1/raw", b"{not json", "malformed", "payload"),
    ("gridsight/v1/gw-1/summary", b'{"v": 9, "kind": "summary"}', "bad_version", "v"),
    ("gridsight/v1/gw-2/summary", None, "topic_mismatch", "gateway_id"),
    ("gridsight/v1/gw-1/raw", b"x" * (wire.MAX_PAYLOAD_BYTES + 10), "oversized", "payload"),
    ("gridsight/v2/gw-1/raw", b"{}", "bad_topic", "topic"),
])
def test_bad_messages_are_dead_lettered_with_reason_field_and_raw_bytes(collector_db, topic, payload, reason, field):
    payload = payload if payload is not None else wire.encode(summary("gw-1", 5))
    result = write(collector_db, [Received(topic, payload, time.time()), received(summary("gw-1", 1))])

    assert result.dead_letters == {reason: 1}
    assert result.stored == {"summary": 1}
    rows = sql(collector_db, "SELECT topic, reason, field, payload, payload_bytes FROM dead_letters")
    assert len(rows) == 1
    got_topic, got_reason, got_field, got_payload, size = rows[0]
    assert (got_topic, got_reason, got_field, size) == (topic, reason, field, len(payload))
    assert bytes(got_payload) == payload[:wire.MAX_PAYLOAD_BYTES + 1]


def test_unknown_gateway_is_refused_when_the_policy_says_so_and_registered_otherwise(collector_db):
    refused = write(collector_db, [received(summary("gw-new", 1))], unknown_gateways="refuse")
    assert refused.dead_letters == {"unknown_gateway": 1}
    assert scalar(collector_db, "SELECT count(*) FROM gateways") == 0

    registered = write(collector_db, [received(summary("gw-new", 1))], unknown_gateways="register")
    assert registered.stored == {"summary": 1}
    assert sql(collector_db, "SELECT id, auto_registered FROM gateways") == [("gw-new", True)]
    assert scalar(collector_db, "SELECT count(*) FROM meters WHERE gateway_id = 'gw-new'") == 4


def test_disabled_gateway_messages_are_dead_lettered(collector_db):
    sql(collector_db, "INSERT INTO gateways (id, status) VALUES ('gw-off', 'disabled')")
    result = write(collector_db, [received(summary("gw-off", 1))])
    assert result.dead_letters == {"disabled_gateway": 1}
    assert scalar(collector_db, "SELECT count(*) FROM interval_summaries") == 0


def test_a_message_postgres_refuses_is_dead_lettered_alone(collector_db):
    bad = flag("gw-1", 7)
    bad = wire.AnomalyFlag(**{**{k: getattr(bad, k) for k in bad._RULES}, "reason": "nul \x00 byte"})
    result = write(collector_db, [received(summary("gw-1", 1)), received(bad), received(raw_chunk("gw-1", 2))])

    assert result.dead_letters == {"rejected_by_database": 1}
    assert result.stored == {"summary": 1, "raw": 1}
    assert scalar(collector_db, "SELECT count(*) FROM anomaly_flags") == 0
    assert "gw-1/flag" in scalar(collector_db, "SELECT topic FROM dead_letters")
    assert scalar(collector_db, "SELECT count(*) FROM ingest_log") == 2


def test_late_and_future_data_get_their_month_partitions_on_demand(collector_db):
    old = NOW - 400 * 86400
    write(collector_db, [received(raw_chunk("gw-1", 1, start=old)), received(summary("gw-1", 2, interval_start=old))])

    partitions = {r[0] for r in sql(collector_db, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON "
                                                  "c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass")}
    month = time.strftime("%Y_%m", time.gmtime(old))
    assert f"readings_p{month}" in partitions
    assert scalar(collector_db, f"SELECT count(*) FROM readings_p{month}") == 40


def test_rollups_add_up_summaries_exactly_per_hour_and_day(collector_db):
    start = NOW - NOW % 86400  # midnight UTC
    batch = [received(summary("gw-1", i + 1, interval_start=start + i * 900, kwh=0.1 * (i + 1), anomalous_meter=0))
             for i in range(8)]
    write(collector_db, batch[:5])
    write(collector_db, batch[3:])  # overlaps: 2 redelivered

    hourly = sql(collector_db, "SELECT bucket, kwh, intervals, anomalous_intervals FROM readings_hourly "
                               "WHERE meter_id = 'gw-1-m0' ORDER BY bucket")
    assert [(round(k, 6), n, a) for _, k, n, a in hourly] == [(1.0, 4, 4), (2.6, 4, 4)]
    daily = sql(collector_db, "SELECT kwh, intervals, readings FROM readings_daily WHERE meter_id = 'gw-1-m1'")
    assert [(round(daily[0][0], 6), daily[0][1], daily[0][2])] == [(3.6, 8, 720)]


def test_status_messages_update_the_gateway_and_older_ones_do_not_overwrite(collector_db):
    newer = wire.GatewayStatus("gw-1", 10, "iforest-1", NOW, True, 100.0, 5, True, 0.01, "0.1.0")
    older = wire.GatewayStatus("gw-1", 9, "iforest-1", NOW - 60, False)
    write(collector_db, [received(newer)])
    write(collector_db, [received(older)])
    row = sql(collector_db, "SELECT online, queue_depth, agent_version, last_seq FROM gateways WHERE id = 'gw-1'")
    assert row == [(True, 5, "0.1.0", 10)]


def test_accepted_messages_wait_in_the_archive_outbox_with_their_exact_bytes(collector_db):
    item = received(raw_chunk("gw-1", 1))
    write(collector_db, [item, Received("gridsight/v1/gw-1/raw", b"junk", time.time())])
    rows = sql(collector_db, "SELECT topic, seq, payload FROM archive_outbox")
    assert rows == [(item.topic, 1, item.payload)]
    assert json.loads(bytes(rows[0][2]))["kind"] == "raw"


def test_a_payload_the_contract_trips_over_is_still_dead_lettered(collector_db):
    import base64
    import hashlib
    import zlib

    columns = {"meter_id": ["m-1"], "ts": [NOW], "energy_kwh": [10**400], "power_w": [None], "voltage_v": [None],
               "current_a": [None], "power_factor": [None]}
    plain = json.dumps(columns).encode()
    body = {"v": 1, "kind": "raw", "gateway_id": "gw-1", "seq": 1, "model_version": None, "sent_at": NOW,
            "chunk": {"codec": "zlib", "count": 1, "sha256": hashlib.sha256(plain).hexdigest(),
                      "data": base64.b64encode(zlib.compress(plain)).decode()}}
    result = write(collector_db, [Received("gridsight/v1/gw-1/raw", json.dumps(body).encode(), time.time()),
                                  received(summary("gw-1", 2))])
    assert result.dead_letters == {"malformed": 1} and result.stored == {"summary": 1}


def test_export_tariffs_phases_and_a_gas_channel_land_in_their_columns_and_tableau_views(collector_db):
    elec = wire.Reading("pv-1", NOW, 173.64, -2601.0, 240.4, 3.0, export_kwh=627.177, import_t1_kwh=47.719,
                        import_t2_kwh=125.921, tariff=1, voltage_l1_v=240.4, voltage_l2_v=1.5, voltage_l3_v=241.2)
    gas = wire.Reading("pv-1-gas", NOW, None, channel="gas", volume_m3=981.443)
    plain = wire.Reading("old-1", NOW, 10.0, 500.0)
    chunk = wire.RawChunk("gw-1", 1, None, NOW, (elec, gas))
    old = wire.RawChunk("gw-1", 2, None, NOW, (plain,))
    meters = (wire.MeterSummary("pv-1", 0.1, 90, -2000.0, 100.0, 0.1, False, 0.65),)
    summ = wire.IntervalSummary("gw-1", 3, None, NOW, NOW - NOW % 900, 900, meters)
    result = write(collector_db, [received(chunk), received(old), received(summ)])

    assert result.stored == {"raw": 2, "summary": 1}
    assert sql(collector_db, "SELECT meter_id, energy_kwh, export_kwh, tariff, voltage_l2_v, channel, volume_m3 "
                             "FROM readings ORDER BY meter_id") == [
        ("old-1", 10.0, None, None, None, None, None),
        ("pv-1", 173.64, 627.177, 1, 1.5, None, None),
        ("pv-1-gas", None, None, None, None, "gas", 981.443)]
    assert sql(collector_db, "SELECT meter_id, lowest_phase_v FROM tableau.phase_voltage") == [("pv-1", 1.5)]
    assert sql(collector_db, "SELECT meter_id, channel, volume_m3 FROM tableau.meter_channels") == \
        [("pv-1-gas", "gas", 981.443)]
    assert sql(collector_db, "SELECT import_kwh, export_kwh, net_kwh FROM tableau.energy_balance") == \
        [(0.1, 0.65, pytest.approx(-0.55))]

    from datetime import datetime, timezone

    import asyncpg

    from collector.db.queries import readings_series

    async def series(meter_id: str) -> list:
        conn = await asyncpg.connect(collector_db)
        try:
            span = (datetime.fromtimestamp(NOW - 60, timezone.utc), datetime.fromtimestamp(NOW + 60, timezone.utc))
            return json.loads(str((await readings_series(conn, meter_id, *span, 10))["points"]))
        finally:
            await conn.close()
    (pv,) = asyncio.run(series("pv-1"))
    (gas_point,) = asyncio.run(series("pv-1-gas"))
    assert (pv["export_kwh"], pv["lowest_phase_v"]) == (627.177, 1.5)
    assert (gas_point["volume_m3"], gas_point["energy_kwh"]) == (981.443, None)
