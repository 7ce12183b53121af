"""Refunds at their edges: a receipt refunded by lines and by amount, the money back at the
points' old value, accruals that expired or moved with a merge, and a refund's claw-back out
of the points it gives back. Each docstring says what went wrong before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.customers.models import CustomerMerge
from tactful.loyalty import store
from tactful.loyalty.models import Account, Lot
from tactful.loyalty.service import refunds
from tests.loyalty.conftest import (
    Shop,
    account_of,
    assert_ledger_consistent,
    confirm_body,
    create_customer,
    loyalty_events,
    receipt,
    set_rules,
)
from tests.loyalty.test_merges import CARDS, merge_cards
from tests.loyalty.test_pos import open_with_points

CARD = "2000111"


def buy(
    client: TestClient,
    shop: Shop,
    pos_id: str,
    lines: list[dict[str, Any]],
    *,
    redeem: int = 0,
) -> dict[str, Any]:
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body(pos_id, CARD, lines, redeem=redeem),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def refund(client: TestClient, shop: Shop, original: str, **body: Any) -> Any:
    return client.post(
        "/v1/loyalty/pos/refund",
        headers=shop.pos,
        json={
            "original_pos_transaction_id": original,
            "store_id": "S1",
            "terminal_id": "T1",
            **body,
        },
    )


def cancel(client: TestClient, shop: Shop, original: str) -> Any:
    return client.post(
        "/v1/loyalty/pos/cancel",
        headers=shop.pos,
        json={"original_pos_transaction_id": original, "store_id": "S1", "terminal_id": "T1"},
    )


def balances(runtime: Runtime, customer_id: int) -> tuple[int, int]:
    with runtime.db.scope(readonly=True) as session:
        account = account_of(session, customer_id)
        return account.balance, account.pending


def test_a_receipt_refunded_in_full_by_a_line_then_an_amount_keeps_no_points(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """A receipt of two lines of 1,000.00 RUB, the first with a 300 % product multiplier,
    accrues 150 + 50 = 200 points. Refunding line 2 by lines (50 points back: right), then
    the rest (1,000.00, i.e. line 1) by amount takes back only 200 × 2000/2000 − 200 ×
    1000/2000 = 100 points, where line 1 earned 150: the whole receipt is refunded, yet the
    customer keeps 50 points, and no cancel can take them any more (409, "already refunded
    in full"). ``refunds._share`` computes an amount refund's proportion on the receipt's
    total, ignoring that line refunds before it reversed more or less than that share."""
    set_rules(client, shop, product_multipliers={"P1": 300})
    bought = buy(client, shop, "buy", receipt(100_000, 100_000))
    assert [x["accrued_points"] for x in bought["lines"]] == [150, 50]
    assert balances(runtime, anna) == (0, 200)

    first = refund(
        client, shop, "buy", pos_transaction_id="r1", lines=[{"line_no": 2, "amount": 100_000}]
    )
    assert first.status_code == 200, first.text
    assert first.json()["clawed_back_points"] == 50
    rest = refund(client, shop, "buy", pos_transaction_id="r2", amount=100_000)
    assert rest.status_code == 200, rest.text
    # everything the purchase did is reversed: the 150 line 1 earned come back too
    assert (rest.json()["clawed_back_points"], rest.json()["pending"]) == (150, 0)
    assert balances(runtime, anna) == (0, 0)
    assert_ledger_consistent(runtime)


def test_money_to_return_uses_the_value_the_points_had_when_spent(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """300 points at 1 rouble each pay 300.00 of a 1,200.00 receipt: the customer pays
    900.00 in money. The program then halves the point's value (``point_value`` 50). A full
    cancel gives the 300 points back and should return the 900.00 paid, but
    ``refunds._refund_out`` values the restored points at today's ``point_value``:
    120,000 − 300 × 50 = 105,000 minor units, 150.00 more money than the customer paid
    (on top of the 300 points)."""
    set_rules(client, shop, redeem_requires_code=False)
    open_with_points(client, shop, anna, 1000)
    bought = buy(client, shop, "buy", receipt(40_000, 40_000, 40_000), redeem=300)
    assert (bought["redeem_value"], bought["to_pay"]) == (30_000, 90_000)
    set_rules(client, shop, redeem_requires_code=False, point_value=50)
    r = cancel(client, shop, "buy")
    assert r.status_code == 200, r.text
    assert (r.json()["restored_points"], r.json()["money_to_return"]) == (300, 90_000)
    redeemed = [p for name, p in loyalty_events(runtime) if name == "Bonus Redeemed"]
    assert [(p["points"], p["value"]) for p in redeemed] == [(300, 30_000), (-300, -30_000)]


def test_accrued_points_that_expired_are_not_taken_back_a_second_time(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """A purchase accrues 50 points that expire unused a month later (an ``expiry`` entry
    already took them). The customer then earns 50 new points and returns the first purchase:
    the refund takes back 50 of the *new* points, so one accrual costs the customer 100.
    ``refunds.refund`` asks ``Book.take_back`` for the whole proportional claw-back whatever
    happened to the accrual lot; points that expired should not be clawed again (just as
    restored points whose lot expired expire at once)."""
    set_rules(client, shop, return_period_days=0, expiry_months=1)
    buy(client, shop, "old", receipt(100_000))
    clock.advance(timedelta(days=32))
    buy(client, shop, "new", receipt(100_000))  # the confirm expires the old lot first
    with runtime.db.scope(readonly=True) as session:
        lots = session.scalars(select(Lot).order_by(Lot.id)).all()
        assert [(lot.points, lot.remaining) for lot in lots] == [(50, 0), (50, 50)]
    r = cancel(client, shop, "old")
    assert r.status_code == 200, r.text
    assert (r.json()["clawed_back_points"], r.json()["balance"]) == (0, 50)
    assert_ledger_consistent(runtime)


def test_cancelling_a_merged_customers_purchase_takes_back_its_own_pending_points(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """Anna and Boris each hold 100 available points, then Anna buys for 1,000.00 (50
    pending) and Boris for 2,000.00 (100 pending); their cards are merged. Cancelling the
    merged customer's purchase should take back the pending points that purchase accrued
    (they moved to the survivor in a lot of their own). ``refunds.refund`` looks for the
    accrual lot by its old id (``first=accrual_lot``), which is not in the survivor's book,
    so ``Book.take_back`` takes the survivor's *available* points instead: the returned
    purchase's points stay pending and become available in 14 days, and undoing the merge
    later hands them back to the customer who returned the goods."""
    with runtime.db.scope() as session:
        boris = create_customer(session, card=CARDS["boris"], first_name="Boris")
    open_with_points(client, shop, anna, 100)
    open_with_points(client, shop, boris, 100, key="seed-b")
    buy(client, shop, "a1", receipt(100_000))
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body("b1", CARDS["boris"], receipt(200_000)),
    )
    assert r.status_code == 200, r.text
    merge_cards(runtime)
    with runtime.db.scope(readonly=True) as session:
        merge = session.scalars(select(CustomerMerge)).one()
        survivor, merged = merge.survivor_id, merge.merged_id
    assert balances(runtime, survivor) == (200, 150)
    merged_purchase, merged_accrual = ("a1", 50) if merged == anna else ("b1", 100)
    r = cancel(client, shop, merged_purchase)
    assert r.status_code == 200, r.text
    assert r.json()["clawed_back_points"] == merged_accrual
    assert (r.json()["balance"], r.json()["pending"]) == (200, 150 - merged_accrual)
    assert_ledger_consistent(runtime)


def test_a_refund_takes_back_its_accrual_from_the_points_it_gives_back(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """Anna earns 100 points on a 2,000.00 receipt, then spends 90 of them on a 1,000.00
    receipt that earns her 45 more (no return period). She returns the first receipt: 55 are
    taken back, 45 cannot be (she spent them), her balance is 0. Then she returns the second
    receipt: its cancel should give back the 90 points spent and take back the 45 it
    accrued, leaving 45. But ``refunds.refund`` computes the claw-back (``Book.take_back``)
    on the balance *before* the restored points are added ("the claw-back never takes the
    points this refund gives back"), so the 45 are reported as unrecovered although the same
    posting credits 90: she ends with 90 points after returning everything she bought."""
    set_rules(client, shop, return_period_days=0, redeem_requires_code=False)
    assert buy(client, shop, "buy", receipt(200_000))["balance"] == 100
    assert buy(client, shop, "spend", receipt(100_000), redeem=90)["balance"] == 55
    first = refund(client, shop, "buy", pos_transaction_id="ret", amount=200_000)
    assert first.status_code == 200, first.text
    assert (first.json()["unrecovered_points"], first.json()["balance"]) == (45, 0)
    second = cancel(client, shop, "spend")
    assert second.status_code == 200, second.text
    body = second.json()
    assert (
        body["restored_points"],
        body["clawed_back_points"],
        body["unrecovered_points"],
        body["balance"],
    ) == (90, 45, 0, 45)
    assert_ledger_consistent(runtime)


def test_a_refund_racing_a_merge_acts_on_the_survivors_account(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refund reads the purchase's account before it locks one: when a merge commits in
    between, the account it locks is merged already (its points gone to the survivor). It used
    to act on that account anyway: nothing there to take back (all unrecovered). The locked
    row now sends it on to the survivor's account. (The stale read is simulated: the account
    as it was before the merge.)"""
    set_rules(client, shop, return_period_days=0)
    with runtime.db.scope() as session:
        create_customer(session, card=CARDS["boris"], first_name="Boris")
    buy(client, shop, "a1", receipt(100_000))
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body("b1", CARDS["boris"], receipt(200_000)),
    )
    assert r.status_code == 200, r.text
    with runtime.db.scope(readonly=True) as session:
        stale = {a.id: store.account_row(session, a.id) for a in session.scalars(select(Account))}
    merge_cards(runtime)
    with runtime.db.scope(readonly=True) as session:
        merged = session.scalars(select(CustomerMerge)).one().merged_id
    purchase, accrued = ("a1", 50) if merged == anna else ("b1", 100)
    monkeypatch.setattr(refunds.store, "account_row", lambda _session, account: stale[account])
    r = cancel(client, shop, purchase)
    assert r.status_code == 200, r.text
    assert (r.json()["clawed_back_points"], r.json()["unrecovered_points"]) == (accrued, 0)
    assert_ledger_consistent(runtime)
