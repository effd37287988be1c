"""Ed25519 signing of model files: the operator holds the private key, gateways pin the public key.

A signature file holds the raw 64-byte Ed25519 signature over the model file's bytes (the
gateway also accepts it base64-encoded). Verification lives on the gateway side in
:mod:`edge_agent.model_update`, which needs only ``cryptography``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gridsight.errors import GridsightError

__all__ = ["SigningError", "generate_keypair", "load_private_key", "sign_bytes", "sign_file"]


class SigningError(GridsightError, ValueError):
    """A key or file that cannot be used for signing; the message says which and why."""


def generate_keypair(private_path: str | Path, public_path: str | Path) -> None:
    """Create a new Ed25519 key pair as PEM files; the private one is written with mode 0600."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path, public_path = Path(private_path), Path(public_path)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningError(f"{p}: private key file does not exist") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"{p}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{p}: not an Ed25519 key")
    return key


def sign_bytes(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return key.sign(data)


def sign_file(model_path: str | Path, private_key_path: str | Path, out: str | Path | None = None) -> Path:
    """Write the raw signature of ``model_path`` to ``out`` (default ``MODEL.sig``)."""
    model = Path(model_path)
    try:
        data = model.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{model}: model file does not exist") from None
    signature = sign_bytes(data, load_private_key(private_key_path))
    target = Path(out) if out else model.with_name(model.name + ".sig")
    target.write_bytes(signature)
    return target
