"""The inbox's bulk reads and writes: what the resolver and the loader read back is exactly
what was stored, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.events import store
from tactful.events.models import InboxEvent
from tactful.journeys import store as journeys_store
from tests.conftest import Tenant
from tests.query_plans import plan_of

AT = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
LATER = datetime(2026, 5, 1, 12, 31, tzinfo=UTC)
PROPERTIES: dict[str, Any] = {
    "price": 12.5,
    "big": 9_223_372_036_854_775_807,  # the widest integer JSON columns keep exactly
    "small": -9_223_372_036_854_775_808,
    "text": "Садовые ножницы ✂ «большие»",
    "nothing": None,
    "flags": [True, False],
    "nested": {"lines": [{"sku": "P1", "qty": 2}], "empty": {}},
}


def _row(tenant: Tenant, message_id: str, **values: Any) -> dict[str, Any]:
    return {
        "workspace_id": tenant.workspace_id,
        "brand_id": None,
        "message_id": message_id,
        "type": "track",
        "name": "Product Viewed",
        "user_id": None,
        "anonymous_id": f"anon-{message_id}",
        "identities": [
            ["anonymous_id", "", f"anon-{message_id}", f"anon-{message_id}", True, None]
        ],
        "traits": {},
        "properties": PROPERTIES,
        "context": {"page": {"path": "/garden"}},
        "occurred_at": AT,
        "received_at": LATER,
        "source": "api:site",
        "historical": False,
        **values,
    }


def test_resolver_and_loader_read_back_exactly_what_was_stored(
    runtime: Runtime, tenant: Tenant
) -> None:
    with runtime.db.scope() as session:
        new = store.insert_new_inbox_rows(
            session, tenant.workspace_id, [_row(tenant, "m1"), _row(tenant, "m2", type="page")]
        )
    assert new == {"m1", "m2"}

    with runtime.db.scope() as session:
        pending = store.unresolved(session, 10)
        got = [
            (r.type, r.name, r.identities, r.traits, r.properties, r.occurred_at, r.source)
            for r in pending
        ]
        seqs = [r.seq for r in pending]
        store.mark_resolved(session, [(seqs[0], 7), (seqs[1], None)], LATER)
    identities = [["anonymous_id", "", "anon-m1", "anon-m1", True, None]]
    assert got == [
        ("track", "Product Viewed", identities, {}, PROPERTIES, AT, "api:site"),
        ("page", "Product Viewed", [[*identities[0][:2], "anon-m2", "anon-m2", True, None]], {},
         PROPERTIES, AT, "api:site"),
    ]  # fmt: skip

    with runtime.db.scope(readonly=True) as session:
        assert store.unresolved(session, 10) == []
        loading = store.unloaded(session, 10)
        assert [(r.seq, r.customer_id, r.properties, r.context) for r in loading] == [
            (seqs[0], 7, PROPERTIES, {"page": {"path": "/garden"}}),
            (seqs[1], None, PROPERTIES, {"page": {"path": "/garden"}}),
        ]
        stored = session.execute(
            select(InboxEvent.seq, InboxEvent.customer_id, InboxEvent.resolved_at).order_by(
                InboxEvent.seq
            )
        ).all()
    assert [tuple(r) for r in stored] == [(seqs[0], 7, LATER), (seqs[1], None, LATER)]


def test_an_integer_too_wide_for_the_inbox_is_refused_and_nothing_is_stored(
    runtime: Runtime, tenant: Tenant
) -> None:
    """orjson, which reads the inbox back on SQLite, would read a wider integer as a float:
    it is refused when written, never changed silently. (The ORM on PostgreSQL writes it to
    JSONB, which the standard library reads back exactly.)"""
    wide = {**PROPERTIES, "big": 2**64}
    with pytest.raises(TypeError), runtime.db.scope() as session:
        store.insert_new_inbox_rows(
            session, tenant.workspace_id, [_row(tenant, "m1"), _row(tenant, "m2", properties=wide)]
        )
    if runtime.db.dialect == "sqlite":
        with pytest.raises(StatementError), runtime.db.scope() as session:  # the ORM's too
            session.add(InboxEvent(**_row(tenant, "m3", properties=wide)))
            session.flush()
    with runtime.db.scope(readonly=True) as session:
        assert session.scalars(select(InboxEvent.seq)).all() == []


def test_on_sqlite_the_orm_writes_inbox_json_as_orjson_does(
    runtime: Runtime, tenant: Tenant
) -> None:
    if runtime.db.dialect != "sqlite":
        pytest.skip("PostgreSQL stores JSONB")
    with runtime.db.scope() as session:
        session.add(InboxEvent(**_row(tenant, "m1")))
    with runtime.db.scope(readonly=True) as session:
        raw = session.execute(text("SELECT properties FROM event_inbox")).scalar_one()
    assert raw == orjson.dumps(PROPERTIES).decode()


INBOX_QUERIES: dict[str, tuple[Callable[[Session], object], str]] = {
    "a trigger's range of events": (
        lambda s: store.live_range(s, 1, 100, 2100),
        "USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
    ),
    "a profile's timeline": (
        lambda s: store.customer_inbox(s, 1, [1, 2], LATER, 50),
        "USING INDEX ix_event_inbox_customer",
    ),
    "a journey's awaited events": (
        lambda s: journeys_store.inbox_events(s, 1, [1, 2], ["Cart Abandoned", "$purchase"], AT),
        "USING INDEX ix_event_inbox_customer",
    ),
}


@pytest.mark.parametrize("query", list(INBOX_QUERIES))
def test_inbox_queries_never_read_the_whole_workspace(runtime: Runtime, query: str) -> None:
    """Without statistics SQLite took the workspace in the (workspace, message id) key for a
    selective condition and read every inbox row of the workspace (see ``in_workspace``)."""
    if runtime.db.dialect != "sqlite":
        pytest.skip("PostgreSQL plans from its statistics")
    run, access = INBOX_QUERIES[query]
    found = plan_of(runtime, "event_inbox", run)
    assert access in found, found
    assert "sqlite_autoindex_event_inbox" not in found, found


def _event(tenant: Tenant, message_id: str, customer_id: int, **values: Any) -> dict[str, Any]:
    return _row(
        tenant, message_id, customer_id=customer_id, resolved_at=LATER, anonymous_id=None, **values
    )


def test_events_of_known_customers_are_stored_exactly_and_repeats_skipped(
    runtime: Runtime, tenant: Tenant
) -> None:
    """``insert_new_events`` (on SQLite by the driver, with the columns' own processing)
    stores what the ORM would, counts only new rows, and a batch with a row it cannot
    store stores nothing."""
    moscow = AT.astimezone(ZoneInfo("Europe/Moscow"))
    with runtime.db.scope() as session:
        first = store.insert_new_events(
            session,
            [_event(tenant, "e1", 7), _event(tenant, "e2", 8, occurred_at=moscow, brand_id=3)],
        )
    with runtime.db.scope() as session:
        again = store.insert_new_events(
            session, [_event(tenant, "e2", 9, name="Other"), _event(tenant, "e3", 9)]
        )
    naive = datetime(2026, 5, 1, 12, 30)
    with (
        pytest.raises((ValueError, StatementError), match="naive datetime"),
        runtime.db.scope() as session,
    ):
        store.insert_new_events(
            session, [_event(tenant, "e4", 9), _event(tenant, "e5", 9, occurred_at=naive)]
        )
    assert (first, again) == (2, 1)
    with runtime.db.scope(readonly=True) as session:
        rows = session.scalars(select(InboxEvent).order_by(InboxEvent.seq)).all()
        found = [
            (r.message_id, r.customer_id, r.brand_id, r.name, r.identities, r.properties,
             r.context, r.occurred_at, r.received_at, r.resolved_at, r.historical, r.source)
            for r in rows
        ]  # fmt: skip
        raw = session.execute(text("SELECT occurred_at, historical FROM event_inbox")).all()
    identities = [["anonymous_id", "", "anon-e1", "anon-e1", True, None]]
    assert found == [
        ("e1", 7, None, "Product Viewed", identities, PROPERTIES, {"page": {"path": "/garden"}},
         AT, LATER, LATER, False, "api:site"),
        ("e2", 8, 3, "Product Viewed", [[*identities[0][:2], "anon-e2", "anon-e2", True, None]],
         PROPERTIES, {"page": {"path": "/garden"}}, AT, LATER, LATER, False, "api:site"),
        ("e3", 9, None, "Product Viewed", [[*identities[0][:2], "anon-e3", "anon-e3", True, None]],
         PROPERTIES, {"page": {"path": "/garden"}}, AT, LATER, LATER, False, "api:site"),
    ]  # fmt: skip
    if runtime.db.dialect == "sqlite":  # the text and integers SQLAlchemy writes
        assert [tuple(r) for r in raw] == [("2026-05-01 12:30:00.000000", 0)] * 3
