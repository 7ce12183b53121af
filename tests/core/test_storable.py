"""Values no database can store: the check on parsed JSON, and the fast look at the raw text
that decides whether to walk it at all (it must never miss one)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tactful.core import storable

BIG = 2**63


def test_faults_name_each_value_with_its_path_and_reason() -> None:
    value = {
        "name": "a\x00b",
        "lines": [{"amount": BIG}, {"amount": -BIG - 1}, {"amount": -BIG}],
        "ok": [BIG - 1, "text", None, True, 1.5],
        "ratio": 1e19,
        "k\x00": 1,
    }
    assert storable.faults(value, ("body",)) == [
        (("body", "name"), storable.NUL_REASON),
        (("body", "lines", 0, "amount"), storable.RANGE_REASON),
        (("body", "lines", 1, "amount"), storable.RANGE_REASON),
        (("body", "ratio"), storable.RANGE_REASON),
        (("body", "k\x00"), storable.NUL_REASON),
    ]
    assert storable.faults({"a": [1, "x", {"b": -(2**63)}]}) == []


class Line(BaseModel):
    product: str = Field(alias="productId")
    amount: int


class Receipt(BaseModel):
    lines: list[Line]
    tags: dict[str, int] = {}


def test_validated_models_are_walked_by_their_fields_aliases() -> None:
    receipt = Receipt(
        lines=[Line(productId="P1", amount=1), Line(productId="P\x00", amount=BIG)],
        tags={"a": BIG},
    )
    assert storable.faults(receipt, ("body",)) == [
        (("body", "lines", 1, "productId"), storable.NUL_REASON),
        (("body", "lines", 1, "amount"), storable.RANGE_REASON),
        (("body", "tags", "a"), storable.RANGE_REASON),
    ]
    assert storable.faults(float("nan")) == [((), storable.RANGE_REASON)]
    assert storable.faults(float("inf")) == [((), storable.RANGE_REASON)]


def test_the_fast_look_passes_ordinary_text_and_flags_each_kind() -> None:
    assert not storable.suspect(b'{"card": "200011122233", "amount": 922337203685477580}')
    assert not storable.suspect(b'{"ratio": 1.5e-7, "text": "\\\\u00"}')
    for raw in (
        b'"a\\u0000"',
        b"9223372036854775808",
        b"-9223372036854775809",
        b"1e19",
        b"2E+30",
    ):
        assert storable.suspect(raw), raw
    # text validation reads as an integer counts only for values to be validated
    for raw in (b'"1_000"', b'{"a": " -1_000_000.0"}'):
        assert (storable.suspect(raw), storable.suspect(raw, validated=True)) == (False, True)
    ordinary = b'{"ua": "x86_64", "id": "5e31-4b2a", "t": "a5e3f"}'
    assert not storable.suspect(ordinary, validated=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(codec="utf-8"), max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(json_values)
def test_the_fast_look_never_misses_a_value_the_walk_refuses(value: Any) -> None:
    texts = [json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()]
    with contextlib.suppress(TypeError):  # orjson writes no integer beyond 64 bits
        texts.append(orjson.dumps(value))
    for raw in texts:
        if storable.faults(json.loads(raw)):
            assert storable.suspect(raw), raw
