"""The gate's rules, one at a time, with exact outcomes and reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tactful.core.runtime import Runtime
from tactful.policy import service as policy
from tactful.policy import store as policy_store
from tactful.policy.schemas import (
    CapRule,
    ChannelStep,
    Decision,
    Intent,
    RuleSet,
    SendWindows,
    SpacingRule,
    Window,
)
from tests.conftest import Tenant
from tests.policy.conftest import AT, MakeCustomer

EMAIL = (ChannelStep("email"),)


def intent(tenant: Tenant, cid: int, **kw: object) -> Intent:
    base: dict[str, object] = {
        "workspace_id": tenant.workspace_id,
        "brand_id": tenant.brand_id,
        "customer_id": cid,
        "message_class": "marketing",
        "source": "campaign:1",
        "steps": EMAIL,
    }
    base.update(kw)
    return Intent(**base)  # type: ignore[arg-type]


def decide(runtime: Runtime, *intents: Intent, now: datetime = AT) -> list[Decision]:
    with runtime.db.scope() as session:
        return policy.decide(session, list(intents), now=now)


def rules(runtime: Runtime, tenant: Tenant, rule_set: RuleSet) -> None:
    with runtime.db.scope() as session:
        policy.set_rules(
            session, workspace_id=tenant.workspace_id, brand_id=None, rules_=rule_set, actor="test"
        )


def test_consented_customer_is_scheduled_now(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    cid = make_customer()
    [d] = decide(runtime, intent(tenant, cid))
    assert (d.outcome, d.reason, d.channel, d.address, d.send_at, d.cost) == (
        "scheduled",
        "ok",
        "email",
        "p1@example.com",
        AT,
        10,
    )


def test_no_consent_and_no_contact_are_suppressed_with_reasons(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    no_consent = make_customer(consent=False)
    [d1] = decide(runtime, intent(tenant, no_consent))
    assert (d1.outcome, d1.reason) == ("suppressed", "no_advertising_consent")
    [d2] = decide(
        runtime,
        intent(tenant, no_consent, message_class="transactional", steps=(ChannelStep("telegram"),)),
    )
    assert (d2.outcome, d2.reason) == ("suppressed", "no_contact")
    [d3] = decide(runtime, intent(tenant, no_consent, message_class="transactional"))
    assert (d3.outcome, d3.reason, d3.channel) == ("scheduled", "ok", "email")


def test_cascade_takes_the_first_reachable_channel(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    cid = make_customer(channels=("email", "sms"))
    steps = (ChannelStep("push", timedelta(minutes=30)), ChannelStep("email"), ChannelStep("sms"))
    [d] = decide(runtime, intent(tenant, cid, steps=steps))
    assert (d.channel, d.step, d.cost) == ("email", 1, 10)
    with runtime.db.scope() as session:
        policy.record_status(session, d.decision_id, "sent")
        nxt = policy.next_step(session, d.decision_id, now=AT + timedelta(hours=1))
    assert (nxt.outcome, nxt.channel, nxt.step, nxt.cost) == ("scheduled", "sms", 2, 350)
    with runtime.db.scope() as session:
        last = policy.next_step(session, nxt.decision_id, now=AT + timedelta(hours=2))
    assert (last.outcome, last.reason) == ("suppressed", "cascade_exhausted")


def test_quiet_hours_defer_in_the_customer_time_zone(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    moscow = make_customer()
    vladivostok = make_customer(timezone="Asia/Vladivostok")  # UTC+10: 16:00 at AT
    early = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 06:00 Moscow, 13:00 Vladivostok
    d1, d2 = decide(runtime, intent(tenant, moscow), intent(tenant, vladivostok), now=early)
    assert (d1.reason, d1.send_at) == (
        "deferred_quiet_hours",
        datetime(2026, 6, 1, 6, 0, tzinfo=UTC),
    )
    assert (d2.reason, d2.send_at) == ("ok", early)
    other = make_customer()
    late = decide(runtime, intent(tenant, other, expires_at=early + timedelta(hours=2)), now=early)
    assert (late[0].outcome, late[0].reason) == ("suppressed", "quiet_hours_until_expiry")
    [tx] = decide(
        runtime, intent(tenant, moscow, message_class="transactional", source="orders"), now=early
    )
    assert (tx.reason, tx.send_at) == ("ok", early)


def test_caps_defer_to_the_next_local_day_and_spare_transactional(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    rules(runtime, tenant, RuleSet(caps=[CapRule(id="one-a-day", limit=1, period="day")]))
    cid = make_customer()
    first, second = decide(
        runtime, intent(tenant, cid, source="a"), intent(tenant, cid, source="b")
    )
    assert (first.send_at, first.reason) == (AT, "ok")
    # 2026-06-02 00:00 in Moscow
    assert (second.send_at, second.reason, second.rule) == (
        datetime(2026, 6, 1, 21, 0, tzinfo=UTC),
        "deferred_cap",
        "ws:one-a-day@v1",
    )
    [tx] = decide(runtime, intent(tenant, cid, source="c", message_class="transactional"))
    assert (tx.send_at, tx.reason) == (AT, "ok")
    [expiring] = decide(
        runtime, intent(tenant, cid, source="d", expires_at=AT + timedelta(hours=3))
    )
    assert (expiring.outcome, expiring.reason) == ("suppressed", "cap_exceeded")


def test_spacing_and_dedupe(runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer) -> None:
    rules(runtime, tenant, RuleSet(spacing=[SpacingRule(id="two-days", min_hours=48)]))
    cid = make_customer()
    a, b = decide(
        runtime, intent(tenant, cid, dedupe_key="promo-7"), intent(tenant, cid, source="campaign:2")
    )
    assert (a.send_at, b.send_at, b.reason) == (AT, AT + timedelta(hours=48), "deferred_spacing")
    [dup] = decide(
        runtime,
        intent(tenant, cid, dedupe_key="promo-7", source="journey:9"),
        now=AT + timedelta(days=1),
    )
    assert (dup.outcome, dup.reason) == ("suppressed", "duplicate")


@pytest.mark.parametrize("by_customer", [policy_store.BY_CUSTOMER, 0], ids=["trigger", "base"])
def test_dedupe_key_shared_by_many_customers(
    runtime: Runtime,
    tenant: Tenant,
    make_customer: MakeCustomer,
    monkeypatch: pytest.MonkeyPatch,
    by_customer: int,
) -> None:
    """A journey's send step gives every customer one key: only its holders are duplicates,
    whether looked up per customer (a trigger's batch) or per key (a whole base)."""
    monkeypatch.setattr(policy_store, "BY_CUSTOMER", by_customer)
    held = [make_customer() for _ in range(3)]
    fresh = [make_customer() for _ in range(2)]
    other = make_customer()
    decide(
        runtime,
        *[intent(tenant, c, dedupe_key="journey:4:send") for c in held],
        intent(tenant, other, dedupe_key="journey:5:send"),
    )
    decided = decide(
        runtime,
        *[
            intent(tenant, c, dedupe_key="journey:4:send", source="journey:4")
            for c in (held[1], fresh[0], other, held[2], fresh[1])
        ],
        now=AT + timedelta(days=3),
    )
    assert [(d.outcome, d.reason) for d in decided] == [
        ("suppressed", "duplicate"),
        ("scheduled", "ok"),
        ("scheduled", "ok"),
        ("suppressed", "duplicate"),
        ("scheduled", "ok"),
    ]


def test_priority_wins_the_slot(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    rules(runtime, tenant, RuleSet(caps=[CapRule(id="one", limit=1, period="day")]))
    cid = make_customer()
    low, high = decide(
        runtime,
        intent(tenant, cid, source="low", priority=1, expires_at=AT + timedelta(hours=1)),
        intent(tenant, cid, source="high", priority=5),
    )
    assert (high.outcome, high.send_at) == ("scheduled", AT)
    assert (low.outcome, low.reason) == ("suppressed", "lost_arbitration")


def test_bundling_folds_intents_of_one_kind(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    cid = make_customer()
    decisions = decide(
        runtime,
        *[
            intent(
                tenant,
                cid,
                source=f"journey:{n}",
                bundle_key="price_drop",
                bundle_item={"product_id": f"P{n}"},
            )
            for n in range(11)
        ],
    )
    leader = decisions[0]
    assert leader.outcome == "scheduled"
    assert leader.send_at == AT + timedelta(minutes=30)
    assert {(d.outcome, d.bundle_leader_id) for d in decisions[1:]} == {
        ("bundled", leader.decision_id)
    }
    with runtime.db.scope() as session:
        items = policy.bundle_items(session, leader.decision_id)
    assert [i["product_id"] for i in items] == [f"P{n}" for n in range(11)]


def test_test_sends_only_reach_test_recipients(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    tester = make_customer(is_test=True)
    regular = make_customer()
    ok, refused = decide(
        runtime, intent(tenant, tester, is_test=True), intent(tenant, regular, is_test=True)
    )
    assert (ok.outcome, refused.outcome, refused.reason) == (
        "scheduled",
        "suppressed",
        "not_test_recipient",
    )


def test_weekday_windows_and_holidays(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    rules(
        runtime,
        tenant,
        RuleSet(
            send_windows=SendWindows(
                default=[Window(start="10:00", end="20:00")],
                weekdays={"sun": []},
                holidays=[datetime(2026, 6, 12).date()],
            )
        ),
    )
    cid = make_customer()
    saturday_night = datetime(2026, 6, 6, 18, 0, tzinfo=UTC)  # Sat 21:00 Moscow
    [d] = decide(runtime, intent(tenant, cid), now=saturday_night)
    assert d.send_at == datetime(2026, 6, 8, 7, 0, tzinfo=UTC)  # Mon 10:00 Moscow
    holiday = datetime(2026, 6, 12, 8, 0, tzinfo=UTC)  # Fri 11:00 Moscow, a holiday
    [h] = decide(runtime, intent(tenant, cid, source="x"), now=holiday)
    assert h.send_at == datetime(2026, 6, 13, 7, 0, tzinfo=UTC)


def test_why_explains_every_decision(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    cid = make_customer(consent=False)
    decide(runtime, intent(tenant, cid))
    with runtime.db.scope(readonly=True) as session:
        [row] = policy.why(session, workspace_id=tenant.workspace_id, customer_id=cid)
    assert (row["status"], row["reason"], row["explanation"]) == (
        "suppressed",
        "no_advertising_consent",
        "no advertising consent for the brand and channel",
    )
