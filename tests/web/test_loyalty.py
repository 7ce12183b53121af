"""Loyalty pages: programs, rules and tiers (wrong values kept next to their field), the
liability, a customer's ledger, gift cards with PINs shown once; only owners and admins
change anything, and the server refuses the others."""

from __future__ import annotations

from sqlalchemy import func, select

from tactful.core.runtime import Runtime
from tactful.loyalty.models import GiftCard, Program
from tactful.loyalty.schemas import ProgramRules
from tactful.loyalty.service import accounts
from tests.conftest import Tenant
from tests.reports.shop import Shop
from tests.web.conftest import SignIn


def count(runtime: Runtime, model: type) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_programs_rules_ledger_and_liability(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    admin = sign_in("admin")
    bad = admin.post("/loyalty/programs", {"name": "Club", "timezone": "Mars/Olympus"})
    assert (bad.status, bad.error("timezone")) == (422, "'Mars/Olympus' is not an IANA time zone")
    assert bad.value("name") == "Club"
    assert count(runtime, Program) == 0
    created = admin.post("/loyalty/programs", {"name": "Club", "timezone": ""})
    assert created.status == 303
    program_id = int(created.response.headers["location"].rsplit("/", 1)[1])
    page = admin.get(f"/loyalty/programs/{program_id}")
    assert page.texts("[data-tier='base'] td") == ["Base", "0.00 RUB", "5.00 %", "30 %"]
    form = page.form("form[data-form='rules']")
    assert (form["tiers.0.key"], form["tiers.1.key"]) == ("base", "")

    wrong = admin.post(
        f"/loyalty/programs/{program_id}/rules",
        {
            **form,
            "welcome_bonus": "100",
            "tiers.1.key": "gold",
            "tiers.1.name": "Gold",
            "tiers.1.min_spend": "lots",
            "tiers.1.accrual_bp": "1000",
        },
    )
    assert wrong.status == 422
    assert wrong.error("tiers.1.min_spend") == (
        "Input should be a valid integer, unable to parse string as an integer"
    )
    assert wrong.value("tiers.1.min_spend") == "lots"
    assert wrong.value("welcome_bonus") == "100"
    not_growing = admin.post(
        f"/loyalty/programs/{program_id}/rules",
        {
            **form,
            "tiers.1.key": "gold",
            "tiers.1.name": "Gold",
            "tiers.1.min_spend": "0",
            "tiers.1.accrual_bp": "1000",
        },
    )
    assert not_growing.errors() == {"_": "tiers are listed by strictly growing min_spend"}
    saved = admin.post(
        f"/loyalty/programs/{program_id}/rules",
        {
            **form,
            "welcome_bonus": "100",
            "tiers.1.key": "gold",
            "tiers.1.name": "Gold",
            "tiers.1.min_spend": "5000000",
            "tiers.1.accrual_bp": "1000",
        },
    )
    assert saved.status == 303
    with runtime.db.scope() as session:
        program = session.get(Program, program_id)
        assert program is not None
        rules = ProgramRules.model_validate(program.rules)
        assert (rules.welcome_bonus, [t.key for t in rules.tiers]) == (100, ["base", "gold"])
        accounts.enrol(
            session,
            workspace_id=tenant.workspace_id,
            program_id=program_id,
            customer_id=shop.anna,
            actor="test",
        )
    marketer = sign_in("marketer")
    ledger = marketer.get("/loyalty", q="+79120000001")
    assert ledger.response.headers["location"] == f"/loyalty/customers/{shop.anna}"
    entries = marketer.get(f"/loyalty/customers/{shop.anna}")
    assert entries.text("[data-balance]") == "100"
    assert entries.texts("[data-table='ledger'] tr[data-transaction] td")[1:3] == [
        "welcome: welcome bonus",
        "+100",
    ]
    profile = marketer.get(f"/customers/{shop.anna}")
    assert profile.texts("[data-table='loyalty'] td")[1:3] == ["base", "100"]
    liability = marketer.get(f"/loyalty/programs/{program_id}")
    assert liability.text("[data-liability='outstanding']") == "100"
    assert liability.text("[data-liability='value']") == "100.00 RUB"
    assert liability.has("svg[data-chart='expiry'] rect")
    assert not liability.has("form[data-form='rules']")
    before = program.version
    refused = marketer.post(
        f"/loyalty/programs/{program_id}/rules", {**form, "welcome_bonus": "100000"}
    )
    assert refused.status == 403
    with runtime.db.scope(readonly=True) as session:
        again = session.get(Program, program_id)
        assert again is not None
        assert (again.version, again.rules["welcome_bonus"]) == (before, 100)
    assert marketer.get("/loyalty", q="nobody@example.com").text("[data-field='q']") == (
        "No customer matches “nobody@example.com”."
    )


def test_gift_cards_are_issued_once_and_looked_up(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    owner = sign_in("owner")
    bad = owner.post("/loyalty/gift-cards", {"amount": "a lot", "count": "2"})
    assert bad.status == 422
    assert (
        bad.error("amount")
        == "Input should be a valid integer, unable to parse string as an integer"
    )
    assert (bad.value("amount"), bad.value("count")) == ("a lot", "2")
    assert count(runtime, GiftCard) == 0
    issued = owner.post("/loyalty/gift-cards", {"amount": "500000", "count": "2"})
    assert issued.status == 200
    rows = issued.html.select("[data-table='issued'] tr")[1:]
    assert len(rows) == 2
    number, pin, amount = (td.get_text() for td in rows[0].select("td"))
    assert (len(number), len(pin), amount) == (16, 6, "5,000.00 RUB")
    found = owner.get("/loyalty/gift-cards", number=number)
    assert found.text("[data-card='status']") == "issued"
    assert pin not in found.response.text
    missing = owner.get("/loyalty/gift-cards", number="0000")
    assert missing.errors() == {"number": "no gift card has this number"}
    support = sign_in("support")
    assert not support.get("/loyalty/gift-cards").has("form[data-form='issue']")
    assert support.post("/loyalty/gift-cards", {"amount": "100"}).status == 403
    analyst = sign_in("analyst")
    assert not analyst.get("/loyalty").has("form[data-form='new-program']")
    assert analyst.post("/loyalty/programs", {"name": "Sneaky"}).status == 403
    assert count(runtime, GiftCard) == 2
    assert count(runtime, Program) == 0
    assert sign_in("pos").get("/loyalty").status == 403
