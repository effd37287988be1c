"""The fleet certificate authority: one self-signed CA per fleet that signs the broker's server
certificate and every gateway's client certificate.

The CA key stays on the provisioning workstation (mode 0600); gateways only ever receive the
CA certificate, their own key and their own certificate. EC P-256 keys: small and fast enough
for a Pi's TLS handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridsight.errors import ProvisionError
from gridsight.tls import cert_fingerprint

__all__ = ["FleetCA", "ProvisionError", "write_private_key", "new_key", "cert_fingerprint"]


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a PEM key readable by its owner only (created 0600, never world-readable in between)."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class FleetCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @staticmethod
    def paths(ca_dir: Path) -> tuple[Path, Path]:
        return ca_dir / "ca.key", ca_dir / "ca.crt"

    @classmethod
    def init(cls, ca_dir: Path, name: str = "gridsight fleet CA", days: int = 3650) -> "FleetCA":
        key_path, cert_path = cls.paths(ca_dir)
        if key_path.exists() or cert_path.exists():
            raise ProvisionError(f"a fleet CA already exists in {ca_dir}; refusing to overwrite it")
        ca_dir.mkdir(parents=True, exist_ok=True)
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridsight")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        write_private_key(key_path, key)
        _write_cert(cert_path, cert)
        return cls(key, cert)

    @classmethod
    def load(cls, ca_dir: Path) -> "FleetCA":
        key_path, cert_path = cls.paths(ca_dir)
        if not key_path.exists() or not cert_path.exists():
            raise ProvisionError(f"no fleet CA in {ca_dir}: run 'gridsight provision ca init' first")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError as exc:
            raise ProvisionError(f"fleet CA in {ca_dir} is unreadable ({exc})") from None
        return cls(key, cert)

    def _issue(self, common_name: str, public_key, days: int, usage, sans: list[x509.GeneralName]) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridsight")]))
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=True, data_encipherment=False, key_agreement=True,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_client(self, common_name: str, out_dir: Path, days: int = 3650) -> tuple[Path, Path]:
        """A key pair and client certificate for ``common_name`` (a gateway id or the collector)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        key = new_key()
        cert = self._issue(common_name, key.public_key(), days, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        write_private_key(out_dir / "client.key", key)
        _write_cert(out_dir / "client.crt", cert)
        return out_dir / "client.crt", out_dir / "client.key"

    def issue_server(self, hosts: list[str], out_dir: Path, days: int = 825) -> tuple[Path, Path]:
        """The broker's TLS server certificate for the given host names and IP addresses."""
        if not hosts:
            raise ProvisionError("give at least one --host the gateways use to reach the broker")
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        out_dir.mkdir(parents=True, exist_ok=True)
        key = new_key()
        cert = self._issue(hosts[0], key.public_key(), days, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        write_private_key(out_dir / "server.key", key)
        _write_cert(out_dir / "server.crt", cert)
        return out_dir / "server.crt", out_dir / "server.key"
