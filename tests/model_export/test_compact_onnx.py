"""The compact export computes scikit-learn's decision_function and labels, in one tree ensemble."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.ensemble import IsolationForest

from model_export.compact_onnx import compact_isolation_forest


def _rows(rng, n, n_features):
    base = rng.normal(size=(n, n_features))
    base[: n // 10] *= 4.0  # a tail of outliers, so both labels occur
    return base.astype(np.float32)


@pytest.mark.parametrize("n_estimators,max_samples,n_features,contamination,max_features", [
    (1, 16, 1, "auto", 1.0),
    (10, 64, 3, 0.05, 1.0),
    (50, "auto", 7, 0.1, 1.0),
    (100, 256, 12, 0.01, 1.0),
    (40, 0.3, 6, 0.2, 0.5),
    (25, 512, 20, "auto", 1.0),
])
def test_compact_onnx_matches_sklearn_scores_and_labels(n_estimators, max_samples, n_features, contamination,
                                                        max_features):
    rng = np.random.default_rng(n_estimators)
    train = _rows(rng, 2000, n_features)
    forest = IsolationForest(n_estimators=n_estimators, max_samples=max_samples, contamination=contamination,
                             max_features=max_features, random_state=7).fit(train)
    held_out = np.vstack([_rows(rng, 3000, n_features), np.round(train[:300], 1)])
    session = ort.InferenceSession(compact_isolation_forest(forest, n_features).SerializeToString())
    scores = session.run(None, {"features": held_out})[0]
    expected = forest.decision_function(held_out)
    assert np.max(np.abs(scores - expected)) < 1e-5
    assert np.array_equal(scores < 0, forest.predict(held_out) == -1)
    assert 0 < np.sum(scores < 0) < held_out.shape[0]


def test_rows_exactly_on_split_thresholds_route_as_sklearn_does():
    rng = np.random.default_rng(1)
    train = _rows(rng, 1000, 4)
    forest = IsolationForest(n_estimators=20, max_samples=128, random_state=0).fit(train)
    tree = forest.estimators_[0].tree_
    split = tree.feature >= 0
    rows = np.repeat(train[:1], split.sum() * 3, axis=0)
    for k, (f, t) in enumerate(zip(tree.feature[split], tree.threshold[split])):
        t32 = np.float32(t)
        rows[3 * k: 3 * k + 3, f] = [t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))]
    session = ort.InferenceSession(compact_isolation_forest(forest, 4).SerializeToString())
    assert np.max(np.abs(session.run(None, {"features": rows})[0] - forest.decision_function(rows))) < 1e-5


def test_the_graph_is_one_tree_ensemble_and_a_few_arithmetic_nodes():
    rng = np.random.default_rng(2)
    forest = IsolationForest(n_estimators=100, random_state=0).fit(_rows(rng, 3000, 12))
    model = compact_isolation_forest(forest, 12)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("TreeEnsembleRegressor") == 1
    assert len(ops) <= 10


def test_an_unfitted_forest_is_refused():
    with pytest.raises(ValueError, match="not fitted"):
        compact_isolation_forest(IsolationForest(), 3)
