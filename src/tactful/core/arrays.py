"""NumPy helpers shared by the features that work on whole audiences at once."""

from __future__ import annotations

import numpy as np


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of a 1-D array, sorted.

    ``np.unique`` without ``return_index``/``return_inverse`` hashes the values since NumPy
    2.3, which for a million distinct integers took 0.7-0.9 s on this project's machine
    against 10-50 ms for sorting (numpy/numpy#31969). An audience is exactly that case.
    """
    ordered = np.sort(np.asarray(values).ravel())
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def index_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of ``values``, its position in ``keys`` (distinct integers), or -1.

    Ids in one workspace are dense, so a table over their span answers each value with one
    memory read: 1.5M history rows against a million customers in 0.02-0.025 s, against
    0.35-0.37 s for a binary search per value. Sparse keys (a span over four times their
    number) fall back to the binary search.
    """
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    found = np.full(len(values), -1, dtype=np.int64)
    if not len(keys) or not len(values):
        return found
    low = int(min(keys.min(), values.min()))
    span = int(max(keys.max(), values.max())) - low + 1
    if span <= 4 * (len(keys) + len(values)) + 1024:
        table = np.full(span, -1, dtype=np.int64)
        table[keys - low] = np.arange(len(keys), dtype=np.int64)
        return np.take(table, values - low)
    order = np.argsort(keys, kind="stable")
    at = np.clip(np.searchsorted(keys[order], values), 0, len(keys) - 1)
    hit = keys[order][at] == values
    found[hit] = order[at[hit]]
    return found
