"""Simulated meters over real protocols, read back by real clients and the agent's readers."""

from __future__ import annotations

import json
import math
import os
import re
import select
import struct
import threading
import time

import numpy as np
import pytest

from edge_agent.clock import ManualClock
from firmware_sim.anomalies import parse_time
from firmware_sim.fleet_model import Fleet
from firmware_sim.serve import latest_values
from gridsight.local_services import free_port

NOW = parse_time("2026-04-14T15:07:00Z")


@pytest.fixture
def meters():
    fleet = Fleet(21, 1, 3, anomaly_rate=0, fault_rate=0, classes=["residential", "commercial"])
    return fleet.gateway_meters(0)


def _f32(regs: list[int], addr: int) -> float:
    return struct.unpack(">f", struct.pack(">HH", regs[addr], regs[addr + 1]))[0]


def test_modbus_server_answers_with_the_sdm630_register_map_per_unit_id(meters):
    from pymodbus.client import ModbusTcpClient

    from firmware_sim.serve.modbus import ModbusMeterServer

    clock = ManualClock(NOW)
    port = free_port()
    with ModbusMeterServer(meters, clock, port=port):
        client = ModbusTcpClient("127.0.0.1", port=port)
        assert client.connect()
        try:
            for unit, meter in enumerate(meters, start=1):
                want = latest_values(meter, clock.now())
                regs = client.read_input_registers(0, count=0x4C, device_id=unit).registers
                phases = meter.profile.params.phases
                assert _f32(regs, 0x48) == pytest.approx(want["energy_kwh"], rel=1e-6)
                assert _f32(regs, 0x34) == pytest.approx(want["power_w"], rel=1e-6)
                assert _f32(regs, 0x00) == pytest.approx(want["voltage_v"], rel=1e-6)
                assert _f32(regs, 0x0C) * phases == pytest.approx(want["power_w"], rel=1e-5)
                assert (_f32(regs, 0x04) > 0) == (phases == 3)
            before = _f32(client.read_input_registers(0x48, count=2, device_id=1).registers, 0)
            clock.advance(3600)
            after = _f32(client.read_input_registers(0x48, count=2, device_id=1).registers, 0)
            assert after > before                      # the register moves with the server clock
            refused = client.write_register(0x48, 0, device_id=1)
            assert refused.isError()                   # measurements are read-only
        finally:
            client.close()


def test_modbus_server_sends_device_failures_and_nan_registers_when_asked(meters):
    from pymodbus.client import ModbusTcpClient

    from firmware_sim.serve.modbus import ModbusMeterServer

    port = free_port()
    with ModbusMeterServer(meters, ManualClock(NOW), port=port, fault_every=3, nan_every=4):
        client = ModbusTcpClient("127.0.0.1", port=port)
        client.connect()
        try:
            answers = [client.read_input_registers(0x48, count=2, device_id=1) for _ in range(12)]
        finally:
            client.close()
    errors = [a.isError() for a in answers]
    assert errors == [(n % 3 == 0) for n in range(1, 13)]
    values = [_f32(a.registers, 0) for a in answers if not a.isError()]
    assert sum(math.isnan(v) for v in values) == 2   # requests 4 and 8


def _read_pty(fd_path: str, until: bytes, count: int, timeout: float = 20.0) -> bytes:
    fd = os.open(fd_path, os.O_RDONLY | os.O_NOCTTY)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while buf.count(until) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                buf += os.read(fd, 65536)
    finally:
        os.close(fd)
    return buf


def test_dsmr_p1_telegrams_on_a_pty_parse_with_valid_crc_and_bad_ones_are_refused(meters):
    from dsmr_parser import telegram_specifications
    from dsmr_parser.exceptions import InvalidChecksumError, ParseError
    from dsmr_parser.parsers import TelegramParser

    from firmware_sim.serve.dsmr import DsmrP1Port

    meter = meters[0]
    clock = ManualClock(NOW)
    port = DsmrP1Port(meter, clock, period_s=0.0, bad_crc_every=3, truncate_every=5)
    with port:
        data = _read_pty(port.device, b"\r\n!", 12)
    parser = TelegramParser(telegram_specifications.V5)
    good, bad_crc, broken = [], 0, 0
    for chunk in data.split(b"/")[1:]:
        text = "/" + chunk.decode("ascii", "replace")
        try:
            good.append(parser.parse(text))
        except InvalidChecksumError:
            bad_crc += 1
        except ParseError:
            broken += 1
    assert len(good) >= 6 and bad_crc >= 2 and broken >= 1
    want = latest_values(meter, NOW)
    t = good[0]
    import_kwh = float(t.ELECTRICITY_USED_TARIFF_1.value) + float(t.ELECTRICITY_USED_TARIFF_2.value)
    assert import_kwh == pytest.approx(want["energy_kwh"], abs=0.001)  # dual-tariff homes split it
    assert float(t.CURRENT_ELECTRICITY_USAGE.value) == pytest.approx(want["power_w"] / 1000, abs=0.0005)
    assert bytes.fromhex(t.EQUIPMENT_IDENTIFIER.value).decode() == meter.meter_id
    assert t.P1_MESSAGE_TIMESTAMP.value.timestamp() == want["ts"]


def test_mqtt_meter_publishes_json_readings_and_the_broken_payloads_it_was_asked_for(mosquitto, meters):
    import paho.mqtt.client as mqtt

    from gridsight.wire import Reading
    from firmware_sim.serve.mqtt_meter import MqttMeter

    got: list[bytes] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("meters/+/reading", qos=0)
    sub.loop_start()
    assert subscribed.wait(10)
    clock = ManualClock(NOW)
    meter = MqttMeter(meters, clock, port=mosquitto.port, malformed_every=10)
    meter.start(background=False)
    try:
        clock.advance(1800)
        meter.publish_until(clock.now())
        deadline = time.monotonic() + 15
        while len(got) < 99 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        meter.stop()
        sub.loop_stop()
        sub.disconnect()
    readings, broken = [], 0
    for payload in got:
        try:
            readings.append(Reading(**json.loads(payload)))
        except ValueError:
            broken += 1
    assert len(readings) == 3 * 30 and broken == 9
    direct = meters[1].emitted(NOW, NOW + 1800).readings(meters[1].meter_id)
    assert [r for r in readings if r.meter_id == meters[1].meter_id] == direct


def test_csv_feed_is_replayed_by_the_agents_reader_which_names_each_malformed_line(tmp_path, meters):
    from edge_agent.readers.base import ReaderError
    from edge_agent.readers.replay import ReplayReader

    from firmware_sim.serve.csv_feed import write_csv_feed

    path = tmp_path / "feed.csv"
    good, bad = write_csv_feed(meters, NOW, NOW + 3600, path, malformed_every=50)
    assert (good, bad) == (180, 3)
    reader = ReplayReader(path)
    readings, errors = [], []
    for _ in range(20):
        try:
            readings.extend(reader.read(NOW + 7200))
        except ReaderError as exc:
            errors.append(str(exc))
    reader.close()
    assert len(readings) == good and len(errors) == bad
    assert all(re.search(r"feed\.csv:\d+: (energy_kwh: .twelve|expected 7 fields)", e) for e in errors), errors
    expected = meters[2].emitted(NOW, NOW + 3600)
    mine = [r.energy_kwh for r in readings if r.meter_id == meters[2].meter_id]
    assert mine == np.round(expected.energy_kwh, 3).tolist()


def test_the_agents_modbus_reader_reads_the_simulated_sdm630_and_reports_a_failing_unit(meters):
    from edge_agent.readers.base import ReaderError
    from edge_agent.readers.registry import build_reader

    from firmware_sim.serve.modbus import ModbusMeterServer

    clock = ManualClock(NOW)
    port = free_port()
    with ModbusMeterServer(meters, clock, port=port):
        reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "map": "sdm630",
                               "units": [{"unit": i + 1, "meter_id": m.meter_id} for i, m in enumerate(meters)]})
        try:
            got = {r.meter_id: r for r in reader.read(clock.now())}
        finally:
            reader.close()
    assert set(got) == {m.meter_id for m in meters}
    for m in meters:
        want = latest_values(m, NOW)
        r = got[m.meter_id]
        assert r.energy_kwh == pytest.approx(want["energy_kwh"], rel=1e-6)
        assert r.power_w == pytest.approx(want["power_w"], rel=1e-5)
        assert r.voltage_v == pytest.approx(want["voltage_v"], rel=1e-5)
        assert r.current_a == pytest.approx(want["current_a"], rel=1e-5)
        assert r.power_factor == pytest.approx(want["power_factor"], rel=1e-5)

    with ModbusMeterServer(meters, clock, port=port, fault_every=2):
        reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": port, "map": "sdm630",
                               "units": [{"unit": i + 1, "meter_id": m.meter_id} for i, m in enumerate(meters)]})
        outcomes = []
        try:
            for _ in range(4):
                try:
                    outcomes.append(len(reader.read(clock.now())))
                except ReaderError as exc:
                    outcomes.append(str(exc))
        finally:
            reader.close()
    assert any(isinstance(o, str) and "unit" in o for o in outcomes)
    assert any(isinstance(o, int) and o > 0 for o in outcomes)


def test_the_agents_dsmr_reader_takes_good_telegrams_and_reports_bad_crc_and_garbage(meters):
    from edge_agent.readers.base import ReaderError
    from edge_agent.readers.registry import build_reader

    from firmware_sim.serve.dsmr import DsmrP1Port

    meter = meters[0]
    clock = ManualClock(NOW)
    with DsmrP1Port(meter, clock, period_s=0.0, bad_crc_every=4, garbage_every=5) as port:
        reader = build_reader({"type": "dsmr_p1", "port": port.device})
        readings, errors = [], []
        deadline = time.monotonic() + 20
        try:
            # until both faults were seen: under load the garbage may come after the first CRC error
            while (len(readings) < 8 or not any("CRC" in e for e in errors)
                   or not any("garbage" in e for e in errors)) and time.monotonic() < deadline:
                try:
                    readings.extend(reader.read(clock.now()))
                except ReaderError as exc:
                    errors.append(str(exc))
                time.sleep(0.05)
        finally:
            reader.close()
    assert len(readings) >= 8
    assert any("CRC" in e for e in errors) and any("garbage" in e for e in errors)
    want = latest_values(meter, NOW)
    # the meter's own id; a gas-heated home's gas meter arrives as its own meter on channel 1
    assert {r.meter_id for r in readings} - {f"{meter.meter_id}-gas"} == {meter.meter_id}
    assert readings[0].energy_kwh == pytest.approx(want["energy_kwh"], abs=0.0005)
    assert readings[0].power_w == pytest.approx(want["power_w"], abs=0.5)


def test_sim_serve_modbus_runs_until_sigterm_and_answers_like_the_library_server():
    import signal
    import subprocess
    import sys

    from pymodbus.client import ModbusTcpClient

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gridsight", "sim", "serve", "modbus", "--port", str(port),
                             "--meters", "2", "--seed", "21", "--start", "2026-04-14T15:07:00Z", "--speed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in banner and "unit 2 = gw-0000-m01" in banner
        client = ModbusTcpClient("127.0.0.1", port=port)
        assert client.connect()
        try:
            regs = client.read_input_registers(0x48, count=2, device_id=2).registers
        finally:
            client.close()
        meter = Fleet(21, 1, 2, anomaly_rate=0, fault_rate=0).gateway_meters(0)[1]
        want = latest_values(meter, NOW + 60)["energy_kwh"]
        assert _f32(regs, 0) == pytest.approx(want, abs=0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
