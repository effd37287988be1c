"""Compact ONNX export of a fitted scikit-learn IsolationForest.

skl2onnx's stock converter emits one tree ensemble per tree plus glue to turn leaf indices
into path lengths: thousands of nodes, milliseconds per row. An isolation forest's score only
needs, per tree, the path length of the leaf a row lands in, and that is a constant per leaf.
So every tree goes into ONE ``ai.onnx.ml.TreeEnsembleRegressor`` whose leaf weight is

    depth(leaf) + c(n_samples(leaf))           (c = average BST path length, sklearn's
                                                 ``_average_path_length``; root depth 0)

summed over trees, followed by four arithmetic nodes computing exactly sklearn's

    decision_function(x) = -2 ** (-sum / (n_trees * c(max_samples_))) - offset_

Thresholds are compared in double precision (the float32 input is cast to double, as sklearn
casts float32 ``X`` values up to its float64 thresholds), so routing matches sklearn row for row.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["average_path_length", "leaf_path_lengths", "compact_isolation_forest", "ONNX_OPSET", "ML_OPSET"]

ONNX_OPSET = 17
ML_OPSET = 3
INPUT_NAME = "features"
OUTPUT_NAME = "score"


def average_path_length(n: np.ndarray | Sequence[float]) -> np.ndarray:
    """c(n): expected path length of an unsuccessful search in a BST of n points (0 for n<=1, 1 for n=2)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(left.shape[0], dtype=np.float64)
    stack = [0]
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child != -1:
                depth[child] = depth[node] + 1.0
                stack.append(child)
    return depth


def leaf_path_lengths(tree) -> np.ndarray:
    """Per node of a fitted sklearn tree: depth + c(samples reaching it) (used at its leaves)."""
    t = tree.tree_
    return _node_depths(t.children_left, t.children_right) + average_path_length(t.n_node_samples)


def compact_isolation_forest(forest, n_features: int,
                             metadata: Mapping[str, str] | None = None,
                             graph_name: str = "gridsight_isolation_forest") -> onnx.ModelProto:
    """One-tree-ensemble ONNX graph computing ``forest.decision_function`` on float32 rows."""
    if not hasattr(forest, "estimators_"):
        raise ValueError("the IsolationForest is not fitted")
    if forest.max_samples_ < 2:
        raise ValueError("max_samples_ must be at least 2 for a meaningful isolation depth")
    tree_ids: list[int] = []
    node_ids: list[int] = []
    feature_ids: list[int] = []
    thresholds: list[float] = []
    modes: list[str] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    target_tree: list[int] = []
    target_node: list[int] = []
    target_weight: list[float] = []

    for tree_index, (tree, features) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        t = tree.tree_
        lengths = leaf_path_lengths(tree)
        features = np.asarray(features)
        for node in range(t.node_count):
            tree_ids.append(tree_index)
            node_ids.append(node)
            left, right = int(t.children_left[node]), int(t.children_right[node])
            if left == -1:
                modes.append("LEAF")
                feature_ids.append(0)
                thresholds.append(0.0)
                true_ids.append(0)
                false_ids.append(0)
                target_tree.append(tree_index)
                target_node.append(node)
                target_weight.append(float(lengths[node]))
            else:
                modes.append("BRANCH_LEQ")
                feature_ids.append(int(features[t.feature[node]]))
                thresholds.append(float(t.threshold[node]))
                true_ids.append(left)
                false_ids.append(right)

    n_trees = len(forest.estimators_)
    scale = -math.log(2.0) / (n_trees * float(average_path_length([forest.max_samples_])[0]))

    ensemble = helper.make_node(
        "TreeEnsembleRegressor", ["features_f64"], ["path_sum"], domain="ai.onnx.ml",
        name="isolation_trees",
        n_targets=1, aggregate_function="SUM", post_transform="NONE",
        nodes_treeids=tree_ids, nodes_nodeids=node_ids, nodes_featureids=feature_ids,
        nodes_values_as_tensor=helper.make_tensor("nodes_values", TensorProto.DOUBLE, [len(thresholds)], thresholds),
        nodes_modes=modes, nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
        nodes_missing_value_tracks_true=[0] * len(modes),
        target_treeids=target_tree, target_nodeids=target_node, target_ids=[0] * len(target_tree),
        target_weights_as_tensor=helper.make_tensor("target_weights", TensorProto.DOUBLE,
                                                    [len(target_weight)], target_weight),
    )
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["features_f64"], to=TensorProto.DOUBLE, name="to_double"),
        ensemble,
        helper.make_node("Cast", ["path_sum"], ["path_sum_f64"], to=TensorProto.DOUBLE, name="sum_to_double"),
        helper.make_node("Mul", ["path_sum_f64", "scale"], ["exponent"], name="normalise"),
        helper.make_node("Exp", ["exponent"], ["anomaly"], name="two_to_minus_depth"),
        helper.make_node("Neg", ["anomaly"], ["score_samples"], name="sklearn_sign"),
        helper.make_node("Sub", ["score_samples", "offset"], ["score_2d"], name="minus_offset"),
        helper.make_node("Reshape", ["score_2d", "flat"], [OUTPUT_NAME], name="flatten"),
    ]
    initializers = [
        helper.make_tensor("scale", TensorProto.DOUBLE, [], [scale]),
        helper.make_tensor("offset", TensorProto.DOUBLE, [], [float(forest.offset_)]),
        helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
    ]
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.DOUBLE, ["N"])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                                                    helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
                              producer_name="gridsight.model_export")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    return model
