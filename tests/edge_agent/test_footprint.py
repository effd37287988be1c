"""The agent's footprint on a gateway: what it imports, which threads it starts, what it keeps resident."""

from __future__ import annotations

import pytest
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_agent.footprint import release_startup_memory
from edge_agent.scorer import Scorer
from meter_data import T0, recording, write_csv

pytestmark = pytest.mark.slow  # make test-fast leaves it out

# Packages of the collector, training and simulator roles: none of them belongs on a gateway.
NOT_ON_A_GATEWAY = ("fastapi", "starlette", "pydantic", "sqlmodel", "sqlalchemy", "asyncpg", "uvicorn", "boto3",
                    "prophet", "pandas", "sklearn", "scipy", "onnx", "skl2onnx", "collector", "model_export",
                    "firmware_sim", "dashboards")
# Protocol libraries are imported only by the readers that need them.
READER_LIBRARIES = ("pymodbus", "serial", "dlms_cosem")


def modules_after_start_up(tmp_path, model_path, **env: str) -> list[str]:
    """Every module loaded once the agent has gone through its start-up (settings, readers, model:
    ``agent check-config``, which does not run it), in the environment the systemd unit gives the
    agent (PYTHONOPTIMIZE=2: no docstrings, no asserts) plus ``env``."""
    csv = write_csv(tmp_path / "r.csv", recording(2, T0, 600, 10))
    config = tmp_path / "agent.toml"
    config.write_text(f'gateway_id = "gw-1"\ndata_dir = "{tmp_path / "data"}"\n[model]\npath = "{model_path}"\n'
                      f'[[readers]]\ntype = "replay"\npath = "{csv}"\n')
    code = ("import json, sys\nfrom gridsight.cli import main\n"
            f"code = main(['agent', 'check-config', '--config', {str(config)!r}])\n"
            "import edge_agent.runtime, gridsight.logs\n"
            "print(json.dumps([code, sorted(sys.modules)]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **unit_environment(), **env})
    code, modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert code == 0, result.stderr[-2000:]
    return modules


def test_agent_start_up_imports_no_cloud_training_or_unconfigured_reader_packages(tmp_path, model_path):
    modules = {m.split(".")[0] for m in modules_after_start_up(tmp_path, model_path)}
    assert "onnxruntime" in modules and "paho" in modules  # it did load the model and the publisher
    assert sorted(modules & set(NOT_ON_A_GATEWAY + READER_LIBRARIES)) == []


def test_agent_start_up_with_the_numpy_scorer_leaves_out_modules_it_only_would_keep_for_nothing(tmp_path, model_path):
    """numpy.ma (pulled in by np.median, np.unique) and importlib.metadata (entry points) would
    stay resident for the agent's life; the agent finds readers and computes medians without them."""
    modules = modules_after_start_up(tmp_path, model_path, GRIDSIGHT_SCORER="numpy")
    assert "edge_agent.onnx_trees" in modules and "edge_agent.readers.replay" in modules
    assert [m for m in modules if m.split(".")[:2] in (["numpy", "ma"], ["importlib", "metadata"])
            or m.startswith("onnxruntime")] == []


def unit_environment() -> dict[str, str]:
    unit = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "gridsight-agent.service"
    lines = [line.partition("=")[2] for line in unit.read_text().splitlines() if line.startswith("Environment=")]
    return dict(assignment.split("=", 1) for line in lines for assignment in line.split())


def test_numpy_starts_no_blas_worker_threads_in_the_agent_process():
    code = ("import os\nfrom edge_agent.footprint import limit_thread_pools\nlimit_thread_pools()\n"
            "import numpy\nprint(len(os.listdir('/proc/self/task')))\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) == 1  # the main thread only: OpenBLAS would start one per extra core


def _resident_kb(address: int) -> int:
    """Resident kB of the mapping that starts at ``address``, from /proc/self/smaps."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.split("-", 1)[0] == f"{address:x}":
            return next(int(x.split()[1]) for x in lines[i + 1:] if x.startswith("Rss:"))
    raise AssertionError(f"no mapping at {address:x}")


def test_releasing_start_up_memory_drops_clean_file_pages_and_keeps_written_ones(tmp_path):
    size = 4 * 1024 * 1024
    for name, content in (("library.bin", bytes(range(256)) * (size // 256)), ("copied.bin", b"\x01" * size)):
        with open(tmp_path / name, "wb") as fh:
            fh.write(content)
            os.fsync(fh.fileno())  # on disk, like an installed library: its cached pages are clean
    with open(tmp_path / "library.bin", "rb") as lib, open(tmp_path / "copied.bin", "rb") as cow:
        clean = mmap.mmap(lib.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        dirty = mmap.mmap(cow.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        sum(clean[i] for i in range(0, size, 4096))  # touched once, like start-up code
        dirty[::4096] = b"\x02" * (size // 4096)      # private copies: dropping them would mean swap
        clean_at = _mapping_of(tmp_path / "library.bin")
        dirty_at = _mapping_of(tmp_path / "copied.bin")
        assert _resident_kb(clean_at) == size // 1024 and _resident_kb(dirty_at) == size // 1024
        released = release_startup_memory()
        assert released.file_pages >= size // 2
        assert _resident_kb(clean_at) == 0
        assert _resident_kb(dirty_at) == size // 1024
        assert clean[4096 * 7] == (4096 * 7) % 256 and dirty[4096] == 2  # and both still read back
    finally:
        clean.close()
        dirty.close()


def _mapping_of(path: Path) -> int:
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            return int(line.split("-", 1)[0], 16)
    raise AssertionError(f"{path} is not mapped")


def test_a_model_scores_the_same_after_start_up_memory_is_released(model_path):
    scorer = Scorer.load(model_path)
    X = np.random.default_rng(3).normal(size=(64, len(scorer.feature_names))).astype(np.float32)
    before, labels_before = scorer.score(X)
    release_startup_memory()
    after, labels_after = scorer.score(X)
    assert np.array_equal(before, after) and np.array_equal(labels_before, labels_after)
