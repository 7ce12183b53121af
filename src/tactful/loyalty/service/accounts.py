"""Accounts: enrolment, reading balances and the ledger, the scheduled work on them
(activation, expiry, tier reviews, birthday bonuses), and folding a merged customer's
account into the survivor's by transfer entries."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.customers.service import get_customer
from tactful.loyalty import store
from tactful.loyalty.models import (
    ACTIVE,
    AVAILABLE,
    BIRTHDAY,
    LINE_BONUS,
    LINE_TRANSFER,
    MERGED,
    TRANSFER_IN,
    TRANSFER_OUT,
    Account,
    LedgerLine,
    LedgerTransaction,
    Lot,
)
from tactful.loyalty.service import rules as calc
from tactful.loyalty.service import tiers
from tactful.loyalty.service.events import emit_bonus
from tactful.loyalty.service.fraud import get_account
from tactful.loyalty.service.ledger import Move, NewLot, open_account, open_book
from tactful.loyalty.service.programs import ProgramView, get_program, program_view, view_of
from tactful.loyalty.store import AccountRow
from tactful.tenancy.service import record_audit

SYSTEM_ACTOR = "system"


def enrol(
    session: Session, *, workspace_id: int, program_id: int, customer_id: int, actor: str
) -> AccountRow:
    """Open the customer's account (with the welcome bonus); an existing one is returned."""
    program = view_of(
        session, get_program(session, workspace_id=workspace_id, program_id=program_id)
    )
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    opened = open_account(session, program=program, customer_id=customer.id, actor=actor)
    if opened.welcome is not None:
        emit_bonus(
            session,
            program=program,
            customer_id=customer.id,
            transaction_id=opened.welcome.id,
            points=opened.welcome.points,
            bonus="welcome",
            at=clock.now(),
        )
    return opened.book.account


def accounts_of_customer(session: Session, *, workspace_id: int, customer_id: int) -> list[Account]:
    """A customer's accounts (one per program)."""
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    return [a for a in store.accounts_of(session, [customer.id]) if a.workspace_id == workspace_id]


def lots(
    session: Session, *, workspace_id: int, account_id: int, open_only: bool = True
) -> list[Lot]:
    """The account's lots, earliest expiry first."""
    account = get_account(session, workspace_id=workspace_id, account_id=account_id)
    return store.lots_of(session, account.id, open_only=open_only)


def ledger(
    session: Session,
    *,
    workspace_id: int,
    account_id: int,
    before_id: int | None = None,
    limit: int = 100,
) -> list[tuple[LedgerTransaction, list[LedgerLine]]]:
    """The account's transactions with their lines, newest first (page with ``before_id``)."""
    account = get_account(session, workspace_id=workspace_id, account_id=account_id)
    txns = store.transactions(
        session, [account.id], before_id=before_id, limit=min(max(limit, 1), 1000)
    )
    lines: dict[int, list[LedgerLine]] = {t.id: [] for t in txns}
    for line in store.lines_of(session, [t.id for t in txns]):
        lines[line.transaction_id].append(line)
    return [(t, lines[t.id]) for t in txns]


# -- scheduled work ---------------------------------------------------------------------------


def due_lots(session: Session, *, now: datetime, limit: int = 1000) -> tuple[list[int], list[int]]:
    """Lots whose return period is over, and lots past their expiry."""
    return store.due_pending_lots(session, now, limit), store.due_expiring_lots(session, now, limit)


def _book_of_lot(session: Session, lot_id: int) -> tuple[ProgramView, int] | None:
    account_id = store.lot_account(session, lot_id)
    if account_id is None:
        return None
    account = store.account_row(session, account_id)
    assert account is not None
    return program_view(session, account.program_id), account_id


def activate_lot(session: Session, *, lot_id: int) -> bool:
    """Make a pending lot available once its return period is over; True if it did."""
    found = _book_of_lot(session, lot_id)
    if found is None:
        return False
    book = open_book(session, *found)
    return book.activate(lot_id, at=clock.now(), actor=SYSTEM_ACTOR) is not None


def expire_lot(session: Session, *, lot_id: int) -> bool:
    """Expire what is left of a lot past its expiry (its own entry); True if it did."""
    found = _book_of_lot(session, lot_id)
    if found is None:
        return False
    book = open_book(session, *found)
    return book.expire(lot_id, at=clock.now(), actor=SYSTEM_ACTOR) is not None


def prune_rate_counters(session: Session, *, now: datetime) -> int:
    """Forget velocity counters of windows over for more than an hour."""
    return store.prune_rate_counters(session, now - timedelta(hours=2))


def due_tier_reviews(
    session: Session, *, now: datetime, limit: int = 1000
) -> list[tuple[int, datetime]]:
    """Accounts whose tier review period has ended."""
    return store.due_tier_reviews(session, now, limit)


def review_tier(session: Session, *, account_id: int) -> bool:
    """Run an account's tier review (a downgrade happens only here); True if it changed."""
    account = store.account_row(session, account_id)
    if account is None:
        return False
    book = open_book(session, program_view(session, account.program_id), account_id)
    if book.account.status == MERGED:
        return False
    return tiers.review_tier(session, program=book.program, account=book.account, at=clock.now())


def _celebrates(birthday: date, today: date) -> bool:
    if (birthday.month, birthday.day) == (today.month, today.day):
        return True
    # 29 February birthdays are celebrated on 28 February in other years
    return (
        (birthday.month, birthday.day) == (2, 29)
        and (today.month, today.day) == (2, 28)
        and not calendar.isleap(today.year)
    )


def due_birthdays(session: Session, *, now: datetime) -> list[tuple[int, int]]:
    """``(account id, year)`` for customers whose birthday it is now in their own time zone
    (the workspace's when they have none), in programs with a birthday bonus."""
    program_ids = [p.id for p in store.programs_with_birthday_bonus(session)]
    days = {(now + timedelta(days=shift)).date() for shift in (-1, 0, 1)}
    month_days = {(d.month, d.day) for d in days}
    if any((d.month, d.day) == (2, 28) and not calendar.isleap(d.year) for d in days):
        month_days.add((2, 29))
    due = []
    for candidate in store.birthday_candidates(session, program_ids, sorted(month_days)):
        try:
            zone = ZoneInfo(candidate.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        today = now.astimezone(zone).date()
        if _celebrates(candidate.birthday, today):
            due.append((candidate.account_id, today.year))
    return due


def grant_birthday_bonus(session: Session, *, account_id: int, year: int) -> bool:
    """The program's birthday bonus, once per account and year; True if granted."""
    account = store.account_row(session, account_id)
    if account is None:
        return False
    program = program_view(session, account.program_id)
    rules = program.rules
    book = open_book(session, program, account_id)
    key = f"birthday:{account_id}:{year}"
    # an account merged into this one may have brought this year's bonus with it
    granted = [key] + [f"birthday:{m}:{year}" for m in store.merged_into(session, account_id)]
    if (
        not rules.birthday_bonus
        or book.account.status == MERGED
        or any(store.transaction_by_key(session, program.id, k) is not None for k in granted)
    ):
        return False
    now = clock.now()
    posted = book.post(
        kind=BIRTHDAY,
        key=key,
        moves=[
            Move(
                NewLot(AVAILABLE, calc.bonus_expires_at(rules, now)),
                AVAILABLE,
                LINE_BONUS,
                rules.birthday_bonus,
            )
        ],
        at=now,
        actor=SYSTEM_ACTOR,
        reason=f"birthday bonus {year}",
    )
    emit_bonus(
        session,
        program=program,
        customer_id=book.account.customer_id,
        transaction_id=posted.id,
        points=posted.points,
        bonus="birthday",
        at=now,
    )
    return True


# -- merges -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Folded:
    program_id: int
    from_account_id: int
    to_account_id: int
    points: int


def fold_merged_customer(
    session: Session,
    *,
    workspace_id: int,
    survivor_id: int,
    merged_id: int,
    actor: str = SYSTEM_ACTOR,
) -> list[Folded]:
    """Move every account of a merged customer into the survivor's account in the same program
    by transfer entries (lots keep their expiry and pending state); the merged account stays,
    empty, pointing at the survivor's. Running it again changes nothing."""
    survivor = get_customer(session, workspace_id=workspace_id, customer_id=survivor_id)
    folded = []
    for source in store.accounts_of(session, [merged_id]):
        if source.workspace_id != workspace_id or source.status == MERGED:
            continue
        if source.customer_id == survivor.id:
            continue
        program = program_view(session, source.program_id)
        target = open_account(
            session, program=program, customer_id=survivor.id, actor=actor, welcome=False
        ).book
        src = open_book(session, program, source.id)
        if src.account.status == MERGED:
            continue
        now = clock.now()
        # (lot, points) captured now: the outgoing posting empties the lots
        lots = [(lot, lot.remaining) for lot in src.lots.values()]
        moved = sum(points for _lot, points in lots)
        correlation = f"merge:{src.account.id}>{target.account.id}"
        # the nth merge of this account (an undone merge can be made again)
        nth = store.count_transactions(session, src.account.id, TRANSFER_OUT) + 1
        src.post(
            kind=TRANSFER_OUT,
            key=f"merge-out:{src.account.id}" + (f":{nth}" if nth > 1 else ""),
            moves=[Move(lot.id, lot.state, LINE_TRANSFER, -points) for lot, points in lots],
            at=now,
            actor=actor,
            correlation_key=correlation,
            details={"to_account_id": target.account.id},
        )
        target.post(
            kind=TRANSFER_IN,
            key=f"merge-in:{src.account.id}" + (f":{nth}" if nth > 1 else ""),
            moves=[
                Move(
                    NewLot(lot.state, lot.expires_at, lot.available_at, ref=lot.id),
                    lot.state,
                    LINE_TRANSFER,
                    points,
                )
                for lot, points in lots
            ],
            at=now,
            actor=actor,
            correlation_key=correlation,
            details={"from_account_id": src.account.id},
        )
        src.account.status, src.account.merged_into_id = MERGED, target.account.id
        src.account.status_reason = f"customer {merged_id} merged into {survivor.id}"
        store.update_account(
            session,
            src.account.id,
            {
                "status": MERGED,
                "merged_into_id": target.account.id,
                "status_reason": src.account.status_reason,
                "updated_at": now,
            },
        )
        store.repoint_merged_accounts(session, src.account.id, target.account.id)
        rules = program.rules
        if calc.tier_rank(rules, src.account.tier) > calc.tier_rank(rules, target.account.tier):
            tiers.change_tier(
                session,
                program=program,
                account=target.account,
                to=calc.tier_by_key(rules, src.account.tier),
                reason="merge",
                spend=tiers.rolling_spend(session, account=target.account, at=now),
                at=now,
            )
        record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="loyalty.accounts_merged",
            target_type="loyalty_account",
            target_id=target.account.id,
            details={"from_account_id": src.account.id, "points": moved},
        )
        folded.append(Folded(program.id, src.account.id, target.account.id, moved))
    return folded


def unfold_unmerged_customer(
    session: Session,
    *,
    workspace_id: int,
    survivor_id: int,
    merged_id: int,
    actor: str = SYSTEM_ACTOR,
) -> list[Folded]:
    """Undo :func:`fold_merged_customer` once the customers are separated again: what is left
    of the lots the merge brought into the survivor's account goes back to the merged
    customer's account by transfer entries (keeping expiry and pending state), and that
    account is active again. Points the survivor spent meanwhile stay spent; when the
    survivor has merged on into another customer since, that customer keeps them. Running it
    again changes nothing."""
    unfolded = []
    for source in store.accounts_of(session, [merged_id]):
        if (
            source.workspace_id != workspace_id
            or source.status != MERGED
            or source.merged_into_id is None
        ):
            continue
        program = program_view(session, source.program_id)
        # locks in the order a merge takes them: the survivor's account, then the merged one
        target = open_book(session, program, source.merged_into_id)
        src = open_book(session, program, source.id)
        if src.account.status != MERGED or src.account.merged_into_id != target.account.id:
            continue
        # merged on into another customer since: that survivor keeps the points, and the
        # account is the merged customer's own again all the same
        arrival = (
            store.last_transfer_in(session, target.account.id, from_account_id=source.id)
            if target.account.customer_id == survivor_id
            else None
        )
        now = clock.now()
        lots = (
            [
                (lot, lot.remaining)
                for lot in store.open_lots_of_transaction(session, arrival)
                if lot.id in target.lots
            ]
            if arrival is not None
            else []
        )
        moved = sum(points for _lot, points in lots)
        correlation = f"unmerge:{target.account.id}>{src.account.id}"
        if lots:
            target.post(
                kind=TRANSFER_OUT,
                key=f"unmerge-out:{arrival}",
                moves=[Move(lot.id, lot.state, LINE_TRANSFER, -points) for lot, points in lots],
                at=now,
                actor=actor,
                correlation_key=correlation,
                details={"to_account_id": src.account.id, "undoes_transaction_id": arrival},
            )
            src.post(
                kind=TRANSFER_IN,
                key=f"unmerge-in:{arrival}",
                moves=[
                    Move(
                        NewLot(lot.state, lot.expires_at, lot.available_at, ref=lot.id),
                        lot.state,
                        LINE_TRANSFER,
                        points,
                    )
                    for lot, points in lots
                ],
                at=now,
                actor=actor,
                correlation_key=correlation,
                details={"from_account_id": target.account.id, "undoes_transaction_id": arrival},
            )
        src.account.status, src.account.merged_into_id, src.account.status_reason = (
            ACTIVE,
            None,
            None,
        )
        store.update_account(
            session,
            src.account.id,
            {"status": ACTIVE, "merged_into_id": None, "status_reason": None, "updated_at": now},
        )
        record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="loyalty.accounts_unmerged",
            target_type="loyalty_account",
            target_id=src.account.id,
            details={"from_account_id": target.account.id, "points": moved},
        )
        unfolded.append(Folded(program.id, target.account.id, src.account.id, moved))
    return unfolded
