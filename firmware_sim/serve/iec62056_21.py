"""A meter answering IEC 62056-21 mode C readouts (optical D0 head) on a pseudo-terminal.

It waits for ``/?!\\r\\n`` (or ``/?ADDRESS!\\r\\n``), answers its identification offering 9600 baud
(``Z`` = 5), waits for the ACK option select and sends the data block: STX, OBIS data lines,
``!\\r\\n``, ETX and the BCC. ``values()`` supplies the register values at that moment (see
:func:`firmware_sim.serve.meter_values`). ``bad_bcc_every`` corrupts every n-th block on purpose.
"""

from __future__ import annotations

from typing import Callable

from edge_agent.readers.iec62056_21 import ACK, ETX, STX, bcc

__all__ = ["ModeCMeter", "data_block"]


def data_block(serial: str, v: dict) -> bytes:
    """The data lines a three-phase (or single-phase) meter reads out for values ``v``."""
    lines = [f"0.0.0({serial})", f"1.8.0({v['energy_kwh']:010.3f}*kWh)"]
    if v.get("import_t1_kwh") is not None:
        lines += [f"1.8.1({v['import_t1_kwh']:010.3f}*kWh)", f"1.8.2({v['import_t2_kwh']:010.3f}*kWh)"]
    if v.get("export_kwh") is not None:
        lines.append(f"2.8.0({v['export_kwh']:010.3f}*kWh)")
    power = v["power_w"]
    lines += [f"1.7.0({max(power, 0.0) / 1000:07.3f}*kW)", f"2.7.0({max(-power, 0.0) / 1000:07.3f}*kW)"]
    for n, (volt, cur) in enumerate(v.get("phases_vi") or [(v["voltage_v"], v["current_a"])], start=1):
        c = {1: 31, 2: 51, 3: 71}[n]
        lines += [f"{c + 1}.7.0({volt:05.1f}*V)", f"{c}.7.0({cur:06.2f}*A)"]
    lines.append("0.9.1(120000)")
    return ("\r\n".join(lines) + "\r\n!\r\n").encode("ascii")


class ModeCMeter:
    """The meter side of a mode C exchange; feed it what the head writes, send what it returns."""

    def __init__(self, serial: str, values: Callable[[], dict | None], *, address: str = "",
                 bad_bcc_every: int = 0) -> None:
        self.serial = serial
        self.values = values
        self.address = address
        self.bad_bcc_every = bad_bcc_every
        self.readouts = 0
        self._buffer = b""
        self._awaiting_ack = False

    def __call__(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            if line.startswith(b"/?") and line.endswith(b"!"):
                if line[2:-1].decode("ascii", errors="replace").strip() in ("", self.address):
                    self._awaiting_ack = True
                    out += b"/GSM5GRIDSIGHT-MODE-C\r\n"
            elif line.startswith(ACK) and self._awaiting_ack:
                self._awaiting_ack = False
                v = self.values()
                if v is None:
                    continue
                self.readouts += 1
                body = data_block(self.serial, v) + ETX
                check = bcc(body) ^ (0x55 if self.bad_bcc_every and self.readouts % self.bad_bcc_every == 0 else 0)
                out += STX + body + bytes([check])
        return out
