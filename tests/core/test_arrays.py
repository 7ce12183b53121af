import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tactful.core.arrays import distinct


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
