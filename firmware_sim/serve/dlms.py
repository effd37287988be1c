"""A HAN port pushing DLMS/COSEM DataNotifications in HDLC frames (Aidon-style self-describing lists).

The list is an array of ``{OBIS, value, {scaler, unit}}`` structures, A-XDR encoded here (not by
the library the reader decodes with), wrapped in LLC ``E6 E7 00`` and an HDLC UI frame with HCS
and FCS. With ``key`` the APDU is sent as a general-global-cipher frame (AES-128-GCM, security
0x30 with ``auth_key``, or 0x20 encryption only, as Austrian operators send it).
"""

from __future__ import annotations

from edge_agent.readers.stream import crc16_x25

__all__ = ["push_frame", "data_notification", "encrypt_apdu"]

_W, _WH, _V, _A = 27, 30, 35, 33


def _octets(data: bytes) -> bytes:
    return b"\x09" + bytes([len(data)]) + data


def _struct(*items: bytes) -> bytes:
    return b"\x02" + bytes([len(items)]) + b"".join(items)


def _register(obis: tuple[int, ...], value: bytes, scaler: int, unit: int) -> bytes:
    return _struct(_octets(bytes(obis)), value, _struct(b"\x0f" + scaler.to_bytes(1, "big", signed=True),
                                                        b"\x16" + bytes([unit])))


def _u32(v: int) -> bytes:
    return b"\x06" + int(v).to_bytes(4, "big")


def _i32(v: int) -> bytes:
    return b"\x05" + int(v).to_bytes(4, "big", signed=True)


def _u16(v: int) -> bytes:
    return b"\x12" + int(v).to_bytes(2, "big")


def data_notification(meter_id: str, v: dict, invoke_id: int = 1) -> bytes:
    """A DataNotification APDU (no date-time) listing meter values ``v``."""
    items = [_struct(_octets(bytes((0, 0, 96, 1, 0, 255))), _octets(meter_id.encode("ascii")))]
    items.append(_register((1, 0, 1, 8, 0, 255), _u32(round(v["energy_kwh"] * 1000)), 0, _WH))
    if v.get("export_kwh") is not None:
        items.append(_register((1, 0, 2, 8, 0, 255), _u32(round(v["export_kwh"] * 1000)), 0, _WH))
    items.append(_register((1, 0, 1, 7, 0, 255), _u32(round(max(v["power_w"], 0.0))), 0, _W))
    items.append(_register((1, 0, 2, 7, 0, 255), _u32(round(max(-v["power_w"], 0.0))), 0, _W))
    for n, (volt, cur, watts) in enumerate(v.get("phases") or [(v["voltage_v"], v["current_a"], v["power_w"])], 1):
        c = {1: 32, 2: 52, 3: 72}[n]
        items.append(_register((1, 0, c, 7, 0, 255), _u16(round(volt * 10)), -1, _V))
        items.append(_register((1, 0, c - 1, 7, 0, 255), _i32(round(cur * 100)), -2, _A))
    body = b"\x01" + bytes([len(items)]) + b"".join(items)
    return b"\x0f" + invoke_id.to_bytes(4, "big") + b"\x00" + body


def encrypt_apdu(apdu: bytes, key: bytes, auth_key: bytes | None, counter: int,
                 system_title: bytes = b"GSM\x00\x00\x00\x00\x01") -> bytes:
    """A general-global-cipher frame of ``apdu`` (0x30 with ``auth_key``, else 0x20)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = system_title + counter.to_bytes(4, "big")
    if auth_key is not None:
        enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
        enc.authenticate_additional_data(b"\x30" + auth_key)
        body = b"\x30" + counter.to_bytes(4, "big") + enc.update(apdu) + enc.finalize() + enc.tag[:12]
    else:
        enc = Cipher(algorithms.AES(key), modes.CTR(iv + (2).to_bytes(4, "big"))).encryptor()
        body = b"\x20" + counter.to_bytes(4, "big") + enc.update(apdu) + enc.finalize()
    length = bytes([len(body)]) if len(body) < 0x80 else b"\x82" + len(body).to_bytes(2, "big")
    return b"\xdb" + bytes([len(system_title)]) + system_title + length + body


def push_frame(apdu: bytes, *, segment_size: int = 0, corrupt_fcs: bool = False) -> bytes:
    """HDLC UI frame(s) carrying LLC + ``apdu``; with ``segment_size`` split into segmented frames."""
    info = b"\xe6\xe7\x00" + apdu
    parts = [info[i:i + segment_size] for i in range(0, len(info), segment_size)] if segment_size else [info]
    out = b""
    for k, part in enumerate(parts):
        segmented = k < len(parts) - 1
        header_rest = b"\x41\x08\x83\x13"  # dest, src (2 bytes), control UI
        length = 2 + len(header_rest) + 2 + len(part) + 2
        fmt = (0xA000 | (0x0800 if segmented else 0) | length).to_bytes(2, "big")
        head = fmt + header_rest
        frame = head + crc16_x25(head).to_bytes(2, "little") + part
        fcs = crc16_x25(frame) ^ (0x5A5A if corrupt_fcs else 0)
        out += b"\x7e" + frame + fcs.to_bytes(2, "little") + b"\x7e"
    return out
