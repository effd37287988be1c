"""SML, IEC 62056-21 mode C, wired M-Bus and DLMS/COSEM push readers against simulated meters on ptys."""

from __future__ import annotations

import time

import pytest

from edge_agent.clock import SystemClock
from edge_agent.readers import ReaderError, build_reader
from firmware_sim.serve.dlms import data_notification, encrypt_apdu, push_frame
from firmware_sim.serve.iec62056_21 import ModeCMeter
from firmware_sim.serve.mbus import MbusBus
from firmware_sim.serve.pty_port import PtyPushPort, PtyResponder
from firmware_sim.serve.sml import sml_file
from gridsight.settings import ConfigError

NOW = 1_767_225_600.0
THREE_PHASE = {"energy_kwh": 12345.6789, "power_w": -850.0, "export_kwh": 99.5, "voltage_v": 230.1,
               "current_a": 2.5, "import_t1_kwh": 5000.0, "import_t2_kwh": 7345.6789,
               "phases": [(230.1, 2.5, -300.0), (1.2, 0.0, 0.0), (229.5, 2.4, -550.0)],
               "phases_vi": [(230.1, 2.5), (1.2, 0.0), (229.5, 2.4)]}


def poll(reader, want: int, errors: list, timeout: float = 8.0, now: float = NOW) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        try:
            out += reader.read(now)
        except ReaderError as exc:
            errors.append(str(exc))
        time.sleep(0.05)
    return out


# ---------------------------------------------------------------- SML (eHZ)

def test_sml_meter_gives_import_export_net_power_and_a_lost_phase(tmp_path):
    server_id = bytes.fromhex("0a01454d480000b12345")
    frames = lambda n, now: sml_file(server_id, THREE_PHASE, n, corrupt_crc=(n == 2))  # noqa: E731
    with PtyPushPort(frames, SystemClock(), period_s=0.05) as port:
        reader = build_reader({"type": "sml", "port": port.device})
        errors: list[str] = []
        try:
            readings = poll(reader, 3, errors)
            # a poll that got the spoilt file together with good ones reports it on the next read
            deadline = time.monotonic() + 8.0
            while not any("SML CRC mismatch" in e for e in errors) and time.monotonic() < deadline:
                readings += poll(reader, 1, errors, timeout=0.5)
        finally:
            reader.close()
    r = readings[0]
    assert r.meter_id == "0a01454d480000b12345"
    assert (r.energy_kwh, r.export_kwh, r.power_w) == (12345.6789, 99.5, -850.0)
    assert (r.import_t1_kwh, r.import_t2_kwh) == (5000.0, 7345.6789)
    assert (r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v) == (230.1, 1.2, 229.5)
    assert any("SML CRC mismatch" in e for e in errors)               # the spoilt second file
    assert len({x.ts for x in readings}) == len(readings)             # files of one poll are not duplicates


def test_sml_garbage_on_the_line_is_reported_not_crashing(tmp_path):
    with PtyPushPort(lambda n, now: b"\x00\xffnoise" * 500, SystemClock(), period_s=0.05) as port:
        reader = build_reader({"type": "sml", "port": port.device, "meter_id": "ehz-1"})
        errors: list[str] = []
        try:
            assert poll(reader, 1, errors, timeout=1.5) == []
        finally:
            reader.close()
    assert any("without an SML start sequence" in e for e in errors)


# ---------------------------------------------------------------- IEC 62056-21 mode C

def test_mode_c_readout_through_the_handshake_gives_every_register():
    meter = ModeCMeter("71234567", lambda: THREE_PHASE)
    with PtyResponder(meter) as line:
        reader = build_reader({"type": "iec62056_21", "port": line.device, "every_s": 60, "timeout_s": 5})
        try:
            (r,) = reader.read(NOW)
            assert reader.read(NOW + 30) == []      # not due again before every_s
        finally:
            reader.close()
    assert r.meter_id == "71234567"
    assert (r.energy_kwh, r.export_kwh, r.power_w) == (12345.679, 99.5, -850.0)
    assert (r.voltage_l2_v, r.current_l3_a) == (1.2, 2.4)


def test_mode_c_bad_bcc_is_an_error_and_the_next_readout_recovers():
    meter = ModeCMeter("71234567", lambda: THREE_PHASE, bad_bcc_every=1)
    with PtyResponder(meter) as line:
        reader = build_reader({"type": "iec62056_21", "port": line.device, "timeout_s": 3})
        try:
            with pytest.raises(ReaderError, match="BCC mismatch"):
                reader.read(NOW)
            meter.bad_bcc_every = 0
            (r,) = reader.read(NOW + 1)
        finally:
            reader.close()
    assert r.energy_kwh == 12345.679


def test_mode_c_silent_meter_times_out_naming_the_step():
    with PtyResponder(lambda data: b"") as line:
        reader = build_reader({"type": "iec62056_21", "port": line.device, "timeout_s": 0.5})
        try:
            with pytest.raises(ReaderError, match="no identification within 0.5 s"):
                reader.read(NOW)
        finally:
            reader.close()


# ---------------------------------------------------------------- wired M-Bus

def test_mbus_bus_reads_electricity_and_gas_units_and_skips_stored_values():
    gas = {"volume_m3": 981.443}
    bus = MbusBus({1: (12345678, "electricity", lambda: THREE_PHASE), 5: (87654321, "gas", lambda: gas)})
    with PtyResponder(bus) as line:
        reader = build_reader({"type": "mbus", "port": line.device, "timeout_s": 2,
                               "units": [{"address": 1, "meter_id": "flat-1"}, {"address": 5, "meter_id": "flat-1-gas"}]})
        assert reader.every_s == 60.0
        try:
            elec, g = reader.read(NOW)
        finally:
            reader.close()
    assert (elec.meter_id, elec.energy_kwh, elec.power_w, elec.voltage_v, elec.current_a) == \
        ("flat-1", 12345.679, -850.0, 230.1, 2.5)
    assert (g.meter_id, g.channel, g.volume_m3, g.energy_kwh) == ("flat-1-gas", "gas", 981.443, None)


def test_mbus_checksum_error_is_retried_and_a_dead_unit_reported_after_the_others():
    bus = MbusBus({1: (12345678, "electricity", lambda: THREE_PHASE)}, bad_checksum_every=2)
    with PtyResponder(bus) as line:
        reader = build_reader({"type": "mbus", "port": line.device, "timeout_s": 0.5, "retries": 2, "every_s": 60,
                               "units": [{"address": 1, "meter_id": "m1"}, {"address": 9, "meter_id": "gone"}]})
        try:
            first = reader.read(NOW)                  # m1 answers; "gone" is reported on the next poll
            with pytest.raises(ReaderError, match=r"gone \(address 9\): no answer"):
                reader.read(NOW + 10)
            assert reader.read(NOW + 30) == []        # not due before every_s
            asked = bus.answers
            second = reader.read(NOW + 60)            # answer 2 is corrupt: retried within this poll
            with pytest.raises(ReaderError, match=r"gone \(address 9\): no answer"):
                reader.read(NOW + 61)
            third = reader.read(NOW + 120)            # "gone" failed twice: skipped this round, m1 read at once
            with pytest.raises(ReaderError, match=r"gone \(address 9\): silent for 2 rounds"):
                reader.read(NOW + 121)                # ... and still reported
        finally:
            reader.close()
    assert [r.meter_id for r in first + second + third] == ["m1", "m1", "m1"]
    assert reader.retried >= 1 and reader.bad_frames >= 1 and bus.answers > asked


def test_mbus_units_are_required_in_config(tmp_path):
    with pytest.raises(ConfigError, match=r"readers\[0\]\.units: missing"):
        build_reader({"type": "mbus", "port": str(tmp_path / "x")})


# ---------------------------------------------------------------- DLMS/COSEM push (HAN)

def test_dlms_push_han_port_plain_and_segmented_frames():
    def frames(n, now):
        apdu = data_notification("7359992890941742", THREE_PHASE, n)
        return push_frame(apdu, segment_size=60 if n % 2 else 0, corrupt_fcs=(n == 4))
    with PtyPushPort(frames, SystemClock(), period_s=0.05) as port:
        reader = build_reader({"type": "dlms_push", "port": port.device, "period_s": 2.5})
        errors: list[str] = []
        try:
            readings = poll(reader, 5, errors)
            poll(reader, 99, errors, timeout=0.3)
        finally:
            reader.close()
    r = readings[0]
    assert r.meter_id == "7359992890941742"
    assert (r.energy_kwh, r.export_kwh, r.power_w, r.voltage_l2_v) == (12345.679, 99.5, -850.0, 1.2)
    assert any("FCS mismatch" in e for e in errors)


def test_dlms_push_encrypted_austrian_frames_need_the_key():
    key = bytes(range(16))
    frame = push_frame(encrypt_apdu(data_notification("AT0001", THREE_PHASE), key, None, 7))
    with PtyPushPort(lambda n, now: frame, SystemClock(), period_s=0.05) as port:
        keyless = build_reader({"type": "dlms_push", "port": port.device})
        errors: list[str] = []
        try:
            assert poll(keyless, 1, errors, timeout=1.0) == []
        finally:
            keyless.close()
    assert errors and "encrypted frame: set the key" in errors[0]
    with PtyPushPort(lambda n, now: frame, SystemClock(), period_s=0.05) as port:
        reader = build_reader({"type": "dlms_push", "port": port.device, "decryption_key": key.hex()})
        try:
            (r, *_) = poll(reader, 1, [])
        finally:
            reader.close()
    assert (r.meter_id, r.energy_kwh) == ("AT0001", 12345.679)


@pytest.mark.parametrize("protocol, options", [
    ("sml", {"type": "sml"}), ("dlms", {"type": "dlms_push"}),
    ("iec62056_21", {"type": "iec62056_21"}),
    ("mbus", {"type": "mbus", "units": [{"address": 1, "meter_id": "m1"}]}),
])
def test_sim_serve_meters_of_a_seeded_fleet_are_read_by_the_agents_readers(protocol, options):
    from edge_agent.clock import SimulatedClock
    from firmware_sim.fleet_model import Fleet
    from firmware_sim.serve.cli import _pty_meters

    meters = Fleet(5, 1, 1, step_s=60, anomaly_rate=0.0, fault_rate=0.0, classes=["commercial"]).gateway_meters(0)
    port = _pty_meters(protocol, meters, SimulatedClock(NOW, 1.0))
    try:
        reader = build_reader({**options, "port": port.device})
        try:
            readings = poll(reader, 1, [], timeout=15)
        finally:
            reader.close()
    finally:
        port.stop()
    r = readings[0]
    volts = r.voltage_v if protocol == "mbus" else r.voltage_l3_v   # M-Bus records carry one voltage
    assert r.energy_kwh > 0 and volts is not None and volts > 200
