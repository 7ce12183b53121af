"""Accounts across customer merges: undoing a merge after the survivor merged on, the
birthday bonus a merge brings along, and the welcome bonus of a survivor whose first purchase
comes before the merge is folded. Each docstring says what went wrong before."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core import clock
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer, CustomerMerge
from tactful.customers.service import revert_merge
from tactful.loyalty.models import Account, LedgerTransaction
from tests.loyalty.conftest import (
    Shop,
    confirm_body,
    create_customer,
    link_cards,
    receipt,
    set_rules,
)
from tests.loyalty.test_lifecycle import run_jobs, run_monitor


def _merge(runtime: Runtime, *cards: str) -> None:
    """The cards turn out to be one customer's (the oldest customer survives)."""
    link_cards(runtime, *cards)
    run_jobs(runtime)


def _buy(client: TestClient, shop: Shop, pos_id: str, card: str, amount: int) -> dict[str, Any]:
    r = client.post(
        "/v1/loyalty/pos/confirm",
        headers=shop.pos,
        json=confirm_body(pos_id, card, receipt(amount)),
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_undoing_a_merge_whose_survivor_merged_on_reactivates_the_account(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    """Boris merges into Anna, Anna into Dora (Boris's account is repointed to Dora's); then
    the Boris → Anna merge is undone. The unmerge job skips Boris's account entirely (its
    survivor's account belongs to Dora now), so Boris, a separate customer again, keeps an
    account that is ``merged`` into Dora's: calculate shows him Dora's points and rolling
    spend, while confirm posts his purchases on the merged account, and his spend keeps
    counting towards Dora's tier."""
    set_rules(client, shop, redeem_requires_code=False, return_period_days=0)
    with runtime.db.scope() as session:
        create_customer(session, card="2000001", first_name="Dora")
        anna = create_customer(session, card="2000002", first_name="Anna")
        boris = create_customer(session, card="2000003", first_name="Boris")
    _buy(client, shop, "d1", "2000001", 1_000_000)  # Dora: 500 points
    _buy(client, shop, "a1", "2000002", 100_000)  # Anna: 50
    _buy(client, shop, "b1", "2000003", 200_000)  # Boris: 100
    _merge(runtime, "2000002", "2000003")  # Boris into Anna
    _merge(runtime, "2000001", "2000002")  # Anna into Dora
    with runtime.db.scope() as session:
        first = session.scalars(select(CustomerMerge).where(CustomerMerge.merged_id == boris)).one()
        assert first.survivor_id == anna
        revert_merge(session, workspace_id=shop.tenant.workspace_id, merge_id=first.id, actor="t")
    run_jobs(runtime)
    quote = client.post(
        "/v1/loyalty/pos/calculate",
        headers=shop.pos,
        json={
            "customer": {"kind": "card", "value": "2000003"},
            "lines": receipt(10_000),
            "store_id": "S1",
            "terminal_id": "T1",
        },
    )
    assert quote.status_code == 200, quote.text
    # Boris's own rolling spend (his 2,000 RUB), not Dora's with Anna's and his
    assert quote.json()["tier"]["rolling_spend"] == 200_000
    with runtime.db.scope(readonly=True) as session:
        account = session.scalars(select(Account).where(Account.customer_id == boris)).one()
        assert (account.status, account.merged_into_id) == ("active", None)


def test_a_merge_does_not_bring_a_second_birthday_bonus_in_the_same_year(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    """Boris gets his birthday bonus in the morning; in the afternoon his profile turns out
    to be a duplicate of Anna's (who had no birthday on file). The merge folds his bonus
    into Anna's account and gives Anna his birthday, and the next hourly run grants the
    same person a second birthday bonus for the same year: the key is per account, and
    nothing tells the survivor's account that the merged one already had this year's."""
    set_rules(client, shop, birthday_bonus=500, redeem_requires_code=False)
    with runtime.db.scope() as session:
        anna = create_customer(session, card="2000111", first_name="Anna")
        boris = create_customer(
            session, card="2000222", first_name="Boris", birthday=date(1990, 3, 2)
        )
    for customer_id in (anna, boris):
        r = client.post(
            f"/v1/loyalty/programs/{shop.program_id}/accounts",
            headers=shop.admin,
            json={"customer_id": customer_id},
        )
        assert r.status_code == 200, r.text
    run_monitor(runtime, "loyalty.birthdays")
    clock.advance(timedelta(hours=3))
    _merge(runtime, "2000111", "2000222")  # Boris into Anna (the older customer)
    clock.advance(timedelta(hours=1))
    run_monitor(runtime, "loyalty.birthdays")
    with runtime.db.scope(readonly=True) as session:
        assert session.get(Customer, anna).birthday == date(1990, 3, 2)  # type: ignore[union-attr]
        survivor = session.scalars(select(Account).where(Account.customer_id == anna)).one()
        birthdays = session.scalars(
            select(LedgerTransaction.idempotency_key).where(LedgerTransaction.kind == "birthday")
        ).all()
    # one birthday bonus for 2026: Boris's, now in Anna's account
    assert (survivor.balance, len(birthdays)) == (500, 1)


def test_the_survivors_first_purchase_before_the_fold_grants_no_second_welcome(
    client: TestClient, runtime: Runtime, shop: Shop
) -> None:
    """Boris was enrolled (welcome bonus 100), then found to be Anna's duplicate; Anna had no
    account. When the fold job runs first, it opens Anna's account without a welcome bonus
    (one person, one welcome). But when Anna's first purchase comes before the job (merges
    are folded by a queued job), the confirm opens her account with a second welcome bonus,
    and the fold then adds Boris's: the same person ends with two."""
    set_rules(client, shop, welcome_bonus=100, redeem_requires_code=False, return_period_days=0)
    with runtime.db.scope() as session:
        anna = create_customer(session, card="2000111", first_name="Anna")
        boris = create_customer(session, card="2000222", first_name="Boris")
    r = client.post(
        f"/v1/loyalty/programs/{shop.program_id}/accounts",
        headers=shop.admin,
        json={"customer_id": boris},
    )
    assert r.status_code == 200, r.text
    link_cards(runtime, "2000111", "2000222")
    _buy(client, shop, "a1", "2000111", 10_000)  # 5 points, before the fold job has run
    run_jobs(runtime)
    with runtime.db.scope(readonly=True) as session:
        survivor = session.scalars(select(Account).where(Account.customer_id == anna)).one()
        welcomes = session.scalars(
            select(LedgerTransaction.id).where(LedgerTransaction.kind == "welcome")
        ).all()
    # Boris's welcome (100, folded into Anna's account) and the purchase's 5 points
    assert (len(welcomes), survivor.balance) == (1, 105)
