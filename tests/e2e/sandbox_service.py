"""Stands in for `systemctl` when tests/e2e/test_production_profile.py runs docs/examples/production.sh.

``sandbox_service.py start|restart|reload UNIT`` starts what the unit file the script installed
says (ExecStartPre, ExecStart, Environment=, EnvironmentFile=), with the production paths in it
mapped to the sandbox's (the same variables production.sh reads), as a background process whose pid and output
live in SANDBOX_STATE. ``mosquitto`` is the Debian package's broker: ``mosquitto -c`` the main
config the test wrote (it includes the conf.d folder the script fills). Nothing else differs
from systemd's start: no user switch (the sandbox runs as one user), no hardening.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["SANDBOX_STATE"])
# production path in the units -> the variable production.sh uses for it
PATHS = {prod: os.environ[var] for prod, var in (
    ("/opt/gridsight-collector", "COLLECTOR_VENV"), ("/etc/gridsight-collector", "COLLECTOR_ETC"),
    ("/var/lib/gridsight-collector", "COLLECTOR_DATA"), ("/opt/gridsight", "GATEWAY_VENV"),
    ("/etc/gridsight", "GATEWAY_ETC"), ("/var/lib/gridsight", "GATEWAY_DATA")) if var in os.environ}


def _map(text: str) -> str:
    for prod in sorted(PATHS, key=len, reverse=True):
        text = text.replace(prod, PATHS[prod])
    return text


def _unit(name: str) -> dict[str, list[str]]:
    path = Path(os.environ["SYSTEMD_DIR"]) / f"{name}.service"
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def _env(unit: dict[str, list[str]]) -> dict[str, str]:
    env = dict(os.environ)
    for line in unit.get("Environment", []):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    for file in unit.get("EnvironmentFile", []):
        for line in Path(_map(file)).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    return env


def _instance(name: str) -> str:
    # two gateways in one sandbox: their agents are told apart by their config folder
    if name == "gridsight-agent":
        return f"{name}@{hashlib.sha1(os.environ['GATEWAY_ETC'].encode()).hexdigest()[:8]}"
    return name


def _pid(instance: str) -> int | None:
    path = STATE / f"{instance}.pid"
    return int(path.read_text()) if path.exists() else None


def _launch(instance: str, argv: list[str], env: dict[str, str]) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    log = open(STATE / f"{instance}.log", "ab")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=STATE)
    (STATE / f"{instance}.pid").write_text(str(proc.pid))
    time.sleep(1.0)
    if proc.poll() is not None:
        sys.exit(f"sandbox_service: {instance} exited at once ({proc.returncode}); see {STATE / (instance + '.log')}")


def _stop(instance: str) -> None:
    pid = _pid(instance)
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(300):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    (STATE / f"{instance}.pid").unlink(missing_ok=True)


def main(action: str, name: str) -> None:
    instance = _instance(name)
    if action == "reload":
        pid = _pid(instance)
        if pid is None:
            sys.exit(f"sandbox_service: {instance} is not running")
        os.kill(pid, signal.SIGHUP)
        return
    if action == "restart":
        _stop(instance)
    if name == "mosquitto":
        _launch(instance, [os.environ["SANDBOX_MOSQUITTO"], "-c", os.environ["SANDBOX_MOSQUITTO_MAIN_CONF"]],
                dict(os.environ))
        return
    unit = _unit(name)
    env = _env(unit)
    for pre in unit.get("ExecStartPre", []):
        subprocess.run(shlex.split(_map(pre)), env=env, check=True)
    _launch(instance, shlex.split(_map(unit["ExecStart"][0])), env)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
