"""Queries over app devices (redemption codes), gift cards and failed PIN attempts. Never
commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from tactful.core.dialect import insert_ignore, lock_rows
from tactful.loyalty.models import (
    Device,
    FailedAttempts,
    GiftCard,
    GiftCardEntry,
)


def device_by_ref(session: Session, ref: str) -> Device | None:
    return session.scalar(select(Device).where(Device.ref == ref))


def consume_redeem_step(session: Session, device_id: int, step: int) -> bool:
    """Mark a redemption time step used; False when it (or a later one) was used before."""
    result = session.execute(
        update(Device)
        .where(
            Device.id == device_id,
            Device.revoked_at.is_(None),
            or_(Device.last_redeem_step.is_(None), Device.last_redeem_step < step),
        )
        .values(last_redeem_step=step)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def devices_of(session: Session, customer_id: int) -> list[Device]:
    return list(
        session.scalars(select(Device).where(Device.customer_id == customer_id).order_by(Device.id))
    )


# -- gift cards --------------------------------------------------------------------------------


def gift_card(session: Session, workspace_id: int, number: str, *, lock: bool) -> GiftCard | None:
    stmt = select(GiftCard).where(GiftCard.workspace_id == workspace_id, GiftCard.number == number)
    if lock:
        stmt = lock_rows(session, stmt).execution_options(populate_existing=True)
    return session.scalar(stmt)


def gift_card_numbers_taken(
    session: Session, workspace_id: int, numbers: Sequence[str]
) -> set[str]:
    return set(
        session.scalars(
            select(GiftCard.number).where(
                GiftCard.workspace_id == workspace_id, GiftCard.number.in_(numbers)
            )
        )
    )


def gift_card_entry(session: Session, workspace_id: int, key: str) -> GiftCardEntry | None:
    return session.scalar(
        select(GiftCardEntry).where(
            GiftCardEntry.workspace_id == workspace_id, GiftCardEntry.idempotency_key == key
        )
    )


def gift_card_refunded(session: Session, entry_id: int) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(GiftCardEntry.amount), 0)).where(
            GiftCardEntry.reverses_id == entry_id
        )
    )
    return int(total or 0)


def failures(
    session: Session, workspace_id: int, subjects: Sequence[tuple[str, str]], window: datetime
) -> dict[tuple[str, str], int]:
    """Refused attempts in the current window per ``(scope, subject)``."""
    rows = session.execute(
        select(FailedAttempts.scope, FailedAttempts.subject, FailedAttempts.failures).where(
            FailedAttempts.workspace_id == workspace_id,
            FailedAttempts.window_start == window,
            or_(
                *(
                    and_(FailedAttempts.scope == scope, FailedAttempts.subject == subject)
                    for scope, subject in subjects
                )
            ),
        )
    )
    return {(r[0], r[1]): int(r[2]) for r in rows}


def add_failure(
    session: Session, workspace_id: int, scope: str, subject: str, window: datetime
) -> None:
    """Count one refused attempt (the row is created on the window's first refusal)."""
    session.execute(
        insert_ignore(
            session,
            FailedAttempts,
            {
                "workspace_id": workspace_id,
                "scope": scope,
                "subject": subject,
                "window_start": window,
                "failures": 0,
            },
            conflict=["workspace_id", "scope", "subject", "window_start"],
        )
    )
    session.execute(
        update(FailedAttempts)
        .where(
            FailedAttempts.workspace_id == workspace_id,
            FailedAttempts.scope == scope,
            FailedAttempts.subject == subject,
            FailedAttempts.window_start == window,
        )
        .values(failures=FailedAttempts.failures + 1)
        .execution_options(synchronize_session=False)
    )
