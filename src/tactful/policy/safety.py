"""Safety rails: a live send never exceeds what the marketer confirmed, and a template's
content rules refuse an audience they do not fit (a women's collection to men, an adults'
offer to minors, a text that still reads as a test to real customers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import Integer, case, func, select
from sqlalchemy.orm import Session

from tactful.core.dialect import fetch_int_table
from tactful.core.errors import Conflict
from tactful.customers.models import Customer

LARGE = 20_000
GENDER_CODES = {"f": 1, "m": 2}


@dataclass(frozen=True)
class ContentRules:
    """What a template's content says about its audience."""

    gender: str | None = None  # "f" or "m": the content is for one gender
    min_age: int | None = None
    max_age: int | None = None
    reads_as_test: bool = False  # subject or body still reads as a test


def _profiles(session: Session, workspace_id: int, ids: np.ndarray, today: date) -> np.ndarray:
    """(customer, gender code, age in whole years or -1, is_test) for the audience."""
    age = func.cast(
        (
            func.cast(func.strftime("%Y%m%d", today.isoformat()), Integer)
            - func.cast(func.strftime("%Y%m%d", Customer.birthday), Integer)
        )
        / 10000,
        Integer,
    )
    if session.get_bind().dialect.name == "postgresql":
        age = func.cast(func.date_part("year", func.age(today, Customer.birthday)), Integer)
    stmt = select(
        Customer.id,
        case(*((Customer.gender == g, code) for g, code in GENDER_CODES.items()), else_=0),
        case((Customer.birthday.is_(None), -1), else_=age),
        case((Customer.is_test.is_(True), 1), else_=0),
    ).where(Customer.workspace_id == workspace_id)
    if len(ids) >= LARGE:
        rows = fetch_int_table(session, stmt)
        return rows[np.isin(rows[:, 0], ids)]
    parts = [
        fetch_int_table(session, stmt.where(Customer.id.in_(ids[i : i + 900].tolist())))
        for i in range(0, len(ids), 900)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)


def audience_violations(
    session: Session,
    *,
    workspace_id: int,
    customer_ids: Sequence[int] | np.ndarray,
    rules: ContentRules,
    today: date,
) -> dict[str, int]:
    """How many customers of an audience each content rule refuses (empty: none)."""
    rows = _profiles(session, workspace_id, np.asarray(customer_ids, dtype=np.int64), today)
    gender, age, is_test = rows[:, 1], rows[:, 2], rows[:, 3]
    found: dict[str, int] = {}
    if rules.reads_as_test:
        found["test_content_to_real_customers"] = int((is_test == 0).sum())
    if rules.gender is not None:
        wanted = GENDER_CODES[rules.gender]
        found["other_gender"] = int(((gender != 0) & (gender != wanted)).sum())
    known_age = age >= 0
    if rules.min_age is not None:
        found["younger_than_allowed"] = int((known_age & (age < rules.min_age)).sum())
    if rules.max_age is not None:
        found["older_than_allowed"] = int((known_age & (age > rules.max_age)).sum())
    return {reason: count for reason, count in found.items() if count}


def check_content(
    session: Session,
    *,
    workspace_id: int,
    customer_ids: Sequence[int] | np.ndarray,
    rules: ContentRules,
    today: date,
) -> None:
    """Refuse a live audience that a template's content rules do not fit."""
    violations = audience_violations(
        session, workspace_id=workspace_id, customer_ids=customer_ids, rules=rules, today=today
    )
    if violations:
        detail = ", ".join(
            f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(violations.items())
        )
        raise Conflict(
            f"the template's content rules refuse this audience: {detail}",
            field="audience",
            violations=violations,
        )


def check_confirmation(*, expected: int, actual: int, tolerance: float) -> None:
    """A live send to more recipients than the marketer confirmed is refused."""
    if actual > expected * (1 + tolerance):
        raise Conflict(
            f"the audience is {actual} recipients, more than the {expected} confirmed "
            f"(tolerance {tolerance:.0%}); confirm the new size before sending",
            field="expected_recipients",
        )
