"""Agent footprint: 200 simulated meters at 1 reading/s through a real agent process and broker.

Runs ``gridsight agent run`` as its own process (the same command systemd runs) reading 200
simulated meters at one reading per second (a generated recording of load curves with noise,
replayed by the ``replay`` reader as the clock passes each reading), a trained model loaded, a
local Mosquitto and a simulated clock ``--speed`` times faster than real time, and samples the
process from /proc: RSS (steady state and growth), CPU time, bytes written to storage. The
agent's own status reports publish latency (outbox write -> PUBACK). Resident memory is also
split (smaps_rollup) into anonymous (heap, stacks: what really costs a gateway), file-backed
(library code, reclaimable) and shared with other processes (pages another program on this
machine maps too, e.g. onnxruntime in a concurrent job: a gateway runs the agent alone), and
a fresh process walks the agent's start-up stage by stage (interpreter, numpy, paho-mqtt,
onnxruntime, agent modules, model session, start-up memory released) for a breakdown table.

Side by side, in the same run, the obvious alternative for durability: the outbox written
with one SQLite commit per reading instead of one transaction per poll cycle (same readings,
same synchronous=FULL), measured in-process as CPU and bytes written per 1,000 readings.

    .venv/bin/python bench/agent_footprint.py [--quick] [--speed 10] [--sim-minutes 40] [--max-samples N]
                                              [--scorer numpy|onnxruntime|both]

Both scorers run side by side by default (the same model file, recording and clock): the numpy
evaluator of the model's tree ensemble and onnxruntime, each with the per-interval scoring
latency and the size on disk of the venv its extra installs ([edge] / [edge-onnx]).

Figures are per simulated time where it matters: "outbox bytes written per hour" is what an
SD card sees per real hour in production. The Pi 3 estimate multiplies CPU per simulated
second by 8 (a Pi 3 is roughly 8x slower per core than this machine). The last line printed
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.footprint import memory_breakdown  # noqa: E402
from edge_agent.outbox import Outbox  # noqa: E402
from gridsight.wire import Reading  # noqa: E402
from gridsight.local_services import LocalMosquitto, free_port  # noqa: E402

T0 = 1_767_225_600.0
METERS = 200
PI3_SLOWDOWN = 8.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def proc_sample(pid: int) -> tuple[float, float, int, dict[str, float]]:
    """(rss MB, cpu seconds, bytes written to storage, {rss, pss, anon, file, shared} MB) of a process."""
    with open(f"/proc/{pid}/statm") as fh:
        rss = int(fh.read().split()[1]) * PAGE / 1e6
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    io = dict(line.split(": ") for line in open(f"/proc/{pid}/io").read().splitlines() if line)
    return rss, cpu, int(io["write_bytes"]), memory_breakdown(pid)


# Each stage of the agent's start-up in a fresh process, in the order the agent goes through
# them; the agent's own settings (thread pools, allocator) first, as `gridsight agent run` does,
# in the environment the systemd unit gives it.
_STAGES = r"""
import json, sys
from edge_agent.footprint import limit_thread_pools, memory_breakdown, release_startup_memory, tune_allocator
limit_thread_pools(); tune_allocator()
out = [("interpreter", memory_breakdown())]
import numpy
out.append(("+ numpy", memory_breakdown()))
import paho.mqtt.client
out.append(("+ paho-mqtt", memory_breakdown()))
if sys.argv[2] == "onnxruntime":
    import onnxruntime
    out.append(("+ onnxruntime import", memory_breakdown()))
import edge_agent.runtime, edge_agent.cli, gridsight.logs
out.append(("+ agent modules", memory_breakdown()))
from edge_agent.scorer import Scorer
scorer = Scorer.load(sys.argv[1], kind=sys.argv[2])
out.append((f"+ model loaded ({scorer.kind})", memory_breakdown()))
release_startup_memory()
out.append(("+ start-up memory released", memory_breakdown()))
print(json.dumps(out))
"""


def stage_breakdown(model: Path, env: dict[str, str], scorer: str) -> list[tuple[str, dict[str, float]]]:
    """Resident memory after each start-up stage of the agent (fresh process, this model)."""
    out = subprocess.run([sys.executable, "-c", _STAGES, str(model), scorer], capture_output=True, text=True,
                         cwd=ROOT, check=True, env=env)
    return [(name, figures) for name, figures in json.loads(out.stdout.strip().splitlines()[-1])]


def model_load_rss_mb(path: Path, scorer: str) -> float:
    """Resident memory the scorer adds by loading this model (fresh process, its runtime already imported)."""
    code = (("import onnxruntime\n" if scorer == "onnxruntime" else "import numpy\n") +
            "def rss():\n    return int(open('/proc/self/statm').read().split()[1]) * %d / 1e6\n"
            "from edge_agent.scorer import Scorer\nbefore = rss()\nScorer.load(%r, kind=%r)\nprint(rss() - before)\n"
            % (PAGE, str(path), scorer))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def train_model(path: Path, max_samples: int | None) -> None:
    from model_export.pipeline import train_and_export

    readings = []
    for m in range(6):
        energy = 100.0 * (m + 1)
        for i in range(14 * 96):
            ts = T0 - 14 * 86_400 + i * 900
            hour = (ts % 86_400) / 3600
            power = 400 + 250 * math.sin((hour - 6) / 24 * 2 * math.pi) + 40 * m
            energy += power * 900 / 3.6e6
            readings.append(Reading(f"m{m}", ts, energy, power))
    extra = {} if max_samples is None else {"max_samples": max_samples}
    train_and_export(readings, path, version="bench-1", **extra)


def write_recording(path: Path, sim_seconds: float) -> None:
    """200 meters, one reading per second: smooth daily curves, per-meter size, random noise."""
    import random

    rng = random.Random(1)
    energy = [100.0 * (m + 1) for m in range(METERS)]
    with path.open("w") as fh:
        fh.write("meter_id,ts,energy_kwh,power_w,voltage_v\n")
        for s in range(int(sim_seconds) + 60):
            ts = T0 + s
            hour = (ts % 86_400) / 3600
            base = 400 + 250 * math.sin((hour - 6) / 24 * 2 * math.pi)
            lines = []
            for m in range(METERS):
                power = max(0.0, base * (0.5 + m / METERS) + rng.gauss(0, 30))
                energy[m] += power / 3.6e6
                lines.append(f"meter-{m:03d},{ts:.0f},{energy[m]:.6f},{power:.1f},{229 + rng.random() * 3:.1f}\n")
            fh.write("".join(lines))


def prepare(work: Path, sim_seconds: float, max_samples: int | None) -> tuple[Path, Path, int]:
    recording = work / "meters.csv"
    log("writing the 200-meter recording ...")
    write_recording(recording, sim_seconds)
    model = work / "model.onnx"
    log("training a model for the agent to load ...")
    nodes = train_in_subprocess(model, max_samples)
    return recording, model, nodes


def run_agent(work: Path, speed: float, sim_seconds: float, recording: Path, model: Path, nodes: int,
              scorer: str, local: bool = False) -> dict:
    """One agent run with ``scorer``; with ``local`` also the Home Assistant discovery (to the same
    local broker) and the localhost metrics page, scraped every 5 s as Prometheus would."""
    work = work / (scorer + ("-local-on" if local else ""))
    work.mkdir()
    broker = LocalMosquitto(work / "mqtt").start()
    collector = _Subscriber(broker.port)  # stands in for the collector's subscription
    model_rss = model_load_rss_mb(model, scorer)
    log(f"model: {model.stat().st_size / 1e6:.2f} MB file, {model_rss} MB resident once loaded")
    metrics_port = free_port()
    scrapes = 0
    config = work / "agent.toml"
    config.write_text(f"""
gateway_id = "gw-bench"
data_dir = "{work / 'data'}"
interval_s = 900
poll_s = 1.0
raw_chunk_s = 60.0
status_s = 60.0
log_level = "warning"
[mqtt]
url = "{broker.url}"
[model]
path = "{model}"
[clock]
start = {T0}
speed = {speed}
[[readers]]
type = "replay"
path = "{recording}"
""" + (f"""[local]
ha_mqtt_url = "{broker.url}"
metrics_port = {metrics_port}
""" if local else ""))
    cmd = [sys.executable, "-m", "gridsight.cli", "agent", "run", "--config", str(config)]
    # the environment the systemd unit gives the agent
    env = {**precompiled_environment(work), "GRIDSIGHT_SCORER": scorer}
    agent_log = open(work / "agent.log", "wb")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(cmd, stdout=agent_log, stderr=subprocess.STDOUT, env=env)
    samples: list[tuple[float, float, float, int, dict[str, float]]] = []
    started = time.monotonic()
    real_seconds = sim_seconds / speed
    try:
        next_report = 0.0
        while time.monotonic() - started < real_seconds:
            if proc.poll() is not None:
                raise SystemExit(f"agent exited: {(work / 'agent.log').read_text()[-2000:]}")
            rss, cpu, written, memory = proc_sample(proc.pid)
            elapsed = time.monotonic() - started
            samples.append((elapsed, rss, cpu, written, memory))
            if local and elapsed >= scrapes * 5.0:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
                        resp.read()
                    scrapes += 1
                except OSError:
                    pass
            if elapsed >= next_report:
                log(f"  {elapsed:5.0f}/{real_seconds:.0f} s real ({elapsed * speed / 60:5.1f} sim min): "
                    f"rss {rss:5.1f} MB (anon {memory['anon']:5.1f}, file {memory['file']:5.1f}, "
                    f"shared {memory['shared']:5.1f}), "
                    f"cpu {cpu:6.2f} s, written {written / 1e6:6.2f} MB")
                next_report += 10
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        agent_log.close()
        collector.close()
        broker.close()
    problems = [line for line in (work / "agent.log").read_text().splitlines() if '"level": "warning"' in line
                or '"level": "error"' in line or "Traceback" in line]
    for line in problems[:20]:
        log(f"  agent log: {line[:300]}")
    status = json.loads((work / "data" / "status.json").read_text())
    log(f"subscriber received {collector.received} messages")
    return {"samples": samples, "status": status, "model_rss_mb": model_rss, "received": collector.received,
            "metrics_scrapes": scrapes,
            "model_file_mb": round(model.stat().st_size / 1e6, 2), "model_nodes": nodes,
            "stages": stage_breakdown(model, env, scorer), "scorer": status.get("scorer"),
            "scoring_latency_ms": scoring_latency_ms(model, scorer)}


def unit_environment() -> dict[str, str]:
    """The ``Environment=`` of deploy/systemd/gridsight-agent.service: the agent runs as on a gateway."""
    env = {}
    for line in (ROOT / "deploy" / "systemd" / "gridsight-agent.service").read_text().splitlines():
        if line.startswith("Environment="):
            for assignment in line.partition("=")[2].split():
                key, _, value = assignment.partition("=")
                env[key] = value
    return env


_PRECOMPILE = r"""
import importlib.util, py_compile, sys
import edge_agent.cli, edge_agent.footprint, gridsight.logs, edge_agent.readers.replay, edge_agent.runtime
import gridsight.cli, numpy, onnxruntime, paho.mqtt.client
for module in list(sys.modules.values()):
    source = getattr(module, "__file__", None) or ""
    if source.endswith(".py"):
        py_compile.compile(source, cfile=importlib.util.cache_from_source(source), optimize=2, doraise=True)
"""


def precompiled_environment(work: Path) -> dict[str, str]:
    """The unit's environment plus bytecode compiled for its PYTHONOPTIMIZE=2, as the install step
    in the README does (``compileall -OO``); kept in a private cache so the venv is not touched."""
    env = {**os.environ, **unit_environment(), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    subprocess.run([sys.executable, "-c", _PRECOMPILE], cwd=ROOT, env=env, check=True)
    return env


def model_nodes(path: Path) -> int:
    """Tree nodes in the model (the model-size contract: at most ~52,000)."""
    import onnx

    model = onnx.load(str(path))
    return sum(len(a.strings) for n in model.graph.node for a in n.attribute if a.name == "nodes_modes")


def train_in_subprocess(path: Path, max_samples: int | None) -> int:
    """Train (and count the model's tree nodes) in another process: a bench process holding
    numpy and onnxruntime would share their library pages with the agent, which a gateway's
    agent never does, and shared pages stay in the agent's resident set."""
    code = ("import sys; sys.path.insert(0, %r)\nfrom pathlib import Path\n"
            "from agent_footprint import model_nodes, train_model\n"
            "train_model(Path(%r), %r)\nprint(model_nodes(Path(%r)))\n"
            % (str(ROOT / "bench"), str(path), max_samples, str(path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"training failed: {out.stderr[-2000:]}")
    return int(out.stdout.strip().splitlines()[-1])


def scoring_latency_ms(model: Path, scorer: str, rows: int = METERS, repeats: int = 50) -> float:
    """Median time to score one interval of all meters (``rows`` feature rows) with this scorer."""
    code = ("import json, sys, time, numpy as np\nfrom edge_agent.scorer import Scorer\n"
            "s = Scorer.load(sys.argv[1], kind=sys.argv[2])\n"
            "X = np.asarray(s.metadata['selftest']['X'], dtype=np.float32)\n"
            "X = np.resize(X, (int(sys.argv[3]), X.shape[1]))\ntimes = []\n"
            "for _ in range(int(sys.argv[4])):\n    t = time.perf_counter(); s.score(X)\n"
            "    times.append(time.perf_counter() - t)\n"
            "print(sorted(times)[len(times) // 2] * 1000)\n")
    out = subprocess.run([sys.executable, "-c", code, str(model), scorer, str(rows), str(repeats)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def venv_size_mb(extra: str) -> dict:
    """Bytes on disk an edge venv holds for ``gridsight[extra]``: every installed distribution in the
    extra's dependency closure (their RECORD sizes, as pip installed them here), gridsight's own
    packages, and pip (what 'python -m venv' puts there)."""
    import re
    from importlib.metadata import PackageNotFoundError, distribution

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    def requirements(dist, extras: set[str]) -> list[tuple[str, set[str]]]:
        out = []
        for req in dist.requires or []:
            name_part, _, marker = req.partition(";")
            m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[([^\]]*)\])?", name_part)
            wanted_extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if wanted_extra and wanted_extra.group(1) not in extras:
                continue
            if marker.strip() and not wanted_extra and ("platform" in marker or "python_version" in marker):
                try:
                    from packaging.markers import Marker
                    if not Marker(marker.strip()).evaluate():
                        continue
                except Exception:
                    pass
            out.append((m.group(1), {e.strip() for e in (m.group(3) or "").split(",") if e.strip()}))
        return out

    seen: dict[str, int] = {}
    todo = [(name, ext) for name, ext in requirements(distribution("gridsight"), {extra})
            if norm(name) != "gridsight"] + [("pip", set())]
    for name, ext in [r for r in requirements(distribution("gridsight"), {extra}) if norm(r[0]) == "gridsight"]:
        todo += [r for r in requirements(distribution("gridsight"), ext) if norm(r[0]) != "gridsight"]
    while todo:
        name, ext = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        key = norm(dist.metadata["Name"])
        if key in seen:
            continue
        seen[key] = sum((f.size or 0) for f in (dist.files or []))
        todo += requirements(dist, ext)
    own = sum(p.stat().st_size for pkg in ("gridsight", "edge_agent", "provisioning", "collector", "model_export",
                                            "firmware_sim", "dashboards")
              for p in (ROOT / pkg).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {"total_mb": round((sum(seen.values()) + own) / 1e6, 1), "gridsight_mb": round(own / 1e6, 1),
            "by_package_mb": {k: round(v / 1e6, 1) for k, v in sorted(seen.items(), key=lambda kv: -kv[1])}}


def summarise_agent(run: dict, speed: float) -> dict:
    samples = run["samples"]
    counters = run["status"]["counters"]
    # steady state: the first simulated interval (model warm-up, first summaries) is excluded
    warm = [s for s in samples if s[0] * speed >= 900] or samples[len(samples) // 4:]
    t0, rss0, cpu0, w0, _ = warm[0]
    t1, rss1, cpu1, w1, _ = samples[-1]
    rss_values = sorted(s[1] for s in warm)

    def steady(key: str) -> float:
        return round(sorted(s[4][key] for s in warm)[len(warm) // 2], 1)
    sim_s = (t1 - t0) * speed
    readings_in_window = METERS * sim_s  # 1 reading per meter per simulated second
    cpu_per_sim_s = (cpu1 - cpu0) / sim_s
    # growth: least-squares slope of RSS over the steady-state window, times its length
    n = len(warm)
    mean_t = sum(s[0] for s in warm) / n
    mean_r = sum(s[1] for s in warm) / n
    var_t = sum((s[0] - mean_t) ** 2 for s in warm) or 1.0
    slope = sum((s[0] - mean_t) * (s[1] - mean_r) for s in warm) / var_t
    return {
        "readings_total": int(counters["readings"]),
        "rss_steady_mb": round(rss_values[len(rss_values) // 2], 1),
        "rss_max_mb": round(max(s[1] for s in samples), 1),
        "rss_growth_mb": round(slope * (t1 - t0), 2),
        "rss_steady_anon_mb": steady("anon"), "rss_steady_file_mb": steady("file"), "pss_steady_mb": steady("pss"),
        # pages other processes on this machine map too (the same libraries): a gateway runs the
        # agent alone, and shared pages cannot be dropped from this process's resident set
        "rss_steady_shared_mb": steady("shared"),
        "model_tree_nodes": run["model_nodes"],
        "model_rss_mb": run["model_rss_mb"],
        "model_file_mb": run["model_file_mb"],
        "rss_steady_without_model_mb": round(rss_values[len(rss_values) // 2] - run["model_rss_mb"], 1),
        "cpu_ms_per_1000_readings": round(1000 * (cpu1 - cpu0) / readings_in_window * 1000, 2),
        "cpu_share_of_core_at_realtime": round(cpu_per_sim_s, 4),
        "pi3_cpu_share_of_core_estimate": round(cpu_per_sim_s * PI3_SLOWDOWN, 4),
        # over the whole run: interval closes (4 an hour) write state, so a short window would mislead
        "outbox_bytes_written_per_hour": int((w1 - samples[0][3]) / ((t1 - samples[0][0]) * speed) * 3600),
        "publish_latency_p50_ms": counters.get("mqtt_latency_p50_ms"),
        "publish_latency_p99_ms": counters.get("mqtt_latency_p99_ms"),
        "messages_acked": int(counters.get("mqtt_acked", 0)),
        "messages_received_by_subscriber": run["received"],
        "queue_depth_at_end": run["status"]["queue_depth"],
        "flags": int(counters.get("flags", 0)),
        "startup_stages_mb": dict(run["stages"]),
        "scorer": run["scorer"],
        "scoring_latency_ms_per_interval": run["scoring_latency_ms"],
    }


class _Subscriber:
    """A QoS 1 subscriber on every gateway topic that only counts what arrives."""

    def __init__(self, port: int) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received = 0
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-collector", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe("gridsight/v1/+/+", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._count
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise SystemExit("bench subscriber could not subscribe")

    def _count(self, client, userdata, message) -> None:
        self.received += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def io_written() -> int:
    io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines() if line)
    return int(io["write_bytes"])


def outbox_write_path(work: Path, readings_total: int, batched: bool) -> dict:
    """CPU and bytes written per 1,000 readings: one transaction per poll vs one commit per reading."""
    box = Outbox(work / ("batched.sqlite" if batched else "per-reading.sqlite"))
    polls = readings_total // METERS
    cpu0, w0 = time.process_time(), io_written()
    for p in range(polls):
        batch = [Reading(f"meter-{m}", T0 + p, 1000.0 + p * 0.001 + m, 400.0 + m) for m in range(METERS)]
        if batched:
            box.append(readings=batch)
        else:
            for r in batch:
                box.append(readings=[r])
    box.close()
    cpu, written = time.process_time() - cpu0, io_written() - w0
    n = polls * METERS
    return {"cpu_ms_per_1000_readings": round(cpu / n * 1e6, 2),
            "bytes_written_per_1000_readings": int(written / n * 1000)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: 20 simulated minutes at 20x")
    parser.add_argument("--speed", type=float, default=None, help="simulated seconds per real second (default 10; quick 20)")
    parser.add_argument("--sim-minutes", type=float, default=None, help="simulated run length (default 40; quick 20)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="IsolationForest max_samples of the loaded model (default: model_export's default)")
    parser.add_argument("--scorer", choices=["numpy", "onnxruntime", "both"], default="both",
                        help="the agent's scorer (GRIDSIGHT_SCORER); both: side by side (default: %(default)s)")
    parser.add_argument("--local-integrations", action="store_true",
                        help="also run the agent with Home Assistant discovery and the metrics page on, "
                             "and report their cost side by side (default: off)")
    args = parser.parse_args()
    speed = args.speed or (20.0 if args.quick else 10.0)
    sim_minutes = args.sim_minutes or (20.0 if args.quick else 40.0)
    command = "python bench/agent_footprint.py" + (" --quick" if args.quick else "") + \
        (f" --speed {args.speed}" if args.speed else "") + (f" --sim-minutes {args.sim_minutes}" if args.sim_minutes else "") + \
        (f" --max-samples {args.max_samples}" if args.max_samples else "") + \
        (f" --scorer {args.scorer}" if args.scorer != "both" else "") + \
        (" --local-integrations" if args.local_integrations else "")
    print(f"reproduce: {command}")
    scorers = ["numpy", "onnxruntime"] if args.scorer == "both" else [args.scorer]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gridsight-bench-") as tmp:
        work = Path(tmp)
        recording, model, nodes = prepare(work, sim_minutes * 60, args.max_samples)
        for scorer in scorers:
            log(f"agent ({scorer} scorer): {METERS} meters x 1 reading/s, {sim_minutes:.0f} simulated minutes "
                f"at {speed:.0f}x ...")
            runs[scorer] = summarise_agent(run_agent(work, speed, sim_minutes * 60, recording, model, nodes, scorer),
                                           speed)
            runs[scorer]["venv"] = venv_size_mb("edge" if scorer == "numpy" else "edge-onnx")
        local_cost = None
        if args.local_integrations:
            agent = runs[scorers[0]]
            log("the same run with Home Assistant discovery and the metrics page on ...")
            on_run = run_agent(work, speed, sim_minutes * 60, recording, model, nodes, scorers[0], local=True)
            on = summarise_agent(on_run, speed)
            local_cost = {"rss_steady_mb_off": agent["rss_steady_mb"], "rss_steady_mb_on": on["rss_steady_mb"],
                          "rss_cost_mb": round(on["rss_steady_mb"] - agent["rss_steady_mb"], 1),
                          "cpu_ms_per_1000_readings_off": agent["cpu_ms_per_1000_readings"],
                          "cpu_ms_per_1000_readings_on": on["cpu_ms_per_1000_readings"],
                          "metrics_scrapes": on_run["metrics_scrapes"],
                          "local_errors": int(on_run["status"]["counters"].get("local_errors", 0))}
        readings = max(a["readings_total"] for a in runs.values())
        n = min(200_000, max(20_000, readings // 4))
        log(f"outbox write path: {n} readings, batched vs one commit per reading ...")
        batched = outbox_write_path(work, n, batched=True)
        per_reading = outbox_write_path(work, n // 10, batched=False)  # 10x fewer: it is that slow
    ratios = {
        "per_reading_commit_vs_batched_cpu": round(per_reading["cpu_ms_per_1000_readings"]
                                                   / max(batched["cpu_ms_per_1000_readings"], 1e-9), 1),
        "per_reading_commit_vs_batched_bytes": round(per_reading["bytes_written_per_1000_readings"]
                                                     / max(batched["bytes_written_per_1000_readings"], 1), 1),
    }
    print(f"{'scorer':12s} {'RSS steady':>10s} {'model':>6s} {'CPU/1000 rd':>11s} {'score/interval':>14s} "
          f"{'venv':>8s} {'Pi 3 CPU':>8s}")
    for scorer, a in runs.items():
        print(f"{scorer:12s} {a['rss_steady_mb']:8.1f}MB {a['model_rss_mb']:4.1f}MB {a['cpu_ms_per_1000_readings']:9.2f}ms "
              f"{a['scoring_latency_ms_per_interval']:12.3f}ms {a['venv']['total_mb']:6.1f}MB "
              f"{100 * a['pi3_cpu_share_of_core_estimate']:7.1f}%")
    for scorer, a in runs.items():
        print(f"[{scorer}] RSS growth {a['rss_growth_mb']} MB, outbox writes {a['outbox_bytes_written_per_hour'] / 1e6:.1f} "
              f"MB per hour, publish latency p50 {a['publish_latency_p50_ms']} ms p99 {a['publish_latency_p99_ms']} ms")
        print(f"[{scorer}] resident memory by stage (MB)   rss   anon   file    pss shared")
        steady = {"rss": a["rss_steady_mb"], "anon": a["rss_steady_anon_mb"], "file": a["rss_steady_file_mb"],
                  "pss": a["pss_steady_mb"], "shared": a["rss_steady_shared_mb"]}
        for name, m in [*a["startup_stages_mb"].items(), ("+ agent running (steady)", steady)]:
            print(f"  {name:28s} {m['rss']:6.1f} {m['anon']:6.1f} {m['file']:6.1f} {m['pss']:6.1f} {m['shared']:6.1f}")
        print(f"[{scorer}] venv {a['venv']['total_mb']} MB: " +
              ", ".join(f"{k} {v}" for k, v in list(a['venv']['by_package_mb'].items())[:8]) +
              f", gridsight {a['venv']['gridsight_mb']}")
    print(f"outbox write path per 1000 readings: batched {batched['cpu_ms_per_1000_readings']} ms CPU, "
          f"{batched['bytes_written_per_1000_readings']} B; one commit per reading "
          f"{per_reading['cpu_ms_per_1000_readings']} ms CPU, {per_reading['bytes_written_per_1000_readings']} B "
          f"({ratios['per_reading_commit_vs_batched_cpu']}x CPU, {ratios['per_reading_commit_vs_batched_bytes']}x bytes)")
    if local_cost is not None:
        print(f"local integrations (Home Assistant discovery + metrics page scraped every 5 s): RSS steady "
              f"{local_cost['rss_steady_mb_off']} -> {local_cost['rss_steady_mb_on']} MB "
              f"({local_cost['rss_cost_mb']:+} MB), CPU {local_cost['cpu_ms_per_1000_readings_off']} -> "
              f"{local_cost['cpu_ms_per_1000_readings_on']} ms per 1000 readings, "
              f"{local_cost['metrics_scrapes']} scrapes, {local_cost['local_errors']} integration errors")
    first = runs[scorers[0]]
    figures = {"bench": "agent_footprint", "meters": METERS, "speed": speed, "sim_minutes": sim_minutes,
               **({"local_integrations": local_cost} if local_cost is not None else {}),
               **first, "by_scorer": runs, "outbox_batched": batched, "outbox_one_commit_per_reading": per_reading,
               **ratios, "targets": {"rss_mb_max": 80, "numpy_rss_mb_max": 55, "edge_venv_mb_max": 120,
                                     "pi3_cpu_share_max": 0.10},
               "rss_target_met": first["rss_steady_mb"] <= 80,
               "numpy_targets_met": ({"rss": runs["numpy"]["rss_steady_mb"] <= 55,
                                      "venv": runs["numpy"]["venv"]["total_mb"] <= 120} if "numpy" in runs else None),
               "command": command}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
