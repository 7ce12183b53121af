"""Gift cards: issue (PIN hashed, shown once), activate, balance with a PIN, redeem, refund;
wrong PINs limited per card and per terminal across requests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.loyalty.models import FailedAttempts, GiftCard, GiftCardEntry
from tactful.loyalty.service import giftcards
from tests.loyalty.conftest import Shop, loyalty_events


def issue(client: TestClient, shop: Shop, **body: Any) -> list[dict[str, Any]]:
    r = client.post("/v1/loyalty/gift-cards", headers=shop.admin, json={"amount": 300_000, **body})
    assert r.status_code == 201, r.text
    cards: list[dict[str, Any]] = r.json()
    return cards


def pos(client: TestClient, shop: Shop, path: str, **body: Any) -> Any:
    return client.post(
        f"/v1/loyalty/gift-cards/{path}",
        headers=shop.pos,
        json={"store_id": "S1", "terminal_id": "T1", **body},
    )


def entries(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(GiftCardEntry)) or 0)


def test_gift_card_life(client: TestClient, runtime: Runtime, shop: Shop, anna: int) -> None:
    [card] = issue(client, shop, customer_id=anna)
    number, pin = card["number"], card["pin"]
    assert (len(number), len(pin), card["amount"], card["currency"]) == (16, 6, 300_000, "RUB")
    with runtime.db.scope(readonly=True) as session:
        stored = session.scalars(select(GiftCard)).one()
        assert stored.pin_hash.startswith("$argon2id$")
        assert stored.pin_hash != pin
    # not spendable before it is sold
    early = pos(client, shop, "redeem", number=number, pin=pin, amount=100, pos_transaction_id="x")
    assert early.status_code == 409
    activated = pos(client, shop, "activate", number=number, pos_transaction_id="sale-1")
    assert (activated.json()["balance"], activated.json()["replayed"]) == (300_000, False)
    assert (
        pos(client, shop, "activate", number=number, pos_transaction_id="sale-1").json()["replayed"]
        is True
    )

    balance = pos(client, shop, "balance", number=number, pin=pin)
    assert balance.json() == {
        "number": number,
        "status": "active",
        "balance": 300_000,
        "currency": "RUB",
        "expires_at": None,
    }
    paid = pos(
        client, shop, "redeem", number=number, pin=pin, amount=120_000, pos_transaction_id="buy"
    )
    assert (paid.json()["balance"], paid.json()["amount"]) == (180_000, -120_000)
    replay = pos(
        client, shop, "redeem", number=number, pin=pin, amount=120_000, pos_transaction_id="buy"
    )
    assert (replay.json()["replayed"], replay.json()["balance"]) == (True, 180_000)
    count = entries(runtime)
    over = pos(
        client, shop, "redeem", number=number, pin=pin, amount=180_001, pos_transaction_id="b2"
    )
    assert over.status_code == 409
    assert over.json()["errors"][0]["field"] == "amount"
    assert entries(runtime) == count

    back = pos(
        client,
        shop,
        "refund",
        pos_transaction_id="ret-1",
        original_pos_transaction_id="buy",
        amount=20_000,
    )
    assert back.json()["balance"] == 200_000
    too_much = pos(
        client,
        shop,
        "refund",
        pos_transaction_id="ret-2",
        original_pos_transaction_id="buy",
        amount=100_001,
    )
    assert too_much.status_code == 422
    assert too_much.json()["detail"] == "refunds would total 120001, more than the 120000 paid"
    assert entries(runtime) == count + 1
    used = [p for n, p in loyalty_events(runtime) if n == "Gift Card Used"]
    assert [(p["amount"], p["balance"], p["pos_transaction_id"]) for p in used] == [
        (120_000, 180_000, "buy")
    ]
    with runtime.db.scope(readonly=True) as session:
        stored = session.scalars(select(GiftCard)).one()
        ledger_sum = session.scalar(select(func.sum(GiftCardEntry.amount)))
        assert stored.balance == ledger_sum == 200_000


def test_wrong_pins_are_limited_per_card_and_terminal(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    first, second = issue(client, shop, count=2)
    for card in (first, second):
        pos(
            client,
            shop,
            "activate",
            number=card["number"],
            pos_transaction_id=f"s-{card['number']}",
        )
    wrong = "000000" if first["pin"] != "000000" else "111111"
    for _ in range(5):
        r = pos(client, shop, "balance", number=first["number"], pin=wrong)
        assert r.status_code == 403
        assert r.json()["errors"] == [{"field": "pin", "reason": "the PIN is wrong"}]
    # the sixth try is refused even with the right PIN, and redeeming is refused too
    locked = pos(client, shop, "balance", number=first["number"], pin=first["pin"])
    assert locked.status_code == 429
    assert locked.json()["errors"][0]["field"] == "pin"
    count = entries(runtime)
    paying = pos(
        client,
        shop,
        "redeem",
        number=first["number"],
        pin=first["pin"],
        amount=1,
        pos_transaction_id="p",
    )
    assert paying.status_code == 429
    assert entries(runtime) == count
    # the other card still works from another terminal
    ok = client.post(
        "/v1/loyalty/gift-cards/balance",
        headers=shop.pos,
        json={
            "number": second["number"],
            "pin": second["pin"],
            "store_id": "S1",
            "terminal_id": "T9",
        },
    )
    assert ok.json()["balance"] == 300_000
    # a terminal guessing numbers is stopped after 20 misses in the hour
    for n in range(15):
        r = pos(client, shop, "balance", number=f"99999999{n:08d}", pin="123456")
        assert r.status_code == 404
    stopped = pos(client, shop, "balance", number=second["number"], pin=second["pin"])
    assert stopped.status_code == 429
    assert stopped.json()["errors"][0]["field"] == "terminal_id"
    # an hour after the window ended its refused attempts are forgotten; the current stay
    with runtime.db.scope() as session:
        assert giftcards.prune_failures(session, now=clock.now()) == 0
        assert giftcards.prune_failures(session, now=clock.now() + timedelta(hours=2)) == 2
        assert session.scalar(select(func.count()).select_from(FailedAttempts)) == 0
