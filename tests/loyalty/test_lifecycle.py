"""Points over time: pending accruals become available, points expire (earliest first, as
their own entries), tiers go up at once and down only at a review, birthday and welcome
bonuses, merged customers' accounts, the customer timeline."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core import clock
from tactful.core.jobs.context import JobContext, MonitorContext
from tactful.core.jobs.models import Job
from tactful.core.jobs.registry import JOBS, MONITORS
from tactful.core.runtime import Runtime
from tactful.loyalty.models import Account, LedgerTransaction, Lot, TierChange
from tests.loyalty.conftest import (
    T0,
    Shop,
    account_of,
    assert_ledger_consistent,
    confirm_body,
    create_customer,
    link_cards,
    loyalty_events,
    receipt,
    set_rules,
)

CARD = "2000111"


def run_monitor(runtime: Runtime, name: str) -> None:
    """Run one loyalty monitor, then every job it enqueued."""
    with runtime.db.scope() as session:
        MONITORS[name].fn(MonitorContext(runtime, session, clock.now()))
    run_jobs(runtime, name.replace("loyalty.", ""))


def run_jobs(runtime: Runtime, _label: str = "") -> int:
    """Run queued loyalty jobs (only ours: other features' jobs are their tests' business)."""
    with runtime.db.scope() as session:
        jobs = list(
            session.scalars(
                select(Job)
                .where(Job.name.like("loyalty.%"), Job.status == "queued")
                .order_by(Job.id)
            )
        )
        for job in jobs:
            JOBS[job.name].handler(JobContext(runtime, job.id, job.name, job.payload, 1, session))
            job.status = "done"
        return len(jobs)


def confirm(client: TestClient, shop: Shop, pos_id: str, *amounts: int, redeem: int = 0) -> Any:
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body(pos_id, CARD, receipt(*amounts), redeem=redeem),
    )
    assert r.status_code == 200, r.text
    return r.json()


def balances(runtime: Runtime, customer_id: int) -> tuple[int, int]:
    with runtime.db.scope(readonly=True) as session:
        account = account_of(session, customer_id)
        return account.balance, account.pending


def kinds(runtime: Runtime) -> list[str]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(select(LedgerTransaction.kind).order_by(LedgerTransaction.id)))


def test_pending_points_become_available_then_expire_earliest_first(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(client, shop, redeem_requires_code=False)
    confirm(client, shop, "p1", 100_000)  # 50 points, pending until T0 + 14 days
    clock.advance(timedelta(days=13, hours=23))
    run_monitor(runtime, "loyalty.due_lots")
    assert balances(runtime, anna) == (0, 50)
    clock.advance(timedelta(hours=1))
    run_monitor(runtime, "loyalty.due_lots")
    assert balances(runtime, anna) == (50, 0)
    clock.advance(timedelta(days=30))
    confirm(client, shop, "p2", 60_000)  # 30 more, a month younger
    clock.advance(timedelta(days=15))
    run_monitor(runtime, "loyalty.due_lots")
    assert balances(runtime, anna) == (80, 0)
    # a spend of 60 empties the older lot first, then takes 10 of the younger one
    spent = confirm(client, shop, "p3", 20_000, redeem=60)
    assert (spent["balance"], spent["pending"]) == (20, 7)
    with runtime.db.scope(readonly=True) as session:
        lots = session.scalars(select(Lot).order_by(Lot.id)).all()
        assert [(lot.points, lot.remaining) for lot in lots] == [(50, 0), (30, 20), (7, 7)]
    # twelve months after p2 (T0 + 44 days) its remainder expires, in its own entry and event
    clock.advance(timedelta(days=350, hours=1))
    run_monitor(runtime, "loyalty.due_lots")
    assert balances(runtime, anna) == (7, 0)
    assert kinds(runtime) == [
        "purchase",
        "activation",
        "purchase",
        "activation",
        "purchase",
        "activation",
        "expiry",
    ]
    assert loyalty_events(runtime)[-1] == (
        "Bonus Expired",
        {"program_id": shop.program_id, "points": 20, "transaction_id": 7, "lot_id": 2},
    )
    # the jobs are keyed: running the monitor again enqueues nothing new
    run_monitor(runtime, "loyalty.due_lots")
    assert len(kinds(runtime)) == 7
    assert_ledger_consistent(runtime)


def test_tier_up_at_once_and_down_only_at_the_review(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    up = confirm(client, shop, "big", 3_000_000)
    assert (up["tier"], up["tier_changed"], up["accrued_points"]) == ("silver", True, 1500)
    with runtime.db.scope(readonly=True) as session:
        account = account_of(session, anna)
        assert account.tier_review_at == datetime(2026, 3, 31, 21, tzinfo=UTC)
    changed = [props for name, props in loyalty_events(runtime) if name == "Loyalty Tier Changed"]
    assert changed == [
        {
            "program_id": shop.program_id,
            "account_id": 1,
            "tier": "silver",
            "tier_name": "Silver",
            "previous_tier": "base",
            "direction": "up",
            "reason": "upgrade",
            "rolling_spend": 3_000_000,
        }
    ]
    # the quarter ends: the spend still qualifies, so the tier stays for another quarter
    clock.advance(timedelta(days=31))
    run_monitor(runtime, "loyalty.tier_reviews")
    with runtime.db.scope(readonly=True) as session:
        account = account_of(session, anna)
        assert (account.tier, account.tier_review_at) == (
            "silver",
            datetime(2026, 6, 30, 21, tzinfo=UTC),
        )
    # a year on, the big purchase left the rolling window, but no review has run: still silver
    clock.advance(timedelta(days=366))
    assert confirm(client, shop, "small", 10_000)["tier"] == "silver"
    run_monitor(runtime, "loyalty.tier_reviews")
    with runtime.db.scope(readonly=True) as session:
        account = account_of(session, anna)
        assert (account.tier, account.tier_review_at) == ("base", None)
        history = session.scalars(select(TierChange).order_by(TierChange.id)).all()
        assert [(c.from_tier, c.to_tier, c.reason, c.spend) for c in history] == [
            ("base", "silver", "upgrade", 3_000_000),
            ("silver", "base", "review", 10_000),
        ]
    down = [props for name, props in loyalty_events(runtime) if name == "Loyalty Tier Changed"][-1]
    assert (down["direction"], down["tier"], down["previous_tier"]) == ("down", "base", "silver")


def test_birthday_bonus_once_in_the_customers_time_zone(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    set_rules(client, shop, birthday_bonus=500, bonus_valid_days=30)
    with runtime.db.scope() as session:
        # T0 is 19:00 on 2 March in Vladivostok
        today = create_customer(
            session, card="3000001", birthday=date(1990, 3, 2), timezone="Asia/Vladivostok"
        )
        tomorrow = create_customer(
            session, card="3000002", birthday=date(1985, 3, 3), timezone="Asia/Vladivostok"
        )
        moscow = create_customer(session, card="3000003", birthday=date(1980, 3, 3))
    for customer_id in (today, tomorrow, moscow):
        r = client.post(
            f"/v1/loyalty/programs/{shop.program_id}/accounts",
            headers=shop.admin,
            json={"customer_id": customer_id},
        )
        assert r.status_code == 200
    run_monitor(runtime, "loyalty.birthdays")
    run_monitor(runtime, "loyalty.birthdays")
    assert [balances(runtime, c)[0] for c in (today, tomorrow, moscow)] == [500, 0, 0]
    clock.advance(timedelta(hours=5))  # midnight of 3 March in Vladivostok, 03:00 in Moscow
    run_monitor(runtime, "loyalty.birthdays")
    assert [balances(runtime, c)[0] for c in (today, tomorrow, moscow)] == [500, 500, 0]
    clock.advance(timedelta(hours=7))  # 3 March, 00:00 in Moscow
    run_monitor(runtime, "loyalty.birthdays")
    run_monitor(runtime, "loyalty.birthdays")
    assert [balances(runtime, c)[0] for c in (today, tomorrow, moscow)] == [500, 500, 500]
    with runtime.db.scope(readonly=True) as session:
        lot = session.scalars(select(Lot).order_by(Lot.id)).first()
        assert lot is not None
        assert lot.expires_at == T0 + timedelta(days=30)
    bonuses = [p for n, p in loyalty_events(runtime) if n == "Bonus Accrued"]
    assert [(p["points"], p["bonus"]) for p in bonuses] == [(500, "birthday")] * 3
    assert_ledger_consistent(runtime)


def test_welcome_bonus_on_the_first_confirm(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(client, shop, welcome_bonus=100, redeem_requires_code=False)
    first = confirm(client, shop, "p1", 100_000, redeem=100)
    # the welcome bonus exists before the receipt, so it pays for part of it
    assert (first["balance"], first["pending"], first["redeemed_points"]) == (0, 45, 100)
    assert kinds(runtime) == ["welcome", "purchase"]
    welcome = loyalty_events(runtime)[0]
    assert welcome == (
        "Bonus Accrued",
        {"program_id": shop.program_id, "points": 100, "bonus": "welcome", "transaction_id": 1},
    )


def test_a_merged_customers_points_follow_the_survivor(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(client, shop, redeem_requires_code=False)
    with runtime.db.scope() as session:
        create_customer(session, card="2000222", first_name="Boris")
    confirm(client, shop, "a1", 100_000)  # Anna: 50 pending
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body("b1", "2000222", receipt(200_000)),
    )
    assert r.status_code == 200
    clock.advance(timedelta(days=15))
    run_monitor(runtime, "loyalty.due_lots")  # both become available
    confirm(client, shop, "a2", 40_000)  # Anna: 20 more pending
    link_cards(runtime, "2000111", "2000222")
    with runtime.db.scope(readonly=True) as session:
        merges = session.scalars(select(Job).where(Job.name == "loyalty.merge_accounts")).all()
        assert len(merges) == 1
        survivor, merged = merges[0].payload["survivor_id"], merges[0].payload["merged_id"]
    assert run_jobs(runtime) == 1
    assert run_jobs(runtime) == 0
    with runtime.db.scope(readonly=True) as session:
        accounts = {a.customer_id: a for a in session.scalars(select(Account))}
        kept, gone = accounts[survivor], accounts[merged]
        assert (kept.balance, kept.pending, kept.status) == (150, 20, "active")
        assert (gone.balance, gone.pending, gone.status, gone.merged_into_id) == (
            0,
            0,
            "merged",
            kept.id,
        )
        moved = session.scalars(
            select(Lot).where(Lot.account_id == kept.id, Lot.remaining > 0).order_by(Lot.id)
        ).all()
        assert sorted((lot.state, lot.remaining, lot.expires_at) for lot in moved) == sorted(
            [
                ("available", 50, T0 + timedelta(days=365)),
                ("available", 100, T0 + timedelta(days=365)),
                ("pending", 20, datetime(2027, 3, 17, 9, tzinfo=UTC)),
            ]
        )
    assert sorted(kinds(runtime))[-2:] == ["transfer_in", "transfer_out"]
    # either card now reaches the survivor's account; a refund of a pre-merge purchase too
    refund = client.post(
        "/v1/loyalty/pos/cancel",
        headers=shop.pos,
        json={"original_pos_transaction_id": "b1" if merged != anna else "a1"},
    )
    assert refund.status_code == 200, refund.text
    assert refund.json()["balance"] in (50, 100)
    assert_ledger_consistent(runtime)


def test_loyalty_operations_in_the_customer_timeline(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    confirm(client, shop, "p1", 100_000)
    r = client.get(f"/v1/customers/{anna}/timeline", headers=shop.admin)
    assert r.status_code == 200, r.text
    loyalty = [item for item in r.json() if item["kind"] == "loyalty"]
    assert [(i["title"], i["source"], i["details"]["points"]) for i in loyalty] == [
        ("Purchase: +50 points (receipt R-p1)", "loyalty", 50)
    ]
