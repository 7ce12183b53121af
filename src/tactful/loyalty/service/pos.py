"""The POS protocol: identify → calculate → confirm (refunds and cancellations are in
``refunds``).

Confirm is idempotent by the POS transaction id (a replay returns the first answer and writes
nothing) and runs on the customer's locked account, so concurrent terminals can never spend a
point twice or take a balance below zero.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, Forbidden, TactfulError, ValidationFailed
from tactful.customers.models import Customer
from tactful.customers.service import find_customer, get_customer
from tactful.loyalty import store
from tactful.loyalty.models import (
    AVAILABLE,
    BLOCKED,
    LINE_ACCRUAL,
    LINE_REDEMPTION,
    MERGED,
    PENDING,
    PURCHASE,
    Account,
    LedgerTransaction,
    Program,
)
from tactful.loyalty.schemas import (
    CalculateOut,
    ConfirmOut,
    IdentifyOut,
    ProgramRules,
    QuoteLineOut,
    TierBenefits,
)
from tactful.loyalty.service import codes, fraud, tiers
from tactful.loyalty.service import rules as calc
from tactful.loyalty.service.codes import CodeCheck
from tactful.loyalty.service.events import BONUS_ACCRUED, BONUS_REDEEMED, emit, emit_bonus
from tactful.loyalty.service.ledger import (
    Book,
    Move,
    NewLot,
    open_account,
    spendable_now,
)
from tactful.loyalty.service.programs import program_rules, resolve_program
from tactful.tenancy.service import get_workspace

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class Who:
    """The customer a POS call names, and the app code that named them (if any)."""

    customer: Customer
    code: CodeCheck | None


def _who(session: Session, *, workspace_id: int, kind: str, value: str, at: datetime) -> Who:
    if kind == "code":
        check = codes.check_code(
            session, workspace_id=workspace_id, code=value, at=at, field="customer.value"
        )
        customer = get_customer(session, workspace_id=workspace_id, customer_id=check.customer_id)
        return Who(customer, check)
    workspace = get_workspace(session, workspace_id)
    try:
        return Who(find_customer(session, workspace=workspace, kind=kind, value=value), None)
    except TactfulError as exc:
        exc.field = f"customer.{exc.field or 'value'}"
        raise


def customer_id_of(session: Session, *, workspace_id: int, kind: str, value: str) -> int:
    """The customer a card, phone or app code names (a 404 or 403 naming the value if none)."""
    return _who(
        session, workspace_id=workspace_id, kind=kind, value=value, at=clock.now()
    ).customer.id


def _redeem_check(
    session: Session, *, workspace_id: int, who: Who, redeem_code: str | None, at: datetime
) -> CodeCheck | None:
    """The redemption code presented (separately or as the identifier), checked and bound to
    the identified customer."""
    check: CodeCheck | None = None
    if redeem_code:
        check = codes.check_code(
            session,
            workspace_id=workspace_id,
            code=redeem_code,
            at=at,
            field="redeem_code",
            for_redemption=True,
        )
    elif who.code is not None and who.code.kind == codes.REDEMPTION:
        check = codes.check_code(
            session,
            workspace_id=workspace_id,
            code=who.code.code,
            at=at,
            field="customer.value",
            for_redemption=True,
        )
    if check is not None:
        owner = get_customer(session, workspace_id=workspace_id, customer_id=check.customer_id)
        if owner.id != who.customer.id:
            raise Forbidden(
                "the redemption code belongs to another customer's app", field="redeem_code"
            )
    return check


def _check_redemption(
    *,
    rules: ProgramRules,
    quote: calc.Quote,
    spendable: int,
    status: str,
    status_reason: str | None,
    check: CodeCheck | None,
) -> None:
    """Refuse a redemption the rules, the account or the code do not allow."""
    wanted = quote.redeem_points
    if not wanted:
        return
    if status == BLOCKED:
        raise Forbidden(
            f"redemptions on this account are blocked ({status_reason or 'under review'})",
            field="redeem_points",
        )
    if rules.redeem_requires_code and check is None:
        raise Forbidden(
            "spending points needs the redemption code from the customer's app",
            field="redeem_code",
        )
    if wanted > quote.cap_points:
        raise ValidationFailed(
            f"at most {quote.cap_points} points may pay for this receipt "
            f"({quote.redeem_cap_bp / 100:g}% of {quote.total})",
            field="redeem_points",
        )
    if wanted > spendable:
        raise Conflict(
            f"the account has {spendable} points available; {wanted} requested",
            field="redeem_points",
        )


def _benefits(program: Program, tier_key: str, spend: int) -> TierBenefits:
    return TierBenefits.model_validate(tiers.benefits(program, tier_key=tier_key, spend=spend))


def _lines_out(quote: calc.Quote) -> list[QuoteLineOut]:
    return [
        QuoteLineOut(
            line_no=line.line_no,
            amount=line.amount,
            multiplier_pct=line.multiplier_pct,
            redeemed_points=line.redeemed_points,
            paid=line.paid,
            accrued_points=line.accrued_points,
        )
        for line in quote.lines
    ]


@dataclass(frozen=True)
class _Snapshot:
    """An unlocked look at the customer's account (for identify and calculate)."""

    account: Account | None
    tier: str
    spend: int
    spendable: int


def _snapshot(session: Session, program: Program, customer_id: int, at: datetime) -> _Snapshot:
    rules = program_rules(program)
    account = store.account_for(session, program.id, customer_id)
    if account is not None and account.status == MERGED and account.merged_into_id is not None:
        account = session.get(Account, account.merged_into_id)
    if account is None:
        # a first confirm opens the account with its welcome bonus, which it may spend
        return _Snapshot(None, rules.tiers[0].key, 0, rules.welcome_bonus)
    lots = store.open_lots(session, account.id)
    spend = tiers.rolling_spend(session, account=account, at=at)
    return _Snapshot(account, account.tier, spend, spendable_now(lots, at))


def identify(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    program_id: int | None,
    kind: str,
    value: str,
) -> IdentifyOut:
    """Who the customer is, their tier, balance and whether they may spend right now."""
    now = clock.now()
    program = resolve_program(
        session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
    )
    who = _who(session, workspace_id=workspace_id, kind=kind, value=value, at=now)
    snap = _snapshot(session, program, who.customer.id, now)
    return IdentifyOut(
        program_id=program.id,
        account_id=snap.account.id if snap.account else None,
        customer_id=who.customer.id,
        first_name=who.customer.first_name,
        tier=_benefits(program, snap.tier, snap.spend),
        balance=snap.account.balance if snap.account else 0,
        pending=snap.account.pending if snap.account else 0,
        spendable=snap.spendable,
        redeem_code_valid=who.code is not None and who.code.kind == codes.REDEMPTION,
    )


def calculate(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    program_id: int | None,
    kind: str,
    value: str,
    lines: Sequence[calc.ReceiptLine],
    redeem_points: int,
    redeem_code: str | None,
    store_id: str,
) -> CalculateOut:
    """What the receipt would earn and may spend (writes nothing; confirm decides)."""
    now = clock.now()
    program = resolve_program(
        session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
    )
    rules = program_rules(program)
    who = _who(session, workspace_id=workspace_id, kind=kind, value=value, at=now)
    check = _redeem_check(
        session, workspace_id=workspace_id, who=who, redeem_code=redeem_code, at=now
    )
    snap = _snapshot(session, program, who.customer.id, now)
    tier = calc.tier_by_key(rules, snap.tier)
    quote = calc.quote(
        rules,
        tier=tier,
        lines=lines,
        spendable=snap.spendable,
        redeem_points=redeem_points,
        at=now,
        store_id=store_id,
    )
    _check_redemption(
        rules=rules,
        quote=quote,
        spendable=snap.spendable,
        status=snap.account.status if snap.account else "active",
        status_reason=snap.account.status_reason if snap.account else None,
        check=check,
    )
    return CalculateOut(
        program_id=program.id,
        customer_id=who.customer.id,
        total=quote.total,
        max_redeemable=quote.max_redeemable,
        redeem_points=quote.redeem_points,
        redeem_value=quote.redeem_value,
        to_pay=quote.to_pay,
        accrued_points=quote.accrued_points,
        accrual_pending_until=calc.pending_until(rules, now) if quote.accrued_points else None,
        tier=_benefits(program, tier.key, snap.spend),
        promotions=list(quote.promotions),
        lines=_lines_out(quote),
    )


def request_fingerprint(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]


def confirm(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    program_id: int | None,
    pos_transaction_id: str,
    kind: str,
    value: str,
    lines: Sequence[calc.ReceiptLine],
    redeem_points: int,
    redeem_code: str | None,
    receipt_id: str | None,
    store_id: str,
    terminal_id: str,
    actor: str,
) -> ConfirmOut:
    """Spend and accrue for a receipt in one atomic step; a replay of the same POS
    transaction id returns the first answer and changes nothing."""
    now = clock.now()
    program = resolve_program(
        session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
    )
    rules = program_rules(program)
    key = f"pos:{pos_transaction_id}"
    fingerprint = request_fingerprint(
        [(x.line_no, x.product_id, x.category_id, x.amount) for x in lines],
        redeem_points,
        receipt_id,
    )
    if kind == "code":
        # the app's code may have expired since the first attempt: answer a replay first
        existing = store.transaction_by_key(session, program.id, key)
        if existing is not None:
            return _replayed_confirm(session, existing, fingerprint)
    who = _who(session, workspace_id=workspace_id, kind=kind, value=value, at=now)
    opened = open_account(
        session, program=program, customer_id=who.customer.id, actor=actor, at=now
    )
    book = opened.book
    # checked again under the account's lock: a concurrent duplicate waits, then sees ours
    existing_id = fraud.replay_or_check_velocity(
        session,
        program=program,
        key=key,
        account_id=book.account.id,
        store_id=store_id,
        terminal_id=terminal_id,
        at=now,
    )
    if existing_id is not None:
        existing = store.transaction(session, existing_id)
        assert existing is not None
        return _replayed_confirm(session, existing, fingerprint)
    # only now (not a replay): a replayed confirm must succeed even with a used code
    check = _redeem_check(
        session, workspace_id=workspace_id, who=who, redeem_code=redeem_code, at=now
    )
    book.settle_due(at=now, actor=SYSTEM_ACTOR)
    spendable = book.spendable(now)
    tier = calc.tier_by_key(rules, book.account.tier)
    quote = calc.quote(
        rules,
        tier=tier,
        lines=lines,
        spendable=spendable,
        redeem_points=redeem_points,
        at=now,
        store_id=store_id,
    )
    _check_redemption(
        rules=rules,
        quote=quote,
        spendable=spendable,
        status=book.account.status,
        status_reason=book.account.status_reason,
        check=check,
    )
    moves: list[Move] = []
    if redeem_points:
        if check is not None:
            codes.consume(session, check, field="redeem_code")
        moves += book.draw(redeem_points, at=now, kind=LINE_REDEMPTION)
    available_at = calc.pending_until(rules, now)
    if quote.accrued_points:
        lot = NewLot(
            PENDING if available_at else AVAILABLE, calc.expires_at(rules, now), available_at
        )
        moves.append(Move(lot, lot.state, LINE_ACCRUAL, quote.accrued_points))
    posted = book.post(
        kind=PURCHASE,
        key=key,
        moves=moves,
        at=now,
        actor=actor,
        correlation_key=pos_transaction_id,
        receipt_id=receipt_id,
        store_id=store_id,
        terminal_id=terminal_id,
        amount=quote.total,
        spend=quote.total,
        details={
            "fingerprint": fingerprint,
            "total": quote.total,
            "redeemed": quote.redeem_points,
            "redeem_value": quote.redeem_value,
            "to_pay": quote.to_pay,
            "accrued": quote.accrued_points,
            "pending_until": available_at.isoformat()
            if quote.accrued_points and available_at
            else None,
            "tier": tier.key,
            "lines": [
                {
                    "line_no": x.line_no,
                    "amount": x.amount,
                    "multiplier_pct": x.multiplier_pct,
                    "redeemed": x.redeemed_points,
                    "paid": x.paid,
                    "accrued": x.accrued_points,
                }
                for x in quote.lines
            ],
            "device_id": check.device_id if check and redeem_points else None,
        },
    )
    if opened.welcome is not None:
        emit_bonus(
            session,
            program=program,
            customer_id=who.customer.id,
            transaction_id=opened.welcome.id,
            points=opened.welcome.points,
            bonus="welcome",
            at=now,
        )
    tier_changed = tiers.upgrade_if_earned(session, program=program, account=book.account, at=now)
    if redeem_points:
        fraud.flag_bursts(
            session,
            program=program,
            account_id=book.account.id,
            store_id=store_id,
            terminal_id=terminal_id,
            at=now,
        )
    emit_purchase(
        session,
        program=program,
        book=book,
        transaction_id=posted.id,
        accrued=quote.accrued_points,
        redeemed=quote.redeem_points,
        pending=bool(available_at),
        receipt_id=receipt_id,
        pos_transaction_id=pos_transaction_id,
        store_id=store_id,
        at=now,
    )
    return ConfirmOut(
        transaction_id=posted.id,
        replayed=False,
        account_id=book.account.id,
        customer_id=book.account.customer_id,
        total=quote.total,
        redeemed_points=quote.redeem_points,
        redeem_value=quote.redeem_value,
        to_pay=quote.to_pay,
        accrued_points=quote.accrued_points,
        accrual_pending_until=available_at if quote.accrued_points else None,
        balance=book.account.balance,
        pending=book.account.pending,
        tier=book.account.tier,
        tier_changed=tier_changed,
        lines=_lines_out(quote),
    )


def emit_purchase(
    session: Session,
    *,
    program: Program,
    book: Book,
    transaction_id: int,
    accrued: int,
    redeemed: int,
    pending: bool,
    receipt_id: str | None,
    pos_transaction_id: str,
    store_id: str | None,
    at: datetime,
    reversal: bool = False,
) -> None:
    common = {
        "transaction_id": transaction_id,
        "receipt_id": receipt_id,
        "pos_transaction_id": pos_transaction_id,
        "store_id": store_id,
    }
    if reversal:
        common["reversal"] = True
    events = []
    if accrued:
        events.append(
            (
                f"{transaction_id}:accrued",
                BONUS_ACCRUED,
                {**common, "points": accrued, "pending": pending},
            )
        )
    if redeemed:
        value = redeemed * program_rules(program).point_value
        events.append(
            (
                f"{transaction_id}:redeemed",
                BONUS_REDEEMED,
                {**common, "points": redeemed, "value": value},
            )
        )
    emit(session, program=program, customer_id=book.account.customer_id, at=at, events=events)


def _replayed_confirm(
    session: Session, existing: LedgerTransaction, fingerprint: str
) -> ConfirmOut:
    details = existing.details
    if existing.kind != PURCHASE or details.get("fingerprint") != fingerprint:
        raise Conflict(
            "this pos_transaction_id was already confirmed for a different receipt",
            field="pos_transaction_id",
        )
    account = session.get(Account, existing.account_id)
    assert account is not None
    if account.status == MERGED and account.merged_into_id is not None:
        account = session.get(Account, account.merged_into_id) or account
    pending_until = details.get("pending_until")
    return ConfirmOut(
        transaction_id=existing.id,
        replayed=True,
        account_id=existing.account_id,
        customer_id=account.customer_id,
        total=details["total"],
        redeemed_points=details["redeemed"],
        redeem_value=details["redeem_value"],
        to_pay=details["to_pay"],
        accrued_points=details["accrued"],
        accrual_pending_until=datetime.fromisoformat(pending_until) if pending_until else None,
        balance=account.balance,
        pending=account.pending,
        tier=account.tier,
        tier_changed=False,
        lines=[
            QuoteLineOut(
                line_no=x["line_no"],
                amount=x["amount"],
                multiplier_pct=x["multiplier_pct"],
                redeemed_points=x["redeemed"],
                paid=x["paid"],
                accrued_points=x["accrued"],
            )
            for x in details["lines"]
        ],
    )
