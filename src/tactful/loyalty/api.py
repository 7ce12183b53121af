"""Loyalty over HTTP: the POS protocol and gift cards (``pos`` scope), programs, accounts,
adjustments, app devices, anti-fraud and reports (``admin`` scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Query, Request, Response

from tactful.core.api import (
    RuntimeDep,
    SessionDep,
    api_router,
    problem_response,
    reads_only,
    require_scope,
)
from tactful.core.auth import Principal
from tactful.core.errors import TactfulError
from tactful.loyalty.schemas import (
    AccountDetail,
    AccountOut,
    ActivityOut,
    AdjustmentIn,
    CalculateIn,
    CalculateOut,
    CancelIn,
    ConfirmIn,
    ConfirmOut,
    DeviceEnrolled,
    DeviceIn,
    DeviceOut,
    EnrolIn,
    FraudFlagOut,
    GiftCardActivateIn,
    GiftCardBalanceIn,
    GiftCardBalanceOut,
    GiftCardIssued,
    GiftCardIssueIn,
    GiftCardOperationOut,
    GiftCardOut,
    GiftCardRedeemIn,
    GiftCardRefundIn,
    IdentifyIn,
    IdentifyOut,
    LiabilityOut,
    LineOut,
    LotOut,
    ProgramIn,
    ProgramOut,
    ProgramRules,
    ReceiptLineIn,
    RefundIn,
    RefundOut,
    StatusIn,
    TransactionOut,
    VerifyOut,
)
from tactful.loyalty.service import (
    accounts,
    codes,
    fraud,
    giftcards,
    ledger,
    pos,
    programs,
    refunds,
    reports,
)
from tactful.loyalty.service.rules import ReceiptLine

router = api_router(prefix="/v1/loyalty", tags=["loyalty"])
Pos = Annotated[Principal, require_scope("pos")]
Admin = Annotated[Principal, require_scope("admin")]


def _lines(lines: list[ReceiptLineIn]) -> list[ReceiptLine]:
    return [ReceiptLine(x.line_no, x.product_id, x.category_id, x.amount) for x in lines]


# -- POS ---------------------------------------------------------------------------------


@router.post(
    "/pos/identify",
    summary="Identify a customer by card, phone or app code",
    description="Returns the customer's tier and its benefits, the balance, the points a "
    "confirm could spend now, and whether a valid redemption code was presented. Writes "
    "nothing.",
)
@reads_only
def identify(
    body: IdentifyIn, session: SessionDep, principal: Pos, runtime: RuntimeDep
) -> IdentifyOut:
    return pos.identify(
        session,
        workspace_id=principal.workspace_id,
        brand_id=principal.brand_id,
        program_id=body.program_id,
        kind=body.customer.kind,
        value=body.customer.value,
        signer=runtime.signer,
    )


@router.post(
    "/pos/calculate",
    summary="Calculate a receipt: points to accrue, the most that may be spent, tier benefits",
    description="Writes nothing. Refuses (like confirm would) a redemption above the cap or "
    "the balance, without a valid redemption code, or on a blocked account.",
)
@reads_only
def calculate(
    body: CalculateIn, session: SessionDep, principal: Pos, runtime: RuntimeDep
) -> CalculateOut:
    return pos.calculate(
        session,
        workspace_id=principal.workspace_id,
        brand_id=principal.brand_id,
        program_id=body.program_id,
        kind=body.customer.kind,
        value=body.customer.value,
        lines=_lines(body.lines),
        redeem_points=body.redeem_points,
        redeem_code=body.redeem_code,
        store_id=body.store_id,
        signer=runtime.signer,
    )


@router.post(
    "/pos/confirm",
    summary="Confirm a receipt: spend and accrue atomically (idempotent by pos_transaction_id)",
    description="Spending needs the app's redemption code (single use, at most 60 s old) "
    "unless the program allows otherwise. Replaying the same pos_transaction_id returns the "
    "first answer with replayed=true and writes nothing.",
)
def confirm(
    body: ConfirmIn, session: SessionDep, principal: Pos, runtime: RuntimeDep
) -> ConfirmOut:
    return pos.confirm(
        session,
        workspace_id=principal.workspace_id,
        brand_id=principal.brand_id,
        program_id=body.program_id,
        pos_transaction_id=body.pos_transaction_id,
        kind=body.customer.kind,
        value=body.customer.value,
        lines=_lines(body.lines),
        redeem_points=body.redeem_points,
        redeem_code=body.redeem_code,
        receipt_id=body.receipt_id,
        store_id=body.store_id,
        terminal_id=body.terminal_id,
        actor=principal.actor,
        signer=runtime.signer,
    )


@router.post(
    "/pos/refund",
    summary="Refund part of a purchase (by lines or by amount), reversing points in proportion",
    description="Spent points come back, accrued points are taken back; refunds never total "
    "more than the receipt (or a line). Idempotent by this refund's pos_transaction_id.",
)
def refund(body: RefundIn, session: SessionDep, principal: Pos) -> RefundOut:
    return refunds.refund(
        session,
        workspace_id=principal.workspace_id,
        brand_id=principal.brand_id,
        program_id=body.program_id,
        original_pos_transaction_id=body.original_pos_transaction_id,
        pos_transaction_id=body.pos_transaction_id,
        lines=[(x.line_no, x.amount) for x in body.lines] if body.lines else None,
        amount=body.amount,
        store_id=body.store_id,
        terminal_id=body.terminal_id,
        actor=principal.actor,
    )


@router.post(
    "/pos/cancel",
    summary="Cancel a purchase: reverse whatever is left of it (idempotent)",
)
def cancel(body: CancelIn, session: SessionDep, principal: Pos) -> RefundOut:
    return refunds.refund(
        session,
        workspace_id=principal.workspace_id,
        brand_id=principal.brand_id,
        program_id=body.program_id,
        original_pos_transaction_id=body.original_pos_transaction_id,
        pos_transaction_id=None,
        lines=None,
        amount=None,
        store_id=body.store_id,
        terminal_id=body.terminal_id,
        actor=principal.actor,
        cancel=True,
    )


# -- gift cards at the POS ----------------------------------------------------------------


def _gift_card_response(
    request: Request, outcome: giftcards.Outcome
) -> GiftCardOperationOut | Response:
    if outcome.refusal is not None:
        # returned, not raised: the refused attempt is counted and must commit
        return _refused(request, outcome.refusal)
    card, entry = outcome.card, outcome.entry
    assert card is not None
    assert entry is not None
    return GiftCardOperationOut(
        number=card.number,
        status=card.status,
        balance=card.balance,
        currency=card.currency,
        expires_at=card.expires_at,
        entry_id=entry.id,
        amount=entry.amount,
        replayed=outcome.replayed,
    )


def _refused(request: Request, error: TactfulError) -> Response:
    return problem_response(error.status_code, error.to_problem(), request)


@router.post(
    "/gift-cards/activate",
    summary="Activate a gift card at its sale (idempotent by pos_transaction_id)",
    description="An unknown number counts against the terminal like a wrong PIN (20 an "
    "hour); past the limit every gift-card call of the terminal is refused with 429 until the "
    "hour ends.",
    response_model=GiftCardOperationOut,
)
def activate_gift_card(
    body: GiftCardActivateIn, request: Request, session: SessionDep, principal: Pos
) -> GiftCardOperationOut | Response:
    outcome = giftcards.activate_gift_card(
        session,
        workspace_id=principal.workspace_id,
        number=body.number,
        pos_transaction_id=body.pos_transaction_id,
        store_id=body.store_id,
        terminal_id=body.terminal_id,
        actor=principal.actor,
    )
    return _gift_card_response(request, outcome)


@router.post(
    "/gift-cards/balance",
    summary="A gift card's balance, with its PIN",
    description="Wrong PINs are counted per card (5 an hour) and per terminal (20 an hour); "
    "past a limit every PIN is refused with 429 until the hour ends.",
    response_model=GiftCardBalanceOut,
)
def gift_card_balance(
    body: GiftCardBalanceIn, request: Request, session: SessionDep, principal: Pos
) -> GiftCardBalanceOut | Response:
    outcome = giftcards.check_balance(
        session,
        workspace_id=principal.workspace_id,
        number=body.number,
        pin=body.pin,
        terminal_id=body.terminal_id,
    )
    if outcome.refusal is not None:
        return _refused(request, outcome.refusal)
    card = outcome.card
    assert card is not None
    return GiftCardBalanceOut(
        number=card.number,
        status=card.status,
        balance=card.balance,
        currency=card.currency,
        expires_at=card.expires_at,
    )


@router.post(
    "/gift-cards/redeem",
    summary="Pay with a gift card (PIN required; idempotent by pos_transaction_id)",
    response_model=GiftCardOperationOut,
)
def redeem_gift_card(
    body: GiftCardRedeemIn,
    request: Request,
    session: SessionDep,
    principal: Pos,
    runtime: RuntimeDep,
) -> GiftCardOperationOut | Response:
    customer_id = None
    if body.customer is not None:
        customer_id = pos.customer_id_of(
            session,
            workspace_id=principal.workspace_id,
            kind=body.customer.kind,
            value=body.customer.value,
            signer=runtime.signer,
        )
    outcome = giftcards.redeem_gift_card(
        session,
        workspace_id=principal.workspace_id,
        number=body.number,
        pin=body.pin,
        amount=body.amount,
        pos_transaction_id=body.pos_transaction_id,
        store_id=body.store_id,
        terminal_id=body.terminal_id,
        actor=principal.actor,
        customer_id=customer_id,
    )
    return _gift_card_response(request, outcome)


@router.post(
    "/gift-cards/refund",
    summary="Put a refund back on the gift card that paid (never more than was paid)",
    response_model=GiftCardOperationOut,
)
def refund_gift_card(
    body: GiftCardRefundIn, request: Request, session: SessionDep, principal: Pos
) -> GiftCardOperationOut | Response:
    outcome = giftcards.refund_gift_card(
        session,
        workspace_id=principal.workspace_id,
        pos_transaction_id=body.pos_transaction_id,
        original_pos_transaction_id=body.original_pos_transaction_id,
        amount=body.amount,
        store_id=body.store_id,
        terminal_id=body.terminal_id,
        actor=principal.actor,
    )
    return _gift_card_response(request, outcome)


# -- programs and accounts (admin) -----------------------------------------------------------


@router.get("/programs", summary="Loyalty programs")
def list_programs(session: SessionDep, principal: Admin) -> list[ProgramOut]:
    found = programs.list_programs(session, workspace_id=principal.workspace_id)
    return [ProgramOut.model_validate(p) for p in found]


@router.post("/programs", status_code=201, summary="Create a brand's or the workspace's program")
def create_program(body: ProgramIn, session: SessionDep, principal: Admin) -> ProgramOut:
    program = programs.create_program(
        session,
        workspace_id=principal.workspace_id,
        name=body.name,
        rules=body.rules,
        brand_id=body.brand_id,
        currency=body.currency,
        timezone=body.timezone,
        actor=principal.actor,
    )
    return ProgramOut.model_validate(program)


@router.get("/programs/{program_id}", summary="A program and its rules")
def get_program(program_id: int, session: SessionDep, principal: Admin) -> ProgramOut:
    program = programs.get_program(
        session, workspace_id=principal.workspace_id, program_id=program_id
    )
    return ProgramOut.model_validate(program)


@router.put(
    "/programs/{program_id}/rules",
    summary="Replace a program's rules (audited; they apply from now on)",
)
def put_rules(
    program_id: int, body: ProgramRules, session: SessionDep, principal: Admin
) -> ProgramOut:
    program = programs.update_rules(
        session,
        workspace_id=principal.workspace_id,
        program_id=program_id,
        rules=body,
        actor=principal.actor,
    )
    return ProgramOut.model_validate(program)


@router.post(
    "/programs/{program_id}/accounts",
    summary="Enrol a customer (the welcome bonus is granted once)",
)
def enrol(program_id: int, body: EnrolIn, session: SessionDep, principal: Admin) -> AccountOut:
    account = accounts.enrol(
        session,
        workspace_id=principal.workspace_id,
        program_id=program_id,
        customer_id=body.customer_id,
        actor=principal.actor,
    )
    return AccountOut.model_validate(account)


@router.get("/customers/{customer_id}/accounts", summary="A customer's loyalty accounts")
def customer_accounts(customer_id: int, session: SessionDep, principal: Admin) -> list[AccountOut]:
    found = accounts.accounts_of_customer(
        session, workspace_id=principal.workspace_id, customer_id=customer_id
    )
    return [AccountOut.model_validate(a) for a in found]


@router.get(
    "/accounts/{account_id}", summary="An account with its open lots (earliest expiry first)"
)
def get_account(account_id: int, session: SessionDep, principal: Admin) -> AccountDetail:
    account = fraud.get_account(session, workspace_id=principal.workspace_id, account_id=account_id)
    open_lots = accounts.lots(session, workspace_id=principal.workspace_id, account_id=account_id)
    return AccountDetail.model_validate(
        {
            **AccountOut.model_validate(account).model_dump(),
            "lots": [LotOut.model_validate(lot) for lot in open_lots],
        }
    )


@router.get("/accounts/{account_id}/ledger", summary="An account's ledger, newest first")
def account_ledger(
    account_id: int,
    session: SessionDep,
    principal: Admin,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TransactionOut]:
    rows = accounts.ledger(
        session,
        workspace_id=principal.workspace_id,
        account_id=account_id,
        before_id=before_id,
        limit=limit,
    )
    return [
        TransactionOut.model_validate(
            {
                **TransactionOut.model_validate(txn).model_dump(exclude={"lines"}),
                "lines": [LineOut.model_validate(line) for line in lines],
            }
        )
        for txn, lines in rows
    ]


@router.post(
    "/accounts/{account_id}/adjustments",
    status_code=201,
    summary="Add or take points by hand (admins only, with a reason; audited)",
)
def adjust(
    account_id: int, body: AdjustmentIn, session: SessionDep, principal: Admin
) -> TransactionOut:
    txn = fraud.adjust_points(
        session,
        principal=principal,
        account_id=account_id,
        points=body.points,
        reason=body.reason,
        idempotency_key=body.idempotency_key,
    )
    return TransactionOut.model_validate(txn)


@router.post("/accounts/{account_id}/block", summary="Block redemptions (audited)")
def block(account_id: int, body: StatusIn, session: SessionDep, principal: Admin) -> AccountOut:
    account = fraud.set_blocked(
        session, principal=principal, account_id=account_id, blocked=True, reason=body.reason
    )
    return AccountOut.model_validate(account)


@router.post("/accounts/{account_id}/unblock", summary="Allow redemptions again (audited)")
def unblock(account_id: int, body: StatusIn, session: SessionDep, principal: Admin) -> AccountOut:
    account = fraud.set_blocked(
        session, principal=principal, account_id=account_id, blocked=False, reason=body.reason
    )
    return AccountOut.model_validate(account)


# -- app devices ------------------------------------------------------------------------------


@router.post(
    "/devices",
    status_code=201,
    summary="Enrol a customer's app installation (its TOTP secret is shown once)",
)
def enrol_device(
    body: DeviceIn, session: SessionDep, principal: Admin, runtime: RuntimeDep
) -> DeviceEnrolled:
    device, secret = codes.enrol_device(
        session,
        workspace_id=principal.workspace_id,
        customer_id=body.customer_id,
        label=body.label,
        actor=principal.actor,
        signer=runtime.signer,
    )
    specs = codes.code_specs()
    return DeviceEnrolled.model_validate(
        {
            **DeviceOut.model_validate(device).model_dump(),
            "secret": secret,
            "accrual_code": specs["accrual"],
            "redemption_code": specs["redemption"],
        }
    )


@router.get("/customers/{customer_id}/devices", summary="A customer's app installations")
def list_devices(customer_id: int, session: SessionDep, principal: Admin) -> list[DeviceOut]:
    found = codes.list_devices(
        session, workspace_id=principal.workspace_id, customer_id=customer_id
    )
    return [DeviceOut.model_validate(d) for d in found]


@router.delete("/devices/{device_id}", summary="Revoke an app installation: its codes stop at once")
def revoke_device(device_id: int, session: SessionDep, principal: Admin) -> DeviceOut:
    device = codes.revoke_device(
        session, workspace_id=principal.workspace_id, device_id=device_id, actor=principal.actor
    )
    return DeviceOut.model_validate(device)


# -- gift cards (admin) -------------------------------------------------------------------------


@router.post(
    "/gift-cards",
    status_code=201,
    summary="Issue gift cards (PINs shown once; cards spend only after activation)",
)
def issue_gift_cards(
    body: GiftCardIssueIn, session: SessionDep, principal: Admin
) -> list[GiftCardIssued]:
    issued = giftcards.issue_gift_cards(
        session,
        workspace_id=principal.workspace_id,
        amount=body.amount,
        count=body.count,
        brand_id=body.brand_id,
        currency=body.currency,
        expires_on=body.expires_on,
        customer_id=body.customer_id,
        actor=principal.actor,
    )
    return [
        GiftCardIssued(
            id=i.card.id,
            number=i.card.number,
            pin=i.pin,
            amount=i.card.initial_amount,
            currency=i.card.currency,
            expires_at=i.card.expires_at,
        )
        for i in issued
    ]


@router.get("/gift-cards/{number}", summary="A gift card (no PIN needed with an admin key)")
def get_gift_card(number: str, session: SessionDep, principal: Admin) -> GiftCardOut:
    card = giftcards.get_gift_card(session, workspace_id=principal.workspace_id, number=number)
    return GiftCardOut.model_validate(card)


# -- anti-fraud and reports ----------------------------------------------------------------------


@router.get("/fraud-flags", summary="Anomaly flags (redemption bursts), newest first")
def list_flags(
    session: SessionDep,
    principal: Admin,
    open_only: bool = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[FraudFlagOut]:
    found = fraud.list_flags(
        session, workspace_id=principal.workspace_id, open_only=open_only, limit=limit
    )
    return [FraudFlagOut.model_validate(f) for f in found]


@router.post("/fraud-flags/{flag_id}/resolve", summary="Close a flag with what was found")
def resolve_flag(
    flag_id: int, body: StatusIn, session: SessionDep, principal: Admin
) -> FraudFlagOut:
    flag = fraud.resolve_flag(
        session,
        workspace_id=principal.workspace_id,
        flag_id=flag_id,
        resolution=body.reason,
        actor=principal.actor,
    )
    return FraudFlagOut.model_validate(flag)


@router.get(
    "/reports/liability",
    summary="Outstanding points, their value and their expiry profile by month",
)
def liability(
    session: SessionDep,
    principal: Admin,
    program_id: int,
    months: Annotated[int, Query(ge=1, le=60)] = 12,
) -> LiabilityOut:
    return reports.liability(
        session, workspace_id=principal.workspace_id, program_id=program_id, months=months
    )


@router.get(
    "/reports/activity",
    summary="Points accrued, granted, redeemed, expired and adjusted per day, week or month",
)
def activity(
    session: SessionDep,
    principal: Admin,
    program_id: int,
    start: datetime,
    end: datetime,
    period: Annotated[str, Query(pattern="^(day|week|month)$")] = "day",
) -> ActivityOut:
    return reports.activity(
        session,
        workspace_id=principal.workspace_id,
        program_id=program_id,
        start=start,
        end=end,
        period=period,
    )


@router.get(
    "/verify",
    summary="Prove cached balances equal the ledger (lists every mismatch; empty is healthy)",
)
def verify(session: SessionDep, principal: Admin, program_id: int) -> VerifyOut:
    program = programs.get_program(
        session, workspace_id=principal.workspace_id, program_id=program_id
    )
    checked, problems = ledger.verify_program(session, program_id=program.id)
    return VerifyOut(accounts=checked, mismatches=problems)
