"""Scoring benchmark: scikit-learn decision_function vs skl2onnx's stock ONNX vs gridsight's compact ONNX.

One run, same forest (100 trees over 12 features unless told otherwise), same rows:
single-window latency (one row per call: p50, p99), batch throughput (rows/s, one thread),
memory held by a loaded model (RSS growth of a fresh process loading it and scoring once),
and the max absolute score difference from scikit-learn. Figures go to stdout, progress to
stderr, and the LAST line printed is one JSON object of the figures.

    python bench/scoring.py            # full run
    python bench/scoring.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

_RSS_PROBE = r"""
import sys, pickle
def rss_kb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
kind, path = sys.argv[1], sys.argv[2]
import numpy as np
X = np.load(sys.argv[3])
if kind == 'sklearn':
    import sklearn.ensemble
    before = rss_kb()
    with open(path, 'rb') as fh:
        model = pickle.load(fh)
    model.decision_function(X[:1])
else:
    import onnxruntime as ort
    before = rss_kb()
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    model = ort.InferenceSession(path, sess_options=so, providers=['CPUExecutionProvider'])
    model.run(None, {model.get_inputs()[0].name: X[:1]})
print(rss_kb() - before)
"""


def _say(message: str) -> None:
    print(f"bench/scoring: {message}", file=sys.stderr, flush=True)


def _latency(fn, rows: np.ndarray, calls: int) -> tuple[float, float]:
    for i in range(min(20, calls)):
        fn(rows[i: i + 1])
    samples = np.empty(calls)
    for i in range(calls):
        row = rows[i % rows.shape[0]: i % rows.shape[0] + 1]
        t0 = time.perf_counter_ns()
        fn(row)
        samples[i] = time.perf_counter_ns() - t0
    return float(np.percentile(samples, 50) / 1e3), float(np.percentile(samples, 99) / 1e3)


def _throughput(fn, rows: np.ndarray, repeats: int) -> float:
    fn(rows[:100])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(rows)
        best = min(best, time.perf_counter() - t0)
    return rows.shape[0] / best


def _rss_mb(kind: str, path: Path, rows_path: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, kind, str(path), str(rows_path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rows (about a minute)")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--features", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import pickle

    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.ensemble import IsolationForest

    from model_export.compact_onnx import compact_isolation_forest

    calls_sklearn, calls_onnx = (300, 3000) if args.quick else (2000, 20000)
    batch_rows, repeats = (20_000, 3) if args.quick else (200_000, 5)
    rng = np.random.default_rng(args.seed)
    train = rng.normal(size=(20_000, args.features)).astype(np.float32)
    rows = np.vstack([rng.normal(size=(batch_rows - batch_rows // 20, args.features)),
                      rng.normal(scale=4.0, size=(batch_rows // 20, args.features))]).astype(np.float32)
    rng.shuffle(rows)

    _say(f"fitting IsolationForest ({args.trees} trees, {args.features} features)")
    forest = IsolationForest(n_estimators=args.trees, max_samples=256, contamination=0.01,
                             random_state=args.seed).fit(train)
    _say("converting: skl2onnx stock (slow) and compact")
    t0 = time.perf_counter()
    stock = to_onnx(forest, train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    stock_convert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compact = compact_isolation_forest(forest, args.features)
    compact_convert_s = time.perf_counter() - t0

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = {name: ort.InferenceSession(m.SerializeToString(), sess_options=options,
                                           providers=["CPUExecutionProvider"])
                for name, m in (("stock_onnx", stock), ("compact_onnx", compact))}
    stock_out = [o.name for o in sessions["stock_onnx"].get_outputs()].index("scores")
    scorers = {
        "sklearn": lambda X: forest.decision_function(X),
        "stock_onnx": lambda X: sessions["stock_onnx"].run(None, {"X": X})[stock_out].reshape(-1),
        "compact_onnx": lambda X: sessions["compact_onnx"].run(None, {"features": X})[0],
    }

    reference = forest.decision_function(rows)
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"sklearn": Path(tmp) / "forest.pkl", "stock_onnx": Path(tmp) / "stock.onnx",
                 "compact_onnx": Path(tmp) / "compact.onnx"}
        paths["sklearn"].write_bytes(pickle.dumps(forest))
        paths["stock_onnx"].write_bytes(stock.SerializeToString())
        paths["compact_onnx"].write_bytes(compact.SerializeToString())
        rows_path = Path(tmp) / "rows.npy"
        np.save(rows_path, rows[:10])
        for name, fn in scorers.items():
            calls = calls_sklearn if name == "sklearn" else calls_onnx
            _say(f"{name}: single-row latency over {calls} calls")
            p50, p99 = _latency(fn, rows, calls)
            _say(f"{name}: batch throughput on {rows.shape[0]} rows")
            rps = _throughput(fn, rows, repeats)
            scores = np.asarray(fn(rows), dtype=np.float64)
            labels_agree = bool(np.array_equal(scores < 0, reference < 0))
            figures[name] = {
                "single_row_p50_us": round(p50, 1), "single_row_p99_us": round(p99, 1),
                "batch_rows_per_s": round(rps), "model_rss_mb": round(_rss_mb(
                    "sklearn" if name == "sklearn" else "onnx", paths[name], rows_path), 1),
                "file_bytes": paths[name].stat().st_size,
                "graph_nodes": None if name == "sklearn" else len((stock if name == "stock_onnx" else compact).graph.node),
                "max_abs_diff_vs_sklearn": float(np.max(np.abs(scores - reference))),
                "labels_agree_with_sklearn": labels_agree,
            }

    sk, st, co = figures["sklearn"], figures["stock_onnx"], figures["compact_onnx"]
    ratios = {
        "single_row_p50_speedup_vs_stock_onnx": round(st["single_row_p50_us"] / co["single_row_p50_us"], 1),
        "single_row_p50_speedup_vs_sklearn": round(sk["single_row_p50_us"] / co["single_row_p50_us"], 1),
        "batch_throughput_vs_sklearn": round(co["batch_rows_per_s"] / sk["batch_rows_per_s"], 2),
        "batch_throughput_vs_stock_onnx": round(co["batch_rows_per_s"] / st["batch_rows_per_s"], 2),
    }
    command = f"{Path(sys.executable).name} bench/scoring.py" + (" --quick" if args.quick else "") + \
        (f" --trees {args.trees}" if args.trees != 100 else "") + \
        (f" --features {args.features}" if args.features != 12 else "")
    print(f"command: {command}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()} "
          f"onnxruntime {ort.__version__}")
    print(f"conversion time: stock {stock_convert_s:.2f} s, compact {compact_convert_s:.2f} s")
    print(f"{'':14} {'p50 us':>10} {'p99 us':>10} {'rows/s':>12} {'RSS MB':>8} {'nodes':>6} {'max |diff|':>11}")
    for name, f in figures.items():
        print(f"{name:14} {f['single_row_p50_us']:>10} {f['single_row_p99_us']:>10} {f['batch_rows_per_s']:>12} "
              f"{f['model_rss_mb']:>8} {str(f['graph_nodes']):>6} {f['max_abs_diff_vs_sklearn']:>11.2e}")
    for key, value in ratios.items():
        print(f"{key}: {value}x")
    print(json.dumps({"bench": "scoring", "command": command, "quick": args.quick, "trees": args.trees,
                      "features": args.features, "batch_rows": int(rows.shape[0]),
                      "stock_convert_s": round(stock_convert_s, 2), "compact_convert_s": round(compact_convert_s, 3),
                      **{f"{name}": f for name, f in figures.items()}, **ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
