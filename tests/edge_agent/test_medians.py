"""The gateway's medians give numpy's values exactly, without importing numpy.ma."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from edge_agent.medians import median, nanmedian, nanmedian_columns, sorted_unique


def _random_arrays(seed: int, dtype):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        rows, cols = int(rng.integers(0, 30)), int(rng.integers(1, 25))
        a = (rng.lognormal(-1.5, 1.2, size=(rows, cols)) * rng.choice([1e-3, 1.0, 1e3])).astype(dtype)
        a[rng.random(a.shape) < rng.random() * 0.6] = np.nan
        if cols > 2 and rows:
            a[:, 1] = np.nan  # a column without a value
            a[:, 2] = a[0, 2]  # ties
        yield a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_medians_are_numpys_bit_for_bit(dtype):
    for a in _random_arrays(1, dtype):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.nanmedian(a, axis=0)
            whole = np.nanmedian(a)
        got = nanmedian_columns(a)
        assert got.dtype == want.dtype == a.dtype
        np.testing.assert_array_equal(got, want)
        got_whole = nanmedian(a)
        assert (got_whole == float(whole)) or (np.isnan(got_whole) and np.isnan(whole))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_medians_are_numpys_bit_for_bit(dtype):
    rng = np.random.default_rng(2)
    for n in range(1, 80):
        x = (rng.normal(0, 3, n) * rng.choice([1e-4, 1.0, 1e5])).astype(dtype)
        assert median(x) == float(np.median(x))
        assert median(x.tolist()) == float(np.median(x.tolist()))
    x = np.array([1.0, np.nan, 3.0], dtype=dtype)
    assert np.isnan(median(x)) and np.isnan(np.median(x))
    assert nanmedian(x) == float(np.nanmedian(x)) == 2.0


def test_unique_values_are_numpys():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 10, 500):
        x = rng.integers(0, 40, n).astype(np.float64)
        np.testing.assert_array_equal(sorted_unique(x), np.unique(x))


def test_the_gateways_feature_and_model_code_never_imports_numpy_ma(model_path):
    """A year of one meter's features with the default set, a model loaded and an interval window
    closed: numpy.ma (about 1.5 MB resident for the process's life) is never imported."""
    code = r"""
import sys, math
from edge_agent.scorer import Scorer
Scorer.load(sys.argv[1], kind="numpy")
from edge_agent.features import FeatureBuilder, IntervalStats, DEFAULT_FEATURES, LEGACY_DEFAULT_FEATURES
from edge_agent.window import IntervalWindow
from gridsight.wire import Reading
for names in (DEFAULT_FEATURES, LEGACY_DEFAULT_FEATURES):
    b = FeatureBuilder(names, 3600)
    for i in range(24 * 40):
        kwh = 1.0 + 0.5 * math.sin(i / 24 * 6.28) + (i % 7) * 0.01
        b.features(IntervalStats("m", 1_767_225_600.0 + i * 3600, 3600, kwh, 60, 400.0, 500.0, 300.0, 10.0,
                                 229.0, 230.0))
w = IntervalWindow(60, 1.0)
w.accept([Reading("m", 1_767_225_600.0 + s, 1.0 + s / 1000, 100.0) for s in range(120)])
assert w.due(1_767_225_600.0 + 200)
print("numpy.ma" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code, str(model_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
