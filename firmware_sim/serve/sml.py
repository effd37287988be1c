"""A German eHZ meter pushing SML files (SML 1.04 transport v1) on a pseudo-terminal.

Each file holds an ``SML_PublicOpen.Res``, an ``SML_GetList.Res`` with the meter's values as OBIS
entries (unit, scaler, value), and an ``SML_PublicClose.Res``, framed by the escape sequences
and the CRC16/X-25. ``bad_crc_every`` and ``truncate_every`` spoil every n-th file on purpose.
"""

from __future__ import annotations

from edge_agent.readers.sml import END, START
from edge_agent.readers.stream import crc16_x25

__all__ = ["sml_file", "encode_value_list"]

_WH, _W, _V, _A = 30, 27, 35, 33


def _octets(data: bytes) -> bytes:
    n = len(data) + 1
    if n < 16:
        return bytes([n]) + data
    n += 1
    return bytes([0x80 | (n >> 4), n & 0x0F]) + data


def _uint(value: int, size: int) -> bytes:
    return bytes([0x60 | (size + 1)]) + value.to_bytes(size, "big")


def _int(value: int, size: int) -> bytes:
    return bytes([0x50 | (size + 1)]) + value.to_bytes(size, "big", signed=True)


def _list(*items: bytes) -> bytes:
    return bytes([0x70 | len(items)]) + b"".join(items)


_EMPTY = b"\x01"


def _message(transaction: bytes, tag: int, body: bytes) -> bytes:
    head = _list(_octets(transaction), _uint(0, 1), _uint(0, 1), _list(_uint(tag, 2), body))
    # the message list has 6 elements: rewrite its TL byte, then append crc16 and end-of-message
    head = bytes([0x76]) + head[1:]
    return head + _uint(crc16_x25(head), 2) + b"\x00"


def _entry(obis: tuple[int, ...], unit: int | None, scaler: int, value: int, signed: bool = False) -> bytes:
    return _list(_octets(bytes(obis)), _EMPTY, _EMPTY, _uint(unit, 1) if unit is not None else _EMPTY,
                 _int(scaler, 1), _int(value, 8) if signed else _uint(value, 8), _EMPTY)


def encode_value_list(v: dict) -> list[bytes]:
    """SML value-list entries for meter values ``v`` (kWh, W, V, A as in :func:`firmware_sim.serve.meter_values`)."""
    entries = [_entry((1, 0, 1, 8, 0, 255), _WH, -1, round(v["energy_kwh"] * 10_000))]
    if v.get("import_t1_kwh") is not None:
        entries += [_entry((1, 0, 1, 8, 1, 255), _WH, -1, round(v["import_t1_kwh"] * 10_000)),
                    _entry((1, 0, 1, 8, 2, 255), _WH, -1, round(v["import_t2_kwh"] * 10_000))]
    if v.get("export_kwh") is not None:
        entries.append(_entry((1, 0, 2, 8, 0, 255), _WH, -1, round(v["export_kwh"] * 10_000)))
    entries.append(_entry((1, 0, 16, 7, 0, 255), _W, 0, round(v["power_w"]), signed=True))
    for n, (volt, cur, watts) in enumerate(v.get("phases") or [], start=1):
        c = {1: 32, 2: 52, 3: 72}[n]
        entries += [_entry((1, 0, c, 7, 0, 255), _V, -1, round(volt * 10)),
                    _entry((1, 0, c - 1, 7, 0, 255), _A, -2, round(cur * 100)),
                    _entry((1, 0, c + 4, 7, 0, 255), _W, 0, round(watts), signed=True)]
    return entries


def sml_file(server_id: bytes, v: dict, n: int = 1, *, corrupt_crc: bool = False) -> bytes:
    """One SML file (escapes, messages, padding, end escape, CRC) for meter values ``v``."""
    tid = n.to_bytes(4, "big")
    open_res = _list(_EMPTY, _EMPTY, _octets(tid), _octets(server_id), _EMPTY, _EMPTY)
    get_list = _list(_EMPTY, _octets(server_id), _EMPTY, _EMPTY, _list(*encode_value_list(v)), _EMPTY, _EMPTY)
    close_res = _list(_EMPTY)
    body = (_message(tid + b"\x01", 0x0101, open_res) + _message(tid + b"\x02", 0x0701, get_list)
            + _message(tid + b"\x03", 0x0201, close_res))
    pad = (-len(body)) % 4
    data = START + body + b"\x00" * pad + END + bytes([pad])
    crc = crc16_x25(data) ^ (0x5A5A if corrupt_crc else 0)
    return data + crc.to_bytes(2, "big")
