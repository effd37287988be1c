"""The DSMR P1 reader reads telegrams from a real (pseudo-)terminal, checking every CRC."""

from __future__ import annotations

import os
import time

import pytest

from edge_agent.readers import ReaderError, build_reader
from gridsight.settings import ConfigError

NOW = 1_767_225_600.0


def telegram(t1: float, t2: float, kw: float, volts: float = 230.1, ident: str = "E0012345678") -> bytes:
    from dsmr_parser.parsers import TelegramParser

    body = ("/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(260101000000W)\r\n"
            f"0-0:96.1.1({ident.encode().hex().upper()})\r\n"
            f"1-0:1.8.1({t1:010.3f}*kWh)\r\n1-0:1.8.2({t2:010.3f}*kWh)\r\n"
            "1-0:2.8.1(000000.000*kWh)\r\n1-0:2.8.2(000000.000*kWh)\r\n0-0:96.14.0(0002)\r\n"
            f"1-0:1.7.0({kw:06.3f}*kW)\r\n1-0:2.7.0(00.000*kW)\r\n1-0:32.7.0({volts:05.1f}*V)\r\n"
            "1-0:31.7.0(003*A)\r\n!")
    return (body + f"{TelegramParser.crc16(body):04X}\r\n").encode("ascii")


def poll(reader, want: int, now: float = NOW, errors: list | None = None, timeout: float = 5.0) -> list:
    """Poll like the agent does until ``want`` readings arrived (the pty delivers asynchronously)."""
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        try:
            out += reader.read(now)
        except ReaderError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
        time.sleep(0.02)
    return out


@pytest.fixture
def p1_line():
    """(master fd, slave path) of a pseudo-terminal: the test writes as the meter, the reader reads."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def test_valid_telegrams_become_readings_with_both_tariffs_and_power_in_watts(p1_line):
    master, path = p1_line
    reader = build_reader({"type": "dsmr_p1", "port": path})
    try:
        os.write(master, telegram(100.5, 200.25, 1.234) + telegram(100.6, 200.25, 0.5))
        readings = poll(reader, 2)
    finally:
        reader.close()
    assert [r.energy_kwh for r in readings] == [pytest.approx(300.75), pytest.approx(300.85)]
    assert readings[0].power_w == pytest.approx(1234.0) and readings[0].voltage_v == pytest.approx(230.1)
    assert readings[0].meter_id == "E0012345678" and readings[0].ts == NOW


def test_a_corrupt_telegram_is_dropped_and_reported_while_good_ones_are_kept(p1_line):
    master, path = p1_line
    reader = build_reader({"type": "dsmr_p1", "port": path, "meter_id": "home-1"})
    corrupt = telegram(100.7, 200.25, 0.9).replace(b"100.700", b"900.700")  # CRC no longer matches
    try:
        os.write(master, telegram(100.5, 200.0, 1.0) + corrupt + telegram(100.8, 200.0, 1.0))
        errors: list[str] = []
        good = poll(reader, 2, errors=errors)
        os.write(master, telegram(100.9, 200.0, 1.0))
        after = poll(reader, 1, errors=errors)
    finally:
        reader.close()
    assert [round(r.energy_kwh, 3) for r in good] == [300.5, 300.8]  # never the corrupt 1100.7
    assert [round(r.energy_kwh, 3) for r in after] == [300.9]
    assert len(errors) == 1 and "CRC" in errors[0]


def test_line_noise_and_a_telegram_split_across_polls_are_handled(p1_line):
    master, path = p1_line
    reader = build_reader({"type": "dsmr_p1", "port": path, "meter_id": "home-1"})
    whole = telegram(1.0, 2.0, 0.1)
    try:
        os.write(master, b"\x00\xff garbage \r\n" + whole[:40])
        errors: list[str] = []
        assert poll(reader, 1, errors=errors, timeout=0.3) == []  # nothing complete yet
        os.write(master, whole[40:])
        readings = poll(reader, 1, errors=errors)
        poll(reader, 1, errors=errors, timeout=0.2)
    finally:
        reader.close()
    assert [r.energy_kwh for r in readings] == [pytest.approx(3.0)]
    assert any("garbage" in e for e in errors)


def test_a_silent_p1_port_is_reported_as_stale(p1_line):
    master, path = p1_line
    reader = build_reader({"type": "dsmr_p1", "port": path, "meter_id": "home-1", "stale_s": 10})
    try:
        assert reader.read(NOW) == []
        with pytest.raises(ReaderError, match="no telegram for 11 s"):
            reader.read(NOW + 11)
    finally:
        reader.close()


def test_a_missing_serial_port_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"readers\[0\]\.port: cannot open"):
        build_reader({"type": "dsmr_p1", "port": str(tmp_path / "ttyUSB9")})
