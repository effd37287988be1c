"""The columnar fast path the collector relies on in `wire._decode_readings` accepts and rejects
exactly what the per-field path does (the collector added it for ingest speed)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from gridsight import wire

_COLUMNS = wire.RawChunk._COLUMNS
_values = st.one_of(st.none(), st.booleans(), st.integers(-2 * 10**12, 2 * 10**12),
                    st.floats(allow_nan=False, allow_infinity=False, width=64),
                    st.sampled_from([0.0, 1.0, -1.0, 1e9, 1e12, 946_684_800.0, 4_102_444_800.0, 1.7e9, 230.0]),
                    st.text(max_size=70), st.sampled_from(["m-1", "gw.2_x", "-bad", "", "a" * 65]),
                    st.lists(st.integers(), max_size=2))


def _chunk(columns: dict) -> dict:
    plain = json.dumps(columns).encode()
    return {"codec": "zlib", "count": len(columns["meter_id"]), "sha256": hashlib.sha256(plain).hexdigest(),
            "data": base64.b64encode(zlib.compress(plain)).decode()}


def _per_field(columns: dict, count: int):
    return tuple(wire._build(wire.Reading, {c: columns[c][i] for c in _COLUMNS}, f"readings[{i}]")
                 for i in range(count))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.fixed_dictionaries({c: st.lists(_values, min_size=n, max_size=n)
                                                                   for c in _COLUMNS})))
@pytest.mark.slow
def test_fast_and_per_field_decoding_agree_on_any_columns(columns):
    count = len(columns["meter_id"])
    try:
        expected = _per_field(columns, count)
    except (wire.WireError, OverflowError) as exc:
        expected = type(exc)
    try:
        got = wire._decode_readings(_chunk(columns))
    except (wire.WireError, OverflowError) as exc:
        got = type(exc)
    assert got == expected
    if isinstance(got, tuple):
        assert all(type(getattr(r, c)) in (str, float, type(None)) for r in got for c in _COLUMNS)


def test_valid_chunks_decode_to_floats_even_from_integer_json():
    columns = {"meter_id": ["m-1", "m-2"], "ts": [1_767_225_600, 1_767_225_610.5], "energy_kwh": [5, 6.5],
               "power_w": [None, 300], "voltage_v": [230, None], "current_a": [1, 2], "power_factor": [1, -1]}
    readings = wire._decode_readings(_chunk(columns))
    assert readings[0] == wire.Reading("m-1", 1_767_225_600.0, 5.0, None, 230.0, 1.0, 1.0)
    assert all(isinstance(r.ts, float) and not math.isnan(r.ts) for r in readings)
