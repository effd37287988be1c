"""Meters on a wired M-Bus (EN 13757-2/-3) answering REQ_UD2 with RSP_UD long frames, on a pseudo-terminal.

Each unit is (primary address, secondary id, medium, values()). Records: energy (int32, Wh),
a stored (historic) energy record the reader must skip, power (int32, W), voltage (int16, 0.1 V,
VIF FD 48), current (int16, mA, VIF FD 59) for electricity; volume (BCD8, litres) for gas and
water. ``SND_NKE`` is acknowledged with ``E5``; unknown addresses stay silent, like a real bus.
``bad_checksum_every`` spoils every n-th answer on purpose.
"""

from __future__ import annotations

from typing import Callable

from edge_agent.readers.mbus import ACK, checksum

__all__ = ["MbusBus", "rsp_ud"]

MEDIUM = {"electricity": 0x02, "gas": 0x03, "water": 0x07, "heat": 0x04}


def _bcd(value: int, size: int) -> bytes:
    digits = f"{value:0{size * 2}d}"[-size * 2:]
    return bytes.fromhex(digits)[::-1]


def rsp_ud(address: int, ident: int, medium: str, v: dict, *, access: int = 1, corrupt: bool = False) -> bytes:
    """One RSP_UD long frame for ``v`` (electricity: energy_kwh, power_w, voltage_v, current_a; gas/water: volume_m3)."""
    header = _bcd(ident, 4) + b"\xa7\x1c" + b"\x01" + bytes([MEDIUM[medium], access & 0xFF, 0x00]) + b"\x00\x00"
    if medium in ("gas", "water"):
        records = b"\x0c\x13" + _bcd(round(v["volume_m3"] * 1000), 4)
    else:
        wh = round(v["energy_kwh"] * 1000)
        records = (b"\x04\x03" + wh.to_bytes(4, "little")
                   + b"\x44\x03" + max(wh - 5000, 0).to_bytes(4, "little")            # storage 1: last month
                   + b"\x04\x2b" + round(v["power_w"]).to_bytes(4, "little", signed=True)
                   + b"\x02\xfd\x48" + round(v["voltage_v"] * 10).to_bytes(2, "little", signed=True)
                   + b"\x02\xfd\x59" + round(v["current_a"] * 1000).to_bytes(2, "little", signed=True))
    user = bytes([0x08, address, 0x72]) + header + records
    cs = checksum(user) ^ (0x5A if corrupt else 0)
    return bytes([0x68, len(user), len(user), 0x68]) + user + bytes([cs, 0x16])


class MbusBus:
    """The slaves of one bus; call it with what the master writes, send back what it returns."""

    def __init__(self, units: dict[int, tuple[int, str, Callable[[], dict | None]]], *, bad_checksum_every: int = 0) -> None:
        self.units = units
        self.bad_checksum_every = bad_checksum_every
        self.answers = 0
        self._buffer = b""

    def __call__(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while len(self._buffer) >= 5:
            start = self._buffer.find(b"\x10")
            if start < 0:
                self._buffer = b""
                break
            frame, self._buffer = self._buffer[start:start + 5], self._buffer[start + 5:]
            if len(frame) < 5 or frame[4] != 0x16 or checksum(frame[1:3]) != frame[3]:
                continue
            c, address = frame[1], frame[2]
            unit = self.units.get(address)
            if unit is None:
                continue
            if c == 0x40:
                out += bytes([ACK])
            elif c in (0x5B, 0x7B):
                ident, medium, values = unit
                v = values()
                if v is None:
                    continue
                self.answers += 1
                bad = bool(self.bad_checksum_every and self.answers % self.bad_checksum_every == 0)
                out += rsp_ud(address, ident, medium, v, access=self.answers, corrupt=bad)
        return out
