"""The vectorised bulk path decides exactly what the intent-by-intent gate decides.

Random rule sets, time zones, contacts, consents, histories and campaign intents; each
example runs both paths on the same data (inside a savepoint that is rolled back) and
compares every decision field.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from tactful.core import db
from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.service import ConsentInput
from tactful.policy import bulk, gate
from tactful.policy import service as policy
from tactful.policy.models import ContactDecision
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
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant

NOW = datetime(2026, 6, 3, 4, 17, 23, tzinfo=UTC)
ZONES = ["Europe/Moscow", "Asia/Vladivostok", "Europe/London", "America/New_York", "Asia/Kolkata"]
CHANNELS = ["email", "sms", "push", "viber", "telegram"]
CUSTOMERS = 24

caps = st.lists(
    st.builds(
        CapRule,
        id=st.sampled_from(["a", "b", "c", "d"]),
        limit=st.sampled_from([0, 1, 1, 2, 3]),
        period=st.sampled_from(["day", "week"]),
        channel=st.sampled_from([None, None, "email", "sms"]),
        message_class=st.sampled_from([None, "marketing", "service"]),
        tag=st.sampled_from([None, None, "promo"]),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda c: c.id,
)
spacings = st.lists(
    st.builds(
        SpacingRule,
        id=st.sampled_from(["s1", "s2"]),
        min_hours=st.sampled_from([1, 4, 30]),
        message_class=st.sampled_from(["marketing", "service"]),
        channel=st.sampled_from([None, "email"]),
    ),
    max_size=2,
    unique_by=lambda s: s.id,
)
windows = st.one_of(
    st.none(),
    st.builds(
        SendWindows,
        default=st.sampled_from(
            [
                [Window(start="09:00", end="21:00")],
                [Window(start="08:00", end="12:00"), Window(start="14:00", end="20:00")],
            ]
        ),
        weekdays=st.sampled_from([{}, {"sun": []}, {"sat": [Window(start="11:00", end="15:00")]}]),
        holidays=st.sampled_from([[], [NOW.date() + timedelta(days=1)]]),
        applies_to=st.sampled_from([["marketing"], ["marketing", "service"]]),
    ),
)
rule_sets = st.builds(RuleSet, caps=caps, spacing=spacings, send_windows=windows)


def _customers(session: Session, tenant: Tenant) -> list[int]:
    workspace = session.get(Workspace, tenant.workspace_id)
    assert workspace is not None
    records = []
    for n in range(CUSTOMERS):
        idents = [normalise("external", f"eq{n}", region="RU", namespace="user_id")]
        if n % 4 != 0:
            idents.append(normalise("email", f"eq{n}@example.com", region="RU"))
        if n % 3 != 0:
            idents.append(normalise("phone", f"+7913{n:07d}", region="RU"))
        if n % 5 == 1:
            idents.append(normalise("push_token", f"tok{n}", region="RU"))
        records.append(
            ProfileRecord(
                idents=idents, source="test", at=NOW, traits={"timezone": ZONES[n % len(ZONES)]}
            )
        )
    ids = resolve_profiles(session, workspace=workspace, records=records).customer_ids
    for n, cid in enumerate(ids):
        if n % 7 == 0:
            continue  # some customers never consented
        customers.set_consents(
            session,
            workspace_id=tenant.workspace_id,
            customer_id=cid,
            changes=[ConsentInput(kind="personal_data", status="granted")]
            + [
                ConsentInput(
                    kind="advertising", channel=c, status="granted", brand_id=tenant.brand_id
                )
                for c in ("email", "sms", "push")
            ],
            source="test",
            evidence={},
            actor="test",
            at=NOW,
            audit=False,
        )
    return ids


def _book(
    session: Session,
    tenant: Tenant,
    customer_id: int,
    n: int,
    *,
    klass: str,
    channel: str,
    at: datetime,
    tags: tuple[str, ...] = (),
) -> Decision:
    """An earlier message through the gate: the history the campaign meets."""
    [decision] = gate.decide(
        session,
        [
            Intent(
                workspace_id=tenant.workspace_id,
                brand_id=tenant.brand_id,
                customer_id=customer_id,
                message_class=klass,
                source=f"old:{n}",
                steps=(ChannelStep(channel),),
                tags=tags,
            )
        ],
        now=at,
    )
    return decision


def _fields(decisions: list[Any]) -> list[tuple[Any, ...]]:
    return [(d.outcome, d.reason, d.rule, d.channel, d.step, d.send_at, d.cost) for d in decisions]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rules=rule_sets,
    consents=st.lists(
        st.tuples(
            st.integers(0, CUSTOMERS - 1),
            st.sampled_from(
                [
                    ("personal_data", "*", ""),
                    ("advertising", "email", ""),
                    ("advertising", "sms", ""),
                    ("advertising", "push", ""),
                    ("topic", "*", "promo"),
                ]
            ),
            st.sampled_from(["granted", "revoked", "revoked"]),
        ),
        max_size=20,
    ),
    history=st.lists(
        st.tuples(
            st.integers(0, CUSTOMERS - 1),
            st.one_of(st.integers(-8 * 24, 48), st.integers(-6, 30)),
            st.sampled_from(["email", "sms", "push"]),
            st.sampled_from(["marketing", "marketing", "service"]),
            # read and ignored messages teach the best channel
            st.sampled_from(["scheduled", "sent", "sent", "read", "delivered", "failed"]),
        ),
        min_size=20,
        max_size=80,
    ),
    klass=st.sampled_from(["marketing", "marketing", "service", "transactional"]),
    steps=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True),
    topic=st.sampled_from([None, "promo"]),
    delay_hours=st.one_of(st.just(0), st.integers(0, 40)),
    lifetime_hours=st.integers(1, 24 * 9),
    dedupe=st.booleans(),
    chunk=st.sampled_from([7, bulk.CHUNK]),
)
def test_bulk_matches_the_gate(
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    rules: RuleSet,
    consents: list[tuple[int, tuple[str, str, str], str]],
    history: list[tuple[int, int, str, str, str]],
    klass: str,
    steps: list[str],
    topic: str | None,
    delay_hours: int,
    lifetime_hours: int,
    dedupe: bool,
    chunk: int,
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", chunk)  # placed and written 7 customers at a time
    with runtime.db.session() as session:
        ids = _customers(session, tenant)
        policy.set_rules(
            session, workspace_id=tenant.workspace_id, brand_id=None, rules_=rules, actor="test"
        )
        for index, (kind, channel, topic_key), status in consents:
            customers.set_consents(
                session,
                workspace_id=tenant.workspace_id,
                customer_id=ids[index],
                changes=[
                    ConsentInput(
                        kind=kind,
                        channel=channel,
                        topic=topic_key,
                        status=status,
                        brand_id=None if kind == "personal_data" else tenant.brand_id,
                    )
                ],
                source="test",
                evidence={},
                actor="test",
                audit=False,
            )
        for n, (index, hours, channel, hclass, status) in enumerate(history):
            old = _book(
                session,
                tenant,
                ids[index],
                n,
                klass="transactional",
                channel=channel,
                at=NOW + timedelta(hours=hours),
                tags=("promo",) if n % 2 else (),
            )
            if old.decision_id:
                row = policy.record_status(session, old.decision_id, status)
                row.message_class = hclass  # replay it as a message of that class
        start = NOW + timedelta(hours=delay_hours)
        intents = [
            Intent(
                workspace_id=tenant.workspace_id,
                brand_id=tenant.brand_id,
                customer_id=cid,
                message_class=klass,
                source="campaign:eq",
                steps=tuple(ChannelStep(c) for c in steps),
                topic=topic,
                tags=("promo",),
                not_before=start,
                expires_at=start + timedelta(hours=lifetime_hours),
                dedupe_key="eq-campaign" if dedupe else None,
            )
            for cid in ids
        ]
        assert bulk.eligible(intents, 1)
        nested = session.begin_nested()
        expected = _fields(gate.decide(session, intents, now=NOW))
        nested.rollback()
        outcome = policy.decide_bulk(session, intents, now=NOW)
        actual = _fields(outcome.decisions())
        session.rollback()
    for reason in {e[1] for e in expected}:
        event(reason)
    mismatches = [
        (i, e, a) for i, (e, a) in enumerate(zip(expected, actual, strict=True)) if e != a
    ]
    assert not mismatches, mismatches[:5]


def test_reading_aside_and_writing_in_chunks_change_no_decision(
    runtime: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large audience's ledger is read on another connection while the session reads the
    rest, and its decisions are placed and written in chunks: the same decisions, and the
    same rows stored, as read and written at once."""
    with runtime.db.scope() as session:
        ids = _customers(session, tenant)
        policy.set_rules(
            session,
            workspace_id=tenant.workspace_id,
            brand_id=None,
            rules_=RuleSet(
                caps=[CapRule(id="day", limit=1, period="day")],
                spacing=[SpacingRule(id="gap", min_hours=30, message_class="marketing")],
            ),
            actor="test",
        )
        for n in range(0, CUSTOMERS, 2):
            _book(
                session,
                tenant,
                ids[n],
                n,
                klass="marketing",
                channel="sms",
                at=NOW - timedelta(hours=n),
            )
    message = Intent(
        workspace_id=tenant.workspace_id,
        brand_id=tenant.brand_id,
        customer_id=0,
        message_class="marketing",
        source="campaign:aside",
        steps=(ChannelStep("push"), ChannelStep("email"), ChannelStep("sms")),
    )
    fields = ("status", "reason", "rule", "channel", "step", "send_at", "cost")
    with runtime.db.session() as session:  # read and written at once, then rolled back
        at_once = policy.decide_audience(session, message, ids, now=NOW)
        session.rollback()
    reads = []
    aside = bulk.fetch_int_table_aside

    def spy(session: Session, stmt: Any, then: Any) -> Any:
        reads.append(db.unchanged_sqlite_writer(session.connection()))
        return aside(session, stmt, then)

    monkeypatch.setattr(bulk, "fetch_int_table_aside", spy)
    monkeypatch.setattr(bulk, "LARGE", 1)
    monkeypatch.setattr(bulk, "CHUNK", 5)
    with runtime.db.scope() as session:
        chunked = policy.decide_audience(session, message, ids, now=NOW)
    # SQLite read the ledger on another connection (PostgreSQL reads in the session)
    assert reads == [runtime.db.engine.dialect.name == "sqlite"]
    for name in fields:
        assert getattr(chunked, name).tolist() == getattr(at_once, name).tolist(), name
    assert sorted(set(at_once.reason.tolist())) == [
        "deferred_cap",
        "deferred_spacing",
        "no_advertising_consent",
        "no_contact",
        "ok",
    ]
    with runtime.db.scope(readonly=True) as session:
        stored = {
            row.id: row
            for row in session.scalars(
                select(ContactDecision).where(ContactDecision.id.in_(chunked.decision_ids.tolist()))
            )
        }
    assert len(stored) == CUSTOMERS
    for i, decision_id in enumerate(chunked.decision_ids.tolist()):
        row = stored[decision_id]
        send_at = int(row.send_at.timestamp()) if row.send_at else -1
        assert (row.customer_id, row.status, row.reason, row.channel, send_at) == (
            ids[i],
            chunked.status[i],
            chunked.reason[i],
            chunked.channel[i],
            int(chunked.send_at[i]),
        )
    assert np.array_equal(np.diff(chunked.decision_ids), np.ones(CUSTOMERS - 1))
