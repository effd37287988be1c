"""The technician's fleet workspace: CA, broker account files and one folder per gateway.

Layout (everything offline; copy the folder to a laptop and provision in the field)::

    FLEET/ca/ca.key, ca.crt                      fleet CA (the key never leaves this folder)
    FLEET/broker/passwd, acl                     Mosquitto password and ACL files
    FLEET/broker/server.crt, server.key          the broker's TLS certificate
    FLEET/broker/accounts.json                   which broker users are collectors
    FLEET/gateways/{id}/gateway.json             identity, broker URL, bound meters
    FLEET/gateways/{id}/client.crt, client.key   the gateway's key pair and certificate
    FLEET/gateways/{id}/mqtt.password            its broker password
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioning import broker
from provisioning.ca import FleetCA, ProvisionError
from gridsight.wire import WireError, validate_gateway_id

__all__ = ["Fleet", "GatewayIdentity", "MeterBinding"]


@dataclass
class MeterBinding:
    """One meter on a gateway: how to read it (a ``[[readers]]`` table) and where it is."""

    meter_id: str
    reader: dict[str, Any]
    site: str | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass
class GatewayIdentity:
    gateway_id: str
    broker_url: str
    created_at: float
    meters: list[MeterBinding] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GatewayIdentity":
        raw = json.loads(text)
        raw["meters"] = [MeterBinding(**m) for m in raw.get("meters", [])]
        return cls(**raw)


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


class Fleet:
    """One fleet workspace folder. Every change rewrites the broker's password and ACL files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.ca_dir = self.root / "ca"
        self.broker_dir = self.root / "broker"
        self.gateways_dir = self.root / "gateways"

    @property
    def passwd_file(self) -> Path:
        return self.broker_dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.broker_dir / "acl"

    def ca(self) -> FleetCA:
        return FleetCA.load(self.ca_dir)

    # ------------------------------------------------------------------ accounts
    def _collectors(self) -> list[str]:
        path = self.broker_dir / "accounts.json"
        return json.loads(path.read_text())["collectors"] if path.exists() else []

    def gateway_ids(self) -> list[str]:
        if not self.gateways_dir.exists():
            return []
        return sorted(p.name for p in self.gateways_dir.iterdir() if (p / "gateway.json").exists())

    def _refresh_acl(self) -> None:
        broker.write_acl(self.acl_file, self.gateway_ids(), self._collectors())

    def add_collector(self, username: str = "collector", replica: str | None = None) -> str:
        """A broker account (password + client certificate in ``broker/{username}/``) that reads
        every gateway's topics; returns its new password. With ``replica`` the account is
        ``{username}-{replica}``: the broker binds client ids to accounts, so every collector
        replica (and every model publisher) needs an account of its own."""
        if replica is not None:
            username = f"{username}-{replica}"
        try:
            validate_gateway_id(username)
        except WireError:
            raise ProvisionError(f"invalid collector username {username!r}") from None
        if username in self.gateway_ids():
            raise ProvisionError(f"{username} is a gateway id; choose another collector username")
        password = secrets.token_urlsafe(24)
        self.ca().issue_client(username, self.broker_dir / username)
        broker.set_password(self.passwd_file, username, password)
        collectors = sorted(set(self._collectors()) | {username})
        self.broker_dir.mkdir(parents=True, exist_ok=True)
        (self.broker_dir / "accounts.json").write_text(json.dumps({"collectors": collectors}))
        _write_secret(self.broker_dir / f"{username}.password", password)
        self._refresh_acl()
        return password

    # ------------------------------------------------------------------ gateways
    def gateway_dir(self, gateway_id: str) -> Path:
        return self.gateways_dir / gateway_id

    def create_gateway(self, gateway_id: str, broker_url: str, now: float | None = None) -> GatewayIdentity:
        try:
            validate_gateway_id(gateway_id)
        except WireError as exc:
            raise ProvisionError(f"gateway id: {exc.reason}") from None
        if gateway_id == "fleet" or gateway_id in self._collectors():
            raise ProvisionError(f"{gateway_id!r} is reserved")
        if not broker_url.startswith(("mqtts://", "mqtt://")):
            raise ProvisionError(f"broker URL {broker_url!r} must be mqtts://host:port (or mqtt:// for tests)")
        folder = self.gateway_dir(gateway_id)
        if (folder / "gateway.json").exists():
            raise ProvisionError(f"gateway {gateway_id} already exists in {self.root}")
        ca = self.ca()
        folder.mkdir(parents=True, exist_ok=True)
        ca.issue_client(gateway_id, folder)
        password = secrets.token_urlsafe(24)
        _write_secret(folder / "mqtt.password", password)
        broker.set_password(self.passwd_file, gateway_id, password)
        identity = GatewayIdentity(gateway_id, broker_url, time.time() if now is None else now)
        (folder / "gateway.json").write_text(identity.to_json())
        self._refresh_acl()
        return identity

    def load_gateway(self, gateway_id: str) -> GatewayIdentity:
        path = self.gateway_dir(gateway_id) / "gateway.json"
        if not path.exists():
            raise ProvisionError(f"no gateway {gateway_id!r} in {self.root}: run 'gridsight provision gateway' first")
        return GatewayIdentity.from_json(path.read_text())

    def save_gateway(self, identity: GatewayIdentity) -> None:
        (self.gateway_dir(identity.gateway_id) / "gateway.json").write_text(identity.to_json())

    def bind_meter(self, gateway_id: str, binding: MeterBinding) -> GatewayIdentity:
        identity = self.load_gateway(gateway_id)
        for other in self.gateway_ids():
            if other != gateway_id and any(m.meter_id == binding.meter_id for m in self.load_gateway(other).meters):
                raise ProvisionError(f"meter {binding.meter_id} is already bound to gateway {other}")
        identity.meters = [m for m in identity.meters if m.meter_id != binding.meter_id] + [binding]
        self.save_gateway(identity)
        return identity

    def revoke_gateway(self, gateway_id: str) -> None:
        """Remove the gateway's broker account and ACL entry; its folder is kept, marked revoked."""
        folder = self.gateway_dir(gateway_id)
        if not (folder / "gateway.json").exists():
            raise ProvisionError(f"no gateway {gateway_id!r} in {self.root}")
        broker.remove_password(self.passwd_file, gateway_id)
        os.replace(folder / "gateway.json", folder / "gateway.revoked.json")
        self._refresh_acl()
