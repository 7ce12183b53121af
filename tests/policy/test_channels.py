"""The best channel: a customer's read history reorders a cascade; without history, or with
the rule off, the cascade's order stands; the bulk path agrees (see test_bulk_equivalence)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tactful.core.runtime import Runtime
from tactful.policy import channels
from tactful.policy import service as policy
from tactful.policy.schemas import ChannelStep, RuleSet
from tests.conftest import Tenant
from tests.policy.conftest import AT, MakeCustomer
from tests.policy.test_gate import decide, intent, rules

CASCADE = (
    ChannelStep("push", timedelta(minutes=30)),
    ChannelStep("email", timedelta(hours=24)),
    ChannelStep("sms"),
)


def test_read_rates_and_the_best_index() -> None:
    assert channels.read_rate(0, 0) == 1 / 3  # the prior: no history
    assert channels.read_rate(4, 0) == 1 / 7
    assert channels.read_rate(3, 2) == 3 / 6
    arrays = channels.read_rate(np.array([0, 4, 3]), np.array([0, 0, 2]))
    assert arrays.tolist() == [1 / 3, 1 / 7, 3 / 6]
    assert channels.best_index(["push", "email"], None) == 0
    assert channels.best_index(["push", "email"], {}) == 0
    # ties keep the cascade's order
    assert channels.best_index(["push", "email"], {"push": (2, 1), "email": (2, 1)}) == 0
    # ignored push: an unknown e-mail (the prior) goes first
    assert channels.best_index(["push", "email", "sms"], {"push": (4, 0)}) == 1
    assert channels.best_index(["push", "email", "sms"], {"push": (4, 0), "sms": (3, 3)}) == 2
    assert channels.best_index(["email"], {"email": (9, 0)}) == 0


def _history(runtime: Runtime, tenant: Tenant, cid: int, channel: str, status: str) -> None:
    """A message on ``channel`` last week that ended ``status``."""
    [old] = decide(
        runtime,
        intent(
            tenant,
            cid,
            message_class="transactional",
            source="history",
            steps=(ChannelStep(channel),),
        ),
        now=AT - timedelta(days=7),
    )
    with runtime.db.scope() as session:
        policy.record_status(session, old.decision_id, status)


def test_a_customer_who_reads_email_and_ignores_push_gets_email_first(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    reader, newcomer = make_customer(), make_customer()
    for status in ("sent", "delivered", "sent", "delivered"):  # four pushes, none read
        _history(runtime, tenant, reader, "push", status)
    for status in ("read", "read", "sent"):
        _history(runtime, tenant, reader, "email", status)
    first, second = decide(
        runtime, intent(tenant, reader, steps=CASCADE), intent(tenant, newcomer, steps=CASCADE)
    )
    assert (first.channel, first.step, first.cost) == ("email", 1, 10)
    assert (second.channel, second.step) == ("push", 0)  # no history: the cascade's order
    # the cascade continues after the channel it started on
    with runtime.db.scope() as session:
        policy.record_status(session, first.decision_id, "sent")
        nxt = policy.next_step(session, first.decision_id, now=AT + timedelta(days=2))
    assert (nxt.channel, nxt.step) == ("sms", 2)


def test_with_the_rule_off_the_cascade_order_stands(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    rules(runtime, tenant, RuleSet(use_best_channel=False))
    cid = make_customer()
    for _ in range(4):
        _history(runtime, tenant, cid, "push", "delivered")
    [d] = decide(runtime, intent(tenant, cid, steps=CASCADE))
    assert (d.channel, d.step) == ("push", 0)
