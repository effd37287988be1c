"""DLMS/COSEM general-global-cipher frames (tag 0xDB): Luxembourg's P1 and Austria's HAN ports.

A frame is ``DB``, the system-title length and title (8 bytes), the length of the rest (BER:
one byte, or ``81 nn`` / ``82 nn nn``), the security control byte, the 4-byte frame counter,
the ciphertext and, when authenticated, a 12-byte GCM tag (DLMS security suite 0, AES-128-GCM;
IV = system title + frame counter). Security control 0x30 means encrypted and authenticated
(additional data: 0x30 + the authentication key); 0x20 encrypted only (AES-GCM without a tag,
i.e. CTR from counter 2), as Austrian grid operators send it.
"""

from __future__ import annotations

from edge_agent.readers.base import ReaderError

__all__ = ["frame_length", "decrypt_general_glo_cipher", "LUXEMBOURG_AUTH_KEY", "parse_hex_key"]

# Luxmetering E-Meter P1 specification 1.1.3, 3.2.5: the authentication key every Smarty shares.
LUXEMBOURG_AUTH_KEY = "00112233445566778899AABBCCDDEEFF"


MAX_FRAME = 4096  # a P1 or HAN frame is ~1 kB; a longer "frame" is a 0xDB byte in line noise


def frame_length(buf: bytes) -> int | None:
    """Total length of a general-global-cipher frame starting at buf[0] (0xDB), None if incomplete,
    0 if buf[0] cannot start one (a system title is 8 bytes; the length is bounded)."""
    if len(buf) < 2:
        return None
    if buf[1] != 8:
        return 0
    pos = 2 + buf[1]  # tag, system-title length, system title
    if len(buf) < pos + 1:
        return None
    first = buf[pos]
    if first < 0x80:
        return pos + 1 + first
    width = first & 0x7F
    if width > 2:
        return 0
    if len(buf) < pos + 1 + width:
        return None
    total = pos + 1 + width + int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
    return total if total <= MAX_FRAME else 0


def decrypt_general_glo_cipher(frame: bytes, key: bytes, auth_key: bytes | None) -> bytes:
    """The plaintext of one general-global-cipher frame; :class:`ReaderError` if it does not decrypt."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    title_len = frame[1]
    system_title = frame[2 : 2 + title_len]
    pos = 2 + title_len
    width = frame[pos] & 0x7F if frame[pos] >= 0x80 else 0
    pos += 1 + width
    if len(frame) < pos + 5:
        raise ReaderError("encrypted frame too short")
    security, counter = frame[pos], frame[pos + 1 : pos + 5]
    body = frame[pos + 5 :]
    iv = system_title + counter
    try:
        if security & 0x10:  # authenticated: a 12-byte tag over security byte + authentication key
            if len(body) < 13:
                raise ReaderError("encrypted frame too short")
            if auth_key is None:
                raise ReaderError("authenticated frame: set authentication_key")
            ciphertext, tag = body[:-12], body[-12:]
            decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=12)).decryptor()
            decryptor.authenticate_additional_data(bytes([security]) + auth_key)
            return decryptor.update(ciphertext) + decryptor.finalize()
        ctr = Cipher(algorithms.AES(key), modes.CTR(iv + (2).to_bytes(4, "big"))).decryptor()
        return ctr.update(body) + ctr.finalize()
    except InvalidTag:
        raise ReaderError(
            "encrypted frame does not authenticate: wrong decryption_key or authentication_key?"
        ) from None
    except ValueError as exc:
        raise ReaderError(f"encrypted frame cannot be decrypted ({exc})") from None


def parse_hex_key(text: str | None, key: str) -> bytes | None:
    """A 16-byte AES key from 32 hex digits (spaces and colons allowed); ConfigError naming ``key``."""
    import re

    from gridsight.settings import ConfigError

    if text is None:
        return None
    clean = text.replace(" ", "").replace(":", "")
    if not re.fullmatch(r"[0-9A-Fa-f]{32}", clean):
        raise ConfigError(key, "must be 32 hex digits (a 16-byte AES key)")
    return bytes.fromhex(clean)
