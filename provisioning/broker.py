"""The Mosquitto password and ACL files, kept in step with the fleet's gateways.

Passwords are hashed in Mosquitto 2's own format (``$7$``: PBKDF2-SHA512, 101 iterations,
12-byte salt). The ``mosquitto_passwd`` binary writes them when installed; otherwise the same
format is computed here, so provisioning works on a workstation without the broker. The ACL
file is rendered whole from the list of accounts each time: a gateway may publish only under
``gridsight/v1/{its id}/`` and read only its own and the fleet's command topics; the
collector account reads every upward topic and writes commands.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from provisioning.ca import ProvisionError
from gridsight.wire import TOPIC_ROOT, UPWARD_KINDS

__all__ = ["install_broker_files", "set_password", "remove_password", "read_users", "render_acl", "write_acl", "mosquitto_hash"]

_ITERATIONS = 101


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A password hash line value in Mosquitto 2's ``$7$`` format."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _ITERATIONS)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def read_users(passwd_file: Path) -> dict[str, str]:
    """``{username: hash}`` from a Mosquitto password file (empty when the file does not exist)."""
    if not passwd_file.exists():
        return {}
    users = {}
    for line in passwd_file.read_text().splitlines():
        if line.strip() and not line.startswith("#") and ":" in line:
            user, _, hashed = line.partition(":")
            users[user] = hashed
    return users


def _write_users(passwd_file: Path, users: dict[str, str]) -> None:
    passwd_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = passwd_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{u}:{h}\n" for u, h in sorted(users.items()))
    os.replace(tmp, passwd_file)


def set_password(passwd_file: Path, username: str, password: str, tool: str | None = "auto") -> None:
    """Add or replace ``username``'s password. ``tool="auto"`` uses ``mosquitto_passwd`` when present."""
    if ":" in username or "\n" in username or not username:
        raise ProvisionError(f"invalid broker username {username!r}")
    binary = shutil.which("mosquitto_passwd") if tool == "auto" else tool
    if binary:
        passwd_file.parent.mkdir(parents=True, exist_ok=True)
        if not passwd_file.exists():
            fd = os.open(passwd_file, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        result = subprocess.run([binary, "-b", str(passwd_file), username, password], capture_output=True, text=True)
        if result.returncode != 0:
            raise ProvisionError(f"mosquitto_passwd failed: {(result.stderr or result.stdout).strip()}")
        os.chmod(passwd_file, 0o600)
        return
    users = read_users(passwd_file)
    users[username] = mosquitto_hash(password)
    _write_users(passwd_file, users)


def remove_password(passwd_file: Path, username: str) -> bool:
    users = read_users(passwd_file)
    if username not in users:
        return False
    del users[username]
    _write_users(passwd_file, users)
    return True


def render_acl(gateways: list[str], collectors: list[str]) -> str:
    """The whole ACL file for these accounts. Anything not granted here is denied."""
    lines = ["# gridsight broker ACL, written by 'gridsight provision'; edits here are overwritten.",
             "# Mosquitto denies every topic not granted below."]
    for user in sorted(collectors):
        lines += ["", f"user {user}", f"topic read {TOPIC_ROOT}/#",
                  f"topic write {TOPIC_ROOT}/+/cmd/#", f"topic write {TOPIC_ROOT}/fleet/cmd/#"]
    for gateway in sorted(gateways):
        lines += ["", f"user {gateway}"]
        lines += [f"topic write {TOPIC_ROOT}/{gateway}/{kind}" for kind in UPWARD_KINDS]
        lines += [f"topic read {TOPIC_ROOT}/{gateway}/cmd/#", f"topic read {TOPIC_ROOT}/fleet/cmd/#"]
    return "\n".join(lines) + "\n"


def write_acl(acl_file: Path, gateways: list[str], collectors: list[str]) -> None:
    acl_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = acl_file.with_suffix(".tmp")
    tmp.write_text(render_acl(gateways, collectors))
    os.replace(tmp, acl_file)


def install_broker_files(fleet, dest: Path, owner: str | None) -> list[Path]:
    """Copy the broker's files from the fleet workspace to ``dest`` (the folder the shipped
    gridsight.conf names), owned by ``owner`` (the user Mosquitto drops to) and unreadable by
    anyone else: secrets 0600, the rest 0644. Each file is replaced atomically, so a broker
    reloading meanwhile reads either the old or the new version."""
    import pwd

    sources = [fleet.passwd_file, fleet.acl_file, fleet.broker_dir / "server.crt", fleet.broker_dir / "server.key",
               fleet.ca_dir / "ca.crt"]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise ProvisionError(f"not in the fleet workspace yet: {', '.join(missing)} (run 'provision ca init', "
                             "'ca server-cert', 'collector-account' and 'gateway' first)")
    uid = gid = -1
    if owner:
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            raise ProvisionError(f"no user {owner!r} on this machine: give the broker's user with --owner "
                                 "(Debian/Ubuntu: mosquitto)") from None
        uid, gid = entry.pw_uid, entry.pw_gid
        if os.geteuid() != 0 and uid != os.geteuid():
            raise ProvisionError(f"making {owner} the owner needs root: run this with sudo")
    dest.mkdir(parents=True, exist_ok=True)
    installed = []
    for src in sources:
        target = dest / src.name
        tmp = dest / f".{src.name}.tmp"
        secret = src.name in ("passwd", "acl", "server.key")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(src.read_bytes())
        if uid != -1:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, 0o600 if secret else 0o644)
        os.replace(tmp, target)
        installed.append(target)
    if uid != -1:
        os.chown(dest, uid, gid)
    os.chmod(dest, 0o750)
    return installed
