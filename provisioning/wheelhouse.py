"""An offline wheelhouse for gateways: every wheel the agent needs, for the gateway's platform,
downloaded on the technician's workstation (``pip download --only-binary=:all:``) and carried
in the bundle, so a gateway without internet installs from the bundle alone.

The wheelhouse holds ``platform.json`` (what it was built for) and ``install.py`` (standard
library only), which refuses in one line to install on a machine of another platform or Python
version before pip would fail halfway, or from a wheelhouse whose wheels are not the ones it was
built with (a damaged, missing or added wheel: ``platform.json`` records each wheel's SHA-256), then
creates the venv and installs with ``--no-index``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from gridsight.errors import ProvisionError

__all__ = ["build_wheelhouse", "PLATFORM_MACHINES"]

# pip platform tag prefix -> what platform.machine() says on such a gateway
PLATFORM_MACHINES = {"manylinux2014_aarch64": "aarch64", "manylinux_2_17_aarch64": "aarch64",
                     "manylinux_2_28_aarch64": "aarch64", "manylinux2014_x86_64": "x86_64",
                     "manylinux_2_17_x86_64": "x86_64", "manylinux_2_28_x86_64": "x86_64",
                     "linux_armv7l": "armv7l", "manylinux_2_31_armv7l": "armv7l"}

_INSTALL_PY = '''"""Install gridsight from this wheelhouse, offline: python3 install.py [VENV] [--keep-pip]

VENV defaults to /opt/gridsight. The venv is built to run, not to be changed: bytecode is
compiled once for the unit's PYTHONOPTIMIZE=2 (no unused level-0 copies), and pip and
setuptools are removed afterwards (--keep-pip keeps them). Upgrade by running a newer
bundle's install.py into a fresh VENV."""
import hashlib, json, os, platform, subprocess, sys
from pathlib import Path

here = Path(__file__).resolve().parent
built = json.loads((here / "platform.json").read_text())
machine, python = platform.machine(), "%d.%d" % sys.version_info[:2]
if machine != built["machine"] or python != built["python_version"]:
    sys.exit("install.py: error: this wheelhouse is for %s with Python %s; this machine is %s with Python %s: "
             "build one with 'gridsight provision wheelhouse --platform TAG --python-version %s'"
             % (built["machine"], built["python_version"], machine, python, python))
pinned = built.get("sha256")
if pinned is None:
    print("install.py: warning: this wheelhouse records no wheel hashes (built by an older gridsight); "
          "its wheels are not checked", file=sys.stderr)
else:
    present = sorted(p.name for p in here.glob("*.whl"))
    for name in sorted(set(present) | set(pinned)):
        if name not in pinned:
            sys.exit("install.py: error: %s is not one of the wheels this wheelhouse was built with; "
                     "remove it or build the wheelhouse again" % name)
        if name not in present:
            sys.exit("install.py: error: %s is missing from the wheelhouse; copy the bundle again" % name)
        if hashlib.sha256((here / name).read_bytes()).hexdigest() != pinned[name]:
            sys.exit("install.py: error: %s does not match the SHA-256 it was built with (damaged copy?); "
                     "copy the bundle again" % name)
args = [a for a in sys.argv[1:] if a != "--keep-pip"]
venv = Path(args[0] if args else "/opt/gridsight")
# a PYTHONPATH of this shell must not make pip think gridsight is installed already
env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
py = str(venv / "bin" / "python")
done = subprocess.run([py, "-m", "pip", "install", "--no-compile", "--no-index", "--find-links", str(here),
                       built["requirement"]], env=env)
if done.returncode != 0:
    sys.exit(done.returncode)
if "--keep-pip" not in sys.argv:
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "pip", "setuptools"], check=True, env=env)
subprocess.run([py, "-OO", "-m", "compileall", "-q", str(venv)], env=env)
print("installed %s into %s" % (built["requirement"], venv))
'''


def _platform_tags(platform: str, machine: str, glibc: str) -> list[str]:
    """The tag asked for plus every manylinux_2_N tag up to the gateway's glibc: pip's --platform
    matches tags literally, and e.g. onnxruntime >= 1.17 ships aarch64 wheels only as manylinux_2_27+."""
    if not platform.startswith("manylinux"):
        return [platform]
    m = re.fullmatch(r"2\.(\d{2})", glibc)
    if not m:
        raise ProvisionError(f"--glibc {glibc!r}: expected e.g. 2.36 (ldd --version on the gateway)")
    return [platform] + [f"manylinux_2_{n}_{machine}" for n in range(17, int(m.group(1)) + 1)]


def _pip_error(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    return (errors or done.stderr.strip().splitlines() or ["failed"])[0]


def _wheels_of_pure_python_sdists(wheel: Path, extra: str, out: Path, progress) -> None:
    """Some dependencies publish only an sdist (dsmr-parser's tailer): resolve on this machine,
    build those into wheels in ``out``, and refuse one whose wheel is not pure Python (it would
    be built for this machine, not the gateway)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gridsight-resolve-") as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--dest", tmp,
                               f"{wheel.resolve()}[{extra}]" if extra else str(wheel.resolve())],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ProvisionError(f"pip download: {_pip_error(done)}")
        sdists = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".zip"))]
        for sdist in sdists:
            progress(f"building a wheel of {sdist.name} (published without one)")
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp + "/built",
                                    str(sdist)], capture_output=True, text=True)
            if built.returncode != 0:
                raise ProvisionError(f"pip wheel {sdist.name}: {_pip_error(built)}")
        for made in Path(tmp, "built").glob("*.whl") if sdists else ():
            if not made.name.endswith("-none-any.whl"):
                raise ProvisionError(f"{made.name} is not pure Python and has no wheel for the gateway's platform")
            shutil.copy(made, out / made.name)


def build_wheelhouse(wheel: Path, out: Path, platform: str, python_version: str, extra: str = "edge",
                     progress=print, glibc: str = "2.36") -> Path:
    """Download ``wheel[extra]`` and every dependency as binary wheels for ``platform`` into ``out``."""
    if not wheel.is_file() or wheel.suffix != ".whl":
        raise ProvisionError(f"{wheel} is not a wheel file: build one with 'python -m build' or 'pip wheel . -w dist'")
    machine = PLATFORM_MACHINES.get(platform)
    if machine is None:
        raise ProvisionError(f"unknown platform {platform!r}: use one of {', '.join(sorted(PLATFORM_MACHINES))}")
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise ProvisionError(f"--python-version {python_version!r}: expected e.g. 3.11")
    if out.exists() and any(out.iterdir()):
        raise ProvisionError(f"{out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    name = wheel.name.split("-")[0]
    requirement = f"{name}[{extra}]" if extra else name
    tags = _platform_tags(platform, machine, glibc)
    _wheels_of_pure_python_sdists(wheel, extra, out, progress)
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--find-links", str(out),
               *(arg for tag in tags for arg in ("--platform", tag)), "--python-version", python_version, "--implementation", "cp", "--dest", str(out),
               f"{wheel.resolve()}[{extra}]" if extra else str(wheel.resolve())]
    progress(f"downloading {requirement} for {platform}, Python {python_version} into {out}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise ProvisionError(f"pip download for {platform}: {_pip_error(done)} "
                             f"(a dependency without a {platform} wheel? see docs/agent.md, Supported platforms)")
    wheels = sorted(out.glob("*.whl"))
    (out / "platform.json").write_text(json.dumps({"platform": platform, "machine": machine, "glibc": glibc,
                                                   "python_version": python_version,
                                                   "requirement": requirement,
                                                   "wheels": [p.name for p in wheels],
                                                   "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                              for p in wheels}}, indent=2))
    (out / "install.py").write_text(_INSTALL_PY)
    return out
