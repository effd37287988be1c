"""The Modbus readers read real meters' register maps from pymodbus's own server."""

from __future__ import annotations

import asyncio
import struct
import threading

import pytest

from edge_agent.readers import ReaderError, build_reader
from edge_agent.readers.modbus import decode_value, load_register_map
from gridsight.settings import ConfigError
from gridsight.local_services import free_port, wait_for_port

NOW = 1_767_225_600.0


def float_registers(value: float, word_order: str = "big") -> list[int]:
    hi, lo = struct.unpack(">2H", struct.pack(">f", value))
    return [hi, lo] if word_order == "big" else [lo, hi]


def sdm630_registers(energy_kwh: float, power_w: float, volts: float, amps: float, pf: float) -> list[int]:
    regs = [0] * 80
    for address, value in ((72, energy_kwh), (52, power_w), (0, volts), (6, amps), (62, pf)):
        regs[address:address + 2] = float_registers(value)
    return regs


class ModbusServer:
    """pymodbus's TCP server on a free port, in a thread, serving the given units' input registers."""

    def __init__(self, units: dict[int, list[int]], holding: bool = False) -> None:
        from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext

        devices = {}
        for unit, regs in units.items():
            # the device context adds 1 to protocol addresses; the block starts at 1 to match
            block = ModbusSequentialDataBlock(1, regs)
            devices[unit] = ModbusDeviceContext(hr=block) if holding else ModbusDeviceContext(ir=block)
        self.context = ModbusServerContext(devices=devices, single=False)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        wait_for_port(self.port, 10, what="pymodbus server")

    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer

        async def serve() -> None:
            self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
            await self.server.serve_forever()

        self._loop.run_until_complete(serve())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self._loop).result(10)
        self._thread.join(10)


@pytest.fixture
def sdm630_bus():
    server = ModbusServer({1: sdm630_registers(1234.5, 2300.0, 231.0, 10.0, 0.97),
                           2: sdm630_registers(77.25, 150.0, 229.5, 0.7, 0.9)})
    yield server
    server.close()


def test_sdm630_map_reads_energy_power_voltage_current_and_power_factor_per_unit(sdm630_bus):
    reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": sdm630_bus.port, "map": "sdm630",
                           "units": [{"unit": 1, "meter_id": "flat-1"}, {"unit": 2, "meter_id": "flat-2"}]})
    try:
        first, second = reader.read(NOW)
    finally:
        reader.close()
    assert (first.meter_id, first.ts) == ("flat-1", NOW)
    assert first.energy_kwh == pytest.approx(1234.5) and first.power_w == pytest.approx(2300.0)
    assert first.voltage_v == pytest.approx(231.0) and first.current_a == pytest.approx(10.0)
    assert first.power_factor == pytest.approx(0.97, abs=1e-6)
    assert second.meter_id == "flat-2" and second.energy_kwh == pytest.approx(77.25)


def test_a_unit_that_does_not_answer_is_reported_without_hiding_the_units_that_do(sdm630_bus):
    reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": sdm630_bus.port, "timeout_s": 0.5,
                           "units": [{"unit": 1, "meter_id": "flat-1"}, {"unit": 9, "meter_id": "ghost"}]})
    try:
        readings = reader.read(NOW)
        with pytest.raises(ReaderError, match="ghost"):
            reader.read(NOW + 1)
    finally:
        reader.close()
    assert [r.meter_id for r in readings] == ["flat-1"]


def test_garbage_register_values_are_refused_as_a_reader_error():
    server = ModbusServer({1: sdm630_registers(float("nan"), 100.0, 230.0, 1.0, 1.0)})
    reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": server.port, "unit": 1,
                           "meter_id": "flat-1"})
    try:
        with pytest.raises(ReaderError, match="energy_kwh"):
            reader.read(NOW)
    finally:
        reader.close()
        server.close()


def test_a_custom_map_with_scaling_little_word_order_and_holding_registers(tmp_path):
    regs = [0] * 20
    regs[10:12] = [123_456 & 0xFFFF, 123_456 >> 16]  # uint32 in 10 Wh steps, low word first
    regs[4] = (-150) & 0xFFFF  # int16 power in W, exporting
    server = ModbusServer({5: regs}, holding=True)
    map_file = tmp_path / "meter.toml"
    map_file.write_text('name = "custom"\nfunction = "holding"\nword_order = "little"\n'
                        '[fields.energy_kwh]\naddress = 10\ntype = "uint32"\nscale = 0.01\n'
                        '[fields.power_w]\naddress = 4\ntype = "int16"\n')
    reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": server.port, "map_file": str(map_file),
                           "unit": 5, "meter_id": "m5"})
    try:
        (reading,) = reader.read(NOW)
    finally:
        reader.close()
        server.close()
    assert reading.energy_kwh == pytest.approx(1234.56) and reading.power_w == -150


def test_a_meter_that_is_unplugged_raises_reader_error_not_a_crash():
    reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": free_port(), "timeout_s": 0.3,
                           "unit": 1, "meter_id": "m1"})
    with pytest.raises(ReaderError, match="m1"):
        reader.read(NOW)
    reader.close()


def test_register_decoding_honours_word_order():
    assert decode_value(float_registers(3.5, "little"), "float32", "little") == 3.5
    assert decode_value([0x0001, 0x0000], "uint32", "big") == 65536
    assert decode_value([0x0001, 0x0000], "uint32", "little") == 1


def test_bad_register_maps_and_options_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"readers\[0\]\.map: unknown register map 'sdm999'"):
        build_reader({"type": "modbus_tcp", "host": "h", "map": "sdm999", "unit": 1, "meter_id": "m"})
    bad = tmp_path / "bad.toml"
    bad.write_text('[fields.energy_kwh]\naddress = 70000\n')
    with pytest.raises(ConfigError, match=r"readers\[0\]\.map_file: .*address must be 0\.\.65535"):
        build_reader({"type": "modbus_tcp", "host": "h", "map_file": str(bad), "unit": 1, "meter_id": "m"})
    with pytest.raises(ConfigError, match=r"readers\[0\]\.units\[1\]\.meter_id: missing"):
        build_reader({"type": "modbus_tcp", "host": "h", "units": [{"unit": 1, "meter_id": "a"}, {"unit": 2}]})
    with pytest.raises(ConfigError, match=r"readers\[0\]\.parity"):
        build_reader({"type": "modbus_rtu", "port": "/dev/null", "parity": "X", "unit": 1, "meter_id": "m"})
    assert load_register_map("sdm120").fields[0].name == "energy_kwh"


def test_an_exception_response_for_an_illegal_register_address_is_a_reader_error(sdm630_bus, tmp_path):
    map_file = tmp_path / "wrong.toml"
    map_file.write_text('[fields.energy_kwh]\naddress = 3000\ntype = "float32"\n')  # beyond the meter's registers
    reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": sdm630_bus.port, "map_file": str(map_file),
                           "unit": 1, "meter_id": "flat-1"})
    try:
        with pytest.raises(ReaderError, match="flat-1.*exception response"):
            reader.read(NOW)
        reader_ok = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": sdm630_bus.port, "unit": 1,
                                  "meter_id": "flat-1"})
        assert reader_ok.read(NOW)[0].energy_kwh == pytest.approx(1234.5)  # the server is fine, the map was wrong
        reader_ok.close()
    finally:
        reader.close()


def test_sdm630_map_reads_all_three_phases_and_export_so_a_lost_l2_shows():
    regs = [0] * 80
    values = {72: 1234.5, 74: 56.25, 52: 2200.0, 62: 0.95, 0: 231.0, 2: 1.4, 4: 229.0,
              6: 5.1, 8: 0.0, 10: 4.9, 12: 1150.0, 14: 0.0, 16: 1050.0}
    for address, value in values.items():
        regs[address:address + 2] = float_registers(value)
    server = ModbusServer({1: regs})
    try:
        reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": server.port,
                               "map": "sdm630", "meter_id": "shop-1"})
        (r,) = reader.read(NOW)
        reader.close()
    finally:
        server.close()
    assert (r.energy_kwh, r.export_kwh, r.power_w) == (1234.5, 56.25, 2200.0)
    assert (r.voltage_l1_v, r.voltage_l2_v, r.voltage_l3_v) == (231.0, pytest.approx(1.4), 229.0)
    assert (r.power_l2_w, r.voltage_v) == (0.0, 231.0)


def test_carlo_gavazzi_em24_int32_low_word_first_with_scale_factors():
    def int32_le(value: int) -> list[int]:
        hi, lo = struct.unpack(">2H", struct.pack(">i", value))
        return [lo, hi]

    regs = [0] * 90
    for address, raw in {52: 123456, 78: 789, 40: -15000, 0: 2305, 2: 2298, 4: 12, 12: 6520, 18: -7500}.items():
        regs[address:address + 2] = int32_le(raw)
    regs[49] = 970
    server = ModbusServer({3: regs}, holding=True)
    try:
        reader = build_reader({"type": "modbus_tcp", "host": "127.0.0.1", "port": server.port,
                               "map": "em24", "unit": 3, "meter_id": "em24-1"})
        (r,) = reader.read(NOW)
        reader.close()
    finally:
        server.close()
    assert (r.energy_kwh, r.export_kwh, r.power_w) == (pytest.approx(12345.6), pytest.approx(78.9), -1500.0)
    assert (r.voltage_l1_v, r.voltage_l3_v, r.current_l1_a, r.power_l1_w) == \
        (pytest.approx(230.5), pytest.approx(1.2), pytest.approx(6.52), -750.0)
    assert r.power_factor == pytest.approx(0.97)


@pytest.mark.parametrize("name", ["sdm630", "sdm120", "sdm72", "em24"])
def test_every_shipped_register_map_loads(name):
    assert load_register_map(name).fields
