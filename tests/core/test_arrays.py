import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tactful.core.arrays import distinct, index_of


def test_distinct_sorts_and_drops_repeats() -> None:
    values = np.array([5, 3, 5, -2, 3, 9], dtype=np.int64)
    assert distinct(values).tolist() == [-2, 3, 5, 9]
    assert values.tolist() == [5, 3, 5, -2, 3, 9]  # the input is left as it was


def test_distinct_of_nothing_is_empty() -> None:
    assert distinct(np.zeros(0, dtype=np.int64)).tolist() == []


@given(st.lists(st.integers(min_value=-(2**62), max_value=2**62)))
def test_distinct_agrees_with_numpy_unique(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    assert distinct(array).tolist() == np.unique(array).tolist()


@pytest.mark.parametrize("offset", [0, 10**12], ids=["dense", "sparse"])
def test_index_of_finds_each_value_or_minus_one(offset: int) -> None:
    keys = np.array([30, 10, 20, 10**9 if offset else 40], dtype=np.int64) + offset
    values = np.array([20, 5, 30, 30, 10**9 if offset else 40, 41], dtype=np.int64) + offset
    assert index_of(keys, values).tolist() == [2, -1, 0, 0, 3, -1]


def test_index_of_with_nothing_to_find_or_search() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert index_of(empty, np.array([1, 2])).tolist() == [-1, -1]
    assert index_of(np.array([1, 2]), empty).tolist() == []


@given(
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), unique=True),
    st.lists(st.integers(min_value=-(2**40), max_value=2**40)),
    st.booleans(),
)
def test_index_of_agrees_with_a_dictionary(keys: list[int], values: list[int], near: bool) -> None:
    if near:  # dense ids, as in a workspace
        keys = list(dict.fromkeys(k % 500 for k in keys))
        values = [v % 600 for v in values]
    where = {k: i for i, k in enumerate(keys)}
    found = index_of(np.array(keys, dtype=np.int64), np.array(values, dtype=np.int64))
    assert found.tolist() == [where.get(v, -1) for v in values]
