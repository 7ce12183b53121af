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
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, Forbidden, NotFound, TactfulError, ValidationFailed
from tactful.core.security import Signer
from tactful.customers.service import find_customer, get_customer
from tactful.loyalty import store
from tactful.loyalty.models import (
    ACTIVE,
    AVAILABLE,
    BLOCKED,
    LINE_ACCRUAL,
    LINE_REDEMPTION,
    MERGED,
    PENDING,
    PURCHASE,
    Account,
    LedgerTransaction,
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
    book_of,
    open_account,
    spendable_now,
)
from tactful.loyalty.service.programs import (
    ProgramView,
    cached_view,
    program_view,
    resolve_program,
    scope_of,
    view_of,
)
from tactful.loyalty.store import AccountRow
from tactful.tenancy.service import get_workspace

SYSTEM_ACTOR = "system"


# -- who and which program --------------------------------------------------------------------


def _which(
    workspace_id: int,
    program_id: int | None,
    brand_id: int | None,
    customer: tuple[str, str] | int | None = None,
) -> store.Which:
    return store.Which(workspace_id, program_id, scope_of(brand_id), customer)


def _program(
    session: Session,
    *,
    workspace_id: int,
    program_id: int | None,
    brand_id: int | None,
    found: int | None,
    version: int,
    updated_at: datetime | None,
) -> ProgramView:
    """The program a POS call means, from what a combined query found (``found``, its
    version and last change): the cached view when this version is known; the full lookup
    (with its 404 or 422) when nothing was found."""
    if found is None or updated_at is None:
        program = resolve_program(
            session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
        )
        return view_of(session, program)
    view = cached_view(session, found, version, updated_at) or program_view(session, found)
    if program_id is not None and brand_id is not None and view.brand_id not in (None, brand_id):
        raise NotFound(f"loyalty program {program_id} does not exist", field="program_id")
    return view


def _resolve(
    session: Session, *, workspace_id: int, program_id: int | None, brand_id: int | None
) -> ProgramView:
    """The program a POS call means, by itself (one small query when its rules are cached)."""
    found = store.program_stamp(session, _which(workspace_id, program_id, brand_id))
    return _program(
        session,
        workspace_id=workspace_id,
        program_id=program_id,
        brand_id=brand_id,
        found=found[0] if found else None,
        version=found[1] if found else 0,
        updated_at=found[2] if found else None,
    )


def _find(
    session: Session, *, workspace_id: int, kind: str, value: str, code: CodeCheck | None
) -> int:
    """The customer an identifier names, through the customer service (normalising it,
    following merges): a 404 or 422 naming ``customer.value`` when there is none."""
    if code is not None:
        return get_customer(session, workspace_id=workspace_id, customer_id=code.customer_id).id
    workspace = get_workspace(session, workspace_id)
    try:
        return find_customer(session, workspace=workspace, kind=kind, value=value).id
    except TactfulError as exc:
        exc.field = f"customer.{exc.field or 'value'}"
        raise


def _named(
    session: Session, *, workspace_id: int, kind: str, value: str, at: datetime, signer: Signer
) -> tuple[tuple[str, str] | int, CodeCheck | None]:
    """What to look the customer up by: an app code is checked against its device first (its
    customer is the device's); a card or phone is looked up as given, in one query with the
    account (normal forms match at once; anything else goes through the customer service)."""
    if kind == "code":
        check = codes.check_code(
            session,
            workspace_id=workspace_id,
            code=value,
            at=at,
            field="customer.value",
            signer=signer,
        )
        return check.customer_id, check
    return (kind, value), None


def customer_id_of(
    session: Session, *, workspace_id: int, kind: str, value: str, signer: Signer
) -> int:
    """The customer a card, phone or app code names (a 404 or 403 naming the value if none)."""
    _lookup, code = _named(
        session, workspace_id=workspace_id, kind=kind, value=value, at=clock.now(), signer=signer
    )
    return _find(session, workspace_id=workspace_id, kind=kind, value=value, code=code)


def _redeem_check(
    session: Session,
    *,
    workspace_id: int,
    customer_id: int,
    named_by: CodeCheck | None,
    redeem_code: str | None,
    at: datetime,
    signer: Signer,
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
            signer=signer,
            for_redemption=True,
        )
    elif named_by is not None and named_by.kind == codes.REDEMPTION:
        codes.require_redeemable(named_by, field="customer.value")
        check = named_by
    if check is not None and check.customer_id != customer_id:
        owner = get_customer(session, workspace_id=workspace_id, customer_id=check.customer_id)
        if owner.id != customer_id:
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


def _benefits(program: ProgramView, tier_key: str, spend: int) -> TierBenefits:
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

    program: ProgramView
    customer_id: int
    first_name: str | None
    named_by: CodeCheck | None
    account: AccountRow | None
    tier: str
    spend: int
    spendable: int


def _snapshot(
    session: Session,
    *,
    workspace_id: int,
    program_id: int | None,
    brand_id: int | None,
    kind: str,
    value: str,
    at: datetime,
    signer: Signer,
) -> _Snapshot:
    """Program, customer, account, spendable points and rolling spend: one query when the
    identifier is in its normal form and the program's rules are cached."""
    lookup, code = _named(
        session, workspace_id=workspace_id, kind=kind, value=value, at=at, signer=signer
    )
    since = calc.spend_window_start(at)

    def read(customer: tuple[str, str] | int) -> store.PosAccount:
        which = _which(workspace_id, program_id, brand_id, customer)
        return store.pos_account(session, which, at=at, since=since)

    found = read(lookup)
    program = _program(
        session,
        workspace_id=workspace_id,
        program_id=program_id,
        brand_id=brand_id,
        found=found.program_id,
        version=found.program_version,
        updated_at=found.program_updated_at,
    )
    if found.customer_id is None:
        found = read(_find(session, workspace_id=workspace_id, kind=kind, value=value, code=code))
    assert found.customer_id is not None
    account, spendable, spend = found.account, found.spendable, found.spend
    if account is not None and account.status == MERGED and account.merged_into_id is not None:
        account = store.account_row(session, account.merged_into_id)
        assert account is not None
        spendable = spendable_now(store.open_lots(session, account.id), at)
        spend = store.rolling_spend(session, account.id, since)
    if account is None:
        # a first confirm opens the account with its welcome bonus, which it may spend
        return _Snapshot(
            program,
            found.customer_id,
            found.first_name,
            code,
            None,
            program.rules.tiers[0].key,
            0,
            program.rules.welcome_bonus,
        )
    return _Snapshot(
        program, found.customer_id, found.first_name, code, account, account.tier, spend, spendable
    )


def identify(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    program_id: int | None,
    kind: str,
    value: str,
    signer: Signer,
) -> IdentifyOut:
    """Who the customer is, their tier, balance and whether they may spend right now."""
    now = clock.now()
    snap = _snapshot(
        session,
        workspace_id=workspace_id,
        program_id=program_id,
        brand_id=brand_id,
        kind=kind,
        value=value,
        at=now,
        signer=signer,
    )
    return IdentifyOut(
        program_id=snap.program.id,
        account_id=snap.account.id if snap.account else None,
        customer_id=snap.customer_id,
        first_name=snap.first_name,
        tier=_benefits(snap.program, snap.tier, snap.spend),
        balance=snap.account.balance if snap.account else 0,
        pending=snap.account.pending if snap.account else 0,
        spendable=snap.spendable,
        redeem_code_valid=snap.named_by is not None and codes.is_redeemable(snap.named_by),
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
    signer: Signer,
) -> CalculateOut:
    """What the receipt would earn and may spend (writes nothing; confirm decides)."""
    now = clock.now()
    snap = _snapshot(
        session,
        workspace_id=workspace_id,
        program_id=program_id,
        brand_id=brand_id,
        kind=kind,
        value=value,
        at=now,
        signer=signer,
    )
    program, rules = snap.program, snap.program.rules
    check = _redeem_check(
        session,
        workspace_id=workspace_id,
        customer_id=snap.customer_id,
        named_by=snap.named_by,
        redeem_code=redeem_code,
        at=now,
        signer=signer,
    )
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
        status=snap.account.status if snap.account else ACTIVE,
        status_reason=snap.account.status_reason if snap.account else None,
        check=check,
    )
    return CalculateOut(
        program_id=program.id,
        customer_id=snap.customer_id,
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
    signer: Signer,
) -> ConfirmOut:
    """Spend and accrue for a receipt in one atomic step; a replay of the same POS
    transaction id returns the first answer and changes nothing."""
    now = clock.now()
    key = f"pos:{pos_transaction_id}"
    fingerprint = request_fingerprint(
        [(x.line_no, x.product_id, x.category_id, x.amount) for x in lines],
        redeem_points,
        receipt_id,
    )
    program: ProgramView | None = None
    if kind == "code":
        # the app's code may have expired since the first attempt: answer a replay first
        program = _resolve(
            session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
        )
        existing = store.transaction_by_key(session, program.id, key)
        if existing is not None:
            return _replayed_confirm(session, existing, fingerprint)
    lookup, code = _named(
        session, workspace_id=workspace_id, kind=kind, value=value, at=now, signer=signer
    )
    # the usual case in one round trip: the customer's account, locked, and the program's
    # version; a first purchase, an identifier not in its normal form or a merged customer
    # take the full path
    locked = store.lock_pos_account(
        session,
        _which(workspace_id, program.id if program else program_id, brand_id, lookup),
    )
    welcome = None
    if locked is not None:
        program = program or _program(
            session,
            workspace_id=workspace_id,
            program_id=program_id,
            brand_id=brand_id,
            found=locked.account.program_id,
            version=locked.program_version,
            updated_at=locked.program_updated_at,
        )
        account = locked.account
    else:
        program = program or _resolve(
            session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
        )
        customer_id = _find(session, workspace_id=workspace_id, kind=kind, value=value, code=code)
        opened = open_account(
            session, program=program, customer_id=customer_id, actor=actor, at=now
        )
        account, welcome = opened.book.account, opened.welcome
    rules = program.rules
    limits = rules.limits
    # read under the account's lock: a concurrent duplicate waits, then sees ours
    state = store.confirm_state(
        session,
        program_id=program.id,
        key=key,
        account_id=account.id,
        terminal_id=terminal_id,
        since=calc.spend_window_start(now),
        bursts=(
            now - timedelta(minutes=limits.burst_minutes),
            limits.burst_redemptions,
            limits.terminal_burst_redemptions,
        )
        if redeem_points
        else None,
    )
    if state.existing_id is not None:
        existing = store.transaction(session, state.existing_id)
        assert existing is not None
        return _replayed_confirm(session, existing, fingerprint, account_id=account.id)
    # only now (not a replay): a replayed confirm must succeed even with a used code
    check = _redeem_check(
        session,
        workspace_id=workspace_id,
        customer_id=account.customer_id,
        named_by=code,
        redeem_code=redeem_code,
        at=now,
        signer=signer,
    )
    book = book_of(session, program, account, state.lots)
    book.settle_due(at=now, actor=SYSTEM_ACTOR)
    spendable = book.spendable(now)
    tier = calc.tier_by_key(rules, account.tier)
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
        status=account.status,
        status_reason=account.status_reason,
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
    if welcome is not None:
        emit_bonus(
            session,
            program=program,
            customer_id=account.customer_id,
            transaction_id=welcome.id,
            points=welcome.points,
            bonus="welcome",
            at=now,
        )
    tier_changed = tiers.upgrade_if_earned(
        session, program=program, account=account, at=now, spend=state.spend + quote.total
    )
    if redeem_points and state.redemptions is not None:
        by_account, by_terminal = state.redemptions
        fraud.flag_bursts(
            session,
            program=program,
            account_id=account.id,
            store_id=store_id,
            terminal_id=terminal_id,
            at=now,
            # counted before this redemption: this one is the next
            by_account=by_account + 1,
            by_terminal=by_terminal + 1,
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
    # last, so the store's counter row is held only until the commit (a refusal rolls back)
    fraud.count_confirm(
        session,
        program=program,
        account_id=account.id,
        store_id=store_id,
        terminal_id=terminal_id,
        at=now,
    )
    return ConfirmOut(
        transaction_id=posted.id,
        replayed=False,
        account_id=account.id,
        customer_id=account.customer_id,
        total=quote.total,
        redeemed_points=quote.redeem_points,
        redeem_value=quote.redeem_value,
        to_pay=quote.to_pay,
        accrued_points=quote.accrued_points,
        accrual_pending_until=available_at if quote.accrued_points else None,
        balance=account.balance,
        pending=account.pending,
        tier=account.tier,
        tier_changed=tier_changed,
        lines=_lines_out(quote),
    )


def emit_purchase(
    session: Session,
    *,
    program: ProgramView,
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
    redeemed_value: int | None = None,
) -> None:
    """The purchase's (or its reversal's) events; the points spent are valued at today's
    point value unless ``redeemed_value`` says what they were worth."""
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
        value = redeemed * program.rules.point_value if redeemed_value is None else redeemed_value
        events.append(
            (
                f"{transaction_id}:redeemed",
                BONUS_REDEEMED,
                {**common, "points": redeemed, "value": value},
            )
        )
    emit(session, program=program, customer_id=book.account.customer_id, at=at, events=events)


def _replayed_confirm(
    session: Session, existing: LedgerTransaction, fingerprint: str, account_id: int | None = None
) -> ConfirmOut:
    """The first answer to a confirm, for its replay; a different receipt, or (``account_id``
    given: the customer identified now) another customer's account, is refused: the first
    answer holds its customer's balance."""
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
    if account_id is not None and account_id not in (account.id, existing.account_id):
        raise Conflict(
            "this pos_transaction_id was already confirmed for another customer",
            field="pos_transaction_id",
        )
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
