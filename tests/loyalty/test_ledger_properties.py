"""Random sequences of accruals, spends, refunds, adjustments and the passing of time keep every
ledger invariant: no negative balance or lot, caches equal to the ledger, spends drawing the
earliest-expiring points first, nothing left on a lot past its expiry, refused operations
changing nothing."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from tactful.core import clock
from tactful.core.auth import Principal
from tactful.core.errors import Conflict, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.loyalty import store
from tactful.loyalty.models import Account, LedgerTransaction
from tactful.loyalty.schemas import FraudLimits
from tactful.loyalty.service import accounts, fraud, ledger, pos, refunds
from tactful.loyalty.service.ledger import spending_order
from tactful.loyalty.service.rules import ReceiptLine
from tests.conftest import Tenant
from tests.loyalty.conftest import T0, create_customer, make_rules, make_shop

_cards = itertools.count(1)


def run_machine(runtime: Runtime, tenant: Tenant) -> None:
    shop = make_shop(
        runtime,
        tenant,
        make_rules(
            return_period_days=3,
            expiry_months=2,
            redeem_requires_code=False,
            redeem_cap_bp=10_000,
            # the clock restarts at T0 for every example: no rate limit may trip across them
            limits=FraudLimits(
                account_per_hour=10**6, terminal_per_minute=10**6, store_per_minute=10**6
            ),
        ),
    )
    admin = Principal(workspace_id=tenant.workspace_id, actor="admin", scopes=frozenset({"admin"}))

    class Ledger(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self._clock = clock.frozen(T0)
            self._clock.__enter__()
            self.card = f"5{next(_cards):07d}"
            self.ops = itertools.count()
            with runtime.db.scope() as session:
                customer_id = create_customer(session, card=self.card)
                self.account_id = accounts.enrol(
                    session,
                    workspace_id=tenant.workspace_id,
                    program_id=shop.program_id,
                    customer_id=customer_id,
                    actor="test",
                ).id
            self.purchases: list[tuple[str, int]] = []  # (pos id, receipt total)
            self.refunded: dict[str, int] = {}

        def teardown(self) -> None:
            self._clock.__exit__(None, None, None)

        # -- helpers -------------------------------------------------------------------

        def state(self) -> tuple[Any, ...]:
            with runtime.db.scope(readonly=True) as session:
                account = session.get(Account, self.account_id)
                assert account is not None
                lots = [
                    (lot.id, lot.state, lot.remaining)
                    for lot in store.lots_of(session, self.account_id, open_only=False)
                ]
                txns = session.scalar(
                    select(func.count())
                    .select_from(LedgerTransaction)
                    .where(LedgerTransaction.account_id == self.account_id)
                )
                return account.balance, account.pending, tuple(lots), txns

        def spendable_lots(self) -> list[store.LotRow]:
            now = clock.now()
            with runtime.db.scope(readonly=True) as session:
                lots = store.open_lots(session, self.account_id)
            due = [
                lot
                for lot in lots
                if (lot.state == "available" or (lot.available_at and lot.available_at <= now))
                and (lot.expires_at is None or lot.expires_at > now)
            ]
            return sorted(due, key=spending_order)

        def confirm(self, amount: int, redeem: int) -> Any:
            pos_id = f"{self.card}-{next(self.ops)}"
            with runtime.db.scope() as session:
                result = pos.confirm(
                    session,
                    workspace_id=tenant.workspace_id,
                    brand_id=None,
                    program_id=shop.program_id,
                    pos_transaction_id=pos_id,
                    kind="card",
                    value=self.card,
                    lines=[ReceiptLine(1, "P1", None, amount)],
                    redeem_points=redeem,
                    redeem_code=None,
                    receipt_id=pos_id,
                    store_id="S1",
                    terminal_id="T1",
                    actor="pos",
                    signer=runtime.signer,
                )
            self.purchases.append((pos_id, amount))
            return result

        # -- rules ---------------------------------------------------------------------

        @rule(amount=st.integers(min_value=0, max_value=400_000), share=st.integers(0, 100))
        def purchase(self, amount: int, share: int) -> None:
            lots = self.spendable_lots()
            spendable = sum(lot.remaining for lot in lots)
            redeem = min(spendable * share // 100, amount // 100)
            self.confirm(amount, redeem)
            # FIFO: the spend emptied a prefix of the spending order, then took part of one lot
            after = {lot.id: lot.remaining for lot in self.spendable_lots()}
            taken = [lot.remaining - after.get(lot.id, 0) for lot in lots]
            assert sum(taken) == redeem
            partial = [i for i, t in enumerate(taken) if t > 0]
            if partial:
                last = partial[-1]
                assert all(taken[i] == lots[i].remaining for i in range(last))
                assert all(t == 0 for t in taken[last + 1 :])

        @rule(extra=st.integers(min_value=1, max_value=1000))
        def overspend_is_refused(self, extra: int) -> None:
            spendable = sum(lot.remaining for lot in self.spendable_lots())
            before = self.state()
            try:
                self.confirm(10**9, spendable + extra)
            except Conflict:
                pass
            else:
                raise AssertionError("a spend above the balance went through")
            assert self.state() == before

        @precondition(lambda self: bool(self.purchases))
        @rule(data=st.data(), cancel=st.booleans())
        def refund(self, data: st.DataObject, cancel: bool) -> None:
            pos_id, total = data.draw(st.sampled_from(self.purchases))
            left = total - self.refunded.get(pos_id, 0)
            before = self.state()
            with runtime.db.scope() as session:
                if left <= 0:
                    try:
                        refunds.refund(
                            session,
                            workspace_id=tenant.workspace_id,
                            brand_id=None,
                            program_id=shop.program_id,
                            original_pos_transaction_id=pos_id,
                            pos_transaction_id=f"r-{self.card}-{next(self.ops)}",
                            lines=None,
                            amount=1,
                            store_id="S1",
                            terminal_id="T1",
                            actor="pos",
                        )
                    except ValidationFailed:
                        pass
                    else:
                        raise AssertionError("a refund above the receipt went through")
                    refused = True
                else:
                    amount = left if cancel else data.draw(st.integers(1, left))
                    refunds.refund(
                        session,
                        workspace_id=tenant.workspace_id,
                        brand_id=None,
                        program_id=shop.program_id,
                        original_pos_transaction_id=pos_id,
                        pos_transaction_id=f"r-{self.card}-{next(self.ops)}",
                        lines=None,
                        amount=None if cancel else amount,
                        store_id="S1",
                        terminal_id="T1",
                        actor="pos",
                        cancel=cancel,
                    )
                    self.refunded[pos_id] = self.refunded.get(pos_id, 0) + amount
                    refused = False
            if refused:
                assert self.state() == before

        @rule(points=st.integers(min_value=-500, max_value=2000).filter(bool))
        def adjust(self, points: int) -> None:
            spendable = sum(lot.remaining for lot in self.spendable_lots())
            before = self.state()
            with runtime.db.scope() as session:
                try:
                    fraud.adjust_points(
                        session,
                        principal=admin,
                        account_id=self.account_id,
                        points=points,
                        reason="property test",
                        idempotency_key=f"{self.card}-{next(self.ops)}",
                    )
                except Conflict:
                    assert -points > spendable
                    session.rollback()
                    refused = True
                else:
                    refused = False
            if refused:
                assert self.state() == before

        @rule(days=st.integers(min_value=1, max_value=70))
        def time_passes(self, days: int) -> None:
            clock.advance(timedelta(days=days))
            with runtime.db.scope() as session:
                pending, expiring = accounts.due_lots(session, now=clock.now())
            for lot_id in pending:
                with runtime.db.scope() as session:
                    accounts.activate_lot(session, lot_id=lot_id)
            for lot_id in expiring:
                with runtime.db.scope() as session:
                    accounts.expire_lot(session, lot_id=lot_id)
            now = clock.now()
            with runtime.db.scope(readonly=True) as session:
                for lot in store.lots_of(session, self.account_id, open_only=True):
                    assert lot.expires_at is None or lot.expires_at > now, "expired points left"
                    assert lot.state == "available" or (
                        lot.available_at is not None and lot.available_at > now
                    )

        # -- invariants --------------------------------------------------------------------

        @invariant()
        def ledger_equals_caches(self) -> None:
            with runtime.db.scope(readonly=True) as session:
                assert ledger.verify(session, account_ids=[self.account_id]) == []
                account = session.get(Account, self.account_id)
                assert account is not None
                assert account.balance >= 0
                assert account.pending >= 0
                net = session.scalar(
                    select(func.coalesce(func.sum(LedgerTransaction.points), 0)).where(
                        LedgerTransaction.account_id == self.account_id
                    )
                )
                assert net == account.balance + account.pending

    run_state_machine_as_test(
        Ledger,
        settings=settings(
            max_examples=20,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_random_operations_keep_the_ledger_invariants(runtime: Runtime, tenant: Tenant) -> None:
    run_machine(runtime, tenant)
