"""Queries over programs, accounts, lots, the ledger, velocity counters and fraud flags
(devices and gift cards: ``store.cards``; checks and reports: ``store.reports``).

Only reads and writes rows: never commits, never enqueues, never sends.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    bindparam,
    delete,
    extract,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, aliased

from tactful.core import direct
from tactful.core.dialect import insert_ignore, lock_rows, upsert
from tactful.customers.models import Customer, Identity
from tactful.loyalty.models import (
    AVAILABLE,
    LINE_EXPIRY,
    LINE_REDEMPTION,
    LINE_TRANSFER,
    MERGED,
    OPEN_LOT,
    PENDING,
    PENDING_LOT,
    TRANSFER_IN,
    Account,
    FraudFlag,
    LedgerLine,
    LedgerTransaction,
    Lot,
    Program,
    RateCounter,
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


@functools.cache
def _choice(named: bool) -> Any:
    """The id of the program a POS call means, as a scalar subquery (parameters ``ws`` and
    ``program_id`` or ``scope``): the one named, else the brand's, else the workspace's."""
    stmt = select(Program.id).where(Program.workspace_id == bindparam("ws"))
    if named:
        return stmt.where(Program.id == bindparam("program_id")).scalar_subquery()
    return (
        stmt.where(or_(Program.brand_scope == bindparam("scope"), Program.brand_scope == "ws"))
        .order_by((Program.brand_scope == "ws").asc())
        .limit(1)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class Which:
    """Which program and customer a POS call names: ``program_id`` or the caller's brand
    ``scope`` (``ws`` for none); a customer id, or ``(kind, value)`` looked up as given."""

    workspace_id: int
    program_id: int | None
    scope: str
    customer: tuple[str, str] | int | None = None

    def params(self) -> dict[str, Any]:
        found: dict[str, Any] = {"ws": self.workspace_id}
        if self.program_id is not None:
            found["program_id"] = self.program_id
        else:
            found["scope"] = self.scope
        if isinstance(self.customer, int):
            found["customer_id"] = self.customer
        elif self.customer is not None:
            found["kind"], found["value"] = self.customer
        return found

    @property
    def named(self) -> bool:
        return self.program_id is not None

    @property
    def by_identity(self) -> bool:
        return not isinstance(self.customer, int)


@functools.cache
def _stamp_stmt(named: bool) -> Any:
    return select(Program.id, Program.version, Program.updated_at).where(
        Program.id == _choice(named)
    )


def program_stamp(session: Session, which: Which) -> tuple[int, int, datetime] | None:
    """The id, version and last change (what its cached view is keyed by) of the program a
    call means."""
    row = direct.execute(session, _stamp_stmt(which.named), which.params()).first()
    return None if row is None else (int(row[0]), int(row[1]), row[2])


# -- accounts -----------------------------------------------------------------------------


def _conn(session: Session) -> Connection:
    """The session's connection: plain Core statements skip the ORM's per-call work."""
    return session.connection()


@dataclass
class AccountRow:
    """An account as the ledger code works with it (mutable while a posting is built; written
    back by :func:`update_account`)."""

    id: int
    workspace_id: int
    program_id: int
    customer_id: int
    status: str
    status_reason: str | None
    merged_into_id: int | None
    tier: str
    tier_since: datetime
    tier_review_at: datetime | None
    balance: int
    pending: int
    created_at: datetime


_ACCOUNT_COLUMNS = (
    Account.id,
    Account.workspace_id,
    Account.program_id,
    Account.customer_id,
    Account.status,
    Account.status_reason,
    Account.merged_into_id,
    Account.tier,
    Account.tier_since,
    Account.tier_review_at,
    Account.balance,
    Account.pending,
    Account.created_at,
)
_N_ACCOUNT = len(_ACCOUNT_COLUMNS)


def _account(row: Sequence[Any]) -> AccountRow:
    return AccountRow(*row[:_N_ACCOUNT])


_ACCOUNT = select(*_ACCOUNT_COLUMNS).where(Account.id == bindparam("account_id"))
_ACCOUNT_OF = select(*_ACCOUNT_COLUMNS).where(
    Account.program_id == bindparam("program_id"), Account.customer_id == bindparam("customer_id")
)


def account_row(session: Session, account_id: int) -> AccountRow | None:
    row = _conn(session).execute(_ACCOUNT, {"account_id": account_id}).first()
    return None if row is None else _account(row)


def insert_account(session: Session, row: dict[str, Any]) -> int | None:
    """Insert an account unless the customer has one in the program; the new id or None."""
    stmt = insert_ignore(session, Account, row, conflict=["program_id", "customer_id"])
    found = _conn(session).execute(stmt.returning(Account.id)).first()
    return None if found is None else int(found[0])


def lock_account_of(session: Session, program_id: int, customer_id: int) -> AccountRow | None:
    """The customer's account in the program, locked until the transaction ends."""
    stmt = _locked(session, _ACCOUNT_OF)
    row = (
        _conn(session).execute(stmt, {"program_id": program_id, "customer_id": customer_id}).first()
    )
    return None if row is None else _account(row)


def lock_account(session: Session, account_id: int) -> AccountRow | None:
    """The account, locked until the transaction ends (re-read, never a stale copy)."""
    row = _conn(session).execute(_locked(session, _ACCOUNT), {"account_id": account_id}).first()
    return None if row is None else _account(row)


def update_account(session: Session, account_id: int, values: dict[str, Any]) -> None:
    """Write columns of an account (the caller holds its lock)."""
    _conn(session).execute(update(Account).where(Account.id == account_id).values(values))


_UPDATE_BALANCES = (
    update(Account)
    .where(Account.id == bindparam("account_id"))
    .values(
        balance=bindparam("balance"),
        pending=bindparam("pending"),
        updated_at=bindparam("updated_at", type_=Account.updated_at.type),
    )
)


def update_balances(
    session: Session, account_id: int, *, balance: int, pending: int, at: datetime
) -> None:
    """Write an account's cached balances (the caller holds its lock)."""
    _conn(session).execute(
        _UPDATE_BALANCES,
        {"account_id": account_id, "balance": balance, "pending": pending, "updated_at": at},
    )


@dataclass(frozen=True)
class PosAccount:
    """What a POS call reads about the customer's account in one round trip."""

    program_id: int | None  # None: no program matches (the caller explains why)
    program_version: int
    program_updated_at: datetime | None
    customer_id: int | None  # None: not found as given, or merged (ask the customer service)
    first_name: str | None
    account: AccountRow | None
    spendable: int  # available points now (pending ones due are counted, expired ones not)
    spend: int  # net spend over the rolling window (merged accounts' included)


def _owner(by_identity: bool) -> Any:
    """The customer named: ``customer_id``, or the owner of the valid identity ``kind`` whose
    value is exactly ``value`` (a normal form)."""
    if not by_identity:
        return bindparam("customer_id", type_=BigInteger)
    return (
        select(Identity.customer_id)
        .where(
            Identity.workspace_id == bindparam("ws"),
            Identity.kind == bindparam("kind"),
            Identity.namespace == "",
            Identity.value == bindparam("value"),
            literal_column("identities.valid"),
        )
        .scalar_subquery()
    )


def _spendable(account_id: Any) -> Any:
    """Points a confirm at ``at`` could spend (pending ones due included, expired excluded)."""
    at = bindparam("at", type_=Lot.expires_at.type)
    return (
        select(func.coalesce(func.sum(Lot.remaining), 0))
        .where(
            Lot.account_id == account_id,
            OPEN_LOT,
            or_(Lot.state == AVAILABLE, and_(Lot.state == PENDING, Lot.available_at <= at)),
            or_(Lot.expires_at.is_(None), Lot.expires_at > at),
        )
        .scalar_subquery()
    )


def _rolling_spend(account_id: Any) -> Any:
    """Spend after ``since`` of the account and of the accounts merged into it."""
    t = LedgerTransaction
    since = bindparam("since", type_=t.created_at.type)
    own = (
        select(func.coalesce(func.sum(t.spend), 0))
        .where(t.account_id == account_id, t.created_at > since)
        .scalar_subquery()
    )
    # an alias: given the outer query's account column, a select over loyalty_accounts itself
    # would compare that table's own columns (merged_into_id = id) and find nothing. And an
    # explicit correlation: automatic correlation only reaches the enclosing select (here the
    # sum over transactions), so the outer query's accounts would join in uncorrelated, and
    # every account merged into any account would count for each one
    merged_from = aliased(Account)
    merged_accounts = (
        select(merged_from.id).where(merged_from.merged_into_id == account_id).correlate(Account)
    )
    merged = (
        select(func.coalesce(func.sum(t.spend), 0))
        .where(t.account_id.in_(merged_accounts), t.created_at > since)
        .scalar_subquery()
    )
    return own + merged


@functools.cache
def _pos_account_stmt(named: bool, by_identity: bool) -> Any:
    p = select(Program.id, Program.version, Program.updated_at).where(Program.id == _choice(named))
    p_sub = p.subquery()
    who_sub = select(_owner(by_identity).label("cid")).subquery()
    return (
        select(
            p_sub.c.id,
            p_sub.c.version,
            p_sub.c.updated_at,
            who_sub.c.cid,
            Customer.merged_into_id,
            Customer.first_name,
            *_ACCOUNT_COLUMNS,
            _spendable(Account.id),
            _rolling_spend(Account.id),
        )
        .select_from(who_sub)
        .outerjoin(p_sub, true())
        .outerjoin(Customer, Customer.id == who_sub.c.cid)
        .outerjoin(
            Account, and_(Account.program_id == p_sub.c.id, Account.customer_id == who_sub.c.cid)
        )
    )


def pos_account(session: Session, which: Which, *, at: datetime, since: datetime) -> PosAccount:
    """For identify and calculate (no lock): the program with its version, the customer,
    their account, the points they could spend at ``at`` and their spend since ``since``."""
    stmt = _pos_account_stmt(which.named, which.by_identity)
    row = direct.execute(session, stmt, {**which.params(), "at": at, "since": since}).one()
    account = _account(row[6:]) if row[6] is not None else None
    return PosAccount(
        program_id=row[0],
        program_version=int(row[1] or 0),
        program_updated_at=row[2],
        customer_id=row[3] if row[3] is not None and row[4] is None else None,
        first_name=row[5],
        account=account,
        spendable=int(row[6 + _N_ACCOUNT] or 0) if account else 0,
        spend=int(row[7 + _N_ACCOUNT] or 0) if account else 0,
    )


@dataclass(frozen=True)
class LockedAccount:
    account: AccountRow
    program_version: int
    program_updated_at: datetime


_LOCKED: dict[tuple[str, Any], Any] = {}


def _locked(session: Session, stmt: Any) -> Any:
    """``stmt`` taking row locks (``core.dialect.lock_rows``), built once per dialect."""
    key = (session.get_bind().dialect.name, stmt)
    found = _LOCKED.get(key)
    if found is None:
        found = _LOCKED[key] = lock_rows(session, stmt)
    return found


@functools.cache
def _lock_pos_account_stmt(named: bool, by_identity: bool) -> Any:
    version = select(Program.version).where(Program.id == Account.program_id).scalar_subquery()
    changed = select(Program.updated_at).where(Program.id == Account.program_id).scalar_subquery()
    merged = (
        select(Customer.merged_into_id).where(Customer.id == Account.customer_id).scalar_subquery()
    )
    # only the account row is locked (FOR UPDATE leaves rows read by subqueries alone)
    return select(*_ACCOUNT_COLUMNS, version, changed, merged).where(
        Account.program_id == _choice(named), Account.customer_id == _owner(by_identity)
    )


def lock_pos_account(session: Session, which: Which) -> LockedAccount | None:
    """The customer's account in the program, locked, with the program's version; None when
    there is none (or the customer is merged): the caller takes the full path."""
    stmt = _locked(session, _lock_pos_account_stmt(which.named, which.by_identity))
    row = direct.execute(session, stmt, which.params()).first()
    if row is None or row[_N_ACCOUNT + 2] is not None:
        return None
    return LockedAccount(_account(row), int(row[_N_ACCOUNT]), row[_N_ACCOUNT + 1])


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


def merged_customers_have_accounts(session: Session, program_id: int, customer_id: int) -> bool:
    """Whether a customer merged into this one holds an account in the program (its points
    are about to move to this customer's account)."""
    found = session.scalar(
        select(Account.id)
        .join(Customer, Customer.id == Account.customer_id)
        .where(Account.program_id == program_id, Customer.merged_into_id == customer_id)
        .limit(1)
    )
    return found is not None


def merged_into(session: Session, account_id: int) -> list[int]:
    """The accounts merged into this one."""
    return list(
        session.scalars(
            select(Account.id).where(Account.merged_into_id == account_id).order_by(Account.id)
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
    rows = _conn(session).execute(
        select(*_LOT_COLUMNS)
        .where(Lot.account_id == account_id, OPEN_LOT)
        .order_by(Lot.expires_at.is_(None), Lot.expires_at, Lot.id)
    )
    return [LotRow(*row) for row in rows]


def lots_by_ids(session: Session, lot_ids: Iterable[int]) -> dict[int, LotRow]:
    ids = list(set(lot_ids))
    if not ids:
        return {}
    rows = _conn(session).execute(select(*_LOT_COLUMNS).where(Lot.id.in_(ids)))
    return {row.id: LotRow(*row) for row in rows}


_INSERT_LOT = insert(Lot).returning(Lot.id)


def insert_lot(session: Session, row: dict[str, Any]) -> int:
    return int(_conn(session).execute(_INSERT_LOT, row).scalar_one())


_UPDATE_LOT = (
    update(Lot)
    .where(Lot.id == bindparam("lot_id"))
    .values(remaining=bindparam("remaining"), state=bindparam("state"))
)


def update_lots(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Set ``remaining`` and ``state`` of lots by ``lot_id`` (one executemany)."""
    if rows:
        _conn(session).execute(_UPDATE_LOT, list(rows))


def lots_of(session: Session, account_id: int, *, open_only: bool) -> list[Lot]:
    stmt = select(Lot).where(Lot.account_id == account_id)
    if open_only:
        stmt = stmt.where(OPEN_LOT)
    return list(session.scalars(stmt.order_by(Lot.expires_at.is_(None), Lot.expires_at, Lot.id)))


def due_pending_lots(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Lot.id)
            .where(PENDING_LOT, Lot.available_at <= now, OPEN_LOT)
            .order_by(Lot.available_at)
            .limit(limit)
        )
    )


def due_expiring_lots(session: Session, now: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(Lot.id)
            .where(OPEN_LOT, Lot.expires_at <= now)
            .order_by(Lot.expires_at)
            .limit(limit)
        )
    )


def open_lots_of_transaction(session: Session, transaction_id: int) -> list[LotRow]:
    """Lots a transaction created that still hold points."""
    rows = _conn(session).execute(
        select(*_LOT_COLUMNS).where(Lot.transaction_id == transaction_id, OPEN_LOT).order_by(Lot.id)
    )
    return [LotRow(*row) for row in rows]


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


def count_transactions(session: Session, account_id: int, kind: str) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                LedgerTransaction.account_id == account_id, LedgerTransaction.kind == kind
            )
        )
        or 0
    )


def last_transfer_in(session: Session, account_id: int, *, from_account_id: int) -> int | None:
    """The latest transfer into the account from ``from_account_id`` (a merge's arrival)."""
    found = session.scalars(
        select(LedgerTransaction)
        .where(LedgerTransaction.account_id == account_id, LedgerTransaction.kind == TRANSFER_IN)
        .order_by(LedgerTransaction.id.desc())
    )
    for txn in found:
        if txn.details.get("from_account_id") == from_account_id:
            return txn.id
    return None


def reversals_of(session: Session, transaction_id: int) -> list[LedgerTransaction]:
    return list(
        session.scalars(
            select(LedgerTransaction)
            .where(LedgerTransaction.reverses_id == transaction_id)
            .order_by(LedgerTransaction.id)
        )
    )


_INSERT_TRANSACTION = insert(LedgerTransaction).returning(LedgerTransaction.id)


def insert_transaction(session: Session, row: dict[str, Any]) -> int:
    return int(_conn(session).execute(_INSERT_TRANSACTION, row).scalar_one())


def insert_lines(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One INSERT for all the rows (an executemany the driver sends as one statement)."""
    if rows:
        _conn(session).execute(insert(LedgerLine), list(rows))


def expired_points(session: Session, lot_id: int) -> int:
    """Points that expired out of a lot."""
    found = session.scalar(
        select(func.coalesce(func.sum(LedgerLine.points), 0)).where(
            LedgerLine.lot_id == lot_id, LedgerLine.kind == LINE_EXPIRY
        )
    )
    return -int(found or 0)


def transferred_to(session: Session, lot_id: int) -> int | None:
    """The lot the last transfer of this lot's points (a merge, or its undoing) put them in,
    or None. A transfer is a pair of postings, ``…-out:…`` and ``…-in:…``, whose lines list
    the lots in the same order with the same points."""
    out = session.execute(
        select(
            LedgerTransaction.id, LedgerTransaction.program_id, LedgerTransaction.idempotency_key
        )
        .join(LedgerLine, LedgerLine.transaction_id == LedgerTransaction.id)
        .where(LedgerLine.lot_id == lot_id, LedgerLine.kind == LINE_TRANSFER, LedgerLine.points < 0)
        .order_by(LedgerLine.id.desc())
        .limit(1)
    ).first()
    if out is None or "-out:" not in out.idempotency_key:
        return None
    arrival = session.scalar(
        select(LedgerTransaction.id).where(
            LedgerTransaction.program_id == out.program_id,
            LedgerTransaction.idempotency_key == out.idempotency_key.replace("-out:", "-in:", 1),
        )
    )
    if arrival is None:
        return None
    lines = session.execute(
        select(LedgerLine.transaction_id, LedgerLine.lot_id, LedgerLine.points)
        .where(LedgerLine.transaction_id.in_([out.id, arrival]), LedgerLine.kind == LINE_TRANSFER)
        .order_by(LedgerLine.id)
    ).all()
    left = [(x.lot_id, -x.points) for x in lines if x.transaction_id == out.id]
    came = [(x.lot_id, x.points) for x in lines if x.transaction_id == arrival]
    if len(left) != len(came):
        return None
    for (old, points), (new, arrived) in zip(left, came, strict=True):
        if old == lot_id:
            return int(new) if points == arrived and new is not None else None
    return None


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
class ConfirmState:
    """What a confirm reads once it holds the account's lock, in one round trip."""

    lots: list[LotRow]
    existing_id: int | None  # the transaction already written under the key (a replay)
    spend: int  # rolling spend before this purchase
    redemptions: tuple[int, int] | None  # of the account and of the terminal, when asked


@functools.cache
def _confirm_state_stmt(with_bursts: bool) -> Any:
    t = LedgerTransaction
    columns: list[Any] = [
        select(t.id)
        .where(t.program_id == bindparam("program_id"), t.idempotency_key == bindparam("key"))
        .scalar_subquery()
        .label("existing"),
        _rolling_spend(bindparam("account_id")).label("spend"),
    ]
    if with_bursts:
        columns += list(_redemption_counts())
    checks = select(*columns).subquery()
    return (
        select(checks, *_LOT_COLUMNS)
        .select_from(checks)
        .outerjoin(Lot, and_(Lot.account_id == bindparam("account_id"), OPEN_LOT))
        .order_by(Lot.expires_at.is_(None), Lot.expires_at, Lot.id)
    )


def confirm_state(
    session: Session,
    *,
    program_id: int,
    key: str,
    account_id: int,
    terminal_id: str,
    since: datetime,
    bursts: tuple[datetime, int, int] | None,
) -> ConfirmState:
    """The account's open lots (earliest expiry first), the transaction already written under
    ``key``, the rolling spend since ``since`` and, with ``bursts`` (since when, and the
    account's and the terminal's thresholds), the redemptions of the account and of the
    terminal since then, each counted only up to its threshold."""
    params: dict[str, Any] = {
        "program_id": program_id,
        "key": key,
        "account_id": account_id,
        "since": since,
    }
    if bursts is not None:
        params.update(
            terminal_id=terminal_id,
            burst_since=bursts[0],
            lim_ra=bursts[1],
            lim_rt=bursts[2],
        )
    rows = direct.execute(session, _confirm_state_stmt(bursts is not None), params)
    first = rows[0]
    offset = 4 if bursts is not None else 2
    return ConfirmState(
        lots=[LotRow(*row[offset:]) for row in rows if row[offset] is not None],
        existing_id=first[0],
        spend=int(first[1]),
        redemptions=(int(first[2]), int(first[3])) if bursts is not None else None,
    )


# -- velocity counters ---------------------------------------------------------------------------

_PREBUILT: dict[tuple[str, str], Any] = {}


def _prebuilt(session: Session, name: str, build: Any) -> Any:
    """A statement that depends on the dialect, built once per dialect."""
    key = (session.get_bind().dialect.name, name)
    found = _PREBUILT.get(key)
    if found is None:
        found = _PREBUILT[key] = build()
    return found


def bump_rate_counters(
    session: Session, *, program_id: int, windows: Sequence[tuple[str, datetime]]
) -> dict[str, int]:
    """Add one to the counter of each ``(subject, window start)`` (created at one when
    missing), in one statement; the counts after it. The rows stay locked until the
    transaction ends, taken in subject order by every confirm, so two confirms sharing a
    terminal and a store cannot each hold the row the other waits for."""
    counter = RateCounter
    n = len(windows)
    window_type = counter.window_start.type

    def build() -> Any:
        rows = [
            {
                "program_id": bindparam("b_program_id"),
                "subject": bindparam(f"s{i}"),
                "window_start": bindparam(f"w{i}", type_=window_type),
                "count": 1,
            }
            for i in range(n)
        ]
        return upsert(
            session,
            counter,
            rows,
            conflict=["program_id", "subject", "window_start"],
            assign={"count": counter.count + 1},
        ).returning(counter.subject, counter.count)

    params: dict[str, Any] = {"b_program_id": program_id}
    for i, (subject, start) in enumerate(sorted(windows)):
        params[f"s{i}"], params[f"w{i}"] = subject, start
    stmt = _prebuilt(session, f"rate_counters.bump.{n}", build)
    return {str(subject): int(count) for subject, count in direct.execute(session, stmt, params)}


def prune_rate_counters(session: Session, before: datetime) -> int:
    """Forget counters of windows that started before ``before``."""
    result = _conn(session).execute(delete(RateCounter).where(RateCounter.window_start < before))
    return int(getattr(result, "rowcount", 0))


def transaction(session: Session, transaction_id: int) -> LedgerTransaction | None:
    return session.get(LedgerTransaction, transaction_id)


def _redemption_counts() -> tuple[Any, Any]:
    """Transactions that spent points since ``burst_since``: of the account ``account_id`` up
    to ``lim_ra``, and at the terminal ``terminal_id`` up to ``lim_rt`` (two labelled scalar
    subqueries). Each reads the transactions' index by account or by terminal from
    ``burst_since`` on (a posting's lines carry its time) and stops at its threshold, so a busy
    terminal costs at most the transactions it made within the window."""
    t, line = LedgerTransaction, LedgerLine
    spent = (
        select(line.id)
        .where(line.transaction_id == t.id, line.kind == LINE_REDEMPTION, line.points < 0)
        .exists()
    )

    def count(limit: str, *where: ColumnElement[bool]) -> Any:
        found = (
            select(t.id)
            .where(
                *where,
                t.created_at > bindparam("burst_since", type_=t.created_at.type),
                spent,
            )
            .limit(bindparam(limit, type_=BigInteger))
            .subquery()
        )
        return select(func.count()).select_from(found).scalar_subquery()

    return (
        count("lim_ra", t.account_id == bindparam("account_id")).label("ra"),
        count(
            "lim_rt",
            t.program_id == bindparam("program_id"),
            t.terminal_id == bindparam("terminal_id"),
        ).label("rt"),
    )


_ROLLING_SPEND = select(_rolling_spend(bindparam("account_id")))


def rolling_spend(session: Session, account_id: int, since: datetime) -> int:
    """Spend after ``since`` of the account and of the accounts merged into it."""
    found = _conn(session).execute(_ROLLING_SPEND, {"account_id": account_id, "since": since})
    return int(found.scalar() or 0)


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


# -- fraud flags ---------------------------------------------------------------------------------


def insert_flag(session: Session, row: dict[str, Any]) -> bool:
    """Insert a flag unless one with its key exists; whether it was new."""
    columns = tuple(row)
    stmt = _prebuilt(
        session,
        f"fraud_flags.insert.{','.join(columns)}",
        lambda: insert_ignore(
            session,
            FraudFlag,
            {name: bindparam(name) for name in columns},
            conflict=["workspace_id", "key"],
        ).returning(FraudFlag.id),
    )
    return direct.execute(session, stmt, row).first() is not None


def flags(session: Session, workspace_id: int, *, open_only: bool, limit: int) -> list[FraudFlag]:
    stmt = select(FraudFlag).where(FraudFlag.workspace_id == workspace_id)
    if open_only:
        stmt = stmt.where(FraudFlag.resolved_at.is_(None))
    return list(session.scalars(stmt.order_by(FraudFlag.id.desc()).limit(limit)))
