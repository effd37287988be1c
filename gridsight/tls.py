"""Certificate facts every role agrees on. Standard library only: the gateway imports it."""

from __future__ import annotations

import hashlib
import ssl

__all__ = ["cert_fingerprint"]


def cert_fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate's DER form, hex: what enrollment records for a gateway."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a PEM certificate ({exc})") from None
    return hashlib.sha256(der).hexdigest()
