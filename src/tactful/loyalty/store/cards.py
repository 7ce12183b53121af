"""Queries over app devices (redemption codes), gift cards and failed PIN attempts. Never
commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from tactful.core import direct
from tactful.core.dialect import insert_ignore, lock_rows
from tactful.loyalty.models import (
    Device,
    FailedAttempts,
    GiftCard,
    GiftCardEntry,
)


def device_by_ref(session: Session, ref: str) -> Device | None:
    return session.scalar(select(Device).where(Device.ref == ref))


class DeviceKey(NamedTuple):
    """What checking a code needs of its device."""

    id: int
    workspace_id: int
    customer_id: int
    secret: str
    revoked_at: datetime | None
    last_redeem_step: int | None


_DEVICE_KEY = select(
    Device.id,
    Device.workspace_id,
    Device.customer_id,
    Device.secret,
    Device.revoked_at,
    Device.last_redeem_step,
).where(Device.ref == bindparam("ref"))


def device_key(session: Session, ref: str) -> DeviceKey | None:
    """The device a code names (a plain Core read: it runs twice per redeeming receipt)."""
    row = direct.execute(session, _DEVICE_KEY, {"ref": ref}).first()
    return None if row is None else DeviceKey(*row)


# Core, not ORM-enabled: the ORM's annotated UPDATE is compiled again on every call
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_CONSUME = (
    update(_DEVICES)
    .where(
        _DEVICES.c.id == bindparam("device_id"),
        _DEVICES.c.revoked_at.is_(None),
        or_(
            _DEVICES.c.last_redeem_step.is_(None),
            _DEVICES.c.last_redeem_step < bindparam("step"),
        ),
    )
    .values(last_redeem_step=bindparam("step"))
)


def consume_redeem_step(session: Session, device_id: int, step: int) -> bool:
    """Mark a redemption time step used; False when it (or a later one) was used before."""
    result = direct.execute(session, _CONSUME, {"device_id": device_id, "step": step})
    return bool(result.rowcount)


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


def prune_failures(session: Session, before: datetime) -> int:
    """Forget refused attempts of windows that started before ``before``."""
    result = session.execute(delete(FailedAttempts).where(FailedAttempts.window_start < before))
    return int(getattr(result, "rowcount", 0))
