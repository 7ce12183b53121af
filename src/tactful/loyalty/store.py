"""Queries over programs, accounts, the ledger, devices, gift cards and fraud records.

Only reads and writes rows: never commits, never enqueues, never sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    extract,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from tactful.core.dialect import insert_ignore, lock_rows
from tactful.customers.models import Customer
from tactful.loyalty.models import (
    AVAILABLE,
    LINE_REDEMPTION,
    MERGED,
    PENDING,
    PURCHASE,
    Account,
    Device,
    FailedAttempts,
    FraudFlag,
    GiftCard,
    GiftCardEntry,
    LedgerLine,
    LedgerTransaction,
    Lot,
    Program,
    TierChange,
)
from tactful.tenancy.models import Workspace

# -- programs -----------------------------------------------------------------------------


def program(session: Session, workspace_id: int, program_id: int) -> Program | None:
    found = session.get(Program, program_id)
    return found if found is not None and found.workspace_id == workspace_id else None


def program_by_scope(session: Session, workspace_id: int, scope: str) -> Program | None:
    return session.scalar(
        select(Program).where(Program.workspace_id == workspace_id, Program.brand_scope == scope)
    )


def programs(session: Session, workspace_id: int) -> list[Program]:
    return list(
        session.scalars(
            select(Program).where(Program.workspace_id == workspace_id).order_by(Program.id)
        )
    )


# -- accounts -----------------------------------------------------------------------------


def account_for(session: Session, program_id: int, customer_id: int) -> Account | None:
    return session.scalar(
        select(Account).where(Account.program_id == program_id, Account.customer_id == customer_id)
    )


def insert_account(session: Session, row: dict[str, Any]) -> int | None:
    """Insert an account unless the customer has one in the program; the new id or None."""
    stmt = insert_ignore(session, Account, row, conflict=["program_id", "customer_id"])
    found = session.execute(stmt.returning(Account.id)).first()
    return None if found is None else int(found[0])


def lock_account_of(session: Session, program_id: int, customer_id: int) -> Account | None:
    """The customer's account in the program, locked until the transaction ends."""
    stmt = lock_rows(
        session,
        select(Account).where(Account.program_id == program_id, Account.customer_id == customer_id),
    )
    return session.scalar(stmt.execution_options(populate_existing=True))


def lock_account(session: Session, account_id: int) -> Account | None:
    """The account, locked until the transaction ends (re-read, never a stale copy)."""
    stmt = lock_rows(session, select(Account).where(Account.id == account_id))
    return session.scalar(stmt.execution_options(populate_existing=True))


def accounts_of(session: Session, customer_ids: Sequence[int]) -> list[Account]:
    return list(
        session.scalars(
            select(Account).where(Account.customer_id.in_(customer_ids)).order_by(Account.id)
        )
    )


def account_ids(session: Session, program_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Account.id).where(Account.program_id == program_id).order_by(Account.id)
        )
    )


def repoint_merged_accounts(session: Session, old_target: int, new_target: int) -> None:
    """Accounts merged into ``old_target`` now name ``new_target`` (one level, no chains)."""
    session.execute(
        update(Account)
        .where(Account.merged_into_id == old_target)
        .values(merged_into_id=new_target)
        .execution_options(synchronize_session=False)
    )


# -- lots ----------------------------------------------------------------------------------


@dataclass
class LotRow:
    """An open lot as the ledger code works with it (mutable while a posting is built)."""

    id: int
    account_id: int
    state: str
    remaining: int
    available_at: datetime | None
    expires_at: datetime | None


_LOT_COLUMNS = (
    Lot.id,
    Lot.account_id,
    Lot.state,
    Lot.remaining,
    Lot.available_at,
    Lot.expires_at,
)


def open_lots(session: Session, account_id: int) -> list[LotRow]:
    """Lots with points left, earliest expiry first (never-expiring last), then oldest."""
    rows = session.execute(
        select(*_LOT_COLUMNS)
        .where(Lot.account_id == account_id, Lot.remaining > 0)
        .order_by(Lot.expires_at.is_(None), Lot.expires_at, Lot.id)
    )
    return [LotRow(*row) for row in rows]


def lots_by_ids(session: Session, lot_ids: Iterable[int]) -> dict[int, LotRow]:
    ids = list(set(lot_ids))
    if not ids:
        return {}
    rows = session.execute(select(*_LOT_COLUMNS).where(Lot.id.in_(ids)))
    return {row.id: LotRow(*row) for row in rows}


def insert_lot(session: Session, row: dict[str, Any]) -> int:
    return int(session.execute(insert(Lot).values(row).returning(Lot.id)).scalar_one())


def update_lots(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Set ``remaining`` and ``state`` of lots by id (one executemany)."""
    if rows:
        session.execute(update(Lot), list(rows))


def lots_of(session: Session, account_id: int, *, open_only: bool) -> list[Lot]:
    stmt = select(Lot).where(Lot.account_id == account_id)
    if open_only:
        stmt = stmt.where(Lot.remaining > 0)
    return list(session.scalars(stmt.order_by(Lot.expires_at.is_(None), Lot.expires_at, Lot.id)))


def due_pending_lots(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Lot.id)
            .where(Lot.state == PENDING, Lot.available_at <= now, Lot.remaining > 0)
            .order_by(Lot.available_at)
            .limit(limit)
        )
    )


def due_expiring_lots(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Lot.id)
            .where(Lot.remaining > 0, Lot.expires_at <= now)
            .order_by(Lot.expires_at)
            .limit(limit)
        )
    )


def lot_account(session: Session, lot_id: int) -> int | None:
    return session.scalar(select(Lot.account_id).where(Lot.id == lot_id))


# -- the ledger ---------------------------------------------------------------------------


def transaction_by_key(session: Session, program_id: int, key: str) -> LedgerTransaction | None:
    return session.scalar(
        select(LedgerTransaction).where(
            LedgerTransaction.program_id == program_id,
            LedgerTransaction.idempotency_key == key,
        )
    )


def reversals_of(session: Session, transaction_id: int) -> list[LedgerTransaction]:
    return list(
        session.scalars(
            select(LedgerTransaction)
            .where(LedgerTransaction.reverses_id == transaction_id)
            .order_by(LedgerTransaction.id)
        )
    )


def insert_transaction(session: Session, row: dict[str, Any]) -> int:
    stmt = insert(LedgerTransaction).values(row).returning(LedgerTransaction.id)
    return int(session.execute(stmt).scalar_one())


def insert_lines(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(LedgerLine), list(rows))


def lines_of(session: Session, transaction_ids: Sequence[int]) -> list[LedgerLine]:
    if not transaction_ids:
        return []
    return list(
        session.scalars(
            select(LedgerLine)
            .where(LedgerLine.transaction_id.in_(transaction_ids))
            .order_by(LedgerLine.id)
        )
    )


def transactions(
    session: Session, account_ids: Sequence[int], *, before_id: int | None, limit: int
) -> list[LedgerTransaction]:
    stmt = select(LedgerTransaction).where(LedgerTransaction.account_id.in_(account_ids))
    if before_id is not None:
        stmt = stmt.where(LedgerTransaction.id < before_id)
    return list(session.scalars(stmt.order_by(LedgerTransaction.id.desc()).limit(limit)))


def transactions_before(
    session: Session, account_ids: Sequence[int], *, before: datetime | None, limit: int
) -> list[LedgerTransaction]:
    stmt = select(LedgerTransaction).where(LedgerTransaction.account_id.in_(account_ids))
    if before is not None:
        stmt = stmt.where(LedgerTransaction.created_at < before)
    return list(session.scalars(stmt.order_by(LedgerTransaction.created_at.desc()).limit(limit)))


@dataclass(frozen=True)
class ConfirmChecks:
    """What a confirm checks once it holds the account's lock, read in one round trip."""

    existing_id: int | None
    account_last_hour: int
    terminal_last_minute: int
    store_last_minute: int


def confirm_checks(
    session: Session,
    *,
    program_id: int,
    key: str,
    account_id: int,
    store_id: str,
    terminal_id: str,
    hour_ago: datetime,
    minute_ago: datetime,
    limits: tuple[int, int, int],
) -> ConfirmChecks:
    """The transaction already written under ``key`` (a replay), and the confirms of the
    account in the last hour and of the terminal and store in the last minute, each counted
    only up to its limit (so a busy store costs at most ``limit`` index entries)."""
    t = LedgerTransaction

    def bounded(limit: int, *where: ColumnElement[bool]) -> Any:
        recent = (
            select(t.id)
            .where(t.program_id == program_id, t.kind == PURCHASE, *where)
            .limit(limit)
            .subquery()
        )
        return select(func.count()).select_from(recent).scalar_subquery()

    row = session.execute(
        select(
            select(t.id)
            .where(t.program_id == program_id, t.idempotency_key == key)
            .scalar_subquery(),
            bounded(limits[0], t.account_id == account_id, t.created_at > hour_ago),
            bounded(limits[1], t.terminal_id == terminal_id, t.created_at > minute_ago),
            bounded(limits[2], t.store_id == store_id, t.created_at > minute_ago),
        )
    ).one()
    return ConfirmChecks(row[0], int(row[1]), int(row[2]), int(row[3]))


def transaction(session: Session, transaction_id: int) -> LedgerTransaction | None:
    return session.get(LedgerTransaction, transaction_id)


def redemption_counts(
    session: Session, *, program_id: int, account_id: int, terminal_id: str, since: datetime
) -> tuple[int, int]:
    """Transactions that spent points since ``since``: of the account, and at the terminal."""
    t, line = LedgerTransaction, LedgerLine

    def count(*where: ColumnElement[bool]) -> Any:
        return (
            select(func.count(func.distinct(line.transaction_id)))
            .select_from(line)
            .join(t, t.id == line.transaction_id)
            .where(
                line.program_id == program_id,
                line.kind == LINE_REDEMPTION,
                line.points < 0,
                line.created_at > since,
                *where,
            )
            .scalar_subquery()
        )

    row = session.execute(
        select(count(line.account_id == account_id), count(t.terminal_id == terminal_id))
    ).one()
    return int(row[0]), int(row[1])


def rolling_spend(session: Session, account_id: int, since: datetime) -> int:
    """Spend after ``since`` of the account and of the accounts merged into it."""
    t = LedgerTransaction
    own = (
        select(func.coalesce(func.sum(t.spend), 0))
        .where(t.account_id == account_id, t.created_at > since)
        .scalar_subquery()
    )
    merged = (
        select(func.coalesce(func.sum(t.spend), 0))
        .join(Account, Account.id == t.account_id)
        .where(Account.merged_into_id == account_id, t.created_at > since)
        .scalar_subquery()
    )
    return int(session.scalar(select(own + merged)) or 0)


def insert_tier_change(session: Session, row: dict[str, Any]) -> None:
    session.execute(insert(TierChange).values(row))


def due_tier_reviews(session: Session, now: datetime, limit: int) -> list[tuple[int, datetime]]:
    rows = session.execute(
        select(Account.id, Account.tier_review_at)
        .where(Account.tier_review_at <= now, Account.status != MERGED)
        .order_by(Account.tier_review_at)
        .limit(limit)
    )
    return [(int(r[0]), r[1]) for r in rows if r[1] is not None]


@dataclass(frozen=True)
class BirthdayCandidate:
    account_id: int
    program_id: int
    birthday: Any
    timezone: str


def birthday_candidates(
    session: Session, program_ids: Sequence[int], month_days: Sequence[tuple[int, int]]
) -> list[BirthdayCandidate]:
    """Active accounts whose customer's birthday falls on one of ``month_days``."""
    if not program_ids or not month_days:
        return []
    month = extract("month", Customer.birthday)
    day = extract("day", Customer.birthday)
    rows = session.execute(
        select(
            Account.id,
            Account.program_id,
            Customer.birthday,
            func.coalesce(Customer.timezone, Workspace.timezone),
        )
        .join(Customer, Customer.id == Account.customer_id)
        .join(Workspace, Workspace.id == Account.workspace_id)
        .where(
            Account.program_id.in_(program_ids),
            Account.status != MERGED,
            Customer.birthday.is_not(None),
            or_(*(and_(month == m, day == d) for m, d in month_days)),
        )
    )
    return [BirthdayCandidate(int(r[0]), int(r[1]), r[2], str(r[3])) for r in rows]


def programs_with_birthday_bonus(session: Session) -> list[Program]:
    return [p for p in session.scalars(select(Program)) if p.rules.get("birthday_bonus")]


# -- verification and reports ------------------------------------------------------------------


def account_sums(session: Session, account_ids: Sequence[int] | None) -> dict[int, dict[str, int]]:
    """Per account: the cached balances and what the ledger lines add up to."""
    line_sums = select(
        LedgerLine.account_id.label("account_id"),
        func.coalesce(
            func.sum(case((LedgerLine.bucket == AVAILABLE, LedgerLine.points), else_=0)), 0
        ).label("available"),
        func.coalesce(
            func.sum(case((LedgerLine.bucket == PENDING, LedgerLine.points), else_=0)), 0
        ).label("pending"),
    ).group_by(LedgerLine.account_id)
    if account_ids is not None:
        line_sums = line_sums.where(LedgerLine.account_id.in_(account_ids))
    sub = line_sums.subquery()
    lot_sums = select(
        Lot.account_id.label("account_id"),
        func.coalesce(func.sum(case((Lot.state == AVAILABLE, Lot.remaining), else_=0)), 0).label(
            "available"
        ),
        func.coalesce(func.sum(case((Lot.state == PENDING, Lot.remaining), else_=0)), 0).label(
            "pending"
        ),
        func.min(Lot.remaining).label("min_remaining"),
    ).group_by(Lot.account_id)
    if account_ids is not None:
        lot_sums = lot_sums.where(Lot.account_id.in_(account_ids))
    lots = lot_sums.subquery()
    stmt = (
        select(
            Account.id,
            Account.balance,
            Account.pending,
            func.coalesce(sub.c.available, 0),
            func.coalesce(sub.c.pending, 0),
            func.coalesce(lots.c.available, 0),
            func.coalesce(lots.c.pending, 0),
            func.coalesce(lots.c.min_remaining, 0),
        )
        .outerjoin(sub, sub.c.account_id == Account.id)
        .outerjoin(lots, lots.c.account_id == Account.id)
    )
    if account_ids is not None:
        stmt = stmt.where(Account.id.in_(account_ids))
    return {
        int(r[0]): {
            "balance": int(r[1]),
            "pending": int(r[2]),
            "lines_available": int(r[3]),
            "lines_pending": int(r[4]),
            "lots_available": int(r[5]),
            "lots_pending": int(r[6]),
            "min_lot_remaining": int(r[7]),
        }
        for r in session.execute(stmt)
    }


def lot_mismatches(session: Session, account_ids: Sequence[int] | None) -> list[dict[str, int]]:
    """Lots whose cached ``remaining`` differs from the sum of their lines."""
    line_sums = select(LedgerLine.lot_id, func.sum(LedgerLine.points).label("points"))
    if account_ids is not None:
        line_sums = line_sums.where(LedgerLine.account_id.in_(account_ids))
    sums = line_sums.group_by(LedgerLine.lot_id).subquery()
    stmt = select(Lot.id, Lot.remaining, func.coalesce(sums.c.points, 0)).outerjoin(
        sums, sums.c.lot_id == Lot.id
    )
    if account_ids is not None:
        stmt = stmt.where(Lot.account_id.in_(account_ids))
    stmt = stmt.where(Lot.remaining != func.coalesce(sums.c.points, 0))
    return [
        {"lot_id": int(r[0]), "remaining": int(r[1]), "lines": int(r[2])}
        for r in session.execute(stmt)
    ]


def bucket_index(column: Any, boundaries: Sequence[datetime]) -> ColumnElement[Any]:
    """The index ``i`` with ``boundaries[i] <= column < boundaries[i + 1]`` as a balanced CASE
    (portable, exact in any time zone); -1 before the first boundary, ``len - 1`` after the
    last."""

    def build(lo: int, hi: int) -> ColumnElement[Any]:
        # column is known to be >= boundaries[lo] (or below all when lo == -1) and < boundaries[hi]
        if hi - lo <= 1:
            return literal(lo)
        mid = (lo + hi) // 2
        return case((column < boundaries[mid], build(lo, mid)), else_=build(mid, hi))

    return build(-1, len(boundaries))


def expiry_profile(
    session: Session, program_id: int, boundaries: Sequence[datetime]
) -> dict[int | None, int]:
    """Open points by expiry bucket (``None``: never expires)."""
    index = bucket_index(Lot.expires_at, boundaries)
    bucket = case((Lot.expires_at.is_(None), literal(None)), else_=index).label("bucket")
    rows = session.execute(
        select(bucket, func.sum(Lot.remaining))
        .where(Lot.program_id == program_id, Lot.remaining > 0)
        .group_by(bucket)
    )
    return {None if r[0] is None else int(r[0]): int(r[1]) for r in rows}


def liability_totals(session: Session, program_id: int) -> tuple[int, int, int]:
    row = session.execute(
        select(
            func.coalesce(func.sum(Account.balance), 0),
            func.coalesce(func.sum(Account.pending), 0),
            func.count().filter(Account.balance + Account.pending > 0),
        ).where(Account.program_id == program_id)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def activity(
    session: Session, program_id: int, boundaries: Sequence[datetime]
) -> dict[tuple[int, str], int]:
    """Points by (period index, line kind) for lines between the first and last boundary."""
    index = bucket_index(LedgerLine.created_at, boundaries).label("period")
    rows = session.execute(
        select(index, LedgerLine.kind, func.sum(LedgerLine.points))
        .where(
            LedgerLine.program_id == program_id,
            LedgerLine.created_at >= boundaries[0],
            LedgerLine.created_at < boundaries[-1],
        )
        .group_by(index, LedgerLine.kind)
    )
    return {(int(r[0]), str(r[1])): int(r[2]) for r in rows}


# -- devices ----------------------------------------------------------------------------------


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


# -- fraud flags ---------------------------------------------------------------------------------


def insert_flag(session: Session, row: dict[str, Any]) -> bool:
    stmt = insert_ignore(session, FraudFlag, row, conflict=["workspace_id", "key"])
    return session.execute(stmt.returning(FraudFlag.id)).first() is not None


def flags(session: Session, workspace_id: int, *, open_only: bool, limit: int) -> list[FraudFlag]:
    stmt = select(FraudFlag).where(FraudFlag.workspace_id == workspace_id)
    if open_only:
        stmt = stmt.where(FraudFlag.resolved_at.is_(None))
    return list(session.scalars(stmt.order_by(FraudFlag.id.desc()).limit(limit)))
