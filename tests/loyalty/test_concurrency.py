"""Real concurrency: threads, each with its own database connection, fire at one account at
once. No point is spent twice, a balance never goes below zero, a code works once, a
duplicated POS transaction id writes once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from tactful.core import clock
from tactful.core.auth import Principal
from tactful.core.db import Database, create_db_engine
from tactful.core.errors import TactfulError
from tactful.core.runtime import Runtime
from tactful.core.security import Signer
from tactful.loyalty.models import Account, LedgerLine, LedgerTransaction
from tactful.loyalty.schemas import FraudLimits, TierRule
from tactful.loyalty.service import accounts, codes, fraud, pos
from tactful.loyalty.service.rules import ReceiptLine
from tests.conftest import Tenant
from tests.loyalty.conftest import (
    Shop,
    assert_ledger_consistent,
    create_customer,
    make_rules,
    make_shop,
)

CARD = "2000999"
LINES = [ReceiptLine(1, "P1", None, 100_000)]


@pytest.fixture
def wide_db(runtime: Runtime) -> Iterator[Database]:
    """A second engine with room for every thread to hold its own connection."""
    db = Database(create_db_engine(runtime.settings.database_url, pool_size=120))
    yield db
    db.dispose()


def run_all(count: int, task: Callable[[int], Any]) -> list[Any]:
    """Run ``task(i)`` in ``count`` threads released together; results or the errors raised."""
    barrier = threading.Barrier(count)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return task(i)
        except TactfulError as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def setup_account(runtime: Runtime, tenant: Tenant, points: int, **rules: Any) -> tuple[Shop, int]:
    shop = make_shop(
        runtime,
        tenant,
        make_rules(
            tiers=[TierRule(key="base", name="Base", min_spend=0, accrual_bp=0)],
            limits=FraudLimits(
                account_per_hour=10_000, terminal_per_minute=10_000, store_per_minute=10_000
            ),
            **rules,
        ),
    )
    admin = Principal(workspace_id=tenant.workspace_id, actor="admin", scopes=frozenset({"admin"}))
    with runtime.db.scope() as session:
        customer_id = create_customer(session, card=CARD)
        account = accounts.enrol(
            session,
            workspace_id=tenant.workspace_id,
            program_id=shop.program_id,
            customer_id=customer_id,
            actor="test",
        )
        fraud.adjust_points(
            session,
            principal=admin,
            account_id=account.id,
            points=points,
            reason="opening balance",
            idempotency_key="seed",
        )
    return shop, customer_id


def confirm(
    db: Database,
    tenant: Tenant,
    shop: Shop,
    pos_id: str,
    *,
    redeem: int,
    signer: Signer,
    code: str | None = None,
    terminal: str = "T1",
) -> Any:
    with db.scope() as session:
        return pos.confirm(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=None,
            program_id=shop.program_id,
            pos_transaction_id=pos_id,
            kind="card",
            value=CARD,
            lines=LINES,
            redeem_points=redeem,
            redeem_code=code,
            receipt_id=pos_id,
            store_id="S1",
            terminal_id=terminal,
            actor="pos",
            signer=signer,
        )


def ledger_totals(runtime: Runtime) -> tuple[int, int, int]:
    """(cached balance, sum of available lines, redemption transactions)."""
    with runtime.db.scope(readonly=True) as session:
        balance = session.scalar(select(Account.balance))
        lines = session.scalar(
            select(func.coalesce(func.sum(LedgerLine.points), 0)).where(
                LedgerLine.bucket == "available"
            )
        )
        spends = session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.kind == "purchase")
        )
        return int(balance or 0), int(lines or 0), int(spends or 0)


@pytest.mark.slow
def test_200_concurrent_redemptions_on_an_account_that_affords_10(
    runtime: Runtime, tenant: Tenant, wide_db: Database
) -> None:
    shop, _customer = setup_account(runtime, tenant, 1000, redeem_requires_code=False)
    results = run_all(
        200,
        lambda i: confirm(
            wide_db,
            tenant,
            shop,
            f"pos-{i}",
            redeem=100,
            terminal=f"T{i % 50}",
            signer=runtime.signer,
        ),
    )
    outcomes = Counter(type(r).__name__ for r in results)
    assert outcomes == {"ConfirmOut": 10, "Conflict": 190}
    assert all(
        r.message.startswith("the account has 0 points available")
        for r in results
        if isinstance(r, TactfulError)
    )
    assert ledger_totals(runtime) == (0, 0, 10)
    assert_ledger_consistent(runtime)


def test_one_redemption_code_works_once_under_concurrency(
    runtime: Runtime, tenant: Tenant, wide_db: Database
) -> None:
    shop, customer_id = setup_account(runtime, tenant, 1000)
    with runtime.db.scope() as session:
        device, secret = codes.enrol_device(
            session,
            workspace_id=tenant.workspace_id,
            customer_id=customer_id,
            label=None,
            actor="t",
            signer=runtime.signer,
        )
        ref = device.ref
    code = codes.make_code(secret, ref, "R", clock.now())
    results = run_all(
        20,
        lambda i: confirm(
            wide_db, tenant, shop, f"pos-{i}", redeem=10, code=code, signer=runtime.signer
        ),
    )
    outcomes = Counter(type(r).__name__ for r in results)
    assert outcomes == {"ConfirmOut": 1, "Forbidden": 19}
    assert {r.message for r in results if isinstance(r, TactfulError)} == {
        "the redemption code was already used"
    }
    assert ledger_totals(runtime) == (990, 990, 1)
    assert_ledger_consistent(runtime)


def test_a_duplicated_pos_transaction_writes_once(
    runtime: Runtime, tenant: Tenant, wide_db: Database
) -> None:
    shop, _customer = setup_account(runtime, tenant, 1000, redeem_requires_code=False)
    results = run_all(
        20, lambda _i: confirm(wide_db, tenant, shop, "same", redeem=100, signer=runtime.signer)
    )
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.transaction_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 19
    assert ledger_totals(runtime) == (900, 900, 1)
    assert_ledger_consistent(runtime)
