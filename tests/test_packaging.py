"""`python -m build` makes a wheel and an sdist that carry the deployment files, and an installed
(non-editable) gridsight finds them: `provision bundle` needs no --unit and no checkout."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = ("systemd/gridsight-agent.service", "systemd/gridsight-collector.service", "systemd/agent.example.toml",
          "mosquitto/gridsight.conf")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory, repo_build_lock) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    with repo_build_lock():
        done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
                              capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [wheel], [sdist] = out.glob("gridsight-*.whl"), out.glob("gridsight-*.tar.gz")
    return wheel, sdist


def test_the_wheel_and_the_sdist_carry_the_unit_the_broker_config_and_the_example_config(built):
    wheel, sdist = built
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in DEPLOY:
        assert f"gridsight/_deploy/{name}" in names
        assert zipfile.ZipFile(wheel).read(f"gridsight/_deploy/{name}") == (REPO / "deploy" / name).read_bytes()
    with tarfile.open(sdist) as tar:
        members = {Path(*Path(m.name).parts[1:]).as_posix() for m in tar.getmembers()}
    assert {f"deploy/{name}" for name in DEPLOY} | {"setup.py", "MANIFEST.in", "pyproject.toml"} <= members


def test_an_installed_wheel_writes_a_bundle_with_its_own_unit_and_knows_its_version(built, tmp_path):
    wheel, _ = built
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the installed copy first on the path, run from outside the checkout: no deploy/ folder to fall back on
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)}

    def gridsight(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gridsight", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    version = gridsight("--version")
    assert version.returncode == 0 and version.stdout.strip() == "gridsight 0.1.0", version.stderr
    fleet = str(tmp_path / "fleet")
    for argv in (["ca", "init", "--fleet", fleet],
                 ["gateway", "gw-1", "--fleet", fleet, "--broker", "mqtts://broker.example:8883"],
                 ["bundle", "gw-1", "--fleet", fleet, "--out", str(tmp_path / "bundle")],
                 ["deploy-files", "--out", str(tmp_path / "deploy")]):
        step = gridsight("provision", *argv)
        assert step.returncode == 0, step.stderr
    located = gridsight("provision", "--help")
    assert located.returncode == 0
    unit = (tmp_path / "bundle" / "gridsight-agent.service").read_bytes()
    assert unit == (REPO / "deploy/systemd/gridsight-agent.service").read_bytes()
    assert (tmp_path / "deploy" / "gridsight.conf").read_bytes() == (REPO / "deploy/mosquitto/gridsight.conf").read_bytes()
    where = subprocess.run([sys.executable, "-c", "from gridsight.shipped import shipped_file; "
                            "print(shipped_file('gridsight-agent.service'))"], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr


def test_a_wheelhouse_for_a_platform_without_wheels_is_one_line_and_leaves_nothing(built, tmp_path):
    wheel, _ = built
    done = subprocess.run([sys.executable, "-m", "gridsight", "provision", "wheelhouse", "--wheel", str(wheel),
                           "--out", str(tmp_path / "wh"), "--platform", "linux_armv7l", "--extra", "edge-onnx"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "linux_armv7l" in errors[0], done.stderr
    assert not (tmp_path / "wh").exists()


def test_install_py_refuses_a_wheelhouse_built_for_another_platform(tmp_path):
    import json
    from provisioning.wheelhouse import _INSTALL_PY

    (tmp_path / "platform.json").write_text(json.dumps({"machine": "riscv64", "python_version": "3.11",
                                                        "requirement": "gridsight[edge]"}))
    (tmp_path / "install.py").write_text(_INSTALL_PY)
    done = subprocess.run([sys.executable, str(tmp_path / "install.py"), str(tmp_path / "venv")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "this wheelhouse is for riscv64" in done.stderr and not (tmp_path / "venv").exists()


def _wheelhouse_with(tmp_path, wheels: dict[str, bytes], pinned: dict[str, bytes]) -> Path:
    import hashlib
    import json
    import platform as host

    from provisioning.wheelhouse import _INSTALL_PY

    for name, data in wheels.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "platform.json").write_text(json.dumps({
        "machine": host.machine(), "python_version": "%d.%d" % sys.version_info[:2],
        "requirement": "gridsight[edge]",
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in pinned.items()}}))
    (tmp_path / "install.py").write_text(_INSTALL_PY)
    return tmp_path / "install.py"


@pytest.mark.parametrize("case, wheels, message", [
    ("damaged", {"a-1-py3-none-any.whl": b"changed"}, "does not match the SHA-256"),
    ("missing", {}, "is missing from the wheelhouse"),
    ("added", {"a-1-py3-none-any.whl": b"wheel a", "evil-1-py3-none-any.whl": b"x"}, "is not one of the wheels"),
])
def test_install_py_refuses_a_wheel_that_is_not_the_one_the_wheelhouse_was_built_with(tmp_path, case, wheels, message):
    install = _wheelhouse_with(tmp_path, wheels, {"a-1-py3-none-any.whl": b"wheel a"})
    done = subprocess.run([sys.executable, str(install), str(tmp_path / "venv")], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, (case, done.stderr)
    assert message in done.stderr and not (tmp_path / "venv").exists()
