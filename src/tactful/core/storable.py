"""Values no database of ours can store, found before they reach one.

PostgreSQL refuses text holding the NUL character (``\\u0000`` in JSON), and SQLite and
PostgreSQL both refuse integers beyond 64 bits. Met only at the database, either fails the
whole transaction with a driver error: a 500 for the request, and every valid item of a batch
lost with the bad one. So input is checked first, and each such value is refused with its
field and the reason, like any other fault. Floats out of that range (or not finite) are
refused too: a float field of ours has far smaller bounds, and an integer field takes a float
without a fraction (``1e30``) as the integer it names.

The full check walks parsed JSON; :func:`suspect` looks at the raw text first, at the speed of
a byte search, so input without any such value (nearly all of it) is not walked at all.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NUL_REASON = "must not contain the NUL character (\\u0000)"
RANGE_REASON = f"must be a number from {INT64_MIN} to {INT64_MAX}"

Path = tuple[str | int, ...]

# the JSON escape of NUL (JSON text cannot hold it raw), 19 digits in a row (2**63 has 19),
# a number with a positive exponent (1e19; not the "5e31" inside a hexadecimal id, which
# would make nearly every batch of events with such ids suspect), digits around an
# underscore (validation reads the text "1_000" as the integer 1000). A hit only means
# "walk it", so false ones cost a little time and nothing else.
_SUSPECT = re.compile(rb'\\u0000|[0-9]{19}|[0-9][eE]\+?[0-9]+(?![0-9A-Za-z"_.-])|[0-9]_[0-9]')


def suspect(raw: bytes) -> bool:
    """Whether JSON text, or what validation makes of it, may hold a value :func:`faults`
    refuses (False: it holds none)."""
    return _SUSPECT.search(raw) is not None


def text_fault(value: str) -> str | None:
    """Why a text value cannot be stored, or None."""
    return NUL_REASON if "\x00" in value else None


def faults(value: Any, path: Path = ()) -> list[tuple[Path, str]]:
    """Every value inside ``value`` (parsed JSON, or validated models: a field is named by
    its alias) that cannot be stored: (its path, the reason). Object keys are checked as text
    too."""
    found: list[tuple[Path, str]] = []
    _walk(value, path, found)
    return found


def _walk(value: Any, path: Path, found: list[tuple[Path, str]]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            found.append((path, NUL_REASON))
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            found.append((path, RANGE_REASON))
    elif isinstance(value, float):
        if not (math.isfinite(value) and INT64_MIN <= value <= INT64_MAX):
            found.append((path, RANGE_REASON))
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = (*path, key)
            if isinstance(key, str) and "\x00" in key:
                found.append((inner, NUL_REASON))
            _walk(item, inner, found)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _walk(item, (*path, index), found)
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            _walk(getattr(value, name), (*path, info.alias or name), found)
