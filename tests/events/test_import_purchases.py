"""Importing purchases and reference data: every bad row and every row of a bad receipt
reported, good receipts in the warehouse shaped exactly as HTTP purchases are, customers
resolved, a second run importing nothing, and live imports going through the inbox."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer, Identity
from tactful.events.models import InboxEvent, Product, Store
from tests.conftest import Tenant
from tests.events.conftest import (
    Importer,
    count_rows,
    counts,
    errors,
    warehouse_rows,
    write_text,
)

STORES_CSV = """
store_id,name,city,timezone,opened_on
S1,Khimki,Moscow,Europe/Moscow,2021-03-01
S2,Web shop,,Europe/Moscow,
S3,Perm,Perm,Mars/Olympus,
"""

HEADER = (
    "receipt_id,line_no,customer_external_id,store_id,channel,occurred_at,kind,"
    "original_receipt_id,product_id,category_id,quantity,unit_price,discount,bonus_accrued,"
    "bonus_spent\n"
)
RECEIPTS_CSV = HEADER + (
    "R1,1,C1,S1,offline,2026-05-02T09:30:00+05:00,sale,,P1,garden,2,49900,9800,120,0\n"
    "R1,2,C1,S1,offline,2026-05-02T09:30:00+05:00,sale,,P2,paint,1.5,10000,0,120,0\n"
    "R2,1,C2,S2,online,2026-05-03 10:00:00,sale,,P1,garden,1,49900,0,0,500\n"
    "R3,1,C1,S1,offline,2026-05-04T12:00:00+05:00,return,R1,P1,garden,1,49900,4900,0,0\n"
    "R4,1,,S9,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,100,0,0,0\n"
    "R5,1,C3,S1,offline,yesterday,sale,,P1,garden,1,100,0,0,0\n"
    "R6,1,C3,S1,offline,2026-05-04T12:00:00Z,sale,,,garden,1,100,0,0,0\n"
    "R7,1,C3,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,-1,100,0,0,0\n"
    "R8,1,C3,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,100,101,0,0\n"
    "R9,1,C3,S1,offline,2026-05-04T12:00:00Z,return,,P1,garden,1,100,0,0,0\n"
    "R10,1,C3,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,12.5,0,0,0\n"
    "R11,1,C4,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,100,0,0,0\n"
    "R11,2,C4,S2,offline,2026-05-04T12:00:00Z,sale,,P2,paint,1,100,0,0,0\n"
    "R12,1,C4,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,100,0,0,0\n"
    "R12,2,C4,S1,offline,2026-05-04T12:00:00Z,sale,,,paint,1,100,0,0,0\n"
    ",1,C4,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,100,0,0,0\n"
    "R13,1,C4,S1,offline,2026-05-04T12:00:00Z,sale,,P1,garden,1,100,0,0,0\n"
    "R13,1,C4,S1,offline,2026-05-04T12:00:00Z,sale,,P3,garden,1,100,0,0,0\n"
)

RECEIPT_COLUMNS = (
    "receipt_id",
    "kind",
    "original_receipt_id",
    "store_id",
    "channel",
    "occurred_at",
    "lines",
    "quantity",
    "gross",
    "discount",
    "amount",
    "signed_amount",
    "bonus_accrued",
    "bonus_spent",
    "currency",
)


def pick(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in columns) for row in rows]


def test_bad_rows_and_receipts_are_reported_and_good_receipts_imported_once(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    stores = run_import("stores", write_text(tmp_path / "stores.csv", STORES_CSV))
    assert counts(stores) == ("done", 3, 2, 0, 1)
    assert errors(tmp_path / "stores.errors.csv")[1:] == [
        ["3", "timezone", "not a time zone name such as Europe/Moscow"]
    ]
    path = write_text(tmp_path / "receipts.csv", RECEIPTS_CSV)
    run = run_import("purchases", path)
    assert counts(run) == ("done", 18, 4, 0, 14)
    assert errors(tmp_path / "receipts.errors.csv") == [
        ["line", "field", "reason"],
        ["5", "store_id", "unknown store S9 (import stores first)"],
        ["6", "occurred_at", "not a date and time: yesterday (e.g. 2026-05-01T10:00:00+03:00)"],
        ["7", "product_id", "missing"],
        ["8", "quantity", "must be greater than 0"],
        ["9", "discount", "discount 101 exceeds quantity × unit_price (100)"],
        ["10", "original_receipt_id", "a return names original_receipt_id, the sale it returns"],
        ["11", "unit_price", "not a whole number of minor units: 12.5"],
        ["12", "store_id", "the rows of receipt R11 disagree on store_id"],
        ["13", "store_id", "the rows of receipt R11 disagree on store_id"],
        ["14", "receipt_id", "another row of receipt R12 was rejected (row 15)"],
        ["15", "product_id", "missing"],
        ["16", "receipt_id", "missing"],
        ["17", "receipt_id", "another row of receipt R13 was rejected (row 18)"],
        ["18", "line_no", "receipt R13 already has line 1 (row 17)"],
    ]
    receipts = warehouse_rows(runtime, "receipts", ["receipt_id"])
    assert pick(receipts, RECEIPT_COLUMNS) == [
        (
            "R1",
            "sale",
            None,
            "S1",
            "offline",
            datetime(2026, 5, 2, 4, 30, tzinfo=UTC),
            2,
            3.5,
            114_800,
            9_800,
            105_000,
            105_000,
            120,
            0,
            "RUB",
        ),
        (
            "R2",
            "sale",
            None,
            "S2",
            "online",
            datetime(2026, 5, 3, 10, 0, tzinfo=UTC),  # no offset: UTC
            1,
            1.0,
            49_900,
            0,
            49_900,
            49_900,
            0,
            500,
            "RUB",
        ),
        (
            "R3",
            "return",
            "R1",
            "S1",
            "offline",
            datetime(2026, 5, 4, 7, 0, tzinfo=UTC),
            1,
            1.0,
            49_900,
            4_900,
            45_000,
            -45_000,
            0,
            0,
            "RUB",
        ),
    ]
    assert {(r["seq"], r["source"], r["historical"]) for r in receipts} == {
        (None, f"import:import-{run.id}", True)
    }
    lines = warehouse_rows(runtime, "receipt_lines", ["receipt_id", "line_no"])
    assert pick(
        lines, ("receipt_id", "line_no", "product_id", "quantity", "amount", "signed_amount")
    ) == [
        ("R1", 1, "P1", 2.0, 90_000, 90_000),
        ("R1", 2, "P2", 1.5, 15_000, 15_000),
        ("R2", 1, "P1", 1.0, 49_900, 49_900),
        ("R3", 1, "P1", 1.0, 45_000, -45_000),
    ]
    with runtime.db.scope(readonly=True) as session:
        owners = {
            i.value: i.customer_id
            for i in session.scalars(select(Identity).where(Identity.kind == "external"))
        }
        assert sorted(owners) == ["C1", "C2"]  # customers of rejected receipts are not made
        assert {r["receipt_id"]: r["customer_id"] for r in receipts} == {
            "R1": owners["C1"],
            "R2": owners["C2"],
            "R3": owners["C1"],
        }
        c1 = session.get(Customer, owners["C1"])
        assert c1 is not None
        assert c1.last_seen_at == datetime(2026, 5, 4, 7, 0, tzinfo=UTC)

    again = run_import("purchases", path)
    assert counts(again) == ("done", 18, 0, 4, 14)
    assert len(warehouse_rows(runtime, "receipts", ["receipt_id"])) == 3
    assert len(warehouse_rows(runtime, "receipt_lines", ["receipt_id"])) == 4
    assert count_rows(runtime, Customer) == 2


def test_imported_purchases_look_like_purchases_sent_over_http(
    runtime: Runtime,
    tenant: Tenant,
    run_import: Importer,
    client: TestClient,
    worker: Worker,
    tmp_path: Path,
) -> None:
    key = base64.b64encode(f"{tenant.admin_key}:".encode()).decode()
    sent = client.post(
        "/v1/purchases",
        headers={"Authorization": f"Basic {key}"},
        json={
            "receipt_id": "H1",
            "store_id": "S1",
            "channel": "online",
            "occurred_at": "2026-05-02T09:30:00+05:00",
            "customer": {"user_id": "C9"},
            "lines": [
                {"product_id": "P1", "category_id": "garden", "quantity": 2.5, "unit_price": 999},
                {"product_id": "P2", "quantity": 1, "unit_price": 10_000, "discount": 500},
            ],
            "bonus_accrued": 30,
            "bonus_spent": 7,
        },
    )
    assert sent.status_code == 200, sent.text
    worker.drain()
    path = write_text(
        tmp_path / "same.csv",
        "receipt_id,customer_external_id,store_id,channel,occurred_at,product_id,category_id,"
        "quantity,unit_price,discount,bonus_accrued,bonus_spent\n"
        "F1,C9,S1,online,2026-05-02T09:30:00+05:00,P1,garden,2.5,999,,30,7\n"
        "F1,C9,S1,online,2026-05-02T09:30:00+05:00,P2,,1,10000,500,30,7\n",
    )
    assert counts(run_import("purchases", path)) == ("done", 2, 2, 0, 0)
    receipts = warehouse_rows(runtime, "receipts", ["receipt_id"])
    lines = warehouse_rows(runtime, "receipt_lines", ["receipt_id", "line_no"])
    differ = {"receipt_id", "seq", "source", "historical"}

    def same(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in differ}

    assert [r["receipt_id"] for r in receipts] == ["F1", "H1"]
    assert same(receipts[0]) == same(receipts[1])
    assert [same(line) for line in lines[:2]] == [same(line) for line in lines[2:]]
    assert receipts[1]["historical"] is False
    assert receipts[0]["historical"] is True


def test_live_purchases_go_through_the_inbox(
    runtime: Runtime, tenant: Tenant, run_import: Importer, worker: Worker, tmp_path: Path
) -> None:
    path = write_text(
        tmp_path / "today.csv",
        "receipt_id,customer_card,store_id,occurred_at,product_id,quantity,unit_price\n"
        "L1,2000 0000 0001 7,S1,2026-05-02T09:30:00Z,P1,1,100\n"
        "L2,2000 0000 0001 7,S1,2026-05-02T09:40:00Z,P1,3,100\n",
    )
    run = run_import("purchases", path, live=True)
    assert counts(run) == ("done", 2, 2, 0, 0)
    with runtime.db.scope(readonly=True) as session:
        inbox = session.scalars(select(InboxEvent).order_by(InboxEvent.seq)).all()
        assert [(e.message_id, e.historical, e.source) for e in inbox] == [
            ("receipt:L1", False, f"import:import-{run.id}"),
            ("receipt:L2", False, f"import:import-{run.id}"),
        ]
    worker.drain()
    receipts = warehouse_rows(runtime, "receipts", ["receipt_id"])
    assert [(r["receipt_id"], r["amount"], r["historical"]) for r in receipts] == [
        ("L1", 100, False),
        ("L2", 300, False),
    ]
    assert len({r["customer_id"] for r in receipts}) == 1
    assert counts(run_import("purchases", path, live=True)) == ("done", 2, 0, 2, 0)
    assert count_rows(runtime, InboxEvent) == 2


def test_reference_data_is_upserted(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    products = write_text(
        tmp_path / "products.csv",
        "product_id,name,category_id,price,gender,seasonal\n"
        "P1,Spade,garden-tools,139900,,spring\n"
        "P2,Dress,clothes,4999,f,\n"
        "P3,Hat,clothes,12.5,,\n"
        "P4,Boots,clothes,5999,x,\n"
        "P1,Spade Pro,garden-tools,149900,,spring\n",
    )
    run = run_import("products", products)
    assert counts(run) == ("done", 5, 2, 1, 2)
    assert errors(tmp_path / "products.errors.csv")[1:] == [
        ["3", "price", "not a whole number of minor units"],
        ["4", "gender", "f (women), m (men) or empty (anyone)"],
    ]
    with runtime.db.scope(readonly=True) as session:
        stored = session.scalars(select(Product).order_by(Product.product_id)).all()
        assert [(p.product_id, p.name, p.price, p.gender, p.attributes) for p in stored] == [
            ("P1", "Spade Pro", 149_900, None, {"seasonal": "spring"}),
            ("P2", "Dress", 4_999, "f", {}),
        ]
    assert counts(run_import("products", products)) == ("done", 5, 0, 3, 2)
    stores = write_text(tmp_path / "stores.csv", STORES_CSV)
    assert counts(run_import("stores", stores)) == ("done", 3, 2, 0, 1)
    with runtime.db.scope(readonly=True) as session:
        khimki = session.scalars(select(Store).where(Store.store_id == "S1")).one()
        assert (khimki.city, khimki.timezone, khimki.attributes) == (
            "Moscow",
            "Europe/Moscow",
            {"opened_on": "2021-03-01"},
        )
