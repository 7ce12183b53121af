"""The points ledger: accounts, postings in lots, FIFO spending, activation, expiry, and the
proof that cached balances equal the ledger.

Every change goes through :meth:`Book.post` on an account locked for the transaction
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` holds the database). A
posting inserts one transaction row and its lines, and moves the caches (lot ``remaining``,
account ``balance``/``pending``) by exactly the lines' amounts, so checking a balance and
spending it are one atomic step and a balance can never go negative.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound
from tactful.loyalty import store
from tactful.loyalty.models import (
    ACTIVATION,
    AVAILABLE,
    EXPIRY,
    LINE_ACTIVATION,
    LINE_BONUS,
    LINE_EXPIRY,
    PENDING,
    WELCOME,
)
from tactful.loyalty.schemas import ProgramRules
from tactful.loyalty.service import rules as calc
from tactful.loyalty.service.events import BONUS_EXPIRED, emit
from tactful.loyalty.service.programs import ProgramView
from tactful.loyalty.store import AccountRow, LotRow, postings
from tactful.loyalty.store import reports as report_store
from tactful.loyalty.store.postings import LineRow, NewLotRow


@dataclass(frozen=True)
class NewLot:
    """A lot a posting creates (``ref`` tells several new lots of one posting apart)."""

    state: str
    expires_at: datetime | None
    available_at: datetime | None = None
    ref: int = 0


@dataclass(frozen=True)
class Move:
    """Points into (+) or out of (−) one lot, in one bucket."""

    lot: int | NewLot
    bucket: str
    kind: str
    points: int


@dataclass(frozen=True)
class Posted:
    id: int
    points: int
    new_lots: dict[NewLot, int]


def spending_order(lot: LotRow) -> tuple[bool, datetime, int]:
    """Earliest expiry first, never-expiring last, then oldest."""
    return (lot.expires_at is None, lot.expires_at or datetime.max.replace(tzinfo=UTC), lot.id)


def spendable_now(lots: Iterable[LotRow], at: datetime) -> int:
    """Points a confirm at ``at`` could spend: available lots and pending lots whose return
    period is over (a confirm activates them first), not past their expiry."""
    return sum(
        lot.remaining
        for lot in lots
        if (
            lot.state == AVAILABLE
            or (lot.state == PENDING and lot.available_at is not None and lot.available_at <= at)
        )
        and (lot.expires_at is None or lot.expires_at > at)
    )


@dataclass
class Book:
    """One locked account with its open lots, for the rest of the transaction."""

    session: Session
    program: ProgramView
    account: AccountRow
    lots: dict[int, LotRow] = field(default_factory=dict)

    @property
    def rules(self) -> ProgramRules:
        return self.program.rules

    # -- reading ---------------------------------------------------------------------------

    def spendable_lots(self, at: datetime) -> list[LotRow]:
        """Available lots not past their expiry, in spending order (earliest expiry first)."""
        return sorted(
            (
                lot
                for lot in self.lots.values()
                if lot.state == AVAILABLE
                and lot.remaining > 0
                and (lot.expires_at is None or lot.expires_at > at)
            ),
            key=spending_order,
        )

    def spendable(self, at: datetime) -> int:
        return sum(lot.remaining for lot in self.spendable_lots(at))

    def draw(self, points: int, *, at: datetime, kind: str) -> list[Move]:
        """Moves that take ``points`` from the earliest-expiring available lots, or a 409."""
        moves: list[Move] = []
        left = points
        for lot in self.spendable_lots(at):
            if left == 0:
                break
            take = min(left, lot.remaining)
            moves.append(Move(lot.id, AVAILABLE, kind, -take))
            left -= take
        if left:
            raise Conflict(
                f"the account has {self.spendable(at)} points available; {points} requested",
                field="redeem_points",
            )
        return moves

    def take_back(
        self, points: int, *, at: datetime, kind: str, first: int | None
    ) -> tuple[list[Move], int]:
        """Up to ``points`` from lot ``first``, then available lots (FIFO), then pending ones;
        returns the moves and what could not be taken (never below zero)."""
        order: list[LotRow] = []
        if first is not None and first in self.lots:
            order.append(self.lots[first])
        order += [lot for lot in self.spendable_lots(at) if lot.id != first]
        order += sorted(
            (
                lot
                for lot in self.lots.values()
                if lot.state == PENDING and lot.remaining > 0 and lot.id != first
            ),
            key=spending_order,
        )
        moves: list[Move] = []
        left = points
        for lot in order:
            if left == 0:
                break
            take = min(left, lot.remaining)
            if take:
                moves.append(Move(lot.id, lot.state, kind, -take))
                left -= take
        return moves, left

    # -- writing ---------------------------------------------------------------------------

    def post(
        self,
        *,
        kind: str,
        key: str,
        moves: Sequence[Move],
        at: datetime,
        actor: str,
        correlation_key: str | None = None,
        reverses_id: int | None = None,
        receipt_id: str | None = None,
        store_id: str | None = None,
        terminal_id: str | None = None,
        amount: int = 0,
        spend: int = 0,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Posted:
        """Write one ledger transaction with its lines and move the caches by the same amounts
        (everything is checked first, then written together: one statement on PostgreSQL)."""
        session, account = self.session, self.account
        points = sum(m.points for m in moves)
        new_lots: dict[NewLot, int] = {}  # each new lot, by its number in this posting
        new_rows: list[NewLotRow] = []
        for move in moves:
            if isinstance(move.lot, NewLot) and move.lot not in new_lots:
                credited = sum(m.points for m in moves if m.lot == move.lot)
                if credited <= 0:
                    raise ValueError("a new lot starts with points")
                new_lots[move.lot] = len(new_rows)
                new_rows.append(
                    NewLotRow(move.lot.state, credited, move.lot.available_at, move.lot.expires_at)
                )
        deltas: dict[int, int] = defaultdict(int)
        states: dict[int, str] = {}
        lines: list[LineRow] = []
        balance, pending = 0, 0
        for move in moves:
            if isinstance(move.lot, NewLot):
                lines.append(LineRow(None, new_lots[move.lot], move.bucket, move.kind, move.points))
            else:
                deltas[move.lot] += move.points
                if move.points > 0:
                    states[move.lot] = move.bucket
                lines.append(LineRow(move.lot, 0, move.bucket, move.kind, move.points))
            if move.bucket == AVAILABLE:
                balance += move.points
            else:
                pending += move.points
        self._load(deltas)
        updates = []
        for lot_id, delta in deltas.items():
            lot = self.lots[lot_id]
            lot.remaining += delta
            lot.state = states.get(lot_id, lot.state)
            if lot.remaining < 0:
                raise AssertionError(f"lot {lot_id} would go below zero")
            updates.append((lot_id, lot.remaining, lot.state))
        account.balance += balance
        account.pending += pending
        if account.balance < 0 or account.pending < 0:
            raise AssertionError(f"account {account.id} would go below zero")
        transaction_id, lot_ids = postings.write_posting(
            session,
            transaction={
                "workspace_id": account.workspace_id,
                "program_id": account.program_id,
                "account_id": account.id,
                "kind": kind,
                "idempotency_key": key,
                "correlation_key": correlation_key,
                "reverses_id": reverses_id,
                "receipt_id": receipt_id,
                "store_id": store_id,
                "terminal_id": terminal_id,
                "amount": amount,
                "spend": spend,
                "points": points,
                "actor": actor,
                "reason": reason,
                "details": details or {},
                "created_at": at,
            },
            lots=new_rows,
            lines=lines,
            lot_updates=updates,
            balance=account.balance,
            pending=account.pending,
        )
        for new_lot, row, lot_id in zip(new_lots, new_rows, lot_ids, strict=True):
            self.lots[lot_id] = LotRow(
                lot_id,
                account.id,
                new_lot.state,
                row.points,
                new_lot.available_at,
                new_lot.expires_at,
            )
        for lot_id in [i for i, lot in self.lots.items() if lot.remaining == 0]:
            del self.lots[lot_id]
        return Posted(transaction_id, points, {n: lot_ids[i] for n, i in new_lots.items()})

    def _load(self, lot_ids: Iterable[int]) -> None:
        """Bring closed lots a posting refills (refunds) into the book."""
        missing = [i for i in lot_ids if i not in self.lots]
        for lot_id, lot in store.lots_by_ids(self.session, missing).items():
            if lot.account_id != self.account.id:
                raise AssertionError(f"lot {lot_id} belongs to another account")
            self.lots[lot_id] = lot

    def activate(self, lot_id: int, *, at: datetime, actor: str) -> Posted | None:
        """Make a pending lot available (its own ledger entry); None if nothing is due."""
        lot = self.lots.get(lot_id)
        if lot is None or lot.state != PENDING or lot.remaining == 0:
            return None
        if lot.available_at is not None and lot.available_at > at:
            return None
        return self.post(
            kind=ACTIVATION,
            key=f"activate:{lot_id}",
            correlation_key=f"lot:{lot_id}",
            moves=[
                Move(lot_id, PENDING, LINE_ACTIVATION, -lot.remaining),
                Move(lot_id, AVAILABLE, LINE_ACTIVATION, lot.remaining),
            ],
            at=at,
            actor=actor,
        )

    def expire(
        self, lot_id: int, *, at: datetime, actor: str, key: str | None = None
    ) -> Posted | None:
        """Expire what is left of a lot past its expiry (its own entry); None if nothing is due."""
        lot = self.lots.get(lot_id)
        if lot is None or lot.remaining == 0 or lot.expires_at is None or lot.expires_at > at:
            return None
        posted = self.post(
            kind=EXPIRY,
            key=key or f"expire:{lot_id}",
            correlation_key=f"lot:{lot_id}",
            moves=[Move(lot_id, lot.state, LINE_EXPIRY, -lot.remaining)],
            at=at,
            actor=actor,
            details={"expired_at": lot.expires_at.isoformat()},
        )
        emit(
            self.session,
            program=self.program,
            customer_id=self.account.customer_id,
            at=at,
            events=[
                (
                    f"{posted.id}:expired",
                    BONUS_EXPIRED,
                    {"points": -posted.points, "transaction_id": posted.id, "lot_id": lot_id},
                )
            ],
        )
        return posted

    def settle_due(self, *, at: datetime, actor: str) -> list[tuple[str, Posted]]:
        """Activate and expire whatever is due on this account now (before it spends)."""
        done: list[tuple[str, Posted]] = []
        for lot_id in sorted(self.lots):
            lot = self.lots.get(lot_id)
            if lot is None:
                continue
            if lot.state == PENDING and lot.available_at is not None and lot.available_at <= at:
                posted = self.activate(lot_id, at=at, actor=actor)
                if posted is not None:
                    done.append((ACTIVATION, posted))
            if lot_id in self.lots and lot.expires_at is not None and lot.expires_at <= at:
                posted = self.expire(lot_id, at=at, actor=actor)
                if posted is not None:
                    done.append((EXPIRY, posted))
        return done


def open_book(session: Session, program: ProgramView, account_id: int) -> Book:
    """Lock an account and load its open lots."""
    account = store.lock_account(session, account_id)
    if account is None:
        raise NotFound(f"loyalty account {account_id} does not exist", field="account_id")
    return book_of(session, program, account)


def book_of(
    session: Session,
    program: ProgramView,
    locked: AccountRow,
    lots: Sequence[LotRow] | None = None,
) -> Book:
    """The book of an account the caller has locked (its open lots loaded unless given)."""
    found = store.open_lots(session, locked.id) if lots is None else lots
    return Book(session, program, locked, {lot.id: lot for lot in found})


@dataclass(frozen=True)
class Opened:
    book: Book
    welcome: Posted | None  # the welcome bonus, when this call opened the account


def open_account(
    session: Session,
    *,
    program: ProgramView,
    customer_id: int,
    actor: str,
    welcome: bool = True,
    at: datetime | None = None,
) -> Opened:
    """The customer's account in the program, locked (created with the welcome bonus if new)."""
    now = at or clock.now()
    existing = store.lock_account_of(session, program.id, customer_id)
    if existing is not None:
        return Opened(book_of(session, program, existing), None)
    rules = program.rules
    account_id = store.insert_account(
        session,
        {
            "workspace_id": program.workspace_id,
            "program_id": program.id,
            "customer_id": customer_id,
            "status": "active",
            "tier": rules.tiers[0].key,
            "tier_since": now,
            "balance": 0,
            "pending": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    if account_id is None:  # created by a concurrent transaction that committed first
        found = store.lock_account_of(session, program.id, customer_id)
        assert found is not None
        return Opened(book_of(session, program, found), None)
    book = open_book(session, program, account_id)
    posted = None
    # a customer merged into this one brought an account (moving here soon): its welcome
    # bonus was this customer's one
    if (
        welcome
        and rules.welcome_bonus
        and not store.merged_customers_have_accounts(session, program.id, customer_id)
    ):
        posted = book.post(
            kind=WELCOME,
            key=f"welcome:{account_id}",
            moves=[
                Move(
                    NewLot(AVAILABLE, calc.bonus_expires_at(rules, now)),
                    AVAILABLE,
                    LINE_BONUS,
                    rules.welcome_bonus,
                )
            ],
            at=now,
            actor=actor,
            reason="welcome bonus",
        )
    return Opened(book, posted)


def verify(session: Session, *, account_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Accounts and lots whose caches differ from the ledger, or that went below zero
    (empty when every cached figure equals the sum of its lines)."""
    problems: list[dict[str, Any]] = []
    for account_id, sums in report_store.account_sums(session, account_ids).items():
        if (
            sums["balance"] != sums["lines_available"]
            or sums["pending"] != sums["lines_pending"]
            or sums["balance"] != sums["lots_available"]
            or sums["pending"] != sums["lots_pending"]
            or sums["balance"] < 0
            or sums["pending"] < 0
            or sums["min_lot_remaining"] < 0
        ):
            problems.append({"account_id": account_id, **sums})
    problems += report_store.lot_mismatches(session, account_ids)
    return problems


def verify_program(session: Session, *, program_id: int) -> tuple[int, list[dict[str, Any]]]:
    """How many accounts of the program were checked, and every mismatch found."""
    account_ids = store.account_ids(session, program_id)
    problems: list[dict[str, Any]] = []
    for start in range(0, len(account_ids), 500):
        problems += verify(session, account_ids=account_ids[start : start + 500])
    return len(account_ids), problems
