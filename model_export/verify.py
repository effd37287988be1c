"""`gridsight model verify`: prove a model file scores what it claims, without trusting onnxruntime.

The check re-reads the tree ensemble out of the ONNX file and walks every tree in numpy
(float64 thresholds, as scikit-learn compares), recomputes
``-2 ** (-sum(depth + c(n)) / (n_trees * c(max_samples))) - offset`` and compares with what
onnxruntime returns through the gateway's own :class:`~edge_agent.scorer.Scorer`: on the
self-test rows, on rows placed exactly on and beside every split threshold (where float
rounding would show), on random rows, and on the features of a readings file if given.
Scores must agree within 1e-5 and anomaly labels on every row.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge_agent.features import batch_features
from edge_agent.scorer import ModelError, Scorer
from model_export.compact_onnx import average_path_length
from gridsight.errors import GridsightError

__all__ = ["VerificationError", "ReferenceForest", "verify_model_file", "PARITY_TOLERANCE"]

PARITY_TOLERANCE = 1e-5


class VerificationError(GridsightError):
    """The model file does not do what it claims; the message says what differs."""

    exit_code = 1


class ReferenceForest:
    """The tree ensemble of a compact model file, evaluated independently in numpy."""

    def __init__(self, model: onnx.ModelProto) -> None:
        nodes = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
        if len(nodes) != 1:
            raise VerificationError(f"expected one TreeEnsembleRegressor node, found {len(nodes)} "
                                    f"(not a compact gridsight export)")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        if "scale" not in inits or "offset" not in inits:
            raise VerificationError("the graph lacks its scale/offset constants")
        self.scale, self.offset = float(inits["scale"]), float(inits["offset"])
        tree_ids = np.asarray(attrs["nodes_treeids"], dtype=np.int64)
        node_ids = np.asarray(attrs["nodes_nodeids"], dtype=np.int64)
        thresholds = (numpy_helper.to_array(attrs["nodes_values_as_tensor"]).astype(np.float64)
                      if "nodes_values_as_tensor" in attrs else np.asarray(attrs["nodes_values"], dtype=np.float64))
        weights = (numpy_helper.to_array(attrs["target_weights_as_tensor"]).astype(np.float64)
                   if "target_weights_as_tensor" in attrs else np.asarray(attrs["target_weights"], dtype=np.float64))
        modes = [m.decode() if isinstance(m, bytes) else m for m in attrs["nodes_modes"]]
        self.n_trees = int(tree_ids.max()) + 1
        self.trees = []
        leaf_weight = {(int(t), int(n)): float(w) for t, n, w in
                       zip(attrs["target_treeids"], attrs["target_nodeids"], weights)}
        for tree in range(self.n_trees):
            sel = np.flatnonzero(tree_ids == tree)
            order = sel[np.argsort(node_ids[sel])]
            if not np.array_equal(node_ids[order], np.arange(order.size)):
                raise VerificationError(f"tree {tree}: node ids are not 0..n-1")
            is_leaf = np.array([modes[i] == "LEAF" for i in order])
            if any(modes[i] not in ("LEAF", "BRANCH_LEQ") for i in order):
                raise VerificationError(f"tree {tree}: unexpected node mode")
            weight = np.array([leaf_weight.get((tree, n), math.nan) if leaf else 0.0
                               for n, leaf in enumerate(is_leaf)])
            if np.isnan(weight).any():
                raise VerificationError(f"tree {tree}: a leaf has no path length")
            self.trees.append((np.asarray(attrs["nodes_featureids"], dtype=np.int64)[order], thresholds[order],
                               np.asarray(attrs["nodes_truenodeids"], dtype=np.int64)[order],
                               np.asarray(attrs["nodes_falsenodeids"], dtype=np.int64)[order], is_leaf, weight))

    def thresholds_by_feature(self, n_features: int) -> list[np.ndarray]:
        out: list[list[float]] = [[] for _ in range(n_features)]
        for feature, threshold, _, _, leaf, _ in self.trees:
            for f, t in zip(feature[~leaf], threshold[~leaf]):
                if 0 <= f < n_features:
                    out[f].append(float(t))
        return [np.unique(np.asarray(v)) for v in out]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        total = np.zeros(X.shape[0])
        rows = np.arange(X.shape[0])
        for feature, threshold, true_ids, false_ids, leaf, weight in self.trees:
            node = np.zeros(X.shape[0], dtype=np.int64)
            active = ~leaf[node]
            while active.any():
                n = node[active]
                go_left = X[rows[active], feature[n]] <= threshold[n]
                node[active] = np.where(go_left, true_ids[n], false_ids[n])
                active = ~leaf[node]
            total += weight[node]
        return -np.exp(self.scale * total) - self.offset


def _probe_rows(reference: ReferenceForest, n_features: int, rng: np.random.Generator) -> np.ndarray:
    """Rows on, just below and just above split thresholds, plus random rows across their range."""
    per_feature = reference.thresholds_by_feature(n_features)
    lo = np.array([t.min() if t.size else -1.0 for t in per_feature])
    hi = np.array([t.max() if t.size else 1.0 for t in per_feature])
    span = np.maximum(hi - lo, 1e-6)
    rows = [rng.uniform(lo - 0.2 * span, hi + 0.2 * span, size=(2000, n_features))]
    for f, t in enumerate(per_feature):
        if not t.size:
            continue
        picks = rng.choice(t, size=min(200, t.size), replace=False)
        for value in (picks, np.nextafter(picks.astype(np.float32), np.float32(-np.inf)),
                      np.nextafter(picks.astype(np.float32), np.float32(np.inf))):
            block = rng.uniform(lo, hi, size=(picks.size, n_features))
            block[:, f] = value
            rows.append(block)
    return np.vstack(rows).astype(np.float32)


def verify_model_file(path: str | Path, readings: str | Path | None = None,
                      public_key: str | Path | None = None, signature: str | Path | None = None,
                      seed: int = 0) -> dict:
    """Verify a model file; returns a report dict, or raises :class:`VerificationError` saying why."""
    path = Path(path)
    try:
        scorer = Scorer.load(path)
    except ModelError as exc:
        raise VerificationError(str(exc)) from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise VerificationError(f"not a readable ONNX file ({exc})") from None
    reference = ReferenceForest(model)
    meta = scorer.metadata
    if "max_samples" in meta:
        expected_scale = -math.log(2.0) / (reference.n_trees * float(average_path_length([int(meta["max_samples"])])[0]))
        if not math.isclose(expected_scale, reference.scale, rel_tol=1e-12):
            raise VerificationError("the normalising constant does not match n_trees and max_samples")
    n_features = len(scorer.feature_names)
    rng = np.random.default_rng(seed)
    blocks = [np.asarray(meta["selftest"]["X"], dtype=np.float32), _probe_rows(reference, n_features, rng)]
    if readings is not None:
        from model_export.readings import ReadingsError, interval_series, read_readings

        try:
            stats, _ = interval_series(read_readings(readings), scorer.interval_s)
        except ReadingsError as exc:
            raise VerificationError(str(exc)) from None
        X, _ = batch_features(stats, scorer.feature_names, scorer.interval_s)
        blocks.append(X)
    X = np.vstack(blocks)
    got, labels = scorer.score(X)
    want = reference.decision_function(X)
    diff = float(np.max(np.abs(got - want)))
    if not diff <= PARITY_TOLERANCE:
        raise VerificationError(f"onnxruntime scores differ from the reference by {diff:.3g} (> {PARITY_TOLERANCE:g})")
    want_labels = want < scorer.threshold
    # A row within float rounding of the threshold may land either side; anything else must agree.
    decisive = np.abs(want - scorer.threshold) > 1e-9
    mismatched = int(np.sum((labels != want_labels) & decisive))
    if mismatched:
        raise VerificationError(f"{mismatched} anomaly labels differ from the reference")
    report = {"model": str(path), "name": scorer.name, "version": scorer.version, "trees": reference.n_trees,
              "features": n_features, "rows_checked": int(X.shape[0]), "max_abs_diff": diff,
              "threshold": scorer.threshold, "signature": "not checked"}
    if public_key is not None:
        from edge_agent.model_update import SignatureError, load_public_key, verify_signature

        sig_path = Path(signature) if signature else path.with_name(path.name + ".sig")
        try:
            verify_signature(path.read_bytes(), sig_path.read_bytes(), load_public_key(public_key))
        except FileNotFoundError as exc:
            raise VerificationError(f"{exc.filename}: does not exist") from None
        except SignatureError as exc:
            raise VerificationError(str(exc)) from None
        report["signature"] = "valid"
    return report
