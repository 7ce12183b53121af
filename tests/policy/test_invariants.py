"""Invariants of the contact policy over random rule sets, customers, time zones and
streams of intents, checked by an independent, naive reading of the ledger:

- no customer ever exceeds a cap (calendar day in their time zone, any rolling 7 days);
- no two messages share a dedupe key within its window;
- nothing marketing is sent outside the allowed send windows;
- a deferred message goes at the first allowed moment (a second earlier is not allowed);
- transactional messages are never capped, spaced or deferred.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.service import ConsentInput
from tactful.policy import service as policy
from tactful.policy.models import ContactDecision, DecisionBatch
from tactful.policy.schemas import (
    COUNTED,
    WEEKDAYS,
    CapRule,
    ChannelStep,
    Intent,
    RuleSet,
    SendWindows,
    SpacingRule,
    Window,
)
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant

START = datetime(2026, 9, 7, 2, 0, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class Row:
    customer_id: int
    status: str
    reason: str
    message_class: str
    channel: str | None
    send_at: datetime | None
    requested_at: datetime | None
    expires_at: datetime | None
    dedupe_key: str | None


ZONES = ["Europe/Moscow", "Asia/Vladivostok", "America/New_York", "Europe/Berlin"]
PEOPLE = 6

intent_specs = st.lists(
    st.fixed_dictionaries(
        {
            "customer": st.integers(0, PEOPLE - 1),
            "klass": st.sampled_from(["marketing", "marketing", "service", "transactional"]),
            "channel": st.sampled_from(["email", "sms"]),
            "source": st.sampled_from(
                ["campaign:1", "campaign:2", "journey:welcome", "journey:cart"]
            ),
            "priority": st.integers(0, 3),
            "dedupe": st.sampled_from([None, "promo-a", "promo-b"]),
            "delay_minutes": st.integers(0, 3 * 24 * 60),
            "lifetime_hours": st.integers(1, 5 * 24),
        }
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    caps=st.lists(
        st.builds(
            CapRule,
            id=st.sampled_from(["a", "b", "c"]),
            limit=st.integers(1, 3),
            period=st.sampled_from(["day", "week"]),
            channel=st.sampled_from([None, "email"]),
            message_class=st.sampled_from([None, "marketing"]),
        ),
        max_size=3,
        unique_by=lambda c: c.id,
    ),
    spacing_hours=st.sampled_from([None, 2, 12]),
    windows=st.sampled_from(
        [
            [Window(start="09:00", end="21:00")],
            [Window(start="10:00", end="13:00"), Window(start="17:00", end="20:00")],
        ]
    ),
    sunday_off=st.booleans(),
    batches=st.lists(intent_specs, min_size=1, max_size=4),
)
def test_invariants_hold(
    runtime: Runtime,
    tenant: Tenant,
    caps: list[CapRule],
    spacing_hours: int | None,
    windows: list[Window],
    sunday_off: bool,
    batches: list[list[dict[str, object]]],
) -> None:
    rules = RuleSet(
        caps=caps,
        spacing=[SpacingRule(id="space", min_hours=spacing_hours)] if spacing_hours else [],
        send_windows=SendWindows(default=windows, weekdays={"sun": []} if sunday_off else {}),
        default_dedupe_window_hours=48,
    )
    with runtime.db.session() as session:
        workspace = session.get(Workspace, tenant.workspace_id)
        assert workspace is not None
        ids = resolve_profiles(
            session,
            workspace=workspace,
            records=[
                ProfileRecord(
                    idents=[
                        normalise("email", f"inv{n}@example.com", region="RU"),
                        normalise("phone", f"+7914{n:07d}", region="RU"),
                    ],
                    source="test",
                    at=START,
                    traits={"timezone": ZONES[n % len(ZONES)]},
                )
                for n in range(PEOPLE)
            ],
        ).customer_ids
        for cid in ids:
            customers.set_consents(
                session,
                workspace_id=tenant.workspace_id,
                customer_id=cid,
                changes=[ConsentInput(kind="personal_data", status="granted")]
                + [
                    ConsentInput(
                        kind="advertising", channel=c, status="granted", brand_id=tenant.brand_id
                    )
                    for c in ("email", "sms")
                ],
                source="test",
                evidence={},
                actor="test",
                audit=False,
            )
        policy.set_rules(
            session, workspace_id=tenant.workspace_id, brand_id=None, rules_=rules, actor="test"
        )
        for round_, specs in enumerate(batches):
            now = START + timedelta(hours=7 * round_)
            policy.decide(
                session,
                [
                    Intent(
                        workspace_id=tenant.workspace_id,
                        brand_id=tenant.brand_id,
                        customer_id=ids[int(s["customer"])],
                        message_class=str(s["klass"]),
                        source=str(s["source"]),
                        steps=(ChannelStep(str(s["channel"])),),
                        priority=int(s["priority"]),  # type: ignore[call-overload]
                        dedupe_key=s["dedupe"],  # type: ignore[arg-type]
                        not_before=now + timedelta(minutes=int(s["delay_minutes"])),  # type: ignore[call-overload]
                        expires_at=now
                        + timedelta(
                            minutes=int(s["delay_minutes"]),  # type: ignore[call-overload]
                            hours=int(s["lifetime_hours"]),
                        ),  # type: ignore[call-overload]
                    )
                    for s in specs
                ],
                now=now,
            )
        rows = [
            (Row(**{c: getattr(d, c) for c in Row.__dataclass_fields__}), b.source)
            for d, b in session.execute(
                select(ContactDecision, DecisionBatch).join(
                    DecisionBatch, DecisionBatch.id == ContactDecision.batch_id
                )
            ).all()
        ]
        zones = {cid: ZONES[n % len(ZONES)] for n, cid in enumerate(ids)}
        session.rollback()

    sent = [(d, b) for d, b in rows if d.status in COUNTED]
    for d, _ in rows:
        event(d.reason)
    by_customer: dict[int, list[Row]] = defaultdict(list)
    for d, _ in sent:
        by_customer[d.customer_id].append(d)

    def counts_for(cap: CapRule, d: Row) -> bool:
        return (
            d.message_class != "transactional"
            and cap.message_class in (None, d.message_class)
            and cap.channel in (None, d.channel)
        )

    for cid, decisions in by_customer.items():
        zone = ZoneInfo(zones[cid])
        for cap in caps:
            times = sorted(d.send_at for d in decisions if counts_for(cap, d) and d.send_at)
            if cap.period == "day":
                per_day: dict[object, int] = defaultdict(int)
                for t in times:
                    per_day[t.astimezone(zone).date()] += 1
                assert max(per_day.values(), default=0) <= cap.limit, (cap, times)
            else:
                for t in times:  # every window (t - 7d, t] ending at a message
                    inside = [x for x in times if t - timedelta(days=7) < x <= t]
                    assert len(inside) <= cap.limit, (cap, times)
        if spacing_hours:
            marketing = sorted(
                d.send_at for d in decisions if d.message_class == "marketing" and d.send_at
            )
            for a, b in itertools.pairwise(marketing):
                assert b - a >= timedelta(hours=spacing_hours), (a, b)
        keyed: dict[str, list[datetime]] = defaultdict(list)
        for d, _ in [(d, b) for d, b in rows if d.customer_id == cid]:
            if d.dedupe_key and d.status in (*COUNTED, "bundled"):
                keyed[d.dedupe_key].append(d.send_at or START)
        for key, moments in keyed.items():
            assert len(moments) == 1, (cid, key, moments)  # windows outlast the test

    def allowed(moment: datetime, zone: ZoneInfo) -> bool:
        local = moment.astimezone(zone)
        if sunday_off and WEEKDAYS[local.weekday()] == "sun":
            return False
        clock = local.strftime("%H:%M:%S")
        return any(w.start + ":00" <= clock < w.end + ":00" for w in windows)

    def breaks(d: Row, moment: datetime, others: list[Row], zone: ZoneInfo) -> bool:
        if not allowed(moment, zone):
            return True
        for cap in caps:
            if not counts_for(cap, d):
                continue
            times = [o.send_at for o in others if counts_for(cap, o) and o.send_at]
            if cap.period == "day":
                day = moment.astimezone(zone).date()
                if sum(t.astimezone(zone).date() == day for t in times) + 1 > cap.limit:
                    return True
            else:
                ends = [moment] + [t for t in times if moment <= t < moment + timedelta(days=7)]
                for end in ends:
                    inside = [t for t in times if end - timedelta(days=7) < t <= end]
                    if len(inside) + 1 > cap.limit:
                        return True
        if spacing_hours:
            gap = timedelta(hours=spacing_hours)
            if any(
                o.message_class == "marketing" and o.send_at and abs(o.send_at - moment) < gap
                for o in others
            ):
                return True
        return False

    for d, _ in sent:
        zone = ZoneInfo(zones[d.customer_id])
        assert d.send_at is not None
        if d.message_class == "transactional":
            assert d.reason == "ok"
            continue
        if d.message_class == "marketing":
            assert allowed(d.send_at, zone), (d.send_at.astimezone(zone), d.reason)
        if d.reason.startswith("deferred") and d.message_class == "marketing":
            # the first allowed moment: a second earlier breaks some rule, even counting
            # every other message of the customer (later ones only add reasons to refuse)
            earlier = d.send_at - timedelta(seconds=1)
            others = [o for o in by_customer[d.customer_id] if o is not d and o.send_at]
            assert earlier < (d.requested_at or START) or breaks(d, earlier, others, zone), (
                d.send_at.astimezone(zone),
                d.reason,
            )
        assert d.expires_at is None or d.send_at <= d.expires_at
