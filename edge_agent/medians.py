"""Medians with the values numpy gives, without importing ``numpy.ma``.

numpy's ``median``, ``nanmedian``, ``percentile`` and ``unique`` import ``numpy.ma`` on first use
(``nanmedian`` of a small 2-D array even computes through masked arrays), and that package stays
resident for the life of the process: about 1.5 MB on the gateway for a handful of medians per
interval. These functions sort and take the middle values the way numpy does, so the results are
the same numbers (tests/edge_agent/test_medians.py compares them with numpy's on random input):

* :func:`median` is ``np.median`` of a 1-D array: the middle value, or the mean of the two
  middle values computed in the array's own precision; NaN if the array holds a NaN.
* :func:`nanmedian` is ``np.nanmedian`` of a whole array (flattened), ignoring NaNs.
* :func:`nanmedian_columns` is ``np.nanmedian(a, axis=0)`` of a 2-D array: per column, ignoring
  NaNs, NaN for a column with no value (numpy also warns then; callers here silence that).
* :func:`sorted_unique` is ``np.unique`` of a 1-D array without NaNs.

numpy only: this module runs on the gateway.
"""

from __future__ import annotations

import numpy as np

__all__ = ["median", "nanmedian", "nanmedian_columns", "sorted_unique"]


def _middle(values: np.ndarray) -> np.floating:
    """Median of sorted, NaN-free, non-empty 1-D ``values`` in their dtype (as ``np.mean`` of the
    one or two middle values: their sum in that precision, halved)."""
    n = values.shape[0]
    mid = n // 2
    if n % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) / values.dtype.type(2)


def median(a) -> float:
    """``np.median`` of a 1-D array (or list) of floats."""
    values = np.asarray(a)
    if values.dtype.kind not in "f":
        values = values.astype(np.float64)
    if values.ndim != 1:
        values = values.reshape(-1)
    if values.shape[0] == 0:
        return float("nan")
    ordered = np.sort(values)
    if ordered[-1] != ordered[-1]:  # NaN sorts last: numpy's median is NaN then
        return float("nan")
    return float(_middle(ordered))


def nanmedian(a) -> float:
    """``np.nanmedian`` of all values of ``a`` (NaN if there is none)."""
    values = np.asarray(a).reshape(-1)
    if values.dtype.kind not in "f":
        values = values.astype(np.float64)
    values = values[values == values]
    if values.shape[0] == 0:
        return float("nan")
    return float(_middle(np.sort(values)))


def nanmedian_columns(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=0)`` of a 2-D float array, in its dtype."""
    a = np.asarray(a)
    if a.ndim != 2 or a.dtype.kind != "f":
        raise ValueError("nanmedian_columns takes a 2-D float array")
    ordered = np.sort(a, axis=0)  # NaNs last in every column
    count = np.count_nonzero(a == a, axis=0)
    high = count // 2
    low = np.where(count % 2 == 1, high, high - 1)
    rows = a.shape[0]
    if rows == 0:
        return np.full(a.shape[1], np.nan, dtype=a.dtype)
    pick = np.clip(np.stack([low, high]), 0, rows - 1)
    pair = np.take_along_axis(ordered, pick, axis=0)
    # numpy (through numpy.ma) sums the two middle values in the array's precision, then halves
    # them, also when both are the same middle value of an odd count
    out = (pair[0] + pair[1]) / a.dtype.type(2)
    out[count == 0] = np.nan
    return out


def sorted_unique(a) -> np.ndarray:
    """``np.unique`` of a 1-D array without NaNs: its distinct values, ascending."""
    ordered = np.sort(np.asarray(a).reshape(-1))
    if ordered.shape[0] < 2:
        return ordered
    keep = np.empty(ordered.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
