"""Simulated meters as a DSMR 5 P1 port: telegrams with a valid CRC16 on a pseudo-terminal.

A P1 port pushes a telegram every second (DSMR 5) at 115200 baud, 8N1. Here a thread writes
one telegram per ``period_s`` of the given clock to the master side of a pty; the agent's
DSMR reader opens the slave path (``DsmrP1Port.device``) like a USB P1 cable. The telegram
carries what the simulated meter has (:func:`firmware_sim.serve.meter_values`): both tariff
registers and the active tariff of dual-tariff homes (else all import on tariff 1), the export
registers of PV homes, per-phase voltage, current and power of three-phase meters, and the gas
meter of gas-heated homes on M-Bus channel 1. Times are local Dutch time with the W/S flag.

Malformed telegrams on purpose: ``bad_crc_every`` (wrong checksum), ``truncate_every`` (cut
off mid-line, as when a cable is pulled) and ``garbage_every`` (line noise between telegrams).
"""

from __future__ import annotations

import os
import threading
import time
import tty
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from edge_agent.clock import Clock
from firmware_sim.meter import SimulatedMeter
from firmware_sim.serve import meter_values

__all__ = ["crc16_arc", "telegram", "DsmrP1Port"]

_NL = ZoneInfo("Europe/Amsterdam")


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected, init 0), the P1 telegram checksum."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _dsmr_time(ts: float) -> str:
    local = datetime.fromtimestamp(ts, timezone.utc).astimezone(_NL)
    return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")


def telegram(meter_id: str, values: dict[str, float], *, corrupt_crc: bool = False) -> bytes:
    """One DSMR 5.0 telegram for ``values`` (see :func:`firmware_sim.serve.meter_values`)."""
    power_kw = values["power_w"] / 1000.0
    serial = meter_id.encode().hex().upper()
    t1 = values.get("import_t1_kwh", values["energy_kwh"])
    t2 = values.get("import_t2_kwh", 0.0)
    export = values.get("export_kwh", 0.0)
    lines = [
        "/GSIM5\\2SIM630-1000", "",
        "1-3:0.2.8(50)",
        f"0-0:1.0.0({_dsmr_time(values['ts'])})",
        f"0-0:96.1.1({serial})",
        f"1-0:1.8.1({t1:010.3f}*kWh)",
        f"1-0:1.8.2({t2:010.3f}*kWh)",
        f"1-0:2.8.1({export:010.3f}*kWh)",
        "1-0:2.8.2(000000.000*kWh)",
        f"0-0:96.14.0({int(values.get('tariff', 1)):04d})",
        f"1-0:1.7.0({max(power_kw, 0.0):06.3f}*kW)",
        f"1-0:2.7.0({max(-power_kw, 0.0):06.3f}*kW)",
        "0-0:96.7.21(00001)",
        "0-0:96.7.9(00000)",
        "1-0:32.32.0(00000)",
        "1-0:32.36.0(00000)",
        "0-0:96.13.0()",
    ]
    phases = values.get("phases") or [(values["voltage_v"], values["current_a"], values["power_w"])]
    for n, (volt, amps, watts) in enumerate(phases):
        v_code, i_code, p_code = (32 + 20 * n, 31 + 20 * n, 21 + 20 * n)
        lines += [f"1-0:{v_code}.7.0({volt:05.1f}*V)", f"1-0:{i_code}.7.0({round(amps):03d}*A)",
                  f"1-0:{p_code}.7.0({max(watts, 0.0) / 1000:06.3f}*kW)",
                  f"1-0:{p_code + 1}.7.0({max(-watts, 0.0) / 1000:06.3f}*kW)"]
    if values.get("gas_m3") is not None:
        lines += ["0-1:24.1.0(003)", f"0-1:96.1.0({(meter_id + '-gas').encode().hex().upper()})",
                  f"0-1:24.2.1({_dsmr_time(values['gas_ts'])})({values['gas_m3']:09.3f}*m3)"]
    body = ("\r\n".join(lines) + "\r\n!").encode("ascii")
    crc = crc16_arc(body) ^ (0x5A5A if corrupt_crc else 0)
    return body + f"{crc:04X}\r\n".encode("ascii")


class DsmrP1Port:
    """A pty emitting one meter's telegrams every ``period_s`` clock seconds until :meth:`stop`."""

    def __init__(self, meter: SimulatedMeter, clock: Clock, *, period_s: float = 10.0, bad_crc_every: int = 0,
                 truncate_every: int = 0, garbage_every: int = 0) -> None:
        self.meter = meter
        self.clock = clock
        self.period_s = period_s
        self.bad_crc_every, self.truncate_every, self.garbage_every = bad_crc_every, truncate_every, garbage_every
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)           # a P1 cable is a raw serial line: no CR/LF translation, no echo
        self.device = os.ttyname(self._slave)
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def frame(self, n: int, now: float) -> bytes:
        """The bytes of the ``n``-th transmission (1-based) at clock time ``now``."""
        values = meter_values(self.meter, now)
        if values is None:
            return b""
        data = telegram(self.meter.meter_id, values, corrupt_crc=bool(self.bad_crc_every and n % self.bad_crc_every == 0))
        if self.truncate_every and n % self.truncate_every == 0:
            data = data[: len(data) // 2]
        if self.garbage_every and n % self.garbage_every == 0:
            data = b"\x00\xff~~noise~~\xfe" + data
        return data

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            data = self.frame(self.sent, self.clock.now())
            try:
                os.write(self._master, data)
            except OSError:
                return
            waited = getattr(self.clock, "wait", None)
            if waited is not None:
                if waited(self._stop, self.period_s):
                    return
            else:
                time.sleep(0.05)

    def start(self) -> "DsmrP1Port":
        self._thread = threading.Thread(target=self._run, name="dsmr-p1", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "DsmrP1Port":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
