"""Anti-fraud: velocity limits per card, terminal and store; redemption-burst flags; manual
adjustments only by admins, with a reason, in the audit log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core import clock
from tactful.core.auth import Principal
from tactful.core.errors import Forbidden
from tactful.core.runtime import Runtime
from tactful.loyalty.schemas import FraudLimits
from tactful.loyalty.service import fraud
from tactful.tenancy.models import AuditEntry
from tests.loyalty.conftest import (
    Shop,
    confirm_body,
    create_customer,
    ledger_state,
    receipt,
    set_rules,
)

CARD = "2000111"


def confirm(client: TestClient, shop: Shop, pos_id: str, **kwargs: Any) -> Any:
    redeem = kwargs.pop("redeem", 0)
    return client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body(
            pos_id, kwargs.pop("card", CARD), receipt(10_000), redeem=redeem, **kwargs
        ),
    )


def adjust(
    client: TestClient, shop: Shop, account_id: int, points: int, key: str, headers: Any = None
) -> Any:
    return client.post(
        f"/v1/loyalty/accounts/{account_id}/adjustments",
        headers=headers or shop.admin,
        json={"points": points, "reason": "goodwill after a complaint", "idempotency_key": key},
    )


def test_velocity_limits_refuse_and_write_nothing(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(
        client,
        shop,
        limits=FraudLimits(account_per_hour=3, terminal_per_minute=2, store_per_minute=4),
    )
    assert confirm(client, shop, "p1", terminal="T1").status_code == 200
    assert confirm(client, shop, "p2", terminal="T1").status_code == 200
    before = ledger_state(runtime)
    terminal = confirm(client, shop, "p3", terminal="T1")
    assert terminal.status_code == 429
    assert terminal.json()["errors"] == [
        {
            "field": "terminal_id",
            "reason": "terminal T1 made 2 purchases this minute (limit 2)",
        }
    ]
    assert ledger_state(runtime) == before
    assert confirm(client, shop, "p4", terminal="T2").status_code == 200
    card = confirm(client, shop, "p5", terminal="T3")
    assert card.status_code == 429
    assert card.json()["errors"][0]["field"] == "customer"
    # a replay is an answer, not a new purchase: never limited
    assert confirm(client, shop, "p1", terminal="T1").json()["replayed"] is True


def test_redemption_bursts_are_flagged_once(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(
        client,
        shop,
        redeem_requires_code=False,
        limits=FraudLimits(burst_redemptions=2, burst_minutes=10),
    )
    account = client.post(
        f"/v1/loyalty/programs/{shop.program_id}/accounts",
        headers=shop.admin,
        json={"customer_id": anna},
    ).json()["id"]
    assert adjust(client, shop, account, 100, "seed").status_code == 201
    for n in range(3):
        assert confirm(client, shop, f"r{n}", redeem=10).status_code == 200
    flags = client.get("/v1/loyalty/fraud-flags", headers=shop.admin).json()
    assert [(f["kind"], f["account_id"], f["details"]) for f in flags] == [
        (
            "redemption_burst_account",
            account,
            {"redemptions": 2, "threshold": 2, "minutes": 10},
        )
    ]
    resolved = client.post(
        f"/v1/loyalty/fraud-flags/{flags[0]['id']}/resolve",
        headers=shop.admin,
        json={"reason": "the customer bought gifts for the team"},
    )
    assert resolved.status_code == 200
    assert client.get("/v1/loyalty/fraud-flags", headers=shop.admin).json() == []


def test_terminal_bursts_count_the_terminals_recent_redemptions_only(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(
        client,
        shop,
        redeem_requires_code=False,
        limits=FraudLimits(burst_redemptions=10, terminal_burst_redemptions=3, burst_minutes=10),
    )
    with runtime.db.scope() as session:
        boris = create_customer(session, card="2000222", first_name="Boris")
    accounts = {}
    for card, customer in ((CARD, anna), ("2000222", boris)):
        accounts[card] = client.post(
            f"/v1/loyalty/programs/{shop.program_id}/accounts",
            headers=shop.admin,
            json={"customer_id": customer},
        ).json()["id"]
        assert adjust(client, shop, accounts[card], 100, f"seed {card}").status_code == 201

    def flags() -> list[tuple[str, int, dict[str, Any]]]:
        found = client.get("/v1/loyalty/fraud-flags", headers=shop.admin).json()
        return [(f["kind"], f["account_id"], f["details"]) for f in found]

    # before the window: a redemption at T1
    assert confirm(client, shop, "old", redeem=10, terminal="T1").status_code == 200
    clock.advance(timedelta(minutes=11))
    # within it: another terminal's redemption and T1's purchase without one do not count
    assert confirm(client, shop, "t2", card="2000222", redeem=10, terminal="T2").status_code == 200
    assert confirm(client, shop, "buy", terminal="T1").status_code == 200
    assert confirm(client, shop, "r1", redeem=10, terminal="T1").status_code == 200
    assert confirm(client, shop, "r2", card="2000222", redeem=10, terminal="T1").status_code == 200
    assert flags() == []
    assert confirm(client, shop, "r3", redeem=10, terminal="T1").status_code == 200
    assert flags() == [
        (
            "redemption_burst_terminal",
            accounts[CARD],
            {"redemptions": 3, "threshold": 3, "minutes": 10},
        )
    ]


def test_adjustments_need_an_admin_and_a_reason_and_are_audited(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    account = client.post(
        f"/v1/loyalty/programs/{shop.program_id}/accounts",
        headers=shop.admin,
        json={"customer_id": anna},
    ).json()["id"]
    before = ledger_state(runtime)
    assert adjust(client, shop, account, 100, "k1", headers=shop.pos).status_code == 403
    no_reason = client.post(
        f"/v1/loyalty/accounts/{account}/adjustments",
        headers=shop.admin,
        json={"points": 100, "reason": "", "idempotency_key": "k1"},
    )
    assert no_reason.status_code == 422
    assert no_reason.json()["errors"][0]["field"] == "reason"
    pos_principal = Principal(
        workspace_id=shop.tenant.workspace_id, actor="till", scopes=frozenset({"pos"})
    )
    with runtime.db.scope() as session, pytest.raises(Forbidden):
        fraud.adjust_points(
            session,
            principal=pos_principal,
            account_id=account,
            points=100,
            reason="because I can",
            idempotency_key="k1",
        )
    assert ledger_state(runtime) == before

    added = adjust(client, shop, account, 100, "k1")
    assert added.status_code == 201
    assert (added.json()["kind"], added.json()["points"]) == ("adjustment", 100)
    assert adjust(client, shop, account, 100, "k1").json()["id"] == added.json()["id"]
    too_much = adjust(client, shop, account, -101, "k2")
    assert too_much.status_code == 409
    assert too_much.json()["errors"][0]["field"] == "points"
    taken = adjust(client, shop, account, -40, "k3")
    assert taken.status_code == 201
    assert client.get(f"/v1/loyalty/accounts/{account}", headers=shop.admin).json()["balance"] == 60
    with runtime.db.scope(readonly=True) as session:
        audit = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "loyalty.points_adjusted")
            .order_by(AuditEntry.id)
        ).all()
        assert [
            (a.target_id, a.details["points"], a.details["reason"], a.details["balance_after"])
            for a in audit
        ] == [
            (str(account), 100, "goodwill after a complaint", 100),
            (str(account), -40, "goodwill after a complaint", 60),
        ]
        assert all(a.actor.startswith("api_key:") for a in audit)
    ledger_page = client.get(f"/v1/loyalty/accounts/{account}/ledger", headers=shop.admin).json()
    assert [
        (t["kind"], t["points"], [line["points"] for line in t["lines"]]) for t in ledger_page
    ] == [
        ("adjustment", -40, [-40]),
        ("adjustment", 100, [100]),
    ]
