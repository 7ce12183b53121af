"""Loyalty fixtures: a program, customers with cards and phones, a POS key, helpers that read
the ledger back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.models import Customer
from tactful.events.models import InboxEvent
from tactful.loyalty.models import Account, LedgerLine, LedgerTransaction
from tactful.loyalty.schemas import FraudLimits, ProgramRules, TierRule
from tactful.loyalty.service import ledger, programs
from tactful.tenancy import service as tenancy_service
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 12:00 in Moscow

TIERS = [
    TierRule(key="base", name="Base", min_spend=0, accrual_bp=500),
    TierRule(key="silver", name="Silver", min_spend=3_000_000, accrual_bp=700),
    TierRule(key="gold", name="Gold", min_spend=10_000_000, accrual_bp=1000, redeem_cap_bp=5000),
]


def make_rules(**overrides: Any) -> ProgramRules:
    """Rules for tests: 1 point = 1 rouble (100 kopecks), 5/7/10 % by tier, 30 % cap."""
    values: dict[str, Any] = {
        "point_value": 100,
        "tiers": TIERS,
        "redeem_cap_bp": 3000,
        "return_period_days": 14,
        "expiry_months": 12,
        "tier_review_months": 3,
        "redeem_requires_code": True,
        "limits": FraudLimits(),
    }
    values.update(overrides)
    return ProgramRules(**values)


@dataclass(frozen=True)
class Shop:
    """A workspace with a loyalty program, a POS key and the tenant's admin key."""

    tenant: Tenant
    program_id: int
    pos_key: str

    @property
    def pos(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.pos_key}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.tenant.headers


def create_customer(
    session: Session,
    *,
    card: str,
    phone: str | None = None,
    first_name: str = "Anna",
    birthday: date | None = None,
    timezone: str | None = None,
) -> int:
    workspace = session.scalars(select(Workspace)).one()
    idents = [normalise("card", card, region="RU")]
    if phone:
        idents.append(normalise("phone", phone, region="RU"))
    [customer_id] = resolve_profiles(
        session,
        workspace=workspace,
        records=[
            ProfileRecord(
                idents=idents, traits={"first_name": first_name}, source="pos", at=clock.now()
            )
        ],
    ).customer_ids
    customer = session.get(Customer, customer_id)
    assert customer is not None
    customer.birthday, customer.timezone = birthday, timezone
    return customer_id


@pytest.fixture
def frozen() -> Iterator[None]:
    with clock.frozen(T0):
        yield


def make_shop(runtime: Runtime, tenant: Tenant, rules: ProgramRules) -> Shop:
    with runtime.db.scope() as session:
        program = programs.create_program(
            session, workspace_id=tenant.workspace_id, name="Club", rules=rules, actor="test"
        )
        _key, plain = tenancy_service.issue_api_key(
            session, workspace_id=tenant.workspace_id, name="till 1", scopes=["pos"]
        )
        return Shop(tenant, program.id, plain)


@pytest.fixture
def shop(runtime: Runtime, tenant: Tenant, frozen: None) -> Shop:
    return make_shop(runtime, tenant, make_rules())


def set_rules(client: TestClient, shop: Shop, **overrides: Any) -> None:
    """Replace the shop program's rules over the API (test rules plus ``overrides``)."""
    rules = make_rules(**overrides).model_dump(mode="json")
    r = client.put(f"/v1/loyalty/programs/{shop.program_id}/rules", headers=shop.admin, json=rules)
    assert r.status_code == 200, r.text


def receipt(*amounts: int, category: str | None = None) -> list[dict[str, Any]]:
    return [
        {"line_no": i + 1, "product_id": f"P{i + 1}", "category_id": category, "amount": amount}
        for i, amount in enumerate(amounts)
    ]


def confirm_body(
    pos_id: str,
    card: str,
    lines: list[dict[str, Any]],
    *,
    redeem: int = 0,
    code: str | None = None,
    terminal: str = "T1",
    store: str = "S1",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pos_transaction_id": pos_id,
        "customer": {"kind": "card", "value": card},
        "lines": lines,
        "redeem_points": redeem,
        "store_id": store,
        "terminal_id": terminal,
        "receipt_id": f"R-{pos_id}",
    }
    if code is not None:
        body["redeem_code"] = code
    return body


def account_of(session: Session, customer_id: int) -> Account:
    account = session.scalar(select(Account).where(Account.customer_id == customer_id))
    assert account is not None
    return account


def ledger_state(runtime: Runtime) -> tuple[int, int, list[tuple[int, int]]]:
    """(transactions, lines, [(account id, balance)]): what a refused call must not change."""
    with runtime.db.scope(readonly=True) as session:
        txns = session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0
        lines = session.scalar(select(func.count()).select_from(LedgerLine)) or 0
        balances = [
            (a.id, a.balance) for a in session.scalars(select(Account).order_by(Account.id))
        ]
    return int(txns), int(lines), balances


def assert_ledger_consistent(runtime: Runtime) -> None:
    with runtime.db.scope(readonly=True) as session:
        assert ledger.verify(session) == []


def loyalty_events(runtime: Runtime) -> list[tuple[str, dict[str, Any]]]:
    with runtime.db.scope(readonly=True) as session:
        rows = session.scalars(
            select(InboxEvent).where(InboxEvent.source == "loyalty").order_by(InboxEvent.seq)
        )
        return [(str(r.name), dict(r.properties)) for r in rows]


@pytest.fixture
def anna(runtime: Runtime, shop: Shop) -> int:
    with runtime.db.scope() as session:
        return create_customer(session, card="2000111", phone="+79161234567")


def link_cards(runtime: Runtime, *cards: str) -> None:
    """The cards turn out to be one customer's (the oldest customer survives); folding their
    accounts is left to the queued jobs."""
    with runtime.db.scope() as session:
        workspace = session.scalars(select(Workspace)).one()
        resolve_profiles(
            session,
            workspace=workspace,
            records=[
                ProfileRecord(
                    idents=[normalise("card", c, region="RU") for c in cards],
                    source="pos",
                    at=clock.now(),
                )
            ],
        )
