"""The DSMR P1 reader reads telegrams from a real (pseudo-)terminal, checking every CRC."""

from __future__ import annotations

import os
import time

import pytest

from edge_agent.readers import ReaderError, build_reader
from gridsight.settings import ConfigError

NOW = 1_767_225_600.0


def telegram(t1: float, t2: float, kw: float, volts: float = 230.1, ident: str = "E0012345678",
             second: int | None = None) -> bytes:
    """A DSMR 5 telegram; ``second`` stamps it 2026-01-01 01:00:SS CET (NOW + SS), else it has no time."""
    from dsmr_parser.parsers import TelegramParser

    stamp = "" if second is None else f"0-0:1.0.0(26010101{second // 60:02d}{second % 60:02d}W)\r\n"
    body = ("/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n" + stamp +
            f"0-0:96.1.1({ident.encode().hex().upper()})\r\n"
            f"1-0:1.8.1({t1:010.3f}*kWh)\r\n1-0:1.8.2({t2:010.3f}*kWh)\r\n"
            "1-0:2.8.1(000000.000*kWh)\r\n1-0:2.8.2(000000.000*kWh)\r\n0-0:96.14.0(0002)\r\n"
            f"1-0:1.7.0({kw:06.3f}*kW)\r\n1-0:2.7.0(00.000*kW)\r\n1-0:32.7.0({volts:05.1f}*V)\r\n"
            "1-0:31.7.0(003*A)\r\n!")
    return (body + f"{TelegramParser.crc16(body):04X}\r\n").encode("ascii")


def poll(reader, want: int, now: float = NOW, errors: list | None = None, timeout: float = 5.0,
         until_error: bool = False) -> list:
    """Poll like the agent does until ``want`` readings arrived (the pty delivers asynchronously),
    or with ``until_error`` until the reader has reported an error."""
    out: list = []
    deadline = time.monotonic() + timeout
    done = (lambda: bool(errors)) if until_error else (lambda: len(out) >= want)
    while not done() and time.monotonic() < deadline:
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
    assert readings[0].meter_id == "E0012345678"
    # no 0-0:1.0.0 in these telegrams: agent time, one meter period apart, so neither is a duplicate
    assert [r.ts for r in readings] == [NOW - 1.0, NOW]


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


# ---------------------------------------------------------------- the peer's telegram suite

import p1_telegrams as fx  # noqa: E402


def read_all(p1_line, data: bytes, want: int, **options) -> tuple[list, list[str]]:
    """Read the suite's telegrams (2009-2023) trusting their clocks (max_skew_s = 0) unless told otherwise.
    ``want=0``: the data should give no reading; read until the reader reports why."""
    master, path = p1_line
    reader = build_reader({"type": "dsmr_p1", "port": path, "max_skew_s": 0, **options})
    errors: list[str] = []
    try:
        os.write(master, data)
        readings = poll(reader, want, errors=errors, until_error=want == 0)
        poll(reader, 99, errors=errors, timeout=0.2)  # collect deferred errors
    finally:
        reader.close()
    return readings, errors


def test_dsmr_2_2_meter_reads_every_register_and_its_gas_channel_without_a_crc(p1_line):
    readings, errors = read_all(p1_line, fx.TELEGRAM_V2_2.encode(), 2, version=2.2, meter_id="flat-7")
    elec, gas = readings
    assert errors == []
    assert (elec.meter_id, elec.energy_kwh, elec.export_kwh) == ("flat-7", pytest.approx(2.002), pytest.approx(2.002))
    assert (elec.import_t1_kwh, elec.import_t2_kwh, elec.tariff, elec.power_w) == (1.001, 1.001, 1, pytest.approx(1010.0))
    assert (gas.meter_id, gas.channel, gas.volume_m3, gas.energy_kwh) == ("flat-7-gas", "gas", 1.001, None)


def test_dsmr_3_is_a_version_and_its_gas_meter_keeps_its_own_id(p1_line):
    readings, errors = read_all(p1_line, fx.TELEGRAM_V3.encode(), 2, version="3")
    elec, gas = readings
    assert errors == [] and elec.meter_id == "K8EG004046395507"
    assert elec.energy_kwh == pytest.approx(24691.356) and elec.export_kwh == pytest.approx(24691.356)
    assert (gas.meter_id, gas.volume_m3) == ("2222ABCD123456789", 1.001)


def test_dsmr_4_2_gives_per_phase_power_and_current_and_its_gas_reading_has_its_capture_time(p1_line):
    readings, errors = read_all(p1_line, fx.TELEGRAM_V4_2.encode(), 2, version=4)
    elec, gas = readings
    assert errors == []
    assert (elec.power_l1_w, elec.power_l2_w, elec.power_l3_w) == (pytest.approx(170.0), pytest.approx(1247.0),
                                                                    pytest.approx(209.0))
    assert (elec.current_l1_a, elec.current_l2_a, elec.current_l3_a) == (0.0, 6.0, 2.0)
    assert elec.ts == 1479067077.0            # 2016-11-13 20:57:57 CET
    assert gas.volume_m3 == 981.443 and gas.ts == 1480446000.0  # 2016-11-29 20:00:00 CET


def test_dsmr_5_gives_export_tariffs_and_three_phase_voltage(p1_line):
    readings, errors = read_all(p1_line, fx.TELEGRAM_V5.encode(), 2, version="5")
    elec = readings[0]
    assert errors == []
    assert (elec.energy_kwh, elec.export_kwh, elec.export_t1_kwh) == (pytest.approx(6.825), 2.444, 2.444)
    assert (elec.voltage_l1_v, elec.voltage_l2_v, elec.voltage_l3_v, elec.voltage_v) == (230.0, 230.0, 229.0, 230.0)
    assert elec.power_w == pytest.approx(244.0)


def test_austrian_sagemcom_values_in_wh_and_w_are_converted_not_taken_as_kwh(p1_line):
    readings, errors = read_all(p1_line, fx.TELEGRAM_SAGEMCOM_T210_D_R.encode(), 1, meter_id="at-1",
                                timezone="Europe/Vienna")
    (r,) = readings
    assert errors == []
    assert (r.energy_kwh, r.export_kwh, r.power_w) == (pytest.approx(6545.766), pytest.approx(0.058), 286.0)
    assert (r.import_t1_kwh, r.import_t2_kwh) == (pytest.approx(5017.12), pytest.approx(1528.646))


def test_easymeter_q3d_with_its_gateway_trailer_reads_import_export_and_phases(p1_line):
    data = (fx.TELEGRAM_ESY5Q3DB1024_V304 + fx.TELEGRAM_ESY5Q3DA1004_V304).encode("latin-1")
    readings, errors = read_all(p1_line, data, 2)
    assert errors == []
    assert [r.meter_id for r in readings] == ["0272031312565", "1336001560"]
    assert readings[0].energy_kwh == pytest.approx(52185.7825309) and readings[0].export_kwh == pytest.approx(19949.3221493)
    assert readings[0].power_w == pytest.approx(2124.86) and readings[0].power_l3_w == pytest.approx(639.73)


def test_belgian_fluvius_keeps_demand_peak_gas_and_water_as_separate_meters(p1_line):
    readings, errors = read_all(p1_line, fx.fluvius().encode(), 3, timezone="Europe/Brussels")
    elec, gas, water = readings
    assert errors == []
    assert (elec.demand_w, elec.demand_peak_w) == (pytest.approx(2351.0), pytest.approx(2589.0))
    assert (gas.channel, gas.meter_id, gas.volume_m3) == ("gas", "7FLO2119033733", 112.384)
    assert (water.channel, water.meter_id, water.volume_m3) == ("water", "8SAG1234567890", 872.234)


def test_hungarian_pv_home_shows_its_export_and_1_8_0_totals(p1_line):
    readings, errors = read_all(p1_line, fx.eon_hungary().encode(), 1, timezone="Europe/Budapest")
    (r,) = readings
    assert (r.meter_id, r.energy_kwh, r.export_kwh) == ("890082200002160", 173.64, 627.177)  # 0-0:96.1.0
    assert r.power_w == pytest.approx(-2601.0)     # exporting 2.6 kW
    assert r.power_factor is None                   # 4.556 is no power factor: left out, counted, logged
    assert errors == []


def test_irish_iskra_without_96_1_1_uses_its_96_1_0_id(p1_line):
    readings, errors = read_all(p1_line, fx.iskra_ie().encode(), 1, timezone="Europe/Dublin")
    (r,) = readings
    assert r.meter_id == "09610" and r.power_w == pytest.approx(-100.0)
    assert r.power_l1_w == pytest.approx(-10.0) and r.export_kwh == pytest.approx(20.563)


def test_swedish_meter_with_1_8_0_and_no_id_reads_once_meter_id_is_set(p1_line):
    readings, errors = read_all(p1_line, fx.sweden_aidon().encode(), 0, timezone="Europe/Stockholm")
    assert readings == [] and "set meter_id for this port" in errors[0]


def test_swedish_meter_values_with_meter_id(p1_line):
    readings, errors = read_all(p1_line, fx.sweden_aidon().encode(), 1, timezone="Europe/Stockholm", meter_id="se-1")
    (r,) = readings
    assert (r.energy_kwh, r.export_kwh, r.power_w, r.voltage_l3_v) == (6678.394, 0.0, pytest.approx(1727.0), 241.3)


def test_luxembourg_encrypted_frames_are_read_with_the_key(p1_line):
    frame = fx.encrypt_smarty(fx.luxembourg_smarty_plain())
    readings, errors = read_all(p1_line, frame, 1, decryption_key=fx.SMARTY_TEST_KEY, timezone="Europe/Luxembourg")
    (r,) = readings
    assert errors == []
    assert (r.meter_id, r.energy_kwh, r.export_kwh) == ("SAG3082200002160", 123.456, 7.89)


def test_luxembourg_encrypted_frames_without_a_key_say_set_the_key_not_baud_rate(p1_line):
    frame = fx.encrypt_smarty(fx.luxembourg_smarty_plain())
    readings, errors = read_all(p1_line, frame * 3, 0)
    assert readings == []
    assert errors and all("encrypted frame: set the key" in e and "baud" not in e for e in errors)


def test_a_wrong_luxembourg_key_is_reported_as_a_key_problem(p1_line):
    frame = fx.encrypt_smarty(fx.luxembourg_smarty_plain())
    readings, errors = read_all(p1_line, frame, 0, decryption_key="00" * 16)
    assert readings == [] and "wrong decryption_key" in errors[0]


def test_version_option_takes_numbers_or_strings_and_refuses_others(p1_line):
    from edge_agent.readers.dsmr import normalise_version

    _, path = p1_line
    assert [normalise_version(v) for v in (5, "5", 4, "4.2", 3, "3", 2.2, "2.2")] == \
        ["5", "5", "4", "4", "3", "3", "2.2", "2.2"]
    build_reader({"type": "dsmr_p1", "port": path, "version": 5}).close()
    with pytest.raises(ConfigError, match=r"readers\[0\]\.version: 6: must be 5, 4, 3 or 2.2"):
        build_reader({"type": "dsmr_p1", "port": path, "version": 6})


def test_lowercase_crc_and_lf_only_line_endings_are_read(p1_line):
    lf = fx.with_crc(fx.sweden_aidon().split("\r\n")[:-1][:-1] + ["1-0:1.8.1(000001.000*kWh)"], newline="\n")
    lower = fx.with_crc(["/ISk5\\2MT", "", "0-0:96.1.1(41)", "1-0:1.8.1(000002.000*kWh)"], lowercase=True)
    crlf_converted = fx.with_crc(["/ISk5\\2MT", "", "0-0:96.1.1(42)", "1-0:1.8.1(000003.000*kWh)"]).replace("\r\n", "\n")
    readings, errors = read_all(p1_line, (lf + lower + crlf_converted).encode(), 3, meter_id="m", timestamps="agent")
    assert errors == []
    assert [r.energy_kwh for r in readings] == [6678.394, 2.0, 3.0]


def test_a_corrupted_value_in_a_crc_less_telegram_is_refused_by_plausibility(p1_line):
    good = fx.TELEGRAM_V2_2
    corrupt = good.replace("1-0:1.8.1(00001.001*kWh)", "1-0:1.8.1(900006.825*kWh)")
    lost_line = good.replace("1-0:1.8.2(00001.001*kWh)\r\n", "")
    readings, errors = read_all(p1_line, (good + corrupt + lost_line + good).encode(), 2,
                                version="2.2", meter_id="m", timestamps="agent")
    assert [r.energy_kwh for r in readings if r.channel is None] == [pytest.approx(2.002), pytest.approx(2.002)]
    text = " ".join(errors)
    assert "jumped" in text and "missing, earlier telegrams had it" in text


def test_telegrams_arriving_in_one_poll_keep_their_own_times_and_none_is_a_duplicate(p1_line):
    from edge_agent.window import IntervalWindow

    data = b"".join(telegram(1.0 + i / 1000, 0.0, 0.5, second=i) for i in range(5))
    readings, _ = read_all(p1_line, data, 5)
    assert [r.ts - NOW for r in readings] == [0.0, 1.0, 2.0, 3.0, 4.0]
    intake = IntervalWindow(900).accept(readings)
    assert len(intake.accepted) == 5 and intake.duplicates == 0


def test_a_meter_clock_far_off_the_gateway_clock_is_not_used(p1_line):
    readings, errors = read_all(p1_line, fx.TELEGRAM_V4_2.encode(), 2, version=4, max_skew_s=86400)
    elec, gas = readings
    assert errors == []
    assert elec.ts == NOW and gas.ts == NOW   # the 2016 meter time is years off: the gateway's clock instead


def test_a_stray_0xdb_byte_in_line_noise_does_not_hold_up_the_telegrams_behind_it(p1_line):
    data = b"\xdb\x00\x82\xff\xff" + fx.TELEGRAM_V5.encode() + b"\xdb\x08" + b"\x00" * 8 + b"\x83\x01\x02\x03" + \
        fx.TELEGRAM_V4_2.encode()
    readings, errors = read_all(p1_line, data, 4)
    elec = [r for r in readings if r.channel is None]
    assert [r.energy_kwh for r in elec] == [pytest.approx(6.825), pytest.approx(3016.829)]
    assert any("garbage" in e for e in errors)
