"""Headless operation: the systemd unit, sd_notify readiness and watchdog, graceful SIGTERM."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
import pytest

from edge_agent.config import AgentSettings
from gridsight.settings import load_settings
from meter_data import T0, Subscriber, readings_by_meter, recording, wait_until, write_csv

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "gridsight-agent.service"
EXAMPLE = UNIT.with_name("agent.example.toml")


def unit_directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_systemd_unit_is_a_hardened_notify_service_with_a_watchdog_that_runs_our_cli():
    d = unit_directives()
    assert d["Type"] == ["notify"] and int(d["WatchdogSec"][0]) > 0 and d["Restart"] == ["always"]
    argv = shlex.split(d["ExecStart"][0])
    assert argv[1:4] == ["agent", "run", "--config"]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "CapabilityBoundingSet",
                      "RestrictAddressFamilies", "SystemCallFilter", "MemoryMax", "DevicePolicy"):
        assert hardening in d, hardening
    assert "adjtimex" in d["SystemCallFilter"][0]  # clock health must keep working under the filter


def test_the_example_config_uses_the_bundles_file_names_and_loads_over_a_real_bundle(tmp_path):
    """Drop a real bundle where the example expects /etc/gridsight: every file it names is there."""
    import re

    from provisioning.cli import main as provision

    fleet, bundle = str(tmp_path / "fleet"), tmp_path / "bundle"
    (tmp_path / "signing.pub.pem").write_text("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
    for argv in (["ca", "init", "--fleet", fleet], ["gateway", "gw-0001", "--fleet", fleet, "--broker",
                                                     "mqtts://mqtt.example.net:8883"],
                 ["bundle", "gw-0001", "--fleet", fleet, "--out", str(bundle),
                  "--model-public-key", str(tmp_path / "signing.pub.pem")]):
        assert provision(argv) == 0, argv
    example = EXAMPLE.read_text()
    live = "\n".join(line for line in example.splitlines() if not line.lstrip().startswith("#"))
    named = set(re.findall(r'"/etc/gridsight/([^"]+)"', live))
    assert named == {"ca.crt", "client.crt", "client.key", "model.onnx", "model_public.pem"}
    assert named - {"model.onnx"} <= {p.name for p in bundle.iterdir()}
    text = example.replace("/etc/gridsight/", f"{bundle}/").replace(f'path = "{bundle}/model.onnx"', 'path = ""')
    (tmp_path / "agent.toml").write_text(text)
    settings = load_settings(AgentSettings, tmp_path / "agent.toml", env={})
    assert settings.mqtt.tls and settings.mqtt.port == 8883 and settings.model.public_key
    assert [r["type"] for r in settings.readers] == ["modbus_rtu", "dsmr_p1"]


def agent_config(tmp_path: Path, mqtt_url: str, csv: Path, speed: float = 120.0) -> Path:
    """Simulated time anchored to now, so however slowly the process starts, the clock is the same."""
    config = tmp_path / "agent.toml"
    config.write_text(f"""
gateway_id = "gw-svc"
data_dir = "{tmp_path / 'data'}"
poll_s = 10
raw_chunk_s = 600
status_s = 600
[mqtt]
url = "{mqtt_url}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
[clock]
start = {T0}
speed = {speed}
anchor = {time.time()}
[[readers]]
type = "replay"
path = "{csv}"
""")
    return config


def test_agent_tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops(tmp_path, mosquitto):
    csv = write_csv(tmp_path / "r.csv", recording(2, T0, 3600, 10))
    config = agent_config(tmp_path, mosquitto.url, csv)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000"}
    proc = subprocess.Popen([sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    env.pop("WATCHDOG_PID", None)
    messages: list[str] = []
    try:
        while sum(m == "WATCHDOG=1" for m in messages) < 3:
            messages.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())
        assert proc.wait(30) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert messages[0].startswith("READY=1")
    assert messages.index("STOPPING=1") > messages.index("WATCHDOG=1")


@pytest.mark.slow
def test_sigterm_flushes_every_taken_reading_to_the_broker_and_leaves_status_offline(tmp_path, mosquitto):
    subscriber = Subscriber(mosquitto.port)
    taken = recording(2, T0, 3600, 10)
    config = agent_config(tmp_path, mosquitto.url, write_csv(tmp_path / "r.csv", taken), speed=600)
    proc = subprocess.Popen([sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: (tmp_path / "data" / "status.json").exists() or proc.poll() is not None, 60)
        time.sleep(3600 / 600 + 1)  # the recording is over; its last raw chunk period (600 s) is not
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode()[-2000:]
        assert subscriber.wait_for(lambda: len(subscriber.raw_readings()) >= len(taken)
                                   and subscriber.retained_status.get("gw-svc") is not None
                                   and not subscriber.retained_status["gw-svc"].online, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        subscriber.close()
    assert readings_by_meter(subscriber.raw_readings()) == readings_by_meter(taken)
    status = subscriber.retained_status["gw-svc"]
    assert status.queue_depth == 0 and status.counters["readings"] == len(taken)


def test_config_errors_stop_start_up_with_one_line_naming_the_key(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('gateway_id = "gw-1"\ndata_dir = "/tmp/x"\n[mqtt]\nurl = "http://broker"\n')
    result = subprocess.run([sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "mqtt.url" in lines[0]
    config.write_text('gateway_id = "gw-1"\n[[readers]]\ntype = "modbus_tcp"\nhost = "h"\nunit = 1\n')
    result = subprocess.run([sys.executable, "-m", "gridsight.cli", "agent", "check-config", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "readers[0].meter_id: missing" in result.stderr


@pytest.mark.slow
def test_status_command_shows_the_outbox_depth_of_an_agent(tmp_path):
    config = agent_config(tmp_path, "mqtt://127.0.0.1:9", write_csv(tmp_path / "r.csv", recording(2, T0, 1800, 10)),
                          speed=600)
    proc = subprocess.Popen([sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config),
                             "--no-publish"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_until(lambda: (tmp_path / "data" / "status.json").exists() or proc.poll() is not None, 60)
    time.sleep(1800 / 600 + 1)  # simulated time passes the end of the recording
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    result = subprocess.run([sys.executable, "-m", "gridsight.cli", "agent", "status", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "queue depth" in result.stdout and "summary 2" in result.stdout
    assert "reader replay:r.csv: 360 readings, 0 errors, ok" in result.stdout
