"""Loyalty: programs with their rules and tiers, the liability and its expiry profile, a
customer's accounts and ledger, gift cards (issued with their PINs shown once)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from tactful.core.api import SessionDep, api_router
from tactful.core.errors import NotFound, TactfulError, ValidationFailed
from tactful.customers import service as customers
from tactful.loyalty.models import Program
from tactful.loyalty.schemas import GiftCardIssueIn, ProgramIn, ProgramRules
from tactful.loyalty.service import accounts, giftcards, programs, reports
from tactful.web.ui import (
    FormDep,
    Viewer,
    ViewerDep,
    attempt,
    errors_of,
    int_or_none,
    optional_int,
    parse,
    redirect,
    render,
    text,
)

router = api_router()
SCALARS = (
    "point_value",
    "welcome_bonus",
    "birthday_bonus",
    "bonus_valid_days",
    "redeem_cap_bp",
    "return_period_days",
    "expiry_months",
    "tier_review_months",
)
TIER_FIELDS = ("key", "name", "min_spend", "accrual_bp", "redeem_cap_bp")
BLANK_TIERS = 1
LEDGER_SIZE = 50


@router.get("/loyalty", include_in_schema=False)
def loyalty_home(request: Request, session: SessionDep, viewer: ViewerDep, q: str = "") -> Response:
    viewer.demand("loyalty.view")
    query = q.strip()
    if query:
        found = _customer(session, viewer, query)
        if found is not None:
            return redirect(f"/loyalty/customers/{found}")
    return render(
        request,
        "loyalty.html",
        viewer,
        programs=programs.list_programs(session, workspace_id=viewer.workspace_id),
        q=query,
        missing=bool(query),
        values={"name": "", "brand_id": "", "currency": "", "timezone": ""},
        errors={},
    )


def _customer(session: SessionDep, viewer: Viewer, query: str) -> int | None:
    """A customer by id, or by card, phone or e-mail (for roles that see personal data)."""
    if query.isdigit():
        try:
            return customers.get_customer(
                session, workspace_id=viewer.workspace_id, customer_id=int(query)
            ).id
        except NotFound:
            pass
    if not viewer.can("customers.view_pii"):
        return None
    for kind in ("card", "phone", "email"):
        try:
            return customers.find_customer(
                session, workspace=viewer.workspace, kind=kind, value=query
            ).id
        except TactfulError:
            continue
    return None


@router.post("/loyalty/programs", include_in_schema=False)
def program_create(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("loyalty.adjust")
    values = {name: text(form, name) for name in ("name", "brand_id", "currency", "timezone")}
    try:
        body = parse(
            ProgramIn,
            {
                "name": values["name"],
                "brand_id": optional_int(values["brand_id"]),
                "currency": values["currency"] or None,
                "timezone": values["timezone"] or None,
            },
        )
        with attempt(session):
            program = programs.create_program(
                session,
                workspace_id=viewer.workspace_id,
                name=body.name,
                rules=body.rules,
                brand_id=body.brand_id,
                currency=body.currency,
                timezone=body.timezone,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return render(
            request,
            "loyalty.html",
            viewer,
            status=exc.status_code,
            programs=programs.list_programs(session, workspace_id=viewer.workspace_id),
            q="",
            missing=False,
            values=values,
            errors=errors_of(exc),
        )
    return redirect(f"/loyalty/programs/{program.id}")


def _rule_values(rules: ProgramRules) -> dict[str, Any]:
    found: dict[str, Any] = {
        name: "" if getattr(rules, name) is None else str(getattr(rules, name)) for name in SCALARS
    }
    found["redeem_requires_code"] = rules.redeem_requires_code
    found["tiers_count"] = len(rules.tiers) + BLANK_TIERS
    for i, tier in enumerate(rules.tiers):
        for name in TIER_FIELDS:
            value = getattr(tier, name)
            found[f"tiers.{i}.{name}"] = "" if value is None else str(value)
    return found


def _program_page(
    request: Request,
    session: SessionDep,
    viewer: Viewer,
    program: Program,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    notice: str | None = None,
) -> Response:
    rules = ProgramRules.model_validate(program.rules)
    liability = reports.liability(session, workspace_id=viewer.workspace_id, program_id=program.id)
    return render(
        request,
        "loyalty_program.html",
        viewer,
        status=status,
        program=program,
        rules=rules,
        values=values or _rule_values(rules),
        errors=errors or {},
        liability=liability,
        expiry_chart=[(b.label, b.points) for b in liability.expiry_profile],
        notice=notice,
    )


@router.get("/loyalty/programs/{program_id}", include_in_schema=False)
def program_page(
    program_id: int, request: Request, session: SessionDep, viewer: ViewerDep, saved: int = 0
) -> Response:
    viewer.demand("loyalty.view")
    program = programs.get_program(session, workspace_id=viewer.workspace_id, program_id=program_id)
    return _program_page(
        request, session, viewer, program, notice="The rules are saved." if saved else None
    )


def _rules_from(form: dict[str, Any], current: ProgramRules) -> ProgramRules:
    """The current rules with what the form changes (multipliers, promotions and limits are
    kept as they are)."""
    data = current.model_dump(mode="json")
    for name in SCALARS:
        data[name] = optional_int(text(form, name))
    data["redeem_requires_code"] = bool(text(form, "redeem_requires_code"))
    rows: list[int] = []
    tiers = []
    for i in range(int_or_none(text(form, "tiers_count")) or 0):
        row = {name: text(form, f"tiers.{i}.{name}") for name in TIER_FIELDS}
        if not any(row.values()):
            continue
        rows.append(i)
        tiers.append({name: optional_int(value) for name, value in row.items()})
    data["tiers"] = tiers
    try:
        return ProgramRules.model_validate(data)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            if loc[:1] == ("tiers",) and len(loc) > 2 and isinstance(loc[1], int):
                where = f"tiers.{rows[loc[1]]}.{loc[2]}"
            else:
                where = str(loc[0]) if loc else "_"
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            errors.append({"field": where, "reason": message})
        raise ValidationFailed(
            f"{errors[0]['field']}: {errors[0]['reason']}", errors=errors
        ) from exc


@router.post("/loyalty/programs/{program_id}/rules", include_in_schema=False)
def program_rules(
    program_id: int, request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    viewer.demand("loyalty.adjust")
    program = programs.get_program(session, workspace_id=viewer.workspace_id, program_id=program_id)
    current = ProgramRules.model_validate(program.rules)
    try:
        rules = _rules_from(form, current)
        with attempt(session):
            programs.update_rules(
                session,
                workspace_id=viewer.workspace_id,
                program_id=program.id,
                rules=rules,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        typed: dict[str, Any] = {name: text(form, name) for name in SCALARS}
        typed["redeem_requires_code"] = bool(text(form, "redeem_requires_code"))
        typed["tiers_count"] = int_or_none(text(form, "tiers_count")) or 0
        for i in range(typed["tiers_count"]):
            for name in TIER_FIELDS:
                typed[f"tiers.{i}.{name}"] = text(form, f"tiers.{i}.{name}")
        return _program_page(
            request,
            session,
            viewer,
            program,
            values=typed,
            errors=errors_of(exc),
            status=exc.status_code,
        )
    return redirect(f"/loyalty/programs/{program.id}?saved=1")


@router.get("/loyalty/customers/{customer_id}", include_in_schema=False)
def customer_ledger(
    customer_id: int, request: Request, session: SessionDep, viewer: ViewerDep
) -> Response:
    """A customer's accounts, each with its newest ledger entries."""
    viewer.demand("loyalty.view")
    found = accounts.accounts_of_customer(
        session, workspace_id=viewer.workspace_id, customer_id=customer_id
    )
    ledgers = [
        (
            account,
            accounts.ledger(
                session,
                workspace_id=viewer.workspace_id,
                account_id=account.id,
                limit=LEDGER_SIZE,
            ),
        )
        for account in found
    ]
    return render(
        request, "loyalty_customer.html", viewer, customer_id=customer_id, ledgers=ledgers
    )


@router.get("/loyalty/gift-cards", include_in_schema=False)
def gift_cards(
    request: Request, session: SessionDep, viewer: ViewerDep, number: str = ""
) -> Response:
    viewer.demand("loyalty.view")
    card, missing = None, None
    if number.strip():
        try:
            card = giftcards.get_gift_card(
                session, workspace_id=viewer.workspace_id, number=number.strip()
            )
        except NotFound as exc:
            missing = exc.message
    return render(
        request,
        "loyalty_gift_cards.html",
        viewer,
        card=card,
        missing=missing,
        number=number.strip(),
        issued=[],
        values={"amount": "", "count": "1", "brand_id": "", "expires_on": ""},
        errors={},
    )


@router.post("/loyalty/gift-cards", include_in_schema=False)
def gift_cards_issue(
    request: Request, session: SessionDep, viewer: ViewerDep, form: FormDep
) -> Response:
    """Issue cards; their numbers and PINs are shown on this page only."""
    viewer.demand("loyalty.adjust")
    values = {name: text(form, name) for name in ("amount", "count", "brand_id", "expires_on")}
    try:
        body = parse(
            GiftCardIssueIn,
            {
                "amount": optional_int(values["amount"]),
                "count": optional_int(values["count"]) or 1,
                "brand_id": optional_int(values["brand_id"]),
                "expires_on": values["expires_on"] or None,
            },
        )
        with attempt(session):
            issued = giftcards.issue_gift_cards(
                session,
                workspace_id=viewer.workspace_id,
                amount=body.amount,
                count=body.count,
                brand_id=body.brand_id,
                expires_on=body.expires_on,
                actor=viewer.actor,
            )
    except TactfulError as exc:
        return render(
            request,
            "loyalty_gift_cards.html",
            viewer,
            status=exc.status_code,
            card=None,
            missing=None,
            number="",
            issued=[],
            values=values,
            errors=errors_of(exc),
        )
    return render(
        request,
        "loyalty_gift_cards.html",
        viewer,
        card=None,
        missing=None,
        number="",
        issued=issued,
        values={"amount": "", "count": "1", "brand_id": "", "expires_on": ""},
        errors={},
    )
