"""The production setup exactly as documented: docs/examples/production.sh, run step by step.

Only paths and ports are changed (every one a variable at the top of the script), plus the
command that starts daemons: tests/e2e/sandbox_service.py starts what the unit files the script
installed say, where production runs systemctl. Real parts throughout: Mosquitto running the
shipped gridsight.conf (TLS, require_certificate, password file, ACL) as its own user with the
files `provision broker-files --owner` installed; the collector with its client certificate;
two gateways installed offline from their bundles' wheelhouses into fresh venvs from the BUILT
wheel, each agent its own process; a model signed, published over mutual TLS and taken up by both.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import psycopg
import pytest

from gridsight.local_services import free_port, mosquitto_binary

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "examples" / "production.sh"
SANDBOX_SERVICE = Path(__file__).with_name("sandbox_service.py")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500),
              pytest.mark.skipif(os.geteuid() != 0, reason="installs files owned by the broker's user: needs root")]


def _history(path: Path, meters: tuple[str, ...], start: float, days: int) -> Path:
    """Cumulative-register readings every 5 minutes with a daily cycle: training data."""
    rng = random.Random(11)
    with path.open("w") as fh:
        fh.write("meter_id,ts,energy_kwh,power_w\n")
        for meter in meters:
            energy = 0.0
            for i in range(days * 288):
                ts = start + i * 300
                power = 400 + 300 * math.sin(ts / 86400 * 2 * math.pi) + rng.random() * 50
                energy += power * 300 / 3.6e6
                fh.write(f"{meter},{ts:.0f},{energy:.5f},{power:.1f}\n")
    return path


def _meter_recording(path: Path, meter: str, start: float, hours: int) -> Path:
    """One minute readings of a meter the agent replays as if live."""
    rng = random.Random(hash(meter) % 1000)
    energy = 100.0
    with path.open("w") as fh:
        fh.write("meter_id,ts,energy_kwh,power_w\n")
        for i in range(hours * 60):
            ts = start + i * 60
            power = 500 + 250 * math.sin(ts / 86400 * 2 * math.pi) + rng.random() * 40
            energy += power * 60 / 3.6e6
            fh.write(f"{meter},{ts:.0f},{energy:.5f},{power:.1f}\n")
    return path


def _wait(condition, timeout: float, what: str, logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1.0)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


@pytest.fixture
def sandbox(tmp_path, database_url, s3_bucket, checkout_wheel):
    pwd.getpwnam("mosquitto")
    # the broker drops to the mosquitto user: its files must be reachable outside pytest's 0700 tmp
    root = Path(tempfile.mkdtemp(prefix="gridsight-production-"))
    os.chmod(root, 0o755)
    endpoint, bucket = s3_bucket
    wheel = checkout_wheel
    now = time.time()
    clock_start = math.floor((now - 3 * 3600) / 900) * 900
    python3 = shutil.which("python3")
    gateway_python = subprocess.run([python3, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
        "WHEEL": str(wheel), "TOOLS": sys.prefix, "COLLECTOR_VENV": sys.prefix,
        "FLEET": str(tmp_path / "fleet"), "KEYS": str(tmp_path / "keys"),
        "BROKER_HOST": "127.0.0.1", "BROKER_PORT": str(free_port()), "BROKER_USER": "mosquitto",
        "MOSQUITTO_CONF_D": str(root / "mosquitto" / "conf.d"), "MOSQUITTO_FILES": str(root / "mosquitto" / "gridsight"),
        "COLLECTOR_ETC": str(tmp_path / "collector-etc"), "COLLECTOR_DATA": str(tmp_path / "collector-data"),
        "API_HOST": "127.0.0.1", "API_PORT": str(free_port()), "DATABASE_URL": database_url,
        "S3_BUCKET": bucket, "S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "TRAINING_READINGS": str(_history(tmp_path / "history.csv", ("h-1", "h-2", "h-3"), clock_start - 8 * 86400, 7)),
        "BUNDLES": str(tmp_path / "bundles"), "GATEWAY_PLATFORM": "manylinux2014_x86_64",
        "GATEWAY_PYTHON": gateway_python, "SYSTEMD_DIR": str(tmp_path / "systemd"),
        "TECHNICIAN_KEY_FILE": str(tmp_path / "technician.key"),
        "SERVICE": f"{sys.executable} {SANDBOX_SERVICE}", "SANDBOX_STATE": str(tmp_path / "services"),
        "SANDBOX_MOSQUITTO": mosquitto_binary(), "SANDBOX_MOSQUITTO_MAIN_CONF": str(root / "mosquitto" / "mosquitto.conf"),
        # the agents run simulated time from three hours ago, 60x, so intervals close within the test
        "GRIDSIGHT_CLOCK__SPEED": "60", "GRIDSIGHT_CLOCK__START": str(clock_start),
        "GRIDSIGHT_CLOCK__ANCHOR": str(now),
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]       # the tools run this checkout's code
    for folder in ("mosquitto/conf.d",):
        (root / folder).mkdir(parents=True)
    (tmp_path / "systemd").mkdir()
    (tmp_path / "bundles").mkdir()
    # what the Debian mosquitto package's /etc/mosquitto/mosquitto.conf says, in the sandbox
    (root / "mosquitto" / "mosquitto.conf").write_text(
        "user mosquitto\npersistence false\nlog_dest stdout\nlog_type error\nlog_type warning\n"
        f"include_dir {root / 'mosquitto' / 'conf.d'}\n")
    try:
        yield env, tmp_path, clock_start, endpoint, bucket
    finally:
        for pid_file in (tmp_path / "services").glob("*.pid"):
            try:
                os.killpg(int(pid_file.read_text()), 15)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for pid_file in (tmp_path / "services").glob("*.pid"):
            try:
                os.killpg(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def _step(env: dict, *args: str, extra_env: dict | None = None, timeout: float = 900) -> str:
    env = {**env, **(extra_env or {})}
    if args[0] == "install-gateway":
        env.pop("PYTHONPATH", None)     # a gateway runs only what its venv installed from the wheel
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=env["HOME"])
    assert done.returncode == 0, f"production.sh {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _gateway_env(tmp_path: Path, gateway: str) -> dict[str, str]:
    return {"GATEWAY_ETC": str(tmp_path / gateway / "etc"), "GATEWAY_DATA": str(tmp_path / gateway / "data"),
            "GATEWAY_VENV": str(tmp_path / gateway / "venv")}


def _status(tmp_path: Path, gateway: str) -> dict:
    venv = tmp_path / gateway / "venv"
    done = subprocess.run([str(venv / "bin" / "gridsight"), "agent", "status", "--config",
                           str(tmp_path / gateway / "etc" / "agent.toml"), "--json"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _api_up(port: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _sql(database_url: str, query: str):
    with psycopg.connect(database_url) as conn:
        return conn.execute(query).fetchall()


def test_the_documented_production_setup_ingests_and_rolls_a_model_out_to_two_gateways(sandbox):
    env, tmp_path, clock_start, endpoint, bucket = sandbox
    logs = tmp_path / "services"
    gateways = ("gw-north", "gw-south")
    extras = {"gw-north": "edge", "gw-south": "edge-onnx"}     # numpy scorer / onnxruntime

    _step(env, "fleet")
    _step(env, "broker")
    _step(env, "collector")
    _wait(lambda: _api_up(env["API_PORT"]), 180, "the collector API", logs)
    _step(env, "model", "v1")
    for gw in gateways:
        recording = _meter_recording(tmp_path / f"{gw}.csv", f"{gw}-m1", clock_start, 6)
        _step(env, "gateway", gw, extra_env={**_gateway_env(tmp_path, gw), "GATEWAY_EXTRA": extras[gw],
                                            "METER_ARGS": f"--type replay --option path={recording}"})
    for gw in gateways:
        out = _step(env, "install-gateway", str(tmp_path / "bundles" / f"{gw}.tar.gz"),
                    extra_env=_gateway_env(tmp_path, gw))
        assert f"enrolled {gw}" in out and "0 failed" in out, out
        venv = tmp_path / gw / "venv"
        assert subprocess.run([str(venv / "bin" / "python"), "-c", "import gridsight, sys; "
                               "sys.exit(0 if 'site-packages' in gridsight.__file__ else 1)"],
                              env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path).returncode == 0, "not installed from the wheel"
        has_onnxruntime = subprocess.run([str(venv / "bin" / "python"), "-c", "import onnxruntime"],
                                         capture_output=True, cwd=tmp_path).returncode == 0
        assert has_onnxruntime == (extras[gw] == "edge-onnx")
        if extras[gw] == "edge":       # the goal for a gateway without onnxruntime: at most 120 MB on disk
            size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
            assert size <= 120e6, f"{gw}'s venv holds {size / 1e6:.1f} MB"

    db = env["DATABASE_URL"]
    _wait(lambda: {r[0] for r in _sql(db, "SELECT DISTINCT gateway_id FROM interval_summaries "
                                          "WHERE model_version = 'v1'")} >= set(gateways),
          400, "scored summaries from both gateways", logs)

    _step(env, "model", "v2")
    _step(env, "publish", "v2")
    for gw in gateways:
        _wait(lambda gw=gw: (_status(tmp_path, gw).get("last_status") or {}).get("model_version") == "v2",
              300, f"{gw} to run model v2", logs)
    assert _status(tmp_path, "gw-north")["last_status"]["scorer"] == "numpy"
    assert _status(tmp_path, "gw-south")["last_status"]["scorer"] == "onnxruntime"

    meters = {f"{gw}-m1" for gw in gateways}

    def readings() -> dict[str, int]:
        return dict(_sql(db, "SELECT meter_id, count(*) FROM readings GROUP BY meter_id"))

    # how many have arrived by now depends on how fast this machine ran the steps: wait for them
    _wait(lambda: meters <= set(readings()) and all(readings()[m] > 60 for m in meters),
          400, "more than 60 readings of each gateway's meter", logs)
    assert _sql(db, "SELECT count(*) FROM dead_letters")[0][0] == 0
    anomaly_map = _sql(db, "SELECT DISTINCT meter_id FROM tableau.anomaly_map")
    assert meters <= {r[0] for r in anomaly_map}
    assert _sql(db, "SELECT count(*) FROM tableau.meter_places")[0][0] >= 2
    assert _sql(db, "SELECT version FROM model_versions WHERE version = 'v2'")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    for gw in gateways:
        assert any(k.startswith("raw/") and f"gateway={gw}/" in k for k in keys), keys[:20]
    assert any(k == "models/gridsight-iforest/v2/model.onnx" for k in keys)
