"""The armv7l install path (docs/examples/debian-armv7l.sh), run on this machine with the same
commands: Debian's python3-numpy and python3-cryptography in a venv with --system-site-packages,
the pure-Python dependencies from pip, our wheel with --no-deps. The agent then runs end to end
in that venv, without onnxruntime, scoring with the numpy scorer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docs" / "examples" / "debian-armv7l.sh"
DEBIAN_PYTHON = Path("/usr/bin/python3")

pytestmark = pytest.mark.slow


def _debian_packages_present() -> bool:
    if not DEBIAN_PYTHON.exists() or not shutil.which("apt-get"):
        return False
    probe = subprocess.run([str(DEBIAN_PYTHON), "-c", "import numpy, cryptography, ensurepip"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not _debian_packages_present(),
                    reason="needs root and Debian's python3-numpy, python3-cryptography, python3-venv "
                           "(apt-get install -y python3-numpy python3-cryptography python3-venv)")
def test_the_debian_packages_install_runs_the_agent_without_onnxruntime(tmp_path, model_path, checkout_wheel):
    wheel = checkout_wheel
    venv = tmp_path / "venv"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "WHEEL": str(wheel),
           "GATEWAY_VENV": str(venv), "PYTHON": str(DEBIAN_PYTHON), "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ok: numpy 1." in done.stdout
    isolated = {"PATH": "/usr/bin:/bin"}
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import onnxruntime"], capture_output=True,
                          env=isolated, cwd=tmp_path).returncode != 0
    numpy_origin = subprocess.run([str(venv / "bin" / "python"), "-c", "import numpy; print(numpy.__file__)"],
                                  capture_output=True, text=True, env=isolated, cwd=tmp_path).stdout
    assert numpy_origin.startswith("/usr/lib/python3/dist-packages/"), numpy_origin

    from meter_data import T0, recording, write_csv
    csv = write_csv(tmp_path / "r.csv", recording(2, T0, 3600, 60))
    config = tmp_path / "agent.toml"
    config.write_text(f'gateway_id = "gw-deb"\ndata_dir = "{tmp_path / "data"}"\nstatus_s = 30\n'
                      f'[model]\npath = "{model_path}"\n[clock]\nstart = {T0}\nspeed = 300\n'
                      f'[[readers]]\ntype = "replay"\npath = "{csv}"\n')
    agent = subprocess.Popen([str(venv / "bin" / "gridsight"), "agent", "run", "--config", str(config),
                              "--no-publish"], env=isolated, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        status = {}
        while time.monotonic() < deadline:
            status_file = tmp_path / "data" / "status.json"
            if status_file.exists():
                status = json.loads(status_file.read_text())
                if status.get("counters", {}).get("summaries", 0) >= 2:
                    break
            assert agent.poll() is None, agent.stderr.read()[-2000:]
            time.sleep(1)
    finally:
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=60)
    assert status.get("scorer") == "numpy", out[-2000:] + err[-2000:]
    assert status["counters"]["summaries"] >= 2 and status["model_version"]
    assert all(line.startswith("{") for line in out.splitlines() if line), out[-2000:]
