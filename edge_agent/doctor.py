"""`gridsight provision doctor`: on the gateway, check everything the agent needs, one line each.

Checks run in order and never stop early, so a technician sees every problem at once:
config valid, bundle intact, clock synchronised, broker reachable with these credentials,
each meter answers, model loads and passes its self-test (and its signature verifies),
outbox writable, disk budget available. Probes that touch the outside world (clock, broker,
disk) are parameters, so tests can drive failures.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge_agent.clock import ClockHealth, clock_health
from gridsight.settings import ConfigError, load_settings

__all__ = ["Check", "run_doctor", "check_broker", "reseal_bundle"]

_EARLIEST_PLAUSIBLE = 1_704_067_200.0  # 2024-01-01: a clock before this lost its time (no RTC)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def check_clock(health: ClockHealth, now: float) -> Check:
    if now < _EARLIEST_PLAUSIBLE:
        return Check(
            "clock synchronised",
            False,
            f"wall clock reads {time.strftime('%Y-%m-%d', time.gmtime(now))}; "
            "the gateway lost its time: enable NTP (systemd-timesyncd) and check the uplink",
        )
    if health.synced is False:
        return Check(
            "clock synchronised",
            False,
            "the kernel reports no NTP synchronisation "
            "(timedatectl: 'System clock synchronized: no'); enable and check systemd-timesyncd",
        )
    if health.synced is None:
        return Check("clock synchronised", True, "NTP state unknown on this platform; wall clock is plausible")
    offset = f", offset {health.offset_s * 1000:.1f} ms" if health.offset_s is not None else ""
    return Check("clock synchronised", True, f"NTP synchronised{offset}")


def check_broker(settings, timeout_s: float = 10.0) -> Check:
    """Connect with the agent's own URL, TLS files and credentials, and wait for the broker's answer."""
    from gridsight.mqtt import MqttSetupError, make_client

    m = settings.mqtt
    try:
        client, _ = make_client(
            m.url,
            client_id=f"{settings.gateway_id}-doctor",
            username=m.username or None,
            password=m.password or None,
            tls=m.tls_files,
        )
    except MqttSetupError as exc:
        return Check("broker reachable", False, f"TLS files unusable: {exc}")
    answer: dict = {}
    done = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties=None):
        answer["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a, **k: done.set()
    try:
        client.connect(m.host, m.port, keepalive=30)
    except ssl.SSLError as exc:
        return Check("broker reachable", False, f"{m.url}: TLS handshake failed ({exc.reason or exc})")
    except OSError as exc:
        return Check("broker reachable", False, f"{m.url}: {exc.strerror or exc}")
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return Check("broker reachable", False, f"{m.url}: no answer within {timeout_s:.0f} s")
        rc = answer.get("rc")
        if rc is None:
            return Check(
                "broker reachable", False, f"{m.url}: the broker closed the connection (client certificate refused?)"
            )
        if rc.is_failure:
            return Check("broker reachable", False, f"{m.url}: refused as {m.username or 'anonymous'} ({rc})")
        return Check("broker reachable", True, f"{m.url} accepted {m.username or 'the client'}")
    finally:
        client.disconnect()
        client.loop_stop()


_CONSUMED_BY_ENROLLMENT = "enroll.token"  # 'provision enroll' deletes it once redeemed: not tampering


def _check_manifest(config_path: Path) -> Check | None:
    manifest_path = config_path.parent / "MANIFEST.json"
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return Check("bundle intact", False, "MANIFEST.json is unreadable")
    bad = []
    for name, digest in files.items():
        path = config_path.parent / name
        if not path.is_file():
            if name != _CONSUMED_BY_ENROLLMENT:
                bad.append(name)
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(name)
    if bad:
        return Check(
            "bundle intact",
            False,
            f"changed or missing since provisioning: {', '.join(bad)} "
            "(a legitimate on-site edit: 'gridsight provision reseal --reason ...')",
        )
    reseals = manifest.get("reseals") or []
    note = f"; resealed {len(reseals)}x, last: {reseals[-1].get('reason')!r}" if reseals else ""
    return Check("bundle intact", True, f"{len(files)} files match MANIFEST.json{note}")


def _check_identity(settings, config_path: Path) -> Check | None:
    """The config, the bundle's manifest and the client certificate name the same gateway: a
    bundle copied onto the wrong gateway (or a certificate from another one) is caught here,
    before the broker would accept another gateway's certificate with this one's password."""
    names = {"agent.toml": settings.gateway_id}
    manifest_path = config_path.parent / "MANIFEST.json"
    if manifest_path.exists():
        try:
            names["MANIFEST.json"] = json.loads(manifest_path.read_text()).get("gateway_id")
        except ValueError:
            pass
    cert = settings.mqtt.cert_file
    if cert:
        try:
            from cryptography import x509
            from cryptography.x509.oid import NameOID

            subject = x509.load_pem_x509_certificate(Path(cert).read_bytes()).subject
            names[Path(cert).name] = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        except (OSError, ValueError, IndexError) as exc:
            return Check("gateway identity", False, f"{cert}: not a readable certificate ({exc})")
    names = {k: v for k, v in names.items() if v}
    if len(names) < 2:
        return None
    if len(set(names.values())) > 1:
        return Check(
            "gateway identity",
            False,
            "these name different gateways: "
            + ", ".join(f"{k} says {v}" for k, v in names.items())
            + "; install this gateway's own bundle",
        )
    return Check("gateway identity", True, f"{', '.join(names)} all name {settings.gateway_id}")


def reseal_bundle(config_path: str | Path, reason: str, now: float | None = None) -> list[str]:
    """Record the current files of a bundle as provisioned, after a legitimate on-site edit.

    The previous digests of changed files and the reason stay in the manifest's ``reseals``
    list, so the edit remains visible to anyone auditing the gateway. Returns the changed names."""
    from gridsight.errors import GridsightError

    folder = Path(config_path).parent
    manifest_path = folder / "MANIFEST.json"
    if not reason.strip():
        raise GridsightError("give --reason: what was changed on site and why")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise GridsightError(f"{manifest_path} does not exist: this is not a provisioned bundle") from None
    except (ValueError, KeyError, TypeError):
        raise GridsightError(f"{manifest_path} is unreadable") from None
    changed: dict[str, str | None] = {}
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            if name == _CONSUMED_BY_ENROLLMENT:
                continue
            raise GridsightError(
                f"{path} is missing; a reseal records edits, not deletions: restore it from the bundle"
            )
        current = hashlib.sha256(path.read_bytes()).hexdigest()
        if current != digest:
            changed[name] = digest
            files[name] = current
    if not changed:
        return []
    manifest.setdefault("reseals", []).append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "reason": reason.strip(),
            "files": sorted(changed),
            "previous_sha256": changed,
        }
    )
    tmp = manifest_path.with_name(".MANIFEST.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_path)
    return sorted(changed)


def _check_meters(settings, now: float) -> list[Check]:
    from edge_agent.readers.base import ReaderError
    from edge_agent.readers.registry import build_reader

    if not settings.readers:
        return [
            Check(
                "meters answer", False, "no [[readers]] configured: bind meters with 'gridsight provision bind-meter'"
            )
        ]
    checks = []
    for i, table in enumerate(settings.readers):
        label = table.get("meter_id") or table.get("name") or f"readers[{i}] ({table.get('type')})"
        try:
            reader = build_reader(table, f"readers[{i}]")
        except ConfigError as exc:
            checks.append(Check(f"meter {label} answers", False, str(exc)))
            continue
        try:
            readings = reader.read(now)
            meters = sorted({r.meter_id for r in readings})
            detail = f"{len(readings)} readings" + (f" from {', '.join(meters[:5])}" if meters else "")
            checks.append(Check(f"meter {label} answers", True, detail))
        except ReaderError as exc:
            checks.append(Check(f"meter {label} answers", False, str(exc)))
        except Exception as exc:  # a reader bug must not hide the remaining checks
            checks.append(Check(f"meter {label} answers", False, f"{type(exc).__name__}: {exc}"))
        finally:
            try:
                reader.close()
            except Exception:
                pass
    return checks


def _check_model(settings, config_dir: Path) -> Check:
    from edge_agent.scorer import ModelError, Scorer

    if not settings.model.path:
        return Check("model loads", False, "no model.path configured: the agent would send unscored summaries")
    path = Path(settings.model.path)
    signature = Path(str(path) + ".sig")
    public_key = config_dir / "model_public.pem"
    signed = ""
    if public_key.exists():
        from edge_agent.model_update import SignatureError, load_public_key, verify_signature

        if not signature.exists():
            return Check("model loads", False, f"{signature.name} is missing; the model cannot be verified")
        try:
            verify_signature(path.read_bytes(), signature.read_bytes(), load_public_key(public_key))
        except SignatureError as exc:
            return Check("model loads", False, f"signature: {exc}")
        signed = ", signature verified"
    try:
        scorer = Scorer.load(path)
    except ModelError as exc:
        return Check("model loads", False, str(exc))
    return Check("model loads", True, f"{scorer.name} {scorer.version}, self-test passed{signed}")


def _check_outbox(settings) -> Check:
    data_dir = Path(settings.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return Check("outbox writable", False, f"{data_dir}: {exc.strerror or exc}")
    return Check("outbox writable", True, f"{settings.outbox_path} can be written and synced")


def _check_disk(settings, disk_free: Callable[[Path], int]) -> Check:
    data_dir = Path(settings.data_dir)
    budget = settings.outbox.budget_mb * 1024 * 1024
    used = settings.outbox_path.stat().st_size if settings.outbox_path.exists() else 0
    try:
        free = disk_free(data_dir)
    except OSError as exc:
        return Check("disk budget", False, f"{data_dir}: {exc.strerror or exc}")
    needed = budget - used
    if free < needed:
        return Check(
            "disk budget",
            False,
            f"{free / 2**20:.0f} MB free, the outbox budget needs "
            f"{needed / 2**20:.0f} MB more: lower outbox.budget_mb or free space",
        )
    return Check(
        "disk budget", True, f"{free / 2**20:.0f} MB free for a {settings.outbox.budget_mb:.0f} MB outbox budget"
    )


def run_doctor(
    config_path: str | Path,
    *,
    clock_probe: Callable[[], ClockHealth] = clock_health,
    now: Callable[[], float] = time.time,
    disk_free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
    broker_timeout_s: float = 10.0,
) -> list[Check]:
    """Every check's result, in order. Nothing raises: each failure is a failed Check."""
    from edge_agent.config import AgentSettings

    config_path = Path(config_path)
    settings, errors = _settings_despite_errors(AgentSettings, config_path)
    if settings is None:
        checks = [Check("config valid", False, errors[0] if errors else "unusable")]
    elif errors:
        checks = [Check("config valid", False, "; ".join(errors) + " (checks below run without those keys)")]
    else:
        checks = [Check("config valid", True, f"gateway {settings.gateway_id}, {len(settings.readers)} reader(s)")]
    manifest = _check_manifest(config_path)
    if manifest is not None:
        checks.append(manifest)
    if settings is not None:
        identity = _check_identity(settings, config_path)
        if identity is not None:
            checks.append(identity)
    if settings is not None and settings.clock.simulated:
        # a simulated clock (fleet simulator, benchmarks, the production test's sandbox) does not run on wall time
        checks.append(
            Check(
                "clock synchronised",
                True,
                f"simulated clock at {settings.clock.speed:g}x: intervals do not follow the wall clock",
            )
        )
    else:
        checks.append(check_clock(clock_probe(), now()))
    if settings is None:
        return checks
    checks.append(check_broker(settings, broker_timeout_s))
    checks.extend(_check_meters(settings, now()))
    checks.append(_check_model(settings, config_path.parent))
    checks.append(_check_outbox(settings))
    checks.append(_check_disk(settings, disk_free))
    return checks


def _drop_key(values: dict, key: str) -> bool:
    """Remove the dotted/indexed key (``mqtt.key_file``, ``readers[0].type``) a ConfigError names."""
    import re

    parts = [p for p in re.split(r"\.|\[(\d+)\]", key) if p]
    node: object = values
    for part in parts[:-1]:
        node = (
            node[int(part)]
            if isinstance(node, list) and part.isdigit()
            else (node.get(part) if isinstance(node, dict) else None)
        )
        if node is None:
            return False
    last = parts[-1] if parts else ""
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        del node[int(last)]
        return True
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    if len(parts) >= 2 and isinstance(values.get(parts[0]), list) and parts[1].isdigit():
        del values[parts[0]][int(parts[1])]  # a bad reader table: drop the whole reader
        return True
    return False


def _settings_despite_errors(cls, config_path: Path):
    """The settings, or as much of them as loads: each key a ConfigError names is dropped (and
    reported) so a typo in one table does not hide the broker, meter and model checks."""
    import tomllib

    try:
        return load_settings(cls, config_path), []
    except ConfigError as exc:
        first = exc
    try:
        with config_path.open("rb") as fh:
            values = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None, [str(first)]
    errors = [str(first)]
    key = first.key
    for _ in range(20):
        if key in ("file", "gateway_id") or not _drop_key(values, key):
            return None, errors
        try:
            return load_settings(cls, None, overrides=values), errors
        except ConfigError as exc:
            errors.append(str(exc))
            key = exc.key
    return None, errors
