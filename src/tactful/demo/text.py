"""Vectorised string building: ids, templated phone/card numbers, hex ids, JSON fragments.

Strings are assembled as byte matrices in NumPy and handed to Arrow without copies, or joined
with Arrow compute kernels, so millions of values never pass through a Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_PAIRS = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], dtype=np.uint8)


def digits(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative integers, zero-padded: an (n, width) uint8 matrix."""
    matrix = np.empty((len(values), width), dtype=np.uint8)
    rest = values.astype(np.int64)
    position = width
    # Two digits per division: integer division dominates the cost.
    while position >= 2:
        rest, pair = np.divmod(rest, 100)
        matrix[:, position - 2 : position] = _PAIRS[pair]
        position -= 2
    if position:
        matrix[:, 0] = rest % 10 + 48
    return matrix


def hex_digits(values: np.ndarray) -> np.ndarray:
    """16 lowercase hex characters of each uint64: an (n, 16) uint8 matrix."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(15)
    return _HEX[nibbles.astype(np.intp)]


def splitmix64(values: np.ndarray, salt: int = 0) -> np.ndarray:
    """A bijective 64-bit mix: distinct inputs give distinct, random-looking outputs."""
    # An odd multiplier and an added constant keep the map bijective; mixing the salt first
    # keeps streams with neighbouring salts unrelated.
    offset = np.uint64(_mix_int(salt + 0x632BE59BD9B4E019))
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + offset
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _mix_int(value: int) -> int:
    z = value & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def from_matrix(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Fixed-width strings from an (n, w) uint8 matrix, nulls where ``valid`` is False."""
    rows, width = matrix.shape
    offsets = np.arange(rows + 1, dtype=np.int64) * width
    return _assemble(rows, offsets, np.ascontiguousarray(matrix).reshape(-1), valid)


def sparse(valid: np.ndarray, matrix: np.ndarray) -> pa.Array:
    """Strings from ``matrix`` (one row per True in ``valid``) and nulls elsewhere."""
    widths = np.where(valid, matrix.shape[1], 0)
    offsets = np.zeros(len(valid) + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    return _assemble(len(valid), offsets, np.ascontiguousarray(matrix).reshape(-1), valid)


def prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` followed by zero-padded numbers, e.g. P000001."""
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    matrix = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    matrix[:, : len(head)] = head
    matrix[:, len(head) :] = digits(numbers, width)
    return from_matrix(matrix)


def render(
    templates: Sequence[str],
    choice: np.ndarray,
    chars: np.ndarray,
    valid: np.ndarray | None = None,
) -> pa.Array:
    """Fill each row's template (``choice`` indexes ``templates``): every ``#`` takes the next
    column of ``chars``; variable widths are packed into one Arrow string array."""
    rows = len(choice)
    encoded = [np.frombuffer(t.encode(), dtype=np.uint8) for t in templates]
    if len(encoded) == 1:
        return from_matrix(_fill(encoded[0], chars), valid)
    widths = np.array([len(e) for e in encoded], dtype=np.int64)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(widths[choice], out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    for index, template in enumerate(encoded):
        members = np.flatnonzero(choice == index)
        if len(members):
            block = _fill(template, chars[members])
            data[offsets[members][:, None] + np.arange(len(template))] = block
    return _assemble(rows, offsets, data, valid)


def _fill(template: np.ndarray, chars: np.ndarray) -> np.ndarray:
    block = np.empty((len(chars), len(template)), dtype=np.uint8)
    slots = np.flatnonzero(template == ord("#"))
    block[:] = template
    block[:, slots] = chars[:, : len(slots)]
    return block


def _assemble(
    rows: int, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None
) -> pa.Array:
    bitmap = None
    nulls = 0
    if valid is not None:
        bitmap = pa.py_buffer(np.packbits(valid.astype(np.uint8), bitorder="little"))
        nulls = int(rows - np.count_nonzero(valid))
    if offsets[-1] < 2**31:
        array = pa.StringArray.from_buffers(
            rows, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data), bitmap, nulls
        )
        return array
    large = pa.LargeStringArray.from_buffers(
        rows, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls
    )
    return large.cast(pa.string())


def join(parts: Sequence[pa.Array | str]) -> pa.Array:
    """Element-wise concatenation of string arrays and literal strings (nulls propagate)."""
    return pc.binary_join_element_wise(*parts, "")


def numbers(values: np.ndarray) -> pa.Array:
    """Decimal text of integers."""
    return pc.cast(pa.array(values, pa.int64()), pa.string())


def money(minor: np.ndarray) -> pa.Array:
    """Minor units as a JSON decimal in major units: 129900 -> 1299.00."""
    units = numbers(minor // 100)
    cents = pc.utf8_lpad(numbers(minor % 100), 2, "0")
    return join([units, ".", cents])


def take(strings: pa.Array, indices: np.ndarray) -> pa.Array:
    """Strings picked by position."""
    return strings.take(pa.array(indices, pa.int64()))


def with_nulls(strings: pa.Array, valid: np.ndarray) -> pa.Array:
    """The same strings with nulls where ``valid`` is False."""
    return pc.if_else(pa.array(valid), strings, pa.scalar(None, pa.string()))


def json_lists(items: pa.Array, offsets: np.ndarray) -> pa.Array:
    """``[a,b,…]`` per group from JSON fragments, groups given by ``offsets`` (n + 1)."""
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), items)
    return join(["[", pc.binary_join(lists, ","), "]"])
