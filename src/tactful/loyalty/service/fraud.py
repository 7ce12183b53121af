"""Anti-fraud: velocity limits per card, store and terminal (refuse), redemption bursts
(flag for review), blocking accounts, and manual adjustments (admins only, with a reason, in
the audit log)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.auth import Principal
from tactful.core.errors import Conflict, Forbidden, NotFound, TooManyRequests, ValidationFailed
from tactful.loyalty import store
from tactful.loyalty.models import (
    ACTIVE,
    ADJUSTMENT,
    AVAILABLE,
    BLOCKED,
    LINE_ADJUSTMENT,
    MERGED,
    Account,
    FraudFlag,
    LedgerTransaction,
)
from tactful.loyalty.service import rules as calc
from tactful.loyalty.service.events import BONUS_ACCRUED, emit
from tactful.loyalty.service.ledger import Move, NewLot, open_book
from tactful.loyalty.service.programs import ProgramView, get_program, view_of
from tactful.tenancy.service import record_audit


def count_confirm(
    session: Session,
    *,
    program: ProgramView,
    account_id: int,
    store_id: str,
    terminal_id: str,
    at: datetime,
) -> None:
    """Count a confirm against its card's clock hour and its terminal's and store's clock
    minute, and refuse it (429) past a limit. Called last: the refusal rolls the confirm's
    writes back, and the store's counter row stays locked only until the commit."""
    limits = program.rules.limits
    hour = at.replace(minute=0, second=0, microsecond=0)
    minute = at.replace(second=0, microsecond=0)
    card, till, shop = f"a{account_id}", f"t{terminal_id}", f"s{store_id}"
    counts = store.bump_rate_counters(
        session, program_id=program.id, windows=[(card, hour), (till, minute), (shop, minute)]
    )
    if counts[card] > limits.account_per_hour:
        raise TooManyRequests(
            f"this card made {counts[card] - 1} purchases this hour "
            f"(limit {limits.account_per_hour}); try again later",
            field="customer",
        )
    if counts[till] > limits.terminal_per_minute:
        raise TooManyRequests(
            f"terminal {terminal_id} made {counts[till] - 1} purchases this minute "
            f"(limit {limits.terminal_per_minute})",
            field="terminal_id",
        )
    if counts[shop] > limits.store_per_minute:
        raise TooManyRequests(
            f"store {store_id} made {counts[shop] - 1} purchases this minute "
            f"(limit {limits.store_per_minute})",
            field="store_id",
        )


def flag_bursts(
    session: Session,
    *,
    program: ProgramView,
    account_id: int,
    store_id: str,
    terminal_id: str,
    at: datetime,
    by_account: int,
    by_terminal: int,
) -> list[str]:
    """After a redemption: flag the account or terminal when their redemptions within the
    burst window (``by_account``, ``by_terminal``, this one included) reach a threshold, once
    per burst window. Returns the kinds of new flags."""
    limits = program.rules.limits
    window = timedelta(minutes=limits.burst_minutes)
    slot = int(at.timestamp()) // int(window.total_seconds())
    raised = []
    checks = (
        ("redemption_burst_account", by_account, limits.burst_redemptions, f"a{account_id}"),
        (
            "redemption_burst_terminal",
            by_terminal,
            limits.terminal_burst_redemptions,
            f"t{terminal_id}",
        ),
    )
    for kind, count, threshold, subject in checks:
        if count < threshold:
            continue
        new = store.insert_flag(
            session,
            {
                "workspace_id": program.workspace_id,
                "program_id": program.id,
                "account_id": account_id,
                "store_id": store_id,
                "terminal_id": terminal_id,
                "kind": kind,
                "key": f"{kind}:{program.id}:{subject}:{slot}",
                "details": {
                    "redemptions": count,
                    "threshold": threshold,
                    "minutes": limits.burst_minutes,
                },
                "created_at": at,
            },
        )
        if new:
            raised.append(kind)
    return raised


def list_flags(
    session: Session, *, workspace_id: int, open_only: bool = True, limit: int = 100
) -> list[FraudFlag]:
    """Anomaly flags, newest first."""
    return store.flags(session, workspace_id, open_only=open_only, limit=min(max(limit, 1), 1000))


def resolve_flag(
    session: Session, *, workspace_id: int, flag_id: int, resolution: str, actor: str
) -> FraudFlag:
    """Close a flag with what was found (audited)."""
    flag = session.get(FraudFlag, flag_id)
    if flag is None or flag.workspace_id != workspace_id:
        raise NotFound(f"flag {flag_id} does not exist", field="flag_id")
    if flag.resolved_at is not None:
        raise Conflict(f"flag {flag_id} is already resolved")
    flag.resolved_at, flag.resolved_by, flag.resolution = clock.now(), actor, resolution
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="loyalty.flag_resolved",
        target_type="loyalty_flag",
        target_id=flag.id,
        details={"resolution": resolution},
    )
    return flag


def get_account(session: Session, *, workspace_id: int, account_id: int) -> Account:
    """An account of the workspace, or a 404 naming ``account_id``."""
    account = session.get(Account, account_id)
    if account is None or account.workspace_id != workspace_id:
        raise NotFound(f"loyalty account {account_id} does not exist", field="account_id")
    return account


def _require_admin(principal: Principal) -> None:
    if "admin" not in principal.scopes:
        raise Forbidden("only an admin may do this", field="principal")


def set_blocked(
    session: Session, *, principal: Principal, account_id: int, blocked: bool, reason: str
) -> Account:
    """Block redemptions on an account (suspected fraud) or lift the block; audited."""
    _require_admin(principal)
    account = get_account(session, workspace_id=principal.workspace_id, account_id=account_id)
    if account.status == MERGED:
        raise Conflict(f"account {account_id} was merged into {account.merged_into_id}")
    account.status = BLOCKED if blocked else ACTIVE
    account.status_reason = reason if blocked else None
    account.updated_at = clock.now()
    record_audit(
        session,
        workspace_id=principal.workspace_id,
        actor=principal.actor,
        action="loyalty.account_blocked" if blocked else "loyalty.account_unblocked",
        target_type="loyalty_account",
        target_id=account.id,
        details={"reason": reason, "customer_id": account.customer_id},
    )
    return account


def adjust_points(
    session: Session,
    *,
    principal: Principal,
    account_id: int,
    points: int,
    reason: str,
    idempotency_key: str,
) -> LedgerTransaction:
    """A manual adjustment by an admin, with a reason, written to the audit log. Adding
    points creates a lot that expires like an accrual; taking draws the earliest-expiring
    points first and never below zero. Repeating the key changes nothing."""
    _require_admin(principal)
    if points == 0:
        raise ValidationFailed("an adjustment moves at least one point", field="points")
    if len(reason.strip()) < 5:
        raise ValidationFailed("give the reason for the adjustment", field="reason")
    found = get_account(session, workspace_id=principal.workspace_id, account_id=account_id)
    if found.status == MERGED:
        raise Conflict(
            f"account {account_id} was merged into {found.merged_into_id}; adjust that one",
            field="account_id",
        )
    program = view_of(
        session,
        get_program(session, workspace_id=principal.workspace_id, program_id=found.program_id),
    )
    book = open_book(session, program, account_id)
    key = f"adjust:{idempotency_key}"
    existing = store.transaction_by_key(session, program.id, key)
    if existing is not None:
        if existing.account_id != account_id or existing.points != points:
            raise Conflict(
                "this idempotency key was used for another adjustment", field="idempotency_key"
            )
        return existing
    now = clock.now()
    book.settle_due(at=now, actor=principal.actor)
    if points > 0:
        lot = NewLot(AVAILABLE, calc.expires_at(book.rules, now))
        moves = [Move(lot, AVAILABLE, LINE_ADJUSTMENT, points)]
    else:
        try:
            moves = book.draw(-points, at=now, kind=LINE_ADJUSTMENT)
        except Conflict as exc:
            raise Conflict(exc.message, field="points") from exc
    posted = book.post(
        kind=ADJUSTMENT,
        key=key,
        moves=moves,
        at=now,
        actor=principal.actor,
        reason=reason,
        correlation_key=f"adjust:{idempotency_key}",
    )
    record_audit(
        session,
        workspace_id=principal.workspace_id,
        actor=principal.actor,
        action="loyalty.points_adjusted",
        target_type="loyalty_account",
        target_id=account_id,
        details={
            "points": points,
            "reason": reason,
            "transaction_id": posted.id,
            "customer_id": book.account.customer_id,
            "balance_after": book.account.balance,
        },
    )
    emit(
        session,
        program=program,
        customer_id=book.account.customer_id,
        at=now,
        events=[
            (
                f"{posted.id}:adjustment",
                BONUS_ACCRUED,
                {"points": points, "adjustment": True, "transaction_id": posted.id},
            )
        ],
    )
    txn = session.get(LedgerTransaction, posted.id)
    assert txn is not None
    return txn
