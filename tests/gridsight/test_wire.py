"""The wire contract: what round-trips, what is refused, and the exported JSON Schema."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridsight import wire
from gridsight.wire import (AnomalyFlag, GatewayStatus, IntervalSummary, MeterSummary, RawChunk,
                             Reading, WireError, decode, encode, topic_for)

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
times = st.floats(min_value=1.0e9, max_value=4.0e9, allow_nan=False)
energy = st.floats(min_value=0, max_value=1e9, allow_nan=False)
maybe_power = st.none() | st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)

readings = st.builds(Reading, meter_id=ids, ts=times, energy_kwh=energy, power_w=maybe_power,
                     voltage_v=st.none() | st.floats(0, 1000), current_a=st.none() | st.floats(-100, 100),
                     power_factor=st.none() | st.floats(-1, 1))
envelope = dict(gateway_id=ids, seq=st.integers(0, 2**63 - 1),
                model_version=st.none() | ids, sent_at=times, epoch=st.none() | ids)
meter_summaries = st.builds(MeterSummary, meter_id=ids, kwh=st.floats(-1e6, 1e6), readings=st.integers(0, 10_000),
                            power_w_mean=maybe_power, power_w_max=maybe_power,
                            score=st.none() | st.floats(-1, 1), anomalous=st.none() | st.booleans())
messages = st.one_of(
    st.builds(IntervalSummary, **envelope, interval_start=times, interval_s=st.integers(1, 86_400),
              meters=st.lists(meter_summaries, min_size=1, max_size=20).map(tuple)),
    st.builds(AnomalyFlag, **envelope, meter_id=ids, interval_start=times, interval_s=st.integers(1, 86_400),
              score=st.floats(-1, 1), threshold=st.floats(-1, 1), kwh=st.floats(0, 1e4),
              features=st.dictionaries(st.from_regex(r"\A[a-z_]{1,20}\Z"), st.floats(-1e6, 1e6), max_size=12),
              reason=st.none() | st.text(max_size=50)),
    st.builds(RawChunk, **envelope, readings=st.lists(readings, min_size=1, max_size=50).map(tuple)),
    st.builds(GatewayStatus, **envelope, online=st.booleans(), uptime_s=st.floats(0, 1e8),
              queue_depth=st.integers(0, 10**9), clock_synced=st.none() | st.booleans(),
              clock_offset_s=st.none() | st.floats(-1e5, 1e5), agent_version=st.none() | st.text(max_size=20),
              counters=st.dictionaries(st.from_regex(r"\A[a-z_.]{1,30}\Z"), st.integers(0, 10**9).map(float),
                                       max_size=10)),
)


@given(messages)
@settings(max_examples=300, deadline=None)
def test_every_valid_message_round_trips_unchanged(msg):
    assert decode(topic_for(msg.gateway_id, type(msg).KIND), encode(msg)) == msg


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_raise_only_wire_error(payload):
    for kind in wire.UPWARD_KINDS:
        with pytest.raises(WireError):
            decode(f"gridsight/v1/gw-1/{kind}", payload)


@given(messages, st.data())
@settings(max_examples=200, deadline=None)
def test_a_corrupted_field_is_named_in_the_error(msg, data):
    body = json.loads(encode(msg))
    key = data.draw(st.sampled_from(sorted(k for k in body if k not in ("v", "kind", "chunk"))))
    body[key] = {"not": "valid"}
    with pytest.raises(WireError) as err:
        decode(topic_for(msg.gateway_id, type(msg).KIND), json.dumps(body).encode())
    assert err.value.field.split(".")[0].split("[")[0] == key


def _summary(**kw) -> IntervalSummary:
    base = dict(gateway_id="gw-1", seq=1, model_version="m1", sent_at=1.7e9, interval_start=1.7e9,
                interval_s=900, meters=(MeterSummary("m-1", 0.25, 15, 1000.0, 1500.0, 0.1, False),))
    base.update(kw)
    return IntervalSummary(**base)


def test_topic_gateway_must_match_payload_gateway():
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-2/summary", encode(_summary()))
    assert err.value.field == "gateway_id"


def test_topic_kind_must_match_payload_kind():
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/flag", encode(_summary()))
    assert err.value.field == "kind"


@pytest.mark.parametrize("topic", ["gridsight/v1/gw-1", "gridsight/v2/gw-1/summary", "gridsight/v1/gw 1/summary",
                                   "gridsight/v1/gw-1/unknown", "gridsight/v1/fleet/summary", "other/v1/gw/summary",
                                   "gridsight/v1/gw-1/summary/extra"])
def test_malformed_topics_are_refused(topic):
    with pytest.raises(WireError) as err:
        wire.parse_topic(topic)
    assert err.value.field == "topic"


def test_unknown_schema_version_is_refused():
    body = json.loads(encode(_summary()))
    body["v"] = 3
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/summary", json.dumps(body).encode())
    assert err.value.field == "v"


def test_oversized_payload_is_refused_before_parsing():
    payload = b"{" + b" " * wire.MAX_PAYLOAD_BYTES + b"}"
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/summary", payload)
    assert err.value.field == "payload"


def test_unknown_field_is_refused_and_named():
    body = json.loads(encode(_summary()))
    body["meters"][0]["surprise"] = 1
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/summary", json.dumps(body).encode())
    assert err.value.field == "meters[0].surprise"


def test_nan_and_infinity_are_refused():
    payload = encode(_summary()).replace(b'"kwh":0.25', b'"kwh":NaN')
    with pytest.raises(WireError):
        decode("gridsight/v1/gw-1/summary", payload)


def test_raw_chunk_checksum_mismatch_is_refused():
    chunk = RawChunk("gw-1", 3, None, 1.7e9, (Reading("m-1", 1.7e9, 10.0, 500.0),))
    body = json.loads(encode(chunk))
    plain = zlib.decompress(base64.b64decode(body["chunk"]["data"]))
    body["chunk"]["data"] = base64.b64encode(zlib.compress(plain.replace(b"10.0", b"11.0"))).decode()
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/raw", json.dumps(body).encode())
    assert err.value.field == "chunk.sha256"


def test_raw_chunk_zip_bomb_is_refused():
    plain = b"[" + b"0," * (wire.MAX_DECOMPRESSED_BYTES // 2 + 10) + b"0]"
    body = json.loads(encode(RawChunk("gw-1", 3, None, 1.7e9, (Reading("m-1", 1.7e9, 1.0),))))
    body["chunk"]["data"] = base64.b64encode(zlib.compress(plain, 9)).decode()
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/raw", json.dumps(body).encode())
    assert err.value.field == "chunk.data"


def test_raw_chunk_compresses_repetitive_readings():
    chunk = RawChunk("gw-1", 3, None, 1.7e9,
                     tuple(Reading("m-1", 1.7e9 + i, 10.0 + i * 0.001, 500.0, 230.0, 2.2, 0.98) for i in range(1000)))
    plain = json.dumps({c: [getattr(r, c) for r in chunk.readings] for c in RawChunk._COLUMNS}).encode()
    assert len(encode(chunk)) < len(plain) / 2


def test_reading_timestamp_outside_sane_range_is_refused():
    with pytest.raises(WireError) as err:
        encode_and_decode = decode("gridsight/v1/gw-1/raw",
                                   encode(RawChunk("gw-1", 1, None, 1.7e9, (Reading("m-1", 12.0, 1.0),))))
        del encode_and_decode
    assert err.value.field == "readings[0].ts"


def test_model_announcement_round_trips_with_canary_set():
    cmd = wire.ModelAnnouncement("iforest", "2026.11.1", "s3://b/models/iforest/2026.11.1/model.onnx",
                                 "ab" * 32, "s3://b/models/iforest/2026.11.1/model.sig", 1.7e9, ("gw-1", "gw-2"))
    assert wire.decode_command(wire.encode_command(cmd)) == cmd


def test_json_schema_accepts_what_encode_writes_and_rejects_unknown_fields():
    import jsonschema
    schemas = wire.json_schemas()
    assert set(schemas) == set(wire.UPWARD_KINDS)
    msg = _summary()
    body = json.loads(encode(msg))
    jsonschema.validate(body, schemas["summary"])
    body["extra"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schemas["summary"])


def test_topics_and_shared_subscription():
    assert topic_for("gw-7", "flag") == "gridsight/v1/gw-7/flag"
    assert wire.command_topic("gw-7", "model") == "gridsight/v1/gw-7/cmd/model"
    assert wire.fleet_command_topic("model") == "gridsight/v1/fleet/cmd/model"
    assert wire.subscription_topics("collectors")[0] == "$share/collectors/gridsight/v1/+/summary"
    with pytest.raises(WireError):
        topic_for("gw/7", "flag")


def test_shipped_json_schemas_match_the_wire_module(repo_root, tmp_path):
    from gridsight.schema_cli import write_schemas

    for path in write_schemas(tmp_path):
        shipped = repo_root / "docs" / "schemas" / path.name
        assert shipped.read_text() == path.read_text(), f"{shipped} is stale: run gridsight schema --out docs/schemas"


def test_absurdly_large_numbers_are_a_wire_error_not_a_crash():
    body = json.loads(encode(_summary()))
    body["meters"][0]["kwh"] = 10**400
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/summary", json.dumps(body).encode())
    assert err.value.field == "meters[0].kwh"
    chunk = json.loads(encode(RawChunk("gw-1", 3, None, 1.7e9, (Reading("m-1", 1.7e9, 1.0),))))
    columns = {c: [None] for c in RawChunk._COLUMNS} | {"meter_id": ["m-1"], "ts": [1.7e9], "energy_kwh": [10**400]}
    plain = json.dumps(columns).encode()
    chunk["chunk"].update(data=base64.b64encode(zlib.compress(plain)).decode(),
                          sha256=hashlib.sha256(plain).hexdigest())
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/raw", json.dumps(chunk).encode())
    assert err.value.field == "readings[0].energy_kwh"


def test_deeply_nested_json_is_a_wire_error_not_a_crash():
    with pytest.raises(WireError) as err:
        decode("gridsight/v1/gw-1/summary", b"[" * 200_000 + b"]" * 200_000)
    assert err.value.field == "payload"


def test_a_chunk_of_layout_1_readings_is_byte_identical_to_before_the_layout_2_extension():
    chunk = json.loads(encode(RawChunk("gw-1", 3, None, 1.7e9, (Reading("m-1", 1.7e9, 10.0, 500.0),))))["chunk"]
    assert "layout" not in chunk
    plain = zlib.decompress(base64.b64decode(chunk["data"]))
    assert set(json.loads(plain)) == set(RawChunk._COLUMNS)


def test_export_tariffs_phases_and_a_gas_channel_travel_in_a_layout_2_chunk():
    elec = Reading("m-1", 1.7e9, 10.0, -2600.0, 230.0, export_kwh=627.177, import_t1_kwh=4.0, import_t2_kwh=6.0,
                   tariff=2, voltage_l1_v=230.0, voltage_l2_v=3.1, voltage_l3_v=229.0, power_l2_w=-1200.0)
    gas = Reading("m-1-gas", 1.7e9, None, channel="gas", volume_m3=981.443)
    payload = encode(RawChunk("gw-1", 3, None, 1.7e9, (elec, gas)))
    assert json.loads(payload)["chunk"]["layout"] == 2
    back = decode(topic_for("gw-1", "raw"), payload)
    assert back.readings == (elec, gas)


def test_an_electricity_reading_without_energy_or_a_gas_reading_without_volume_is_refused():
    gas = Reading("m-1-gas", 1.7e9, None, channel="gas")
    with pytest.raises(WireError, match=r"readings\[0\]\.volume_m3: missing on a gas channel"):
        decode(topic_for("gw-1", "raw"), encode(RawChunk("gw-1", 3, None, 1.7e9, (gas,))))
    no_energy = Reading("m-1", 1.7e9, None, export_kwh=1.0)
    with pytest.raises(WireError, match=r"readings\[0\]\.energy_kwh: missing"):
        decode(topic_for("gw-1", "raw"), encode(RawChunk("gw-1", 3, None, 1.7e9, (no_energy,))))


def test_a_layout_2_column_in_a_chunk_that_claims_layout_1_is_refused():
    body = json.loads(encode(RawChunk("gw-1", 3, None, 1.7e9, (Reading("m-1", 1.7e9, 1.0, export_kwh=2.0),))))
    del body["chunk"]["layout"]
    with pytest.raises(WireError, match="chunk.data: columns must be"):
        decode(topic_for("gw-1", "raw"), json.dumps(body).encode())


def test_summary_export_energy_is_omitted_when_unknown_and_round_trips_when_known():
    plain = json.loads(encode(_summary()))
    assert "export_kwh" not in plain["meters"][0]
    s = IntervalSummary("gw-1", 7, None, 1.7e9, 1.7e9, 900, (MeterSummary("m-1", 0.25, 15, 1.0, 2.0, 0.1, False, 0.4),))
    assert decode(topic_for("gw-1", "summary"), encode(s)).meters[0].export_kwh == 0.4


def test_a_message_with_an_epoch_is_version_2_and_one_without_is_the_unchanged_version_1():
    legacy = _summary()
    v1 = json.loads(encode(legacy))
    assert v1["v"] == 1 and "epoch" not in v1
    assert decode("gridsight/v1/gw-1/summary", encode(legacy)).epoch is None
    current = IntervalSummary(**{**{k: getattr(legacy, k) for k in IntervalSummary._RULES}, "epoch": "a1b2c3d4e5f60718"})
    v2 = json.loads(encode(current))
    assert v2["v"] == 2 and v2["epoch"] == "a1b2c3d4e5f60718"
    assert decode("gridsight/v1/gw-1/summary", encode(current)) == current


def test_version_2_without_an_epoch_and_version_1_with_one_are_refused_naming_the_epoch():
    body = json.loads(encode(_summary()))
    for version, epoch in ((2, None), (1, "a1b2c3d4")):
        bad = {**body, "v": version}
        if epoch:
            bad["epoch"] = epoch
        with pytest.raises(WireError) as err:
            decode("gridsight/v1/gw-1/summary", json.dumps(bad).encode())
        assert err.value.field == "epoch"


def test_content_digest_ignores_the_send_time_but_not_the_content():
    import dataclasses
    readings = (Reading("m-1", 1.7e9, 10.0, 500.0), Reading("m-1", 1.7e9 + 1, 10.1, 510.0))
    chunk = RawChunk("gw-1", 7, None, 1.7e9 + 2, readings, epoch="e1")
    resent = decode(topic_for("gw-1", "raw"), encode(dataclasses.replace(chunk, sent_at=1.7e9 + 99)))
    assert wire.content_digest(resent) == wire.content_digest(chunk)
    changed = dataclasses.replace(chunk, readings=(readings[0], Reading("m-1", 1.7e9 + 1, 10.2, 510.0)))
    assert wire.content_digest(changed) != wire.content_digest(chunk)
    assert wire.content_digest(dataclasses.replace(chunk, epoch="e2")) != wire.content_digest(chunk)


@pytest.mark.parametrize("column, bad", [("tariff", "2"), ("tariff", True), ("tariff", 1.5), ("channel", "steam")])
def test_layout_2_integer_and_enum_columns_refuse_bad_values_on_the_fast_path_too(column, bad):
    ok = Reading("m-1", 1.7e9, 1.0, tariff=1, channel="heat")
    body = json.loads(encode(RawChunk("gw-1", 3, None, 1.7e9, (ok,))))
    plain = json.loads(zlib.decompress(base64.b64decode(body["chunk"]["data"])))
    plain[column] = [bad]
    data = json.dumps(plain).encode()
    body["chunk"].update(data=base64.b64encode(zlib.compress(data)).decode(), sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(WireError, match=rf"readings\[0\]\.{column}"):
        decode(topic_for("gw-1", "raw"), json.dumps(body).encode())
