"""Undoing a customer merge: the points the merge brought to the survivor go back by ledger
entries (what the survivor spent meanwhile stays spent), the account is active again, and the
customers can be merged once more."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core.runtime import Runtime
from tactful.customers.models import CustomerMerge
from tactful.customers.service import revert_merge
from tactful.loyalty.models import Account, LedgerTransaction, Lot
from tactful.loyalty.service import accounts
from tests.loyalty.conftest import (
    Shop,
    assert_ledger_consistent,
    confirm_body,
    create_customer,
    ledger_state,
    link_cards,
    receipt,
    set_rules,
)
from tests.loyalty.test_lifecycle import run_jobs

CARDS = {"anna": "2000111", "boris": "2000222"}


def merge_cards(runtime: Runtime) -> None:
    link_cards(runtime, *CARDS.values())
    assert run_jobs(runtime) == 1


def buy(
    client: TestClient, shop: Shop, pos_id: str, card: str, amount: int, redeem: int = 0
) -> int:
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body(pos_id, card, receipt(amount), redeem=redeem),
    )
    assert r.status_code == 200, r.text
    return int(r.json()["accrued_points"])


def buy_then_merge(client: TestClient, runtime: Runtime, shop: Shop) -> None:
    """Anna buys for 100,000 and Boris for 200,000 with cards of their own (points available
    at once, spending without a code), then the two cards are found to be one customer's."""
    set_rules(client, shop, redeem_requires_code=False, return_period_days=0)
    with runtime.db.scope() as session:
        create_customer(session, card=CARDS["boris"], first_name="Boris")
    buy(client, shop, "a1", CARDS["anna"], 100_000)
    buy(client, shop, "b1", CARDS["boris"], 200_000)
    merge_cards(runtime)


def spend_shown(client: TestClient, shop: Shop, card: str) -> list[tuple[int, int]]:
    """The rolling spend and the spend to the next tier, as identify and calculate show them."""
    customer = {"kind": "card", "value": card}
    where = {"store_id": "S1", "terminal_id": "T1"}
    found = client.post(
        "/v1/loyalty/pos/identify", headers=shop.pos, json={"customer": customer, **where}
    )
    quote = client.post(
        "/v1/loyalty/pos/calculate",
        headers=shop.pos,
        json={"customer": customer, "lines": receipt(10_000), **where},
    )
    shown = []
    for answer in (found, quote):
        assert answer.status_code == 200, answer.text
        tier = answer.json()["tier"]
        shown.append((tier["rolling_spend"], tier["spend_to_next_tier"]))
    return shown


def accounts_by_customer(runtime: Runtime) -> dict[int, tuple[int, int, str, int | None]]:
    with runtime.db.scope(readonly=True) as session:
        return {
            a.customer_id: (a.balance, a.pending, a.status, a.merged_into_id)
            for a in session.scalars(select(Account))
        }


def test_undoing_a_merge_moves_the_points_back_by_ledger_entries(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    set_rules(client, shop, redeem_requires_code=False, return_period_days=0)
    with runtime.db.scope() as session:
        boris = create_customer(session, card=CARDS["boris"], first_name="Boris")
    assert buy(client, shop, "a1", CARDS["anna"], 100_000) == 50
    assert buy(client, shop, "b1", CARDS["boris"], 200_000) == 100
    merge_cards(runtime)
    with runtime.db.scope(readonly=True) as session:
        merge = session.scalars(select(CustomerMerge)).one()
        survivor, merged = merge.survivor_id, merge.merged_id
    own, brought = (50, 100) if survivor == anna else (100, 50)
    assert {survivor, merged} == {anna, boris}
    # the survivor spends all of its own points and 10 of those the merge brought
    survivor_card = CARDS["anna"] if survivor == anna else CARDS["boris"]
    accrued = buy(client, shop, "s1", survivor_card, 100_000, redeem=own + 10)
    with runtime.db.scope() as session:
        revert_merge(session, workspace_id=shop.tenant.workspace_id, merge_id=merge.id, actor="t")
    assert run_jobs(runtime) == 1
    state = accounts_by_customer(runtime)
    assert state[merged] == (brought - 10, 0, "active", None)
    assert state[survivor] == (accrued, 0, "active", None)
    with runtime.db.scope(readonly=True) as session:
        last = session.scalars(
            select(LedgerTransaction).order_by(LedgerTransaction.id.desc()).limit(2)
        ).all()
        assert [(t.kind, t.points, t.correlation_key) for t in reversed(last)] == [
            ("transfer_out", -(brought - 10), f"unmerge:{last[1].account_id}>{last[0].account_id}"),
            ("transfer_in", brought - 10, f"unmerge:{last[1].account_id}>{last[0].account_id}"),
        ]
        back = session.scalars(
            select(Lot).where(Lot.account_id == last[0].account_id, Lot.remaining > 0)
        ).all()
        assert [(lot.state, lot.remaining) for lot in back] == [("available", brought - 10)]
    assert_ledger_consistent(runtime)
    # running the job again (a retry, a duplicate event) changes nothing
    before = ledger_state(runtime)
    with runtime.db.scope() as session:
        again = accounts.unfold_unmerged_customer(
            session,
            workspace_id=shop.tenant.workspace_id,
            survivor_id=survivor,
            merged_id=merged,
        )
    assert again == []
    assert ledger_state(runtime) == before
    # the card of the merged customer reaches its own account again
    assert buy(client, shop, "m1", CARDS["anna"] if merged == anna else CARDS["boris"], 20_000)
    assert accounts_by_customer(runtime)[merged][0] == brought - 10 + 10


def test_the_merged_accounts_spend_counts_towards_the_survivors_tier(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """Identify and calculate show the tier's rolling spend of the survivor's account and of
    the account merged into it, as confirm counts it."""
    buy_then_merge(client, runtime, shop)
    for card in CARDS.values():  # either card reaches the survivor
        assert spend_shown(client, shop, card) == [(300_000, 2_700_000)] * 2


def test_another_customers_spend_leaves_out_accounts_merged_into_others(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    """A customer untouched by the merge sees only their own rolling spend: the account
    merged into the survivor counts for the survivor alone (every account merged into any
    account used to count for every customer)."""
    buy_then_merge(client, runtime, shop)
    with runtime.db.scope() as session:
        create_customer(session, card="2000333", first_name="Clara")
    buy(client, shop, "c1", "2000333", 50_000)
    assert spend_shown(client, shop, "2000333") == [(50_000, 2_950_000)] * 2


def test_customers_separated_can_be_merged_again(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    buy_then_merge(client, runtime, shop)
    with runtime.db.scope() as session:
        merge = session.scalars(select(CustomerMerge)).one()
        survivor, merged = merge.survivor_id, merge.merged_id
        revert_merge(session, workspace_id=shop.tenant.workspace_id, merge_id=merge.id, actor="t")
    assert run_jobs(runtime) == 1
    merge_cards(runtime)
    state = accounts_by_customer(runtime)
    assert state[survivor][:3] == (150, 0, "active")
    assert state[merged][:3] == (0, 0, "merged")
    with runtime.db.scope(readonly=True) as session:
        keys = session.scalars(
            select(LedgerTransaction.idempotency_key)
            .where(LedgerTransaction.kind.in_(["transfer_out", "transfer_in"]))
            .order_by(LedgerTransaction.id)
        ).all()
    assert [k.split(":")[0] for k in keys] == [
        "merge-out",
        "merge-in",
        "unmerge-out",
        "unmerge-in",
        "merge-out",
        "merge-in",
    ]
    assert keys[4].endswith(":2")
    assert keys[5].endswith(":2")
    assert_ledger_consistent(runtime)
