"""The POS protocol over HTTP: identify → calculate → confirm → refund/cancel, idempotency,
the redemption code, refusals that write nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tactful.core import clock, db, storable
from tactful.core.runtime import Runtime
from tactful.loyalty.service.codes import make_code
from tests.loyalty.conftest import (
    T0,
    Shop,
    assert_ledger_consistent,
    confirm_body,
    create_customer,
    ledger_state,
    loyalty_events,
    receipt,
    set_rules,
)

CARD = "2000111"


def enrol_device(client: TestClient, shop: Shop, customer_id: int) -> dict[str, Any]:
    r = client.post(
        "/v1/loyalty/devices",
        headers=shop.admin,
        json={"customer_id": customer_id, "label": "phone"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["redemption_code"] == {
        "interval": 30,
        "digits": 8,
        "algorithm": "SHA1",
        "prefix": "R",
    }
    return body


def redeem_code(device: dict[str, Any]) -> str:
    return make_code(device["secret"], device["ref"], "R", clock.now())


def give_points(
    client: TestClient, shop: Shop, account_id: int, points: int, key: str = "seed"
) -> None:
    r = client.post(
        f"/v1/loyalty/accounts/{account_id}/adjustments",
        headers=shop.admin,
        json={"points": points, "reason": "opening balance", "idempotency_key": key},
    )
    assert r.status_code == 201, r.text


def confirm(client: TestClient, shop: Shop, body: dict[str, Any]) -> Any:
    return client.post("/v1/loyalty/pos/confirm", headers=shop.pos, json=body)


def open_with_points(
    client: TestClient, shop: Shop, customer_id: int, points: int, key: str = "seed"
) -> int:
    r = client.post(
        f"/v1/loyalty/programs/{shop.program_id}/accounts",
        headers=shop.admin,
        json={"customer_id": customer_id},
    )
    assert r.status_code == 200, r.text
    account_id: int = r.json()["id"]
    give_points(client, shop, account_id, points, key)
    return account_id


def test_confirm_accrues_pending_points_and_replay_changes_nothing(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    body = confirm_body("pos-1", CARD, receipt(100_000, 50_000))
    first = confirm(client, shop, body)
    assert first.status_code == 200, first.text
    result = first.json()
    assert (result["replayed"], result["accrued_points"], result["balance"], result["pending"]) == (
        False,
        75,
        0,
        75,
    )
    assert result["accrual_pending_until"] == "2026-03-16T09:00:00Z"
    before = ledger_state(runtime)
    events_before = loyalty_events(runtime)

    again = confirm(client, shop, body)
    assert again.status_code == 200
    assert again.json() == {**result, "replayed": True}
    assert ledger_state(runtime) == before
    assert loyalty_events(runtime) == events_before

    other = confirm(client, shop, confirm_body("pos-1", CARD, receipt(100_000)))
    assert other.status_code == 409
    assert other.json()["errors"][0]["field"] == "pos_transaction_id"
    assert ledger_state(runtime) == before
    # the same receipt for another customer is no replay (the first answer holds Anna's
    # balance): refused, and nothing is written (no account opened for him either)
    with runtime.db.scope() as session:
        create_customer(session, card="2000999", first_name="Boris")
    foreign = confirm(client, shop, {**body, "customer": {"kind": "card", "value": "2000999"}})
    assert foreign.status_code == 409, foreign.text
    assert foreign.json()["errors"] == [
        {
            "field": "pos_transaction_id",
            "reason": "this pos_transaction_id was already confirmed for another customer",
        }
    ]
    assert ledger_state(runtime) == before
    assert events_before == [
        (
            "Bonus Accrued",
            {
                "program_id": shop.program_id,
                "transaction_id": result["transaction_id"],
                "receipt_id": "R-pos-1",
                "pos_transaction_id": "pos-1",
                "store_id": "S1",
                "points": 75,
                "pending": True,
            },
        )
    ]
    assert_ledger_consistent(runtime)


def test_identify_by_card_phone_and_code(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    account_id = open_with_points(client, shop, anna, 250)
    accrual = make_code(device["secret"], device["ref"], "A", clock.now())
    for kind, value in (("card", CARD), ("phone", "8 916 123-45-67"), ("code", accrual)):
        r = client.post(
            "/v1/loyalty/pos/identify",
            headers=shop.pos,
            json={
                "customer": {"kind": kind, "value": value},
                "store_id": "S1",
                "terminal_id": "T1",
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["customer_id"], body["account_id"], body["balance"], body["spendable"]) == (
            anna,
            account_id,
            250,
            250,
        )
        assert body["redeem_code_valid"] is False
        assert body["tier"] == {
            "key": "base",
            "name": "Base",
            "accrual_bp": 500,
            "redeem_cap_bp": 3000,
            "next_tier": "silver",
            "spend_to_next_tier": 3_000_000,
            "rolling_spend": 0,
        }
    unknown = client.post(
        "/v1/loyalty/pos/identify",
        headers=shop.pos,
        json={
            "customer": {"kind": "card", "value": "999999"},
            "store_id": "S1",
            "terminal_id": "T1",
        },
    )
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["field"] == "customer.value"
    no_key = client.post(
        "/v1/loyalty/pos/identify",
        json={"customer": {"kind": "card", "value": CARD}, "store_id": "S1", "terminal_id": "T1"},
    )
    assert no_key.status_code == 401


@pytest.mark.parametrize("step", ["identify", "calculate"])
def test_a_quote_does_not_wait_for_a_writer(
    client: TestClient,
    runtime: Runtime,
    shop: Shop,
    anna: int,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    """Identify and calculate write nothing and run in a read-only scope: on SQLite they read
    beside a transaction holding the write lock instead of queueing for the lock (a
    read-write scope would wait out the busy timeout, shortened here, and fail);
    PostgreSQL's reads never wait for writers."""
    monkeypatch.setattr(db, "SQLITE_BUSY_SECONDS", 2)
    open_with_points(client, shop, anna, 500)
    body = {
        "customer": {"kind": "card", "value": CARD},
        "lines": receipt(100_000),
        "store_id": "S1",
        "terminal_id": "T1",
    }
    if step == "identify":
        del body["lines"]
    path = f"/v1/loyalty/pos/{step}"
    alone = client.post(path, headers=shop.pos, json=body)
    assert alone.status_code == 200, alone.text
    with runtime.db.scope() as writer:  # a confirm elsewhere, mid-transaction
        writer.execute(text("UPDATE loyalty_accounts SET updated_at = updated_at"))
        beside = client.post(path, headers=shop.pos, json=body)
    assert beside.status_code == 200, beside.text
    assert beside.json() == alone.json()


def test_redemption_with_the_app_code(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    account_id = open_with_points(client, shop, anna, 500)
    code = redeem_code(device)
    calc = client.post(
        "/v1/loyalty/pos/calculate",
        headers=shop.pos,
        json={
            "customer": {"kind": "card", "value": CARD},
            "lines": receipt(100_000),
            "redeem_points": 100,
            "redeem_code": code,
            "store_id": "S1",
            "terminal_id": "T1",
        },
    )
    assert calc.status_code == 200, calc.text
    assert {
        k: calc.json()[k] for k in ("max_redeemable", "redeem_value", "to_pay", "accrued_points")
    } == {
        "max_redeemable": 300,
        "redeem_value": 10_000,
        "to_pay": 90_000,
        "accrued_points": 45,
    }
    done = confirm(
        client, shop, confirm_body("pos-2", CARD, receipt(100_000), redeem=100, code=code)
    )
    assert done.status_code == 200, done.text
    assert {k: done.json()[k] for k in ("redeemed_points", "to_pay", "balance", "pending")} == {
        "redeemed_points": 100,
        "to_pay": 90_000,
        "balance": 400,
        "pending": 45,
    }
    names = [name for name, _ in loyalty_events(runtime)]
    assert names == ["Bonus Accrued", "Bonus Accrued", "Bonus Redeemed"]
    # the code as the identifier both names the customer and authorises spending
    clock.advance(timedelta(seconds=30))
    fresh = redeem_code(device)
    body = confirm_body("pos-3", CARD, receipt(10_000), redeem=30)
    body["customer"] = {"kind": "code", "value": fresh}
    by_code = confirm(client, shop, body)
    assert by_code.status_code == 200, by_code.text
    assert by_code.json()["balance"] == 370
    # and a replay of that confirm succeeds although the code is now used
    assert confirm(client, shop, body).json()["replayed"] is True
    detail = client.get(f"/v1/loyalty/accounts/{account_id}", headers=shop.admin).json()
    assert [(lot["points"], lot["remaining"], lot["state"]) for lot in detail["lots"]] == [
        (500, 370, "available"),
        (45, 45, "pending"),
        (3, 3, "pending"),
    ]
    assert_ledger_consistent(runtime)


def test_refused_codes_write_nothing(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    open_with_points(client, shop, anna, 500)
    with runtime.db.scope() as session:
        boris = create_customer(session, card="2000222", first_name="Boris")
    boris_device = enrol_device(client, shop, boris)
    used = redeem_code(device)
    assert (
        confirm(
            client, shop, confirm_body("ok", CARD, receipt(10_000), redeem=10, code=used)
        ).status_code
        == 200
    )
    before = ledger_state(runtime)

    def refused(pos_id: str, code: str | None, expected: str, field: str = "redeem_code") -> None:
        r = confirm(client, shop, confirm_body(pos_id, CARD, receipt(10_000), redeem=10, code=code))
        assert r.status_code == 403, r.text
        assert expected in r.json()["detail"]
        assert r.json()["errors"][0]["field"] == field
        assert ledger_state(runtime) == before

    refused("reused", used, "already used")
    refused("none", None, "needs the redemption code")
    refused("foreign", redeem_code(boris_device), "another customer")
    refused("accrual", make_code(device["secret"], device["ref"], "A", clock.now()), "accrual code")
    clock.advance(timedelta(seconds=31))
    late = redeem_code(device)  # the step starting at T0 + 30 s: good until T0 + 90 s
    clock.advance(timedelta(seconds=58))
    calc = client.post(
        "/v1/loyalty/pos/calculate",
        headers=shop.pos,
        json={
            "customer": {"kind": "card", "value": CARD},
            "lines": receipt(10_000),
            "redeem_points": 10,
            "redeem_code": late,
            "store_id": "S1",
            "terminal_id": "T1",
        },
    )
    assert calc.status_code == 200, calc.text
    clock.advance(timedelta(seconds=2))
    refused("expired", late, "expired or is wrong")
    # a photographed code of a revoked phone is worthless
    clock.advance(timedelta(seconds=5))
    fresh = redeem_code(device)
    assert (
        client.delete(f"/v1/loyalty/devices/{device['id']}", headers=shop.admin).status_code == 200
    )
    before = ledger_state(runtime)
    refused("revoked", fresh, "revoked")
    bad = confirm(client, shop, confirm_body("bad", CARD, receipt(10_000), redeem=10, code="R123"))
    assert bad.status_code == 422
    assert ledger_state(runtime) == before


def test_caps_balance_and_blocked_accounts_are_refused(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    account_id = open_with_points(client, shop, anna, 200)
    before = ledger_state(runtime)

    def attempt(redeem: int, amount: int = 100_000) -> Any:
        return confirm(
            client,
            shop,
            confirm_body(
                f"p{redeem}", CARD, receipt(amount), redeem=redeem, code=redeem_code(device)
            ),
        )

    over_cap = attempt(301)
    assert over_cap.status_code == 422
    assert over_cap.json()["errors"] == [
        {
            "field": "redeem_points",
            "reason": "at most 300 points may pay for this receipt (30% of 100000)",
        }
    ]
    over_balance = attempt(201, 1_000_000)
    assert over_balance.status_code == 409
    assert over_balance.json()["detail"] == "the account has 200 points available; 201 requested"
    assert ledger_state(runtime) == before
    assert (
        client.post(
            f"/v1/loyalty/accounts/{account_id}/block",
            headers=shop.admin,
            json={"reason": "stolen card"},
        ).status_code
        == 200
    )
    blocked = attempt(10)
    assert blocked.status_code == 403
    assert "blocked (stolen card)" in blocked.json()["detail"]
    # accrual still works on a blocked account
    assert confirm(client, shop, confirm_body("acc", CARD, receipt(20_000))).json()["pending"] == 10
    assert (
        client.post(
            f"/v1/loyalty/accounts/{account_id}/unblock",
            headers=shop.admin,
            json={"reason": "card found"},
        ).status_code
        == 200
    )
    assert attempt(10).status_code == 200


def purchase_with_redemption(
    client: TestClient, shop: Shop, device: dict[str, Any]
) -> dict[str, Any]:
    # 3 lines, 300 points spent (100 per line), 5 % accrued on what was paid in money
    r = confirm(
        client,
        shop,
        confirm_body(
            "buy", CARD, receipt(40_000, 40_000, 40_000), redeem=300, code=redeem_code(device)
        ),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert (body["redeemed_points"], body["accrued_points"], body["balance"], body["pending"]) == (
        300,
        45,
        700,
        45,
    )
    return body


def refund(client: TestClient, shop: Shop, **body: Any) -> Any:
    return client.post(
        "/v1/loyalty/pos/refund",
        headers=shop.pos,
        json={"original_pos_transaction_id": "buy", "store_id": "S1", "terminal_id": "T1", **body},
    )


def test_partial_refunds_reverse_in_proportion_and_cancel_the_rest(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    open_with_points(client, shop, anna, 1000)
    purchase_with_redemption(client, shop, device)

    line = refund(
        client, shop, pos_transaction_id="ret-1", lines=[{"line_no": 2, "amount": 40_000}]
    )
    assert line.status_code == 200, line.text
    assert {
        k: line.json()[k]
        for k in (
            "refunded_amount",
            "restored_points",
            "clawed_back_points",
            "money_to_return",
            "balance",
            "pending",
        )
    } == {
        "refunded_amount": 40_000,
        "restored_points": 100,
        "clawed_back_points": 15,
        "money_to_return": 30_000,
        "balance": 800,
        "pending": 30,
    }
    replay = refund(
        client, shop, pos_transaction_id="ret-1", lines=[{"line_no": 2, "amount": 40_000}]
    )
    assert replay.json() == {**line.json(), "replayed": True}

    before = ledger_state(runtime)
    too_much = refund(client, shop, pos_transaction_id="ret-2", lines=[{"line_no": 2, "amount": 1}])
    assert too_much.status_code == 422
    assert too_much.json()["errors"][0]["field"] == "lines[0].amount"
    larger = refund(client, shop, pos_transaction_id="ret-3", amount=80_001)
    assert larger.status_code == 422
    assert larger.json()["detail"] == "refunds would total 120001, more than the receipt's 120000"
    unknown = refund(client, shop, pos_transaction_id="ret-4", lines=[{"line_no": 9, "amount": 1}])
    assert unknown.status_code == 422
    assert ledger_state(runtime) == before

    part = refund(client, shop, pos_transaction_id="ret-5", amount=20_000)
    assert {
        k: part.json()[k] for k in ("restored_points", "clawed_back_points", "balance", "pending")
    } == {
        "restored_points": 50,
        "clawed_back_points": 7,
        "balance": 850,
        "pending": 23,
    }
    cancel = client.post(
        "/v1/loyalty/pos/cancel", headers=shop.pos, json={"original_pos_transaction_id": "buy"}
    )
    assert cancel.status_code == 200, cancel.text
    # everything the purchase did is reversed exactly: 300 spent and 45 accrued
    assert {
        k: cancel.json()[k]
        for k in ("refunded_amount", "restored_points", "clawed_back_points", "balance", "pending")
    } == {
        "refunded_amount": 60_000,
        "restored_points": 150,
        "clawed_back_points": 23,
        "balance": 1000,
        "pending": 0,
    }
    again = client.post(
        "/v1/loyalty/pos/cancel", headers=shop.pos, json={"original_pos_transaction_id": "buy"}
    )
    assert again.json()["replayed"] is True
    after_cancel = ledger_state(runtime)
    late = refund(client, shop, pos_transaction_id="ret-6", amount=1)
    assert late.status_code == 422
    assert ledger_state(runtime) == after_cancel
    assert_ledger_consistent(runtime)


def test_refund_after_the_accrual_was_spent_takes_back_what_it_can(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(client, shop, return_period_days=0, redeem_requires_code=False)
    program = client.get(f"/v1/loyalty/programs/{shop.program_id}", headers=shop.admin).json()
    assert (program["version"], program["rules"]["return_period_days"]) == (2, 0)
    audit = client.get(
        "/v1/audit-log", headers=shop.admin, params={"action": "loyalty.rules_changed"}
    ).json()
    assert [a["details"]["version"] for a in audit] == [2]
    assert (
        confirm(client, shop, confirm_body("buy", CARD, receipt(200_000))).json()["balance"] == 100
    )
    spend = confirm(client, shop, confirm_body("spend", CARD, receipt(100_000), redeem=90))
    # 100 - 90 spent + 45 accrued on the 910.00 RUB paid (no return period here)
    assert spend.json()["balance"] == 55
    r = refund(client, shop, pos_transaction_id="ret", amount=200_000)
    assert r.status_code == 200, r.text
    body = r.json()
    # 100 accrued; the account holds 10 + 45 = 55 now: all of it is taken, 45 cannot be
    assert (body["clawed_back_points"], body["unrecovered_points"], body["balance"]) == (55, 45, 0)
    assert_ledger_consistent(runtime)


def test_reports_of_pos_activity(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    open_with_points(client, shop, anna, 1000)
    purchase_with_redemption(client, shop, device)
    liability = client.get(
        "/v1/loyalty/reports/liability",
        headers=shop.admin,
        params={"program_id": shop.program_id, "months": 13},
    )
    assert liability.status_code == 200, liability.text
    body = liability.json()
    assert (body["available_points"], body["pending_points"], body["outstanding_value"]) == (
        700,
        45,
        74_500,
    )
    profile = {b["label"]: b["points"] for b in body["expiry_profile"] if b["points"]}
    assert profile == {"2027-03": 745}
    activity = client.get(
        "/v1/loyalty/reports/activity",
        headers=shop.admin,
        params={
            "program_id": shop.program_id,
            "start": T0.isoformat(),
            "end": (T0 + timedelta(days=1)).isoformat(),
            "period": "day",
        },
    ).json()
    assert activity["totals"] | {"starts_at": None, "ends_at": None} == {
        "starts_at": None,
        "ends_at": None,
        "accrued": 45,
        "bonus": 0,
        "redeemed": 300,
        "expired": 0,
        "adjusted": 1000,
    }
    assert [p["starts_at"] for p in activity["periods"]] == [
        "2026-03-01T21:00:00Z",
        "2026-03-02T21:00:00Z",
    ]
    bad = client.get(
        "/v1/loyalty/reports/activity",
        headers=shop.admin,
        params={"program_id": shop.program_id, "start": T0.isoformat(), "end": T0.isoformat()},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "end"
    verify = client.get(
        "/v1/loyalty/verify", headers=shop.admin, params={"program_id": shop.program_id}
    )
    assert verify.json() == {"accounts": 1, "mismatches": []}


def test_a_value_no_database_can_store_is_refused_with_its_field_and_nothing_written(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """A NUL character or an integer beyond 64 bits used to fail the confirm at the database
    (a 500 on PostgreSQL, and on SQLite for the integer)."""
    before = ledger_state(runtime)
    faults = [
        ({"store_id": "S\x001"}, "store_id", storable.NUL_REASON),
        ({"pos_transaction_id": "a\x00b"}, "pos_transaction_id", storable.NUL_REASON),
        ({"program_id": 2**63}, "program_id", storable.RANGE_REASON),
        # validation reads such text as the integer it names
        ({"program_id": "9223372036854775808"}, "program_id", storable.RANGE_REASON),
        ({"program_id": "1_000_000_000_000_000_000_000"}, "program_id", storable.RANGE_REASON),
    ]
    for change, field, reason in faults:
        body = {**confirm_body("p1", "2000111", receipt(10_000)), **change}
        r = client.post("/v1/loyalty/pos/confirm", headers=shop.pos, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [{"field": field, "reason": reason}]
    lines = receipt(10_000)
    lines[0]["product_id"] = "P\x00"
    r = client.post(
        "/v1/loyalty/pos/calculate",
        headers=shop.pos,
        json={
            "customer": {"kind": "card", "value": "2000111"},
            "lines": lines,
            "store_id": "S1",
            "terminal_id": "T1",
        },
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "lines[0].product_id", "reason": storable.NUL_REASON}]
    assert ledger_state(runtime) == before
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body("p1", "2000111", receipt(10_000)),
    )
    assert (r.status_code, r.json()["accrued_points"]) == (200, 5)


def test_identify_does_not_call_a_used_redemption_code_valid(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """A redemption code already spent (a replayed or photographed one) is not reported valid:
    identify judged the code's kind only, while calculate and confirm refuse it."""
    set_rules(client, shop, welcome_bonus=100)
    device = enrol_device(client, shop, anna)
    code = make_code(device["secret"], device["ref"], "R", clock.now())
    spent = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body("p1", "2000111", receipt(10_000), redeem=10, code=code),
    )
    assert spent.status_code == 200, spent.text
    named = {"customer": {"kind": "code", "value": code}, "store_id": "S1", "terminal_id": "T1"}
    quote = client.post(
        "/v1/loyalty/pos/calculate",
        headers=shop.pos,
        json={**named, "lines": receipt(10_000), "redeem_points": 10},
    )
    assert (quote.status_code, quote.json()["errors"][0]["reason"]) == (
        403,
        "the redemption code was already used",
    )
    identified = client.post("/v1/loyalty/pos/identify", headers=shop.pos, json=named)
    assert identified.status_code == 200
    assert (identified.json()["customer_id"], identified.json()["redeem_code_valid"]) == (
        anna,
        False,
    )


def test_the_activity_report_accepts_exactly_400_periods(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    """docs/loyalty.md: "whole periods, up to 400". 400 local days were refused (the number of
    boundaries, one more, was compared with the limit); 401 still are."""
    start = datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Moscow"))
    for days, status in ((400, 200), (401, 422)):
        r = client.get(
            "/v1/loyalty/reports/activity",
            headers=shop.admin,
            params={
                "program_id": shop.program_id,
                "start": start.isoformat(),
                "end": (start + timedelta(days=days)).isoformat(),
                "period": "day",
            },
        )
        assert r.status_code == status, r.text
    assert r.json()["errors"][0]["field"] == "period"
