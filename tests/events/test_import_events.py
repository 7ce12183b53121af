"""Importing events: bad rows reported, repeated event ids ignored, anonymous activity joined
to the customer a row ties it to, extra columns as properties, the event catalog, and a
second run that imports nothing (also for files without event ids)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from tactful.core.runtime import Runtime
from tactful.customers.models import Customer, Identity
from tactful.events.models import EventCatalog
from tests.conftest import Tenant
from tests.events.conftest import (
    Importer,
    count_rows,
    counts,
    errors,
    warehouse_rows,
    write_text,
)

EVENTS_CSV = """
event_id,event,customer_external_id,anonymous_id,occurred_at,channel,properties,coupon
e1,Product Viewed,,anon-1,2026-05-01T10:00:00Z,web,"{""product_id"":""P1"",""price"":199.5}",
e2,Product Added,U1,anon-1,2026-05-01T10:05:00Z,web,"{""product_id"":""P1""}",SPRING
e3,Application Opened,,anon-2,2026-05-01T11:00:00Z,app,{},
e1,Product Viewed,,anon-1,2026-05-01T10:00:00Z,web,"{""product_id"":""P1"",""price"":199.5}",
e4,Cart Viewed,,,2026-05-01T12:00:00Z,web,{},
e5,,U1,,2026-05-01T12:00:00Z,web,{},
e6,Order Completed,U1,,not-a-time,web,{},
e7,Order Completed,U1,,2026-05-01T12:00:00Z,web,"[1,2]",
e8,Order Completed,U1,,2026-05-01T12:30:00Z,web,"{""total"":1}",X
"""


def test_events_file_with_bad_rows_duplicates_and_anonymous_activity(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    path = write_text(tmp_path / "events.csv", EVENTS_CSV)
    run = run_import("events", path)
    assert counts(run) == ("done", 9, 4, 1, 4)
    assert errors(tmp_path / "events.errors.csv") == [
        ["line", "field", "reason"],
        ["5", "customer_external_id", "either customer_external_id or anonymous_id is required"],
        ["6", "event", "missing: a track event has a name"],
        ["7", "occurred_at", "not a date and time: not-a-time (e.g. 2026-05-01T10:00:00+03:00)"],
        ["8", "properties", "not a JSON object"],
    ]
    events = warehouse_rows(runtime, "events", ["occurred_at"])
    assert [
        (e["event_id"], e["type"], e["name"], e["user_id"], e["anonymous_id"], e["channel"])
        for e in events
    ] == [
        ("e1", "track", "Product Viewed", None, "anon-1", "web"),
        ("e2", "track", "Product Added", "U1", "anon-1", "web"),
        ("e3", "track", "Application Opened", None, "anon-2", "app"),
        ("e8", "track", "Order Completed", "U1", None, "web"),
    ]
    assert [json.loads(e["properties"]) for e in events] == [
        {"product_id": "P1", "price": 199.5},
        {"product_id": "P1", "coupon": "SPRING"},
        {},
        {"total": 1, "coupon": "X"},
    ]
    assert events[0]["occurred_at"] == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert {(e["historical"], e["seq"]) for e in events} == {(True, None)}
    with runtime.db.scope(readonly=True) as session:
        owners = {(i.kind, i.value): i.customer_id for i in session.scalars(select(Identity))}
        # the anonymous browsing before the login belongs to the customer who logged in
        assert owners[("anonymous", "anon-1")] == owners[("external", "U1")]
        known = owners[("external", "U1")]
        assert [e["customer_id"] for e in events] == [
            known,
            known,
            owners[("anonymous", "anon-2")],
            known,
        ]
        visitor = session.get(Customer, owners[("anonymous", "anon-2")])
        customer = session.get(Customer, known)
        assert visitor is not None
        assert customer is not None
        assert (visitor.anonymous, customer.anonymous) == (True, False)
        assert customer.last_seen_at == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
        catalog = {
            (c.name, c.property, c.value_type) for c in session.scalars(select(EventCatalog))
        }
        assert {
            ("Product Viewed", "", ""),
            ("Product Viewed", "price", "number"),
            ("Product Added", "coupon", "string"),
            ("Order Completed", "total", "number"),
        } <= catalog

    again = run_import("events", path)
    assert counts(again) == ("done", 9, 0, 5, 4)
    assert len(warehouse_rows(runtime, "events", ["occurred_at"])) == 4
    assert count_rows(runtime, Customer) == 2


def test_events_without_ids_are_known_by_their_content(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    path = write_text(
        tmp_path / "clicks.csv",
        "type,name,user_id,timestamp\n"
        "page,Home,V1,2026-05-01T10:00:00Z\n"
        "screen,Cart,V1,2026-05-01T10:01:00Z\n"
        "page,Home,V1,2026-05-01T10:00:00Z\n"
        "identify,,V1,2026-05-01T10:02:00Z\n",
    )
    assert counts(run_import("events", path)) == ("done", 4, 2, 1, 1)
    assert errors(tmp_path / "clicks.errors.csv")[1:] == [
        [
            "4",
            "type",
            "must be track, page or screen, not identify (customers are imported as customers)",
        ]
    ]
    events = warehouse_rows(runtime, "events", ["occurred_at"])
    assert [(e["type"], e["name"]) for e in events] == [("page", "Home"), ("screen", "Cart")]
    assert all(e["event_id"].startswith("import-") for e in events)
    assert counts(run_import("events", path)) == ("done", 4, 0, 3, 1)
    assert len(warehouse_rows(runtime, "events", ["occurred_at"])) == 2
