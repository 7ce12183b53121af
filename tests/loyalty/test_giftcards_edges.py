"""Gift cards at their edges: an expiry date too far ahead, unknown numbers at activation
(counted against the terminal), and the money under concurrent payments, retries and
refunds."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core.db import Database
from tactful.core.runtime import Runtime
from tactful.loyalty.models import GiftCard, GiftCardEntry
from tactful.loyalty.service import giftcards
from tests.loyalty.conftest import Shop
from tests.loyalty.test_concurrency import run_all, wide_db  # noqa: F401 (fixture)
from tests.loyalty.test_giftcards import entries, issue, pos


def errors(r: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = r.json()["errors"]
    return found


# -- gift cards ---------------------------------------------------------------------------------


def test_a_gift_card_expiry_on_the_last_representable_day_is_answered_422_not_500(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    """giftcards.issue_gift_cards computes the end of the expiry day as ``datetime(expires_on)
    + timedelta(days=1)``: for ``expires_on`` 9999-12-31 (a valid ``date`` the schema accepts)
    that overflows and the request fails with OverflowError (500) on both databases instead
    of a 422 naming ``expires_on``."""
    r = client.post(
        "/v1/loyalty/gift-cards",
        headers=shop.admin,
        json={"amount": 100_000, "expires_on": "9999-12-31"},
    )
    assert r.status_code == 422
    assert [e["field"] for e in errors(r)] == ["expires_on"]
    with runtime.db.scope(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(GiftCard)) == 0


def test_activating_unknown_numbers_counts_against_the_terminal(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    """The module's promise is that a terminal "pays for unknown card numbers, so numbers
    cannot be enumerated" (20 misses an hour, then every PIN is refused with 429). But
    ``/gift-cards/activate`` (giftcards.activate_gift_card -> _card) answers 404 for an unknown
    number and 409 'already active' / 200 for a real one without counting anything: 25 unknown
    numbers tried at T1 leave the terminal unlimited (the balance check after them gives 200,
    not 429), so activate is an unlimited oracle for valid card numbers."""
    [card] = issue(client, shop)
    sold = pos(client, shop, "activate", number=card["number"], pos_transaction_id="sale")
    assert sold.status_code == 200
    for n in range(25):
        miss = pos(client, shop, "activate", number=f"99999999{n:08d}", pos_transaction_id=f"x{n}")
        assert miss.status_code in (404, 429)
    stopped = pos(client, shop, "balance", number=card["number"], pin=card["pin"])
    assert stopped.status_code == 429
    assert errors(stopped)[0]["field"] == "terminal_id"


@pytest.mark.slow
def test_gift_card_money_under_concurrent_payments_retries_and_refunds(
    runtime: Runtime,
    shop: Shop,
    wide_db: Database,  # noqa: F811
) -> None:
    """Eight payments of 40 % at once: exactly two succeed and the card never goes below zero;
    eight retries of one POS id: one entry; eight full refunds of one payment at once: one
    succeeds, the card holds what the entries add up to (both databases)."""
    ws = shop.tenant.workspace_id
    with runtime.db.scope() as session:
        [issued] = giftcards.issue_gift_cards(
            session, workspace_id=ws, amount=1_000, count=1, actor="test"
        )
        number, pin = issued.card.number, issued.pin
        giftcards.activate_gift_card(
            session,
            workspace_id=ws,
            number=number,
            pos_transaction_id="sale",
            store_id="S1",
            terminal_id="T1",
            actor="test",
        )

    def pay(pos_id: str, amount: int) -> Any:
        with wide_db.scope() as session:
            out = giftcards.redeem_gift_card(
                session,
                workspace_id=ws,
                number=number,
                pin=pin,
                amount=amount,
                pos_transaction_id=pos_id,
                store_id="S1",
                terminal_id="T1",
                actor="test",
            )
            assert out.refusal is None
            return out.replayed

    def refund(i: int, original: str) -> Any:
        with wide_db.scope() as session:
            return giftcards.refund_gift_card(
                session,
                workspace_id=ws,
                pos_transaction_id=f"ret-{i}",
                original_pos_transaction_id=original,
                amount=400,
                store_id="S1",
                terminal_id="T1",
                actor="test",
            ).entry

    paid = run_all(8, lambda i: pay(f"pay-{i}", 400))
    assert sum(1 for p in paid if p is False) == 2
    assert sorted(type(p).__name__ for p in paid if p is not False) == ["Conflict"] * 6
    retried = run_all(8, lambda i: pay("retry", 100))
    assert sorted(map(str, retried)) == ["False"] + ["True"] * 7
    first_paid = f"pay-{paid.index(False)}"
    refunds = run_all(8, lambda i: refund(i, first_paid))
    ok = [r for r in refunds if isinstance(r, GiftCardEntry)]
    assert len(ok) == 1
    assert sorted(type(r).__name__ for r in refunds if r not in ok) == ["ValidationFailed"] * 7
    with runtime.db.scope(readonly=True) as session:
        card = session.scalars(select(GiftCard)).one()
        total = session.scalar(select(func.sum(GiftCardEntry.amount)))
        # 1000 activated, 2 x 400 paid, 100 retried once, 400 refunded
        assert card.balance == total == 500
    assert entries(runtime) == 1 + 2 + 1 + 1
