"""A flashable bundle for one gateway: a folder and a tarball to copy to its config directory.

Contents (installed as ``install_dir``, default ``/etc/gridsight``)::

    agent.toml                 agent config: gateway id, broker URL and credentials, readers, model
    ca.crt                     the fleet CA (the broker's certificate must chain to it)
    client.crt, client.key     the gateway's own certificate and key (0600)
    meters.json                bound meters with site and location, for the registry
    model.onnx[.sig]           the anomaly model and its Ed25519 signature, when given
    model_public.pem           the key that must have signed every model the gateway accepts
    gridsight-agent.service    the systemd unit
    enroll.token               one-time enrollment token, when given
    MANIFEST.json              SHA-256 of every file, checked by 'gridsight provision doctor'
    wheelhouse/                with --wheelhouse: the agent's wheels for the gateway's platform and
                               install.py, for an offline install (see provisioning/wheelhouse.py)

Secret files (config with the broker password, client key, token) are mode 0640 and, in the
tarball, owned by root with group ``gridsight``: the agent's service user (see the systemd
unit) can read them, nobody else on the gateway can. Install with
``tar -xzf BUNDLE.tar.gz --same-owner -C /etc/gridsight --strip-components=1`` as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from provisioning.ca import ProvisionError
from provisioning.fleet import Fleet

__all__ = ["write_bundle", "find_systemd_unit", "agent_config_toml", "SECRET_FILES"]

SECRET_FILES = ("agent.toml", "client.key", "enroll.token")
SERVICE_GROUP = "gridsight"      # the agent's system user and group in deploy/systemd/gridsight-agent.service
_SECRET_MODE = 0o640
_UNIT_NAME = "gridsight-agent.service"


def find_systemd_unit() -> Path:
    """The agent's shipped systemd unit (package data of an installed wheel, deploy/ in a checkout)."""
    from gridsight.shipped import shipped_file
    return shipped_file(_UNIT_NAME)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)       # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ProvisionError(f"cannot write {value!r} to TOML")


def agent_config_toml(gateway_id: str, broker_url: str, password: str, install_dir: str, data_dir: str,
                      readers: list[dict[str, Any]], model_file: str | None, public_key_file: str | None = None) -> str:
    """The agent's config in its own format (edge_agent/config.py), with paths on the gateway."""
    lines = ["# gridsight agent configuration, written by 'gridsight provision bundle'.",
             "# Contains the gateway's broker password: keep it 0640 root:gridsight.",
             f"gateway_id = {_toml_value(gateway_id)}", f"data_dir = {_toml_value(data_dir)}", "",
             "[mqtt]", f"url = {_toml_value(broker_url)}", f"username = {_toml_value(gateway_id)}",
             f"password = {_toml_value(password)}"]
    if broker_url.startswith("mqtts://"):
        lines += [f"ca_file = {_toml_value(f'{install_dir}/ca.crt')}",
                  f"cert_file = {_toml_value(f'{install_dir}/client.crt')}",
                  f"key_file = {_toml_value(f'{install_dir}/client.key')}"]
    lines += ["", "[model]", f"path = {_toml_value(f'{install_dir}/{model_file}' if model_file else '')}"]
    if public_key_file:
        # the key that signs models: with it the agent accepts over-the-air updates from cmd/model
        lines.append(f"public_key = {_toml_value(f'{install_dir}/{public_key_file}')}")
    for table in readers:
        lines += ["", "[[readers]]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _copy(src: Path, dst: Path, secret: bool = False) -> None:
    if not src.is_file():
        raise ProvisionError(f"{src} does not exist")
    shutil.copyfile(src, dst)
    os.chmod(dst, _SECRET_MODE if secret else 0o644)


def write_bundle(fleet: Fleet, gateway_id: str, out_dir: Path, *, model: Path | None = None,
                 model_public_key: Path | None = None, unit: Path | None = None,
                 install_dir: str = "/etc/gridsight", data_dir: str = "/var/lib/gridsight",
                 enroll_token: str | None = None, wheelhouse: Path | None = None) -> tuple[Path, Path]:
    """Write ``out_dir`` and ``out_dir``.tar.gz; returns both paths."""
    identity = fleet.load_gateway(gateway_id)
    gw_dir = fleet.gateway_dir(gateway_id)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ProvisionError(f"{out_dir} is not empty; choose a new output folder")
    if model is not None and model_public_key is None:
        raise ProvisionError("a model needs --model-public-key: the gateway must be able to verify it")
    unit = unit or find_systemd_unit()
    if wheelhouse is not None and not (wheelhouse / "platform.json").is_file():
        raise ProvisionError(f"{wheelhouse} is not a wheelhouse: make one with 'gridsight provision wheelhouse'")
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o750)
    if wheelhouse is not None:
        shutil.copytree(wheelhouse, out_dir / "wheelhouse")
    _copy(fleet.ca_dir / "ca.crt", out_dir / "ca.crt")
    _copy(gw_dir / "client.crt", out_dir / "client.crt")
    _copy(gw_dir / "client.key", out_dir / "client.key", secret=True)
    _copy(unit, out_dir / _UNIT_NAME)
    model_file = None
    if model is not None:
        model_file = "model.onnx"
        _copy(model, out_dir / model_file)
        signature = Path(str(model) + ".sig")
        if not signature.is_file():
            raise ProvisionError(f"{model} has no signature {signature.name}: sign it with 'gridsight model sign'")
        _copy(signature, out_dir / "model.onnx.sig")
    if model_public_key is not None:
        _copy(model_public_key, out_dir / "model_public.pem")
    if enroll_token:
        fd = os.open(out_dir / "enroll.token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _SECRET_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(enroll_token.strip() + "\n")
    password = (gw_dir / "mqtt.password").read_text().strip()
    config = agent_config_toml(gateway_id, identity.broker_url, password, install_dir, data_dir,
                               [m.reader for m in identity.meters], model_file,
                               "model_public.pem" if model_public_key is not None else None)
    fd = os.open(out_dir / "agent.toml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _SECRET_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(config)
    (out_dir / "meters.json").write_text(json.dumps([asdict(m) for m in identity.meters], indent=2))
    manifest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out_dir.iterdir()) if p.is_file()}
    (out_dir / "MANIFEST.json").write_text(json.dumps({"gateway_id": gateway_id, "files": manifest}, indent=2))
    tarball = out_dir.with_name(out_dir.name + ".tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(out_dir.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=f"{out_dir.name}/{path.relative_to(out_dir)}")
            info.uid = info.gid = 0
            info.uname, info.gname = "root", SERVICE_GROUP
            if path.is_dir():
                tar.addfile(info)
                continue
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    os.chmod(tarball, 0o600)
    return out_dir, tarball
