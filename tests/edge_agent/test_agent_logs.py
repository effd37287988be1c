"""The agent's whole output is JSON lines a log shipper parses without guessing: its own lines,
third-party libraries' (pymodbus), the start-up line saying when the first interval is sealed,
and its start-up refusals."""

from __future__ import annotations

import calendar
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gridsight.local_services import free_port


def _config(tmp_path: Path, closed_port: int) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
gateway_id = "gw-log"
data_dir = "{tmp_path / 'data'}"
poll_s = 0.5
[mqtt]
url = "mqtt://127.0.0.1:{closed_port}"
[[readers]]
type = "modbus_tcp"
host = "127.0.0.1"
port = {closed_port}
unit = 1
meter_id = "m-1"
map = "sdm120"
""")
    return config


def _run_until(config: Path, env: dict, done, timeout: float = 60.0) -> tuple[list[str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "gridsight", "agent", "run", "--config", str(config),
                             "--no-publish"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if done(lines):
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    lines += [line for line in out.splitlines() if line]
    return lines, [line for line in err.splitlines() if line]


def test_every_line_is_json_including_pymodbus_and_the_first_interval_time(tmp_path):
    env = {**os.environ, "GRIDSIGHT_DATA_DIR": str(tmp_path / "collector-data")}
    stdout, stderr = _run_until(_config(tmp_path, free_port()), env,
                                lambda lines: any('"pymodbus' in line for line in lines))
    records = [json.loads(line) for line in stdout + stderr]       # raises on any plain-text line
    assert any(r["logger"].startswith("pymodbus") for r in records), stdout
    started = next(r for r in records if r.get("event") == "started")
    sealed = calendar.timegm(time.strptime(started["first_interval_sealed_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert sealed % 900 == 30 and 0 < started["first_summary_in_s"] <= 930
    # a collector's GRIDSIGHT_DATA_DIR on the same machine is not the agent's outbox
    assert (tmp_path / "data" / "outbox.sqlite").exists() and not (tmp_path / "collector-data").exists()
    assert any("GRIDSIGHT_DATA_DIR is the collector's" in r["msg"] for r in records)


def test_the_agent_data_dir_has_its_own_variable(tmp_path):
    config = _config(tmp_path, free_port())
    config.write_text(config.read_text().replace(f'data_dir = "{tmp_path / "data"}"\n', ""))
    env = {**os.environ, "GRIDSIGHT_AGENT_DATA_DIR": str(tmp_path / "agent-data")}
    stdout, _ = _run_until(config, env, lambda lines: any('"started"' in line for line in lines))
    assert (tmp_path / "agent-data" / "outbox.sqlite").exists()


def test_a_start_up_refusal_is_one_json_line(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('gateway_id = "gw-1"\n[mqtt]\nurl = "http://broker"\n')
    result = subprocess.run([sys.executable, "-m", "gridsight", "agent", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and "mqtt.url" in record["msg"]
