"""A small, exact history loaded straight into a warehouse (any backend) for segment and
metric tests: hand-made edge cases plus seeded random customers."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from tactful.core.warehouse import Warehouse
from tactful.events.warehouse import CUSTOMER_ALIASES, EVENTS, RECEIPT_LINES, RECEIPTS, SCHEMAS
from tactful.metrics import warehouse as mw

NOW = datetime(2025, 6, 30, 12, 0, tzinfo=UTC)
BRAND = 1
STORES = ("S1", "S2", "S3")
CATEGORIES = ("garden", "tools", "lighting", "paint")


class History:
    """Rows per warehouse table, built with small helpers."""

    def __init__(self, workspace_id: int) -> None:
        self.ws = workspace_id
        self.rows: dict[str, list[dict[str, Any]]] = {
            name: [] for name in (EVENTS, RECEIPTS, RECEIPT_LINES, CUSTOMER_ALIASES)
        }
        self.rows.update({mw.PROFILES: [], mw.ATTRIBUTES: [], mw.REACH: []})
        self._seq = 0
        self._receipt = 0

    def customer(
        self,
        cid: int,
        *,
        gender: str | None = None,
        birthday: date | None = None,
        city: str | None = None,
        offset: int = 180,
        attributes: dict[str, Any] | None = None,
        email: bool = False,
        created_days_ago: int = 800,
    ) -> None:
        attrs = attributes or {}
        created = NOW - timedelta(days=created_days_ago)
        self.rows[mw.PROFILES].append(
            {
                "workspace_id": self.ws,
                "customer_id": cid,
                "anonymous": False,
                "is_test": False,
                "gender": gender,
                "birthday": birthday,
                "city": city,
                "locale": "ru",
                "timezone": "Europe/Moscow",
                "utc_offset_minutes": offset,
                "has_email": email,
                "has_phone": False,
                "attributes": orjson.dumps(attrs).decode(),
                "created_at": created,
                "updated_at": created,
                "last_seen_at": None,
            }
        )
        for name, raw in attrs.items():
            for value in raw if isinstance(raw, list) else [raw]:
                self.rows[mw.ATTRIBUTES].append(
                    {
                        "workspace_id": self.ws,
                        "customer_id": cid,
                        "name": name,
                        "text_value": value if isinstance(value, str) else None,
                        "number_value": float(value)
                        if isinstance(value, int | float) and not isinstance(value, bool)
                        else None,
                        "bool_value": value if isinstance(value, bool) else None,
                        "time_value": None,
                    }
                )

    def reach(self, cid: int, channel: str, *, contact: bool, consent: bool) -> None:
        self.rows[mw.REACH].append(
            {
                "workspace_id": self.ws,
                "customer_id": cid,
                "brand_id": BRAND,
                "channel": channel,
                "has_contact": contact,
                "consent": consent,
                "reachable": contact and consent,
            }
        )

    def alias(self, merged: int, survivor: int) -> None:
        self.rows[CUSTOMER_ALIASES].append(
            {"workspace_id": self.ws, "customer_id": merged, "canonical_id": survivor}
        )

    def receipt(
        self,
        cid: int,
        at: datetime,
        lines: list[tuple[str, str, int, int]],  # product, category, quantity, unit price
        *,
        store: str = "S1",
        kind: str = "sale",
        channel: str = "offline",
        bonus_spent: int = 0,
    ) -> str:
        self._seq += 1
        self._receipt += 1
        receipt_id = f"R{self.ws}-{self._receipt}"
        sign = -1 if kind == "return" else 1
        total = 0
        for number, (product, category, quantity, price) in enumerate(lines, start=1):
            amount = quantity * price
            total += amount
            self.rows[RECEIPT_LINES].append(
                {
                    "seq": self._seq,
                    "workspace_id": self.ws,
                    "receipt_id": receipt_id,
                    "line_no": number,
                    "customer_id": cid,
                    "store_id": store,
                    "channel": channel,
                    "kind": kind,
                    "occurred_at": at,
                    "product_id": product,
                    "category_id": category,
                    "quantity": float(quantity),
                    "unit_price": price,
                    "discount": 0,
                    "amount": amount,
                    "signed_amount": sign * amount,
                }
            )
        self.rows[RECEIPTS].append(
            {
                "seq": self._seq,
                "workspace_id": self.ws,
                "receipt_id": receipt_id,
                "customer_id": cid,
                "store_id": store,
                "channel": channel,
                "kind": kind,
                "original_receipt_id": None,
                "occurred_at": at,
                "lines": len(lines),
                "quantity": float(sum(q for _p, _c, q, _u in lines)),
                "gross": total,
                "discount": 0,
                "amount": total,
                "signed_amount": sign * total,
                "bonus_accrued": total // 100,
                "bonus_spent": bonus_spent,
                "currency": "RUB",
                "source": "test",
                "historical": False,
            }
        )
        return receipt_id

    def event(self, cid: int, name: str, at: datetime, **properties: Any) -> None:
        self._seq += 1
        self.rows[EVENTS].append(
            {
                "seq": self._seq,
                "workspace_id": self.ws,
                "event_id": f"E{self.ws}-{self._seq}",
                "type": "track",
                "name": name,
                "customer_id": cid,
                "anonymous_id": None,
                "user_id": None,
                "occurred_at": at,
                "received_at": at,
                "channel": "web",
                "properties": orjson.dumps(properties).decode(),
                "source": "test",
                "historical": False,
                "brand_id": None,
            }
        )

    def load(self, warehouse: Warehouse) -> None:
        """Append every row to the warehouse's tables (created when missing)."""
        mw.ensure_metric_tables(warehouse)
        schemas = {**SCHEMAS, **mw.SCHEMAS}
        for name, rows in self.rows.items():
            if rows:
                table = pa.Table.from_pylist(rows, schema=schemas[name].to_pyarrow())
                warehouse.insert_arrow(name, table)


def days(n: float) -> datetime:
    return NOW - timedelta(days=n)


def build(workspace_id: int) -> History:
    """Hand-made customers 1–9 (edge cases) and seeded random customers 100–139."""
    h = History(workspace_id)
    # 1: a regular buyer in S1, e-mail reachable, engaged by e-mail in the morning
    h.customer(
        1,
        gender="f",
        birthday=date(1990, 5, 1),
        city="Moscow",
        attributes={"vip": True, "score": 7.5, "tags": ["garden", "tools"]},
        email=True,
    )
    h.reach(1, "email", contact=True, consent=True)
    h.reach(1, "sms", contact=True, consent=False)
    for age, amount in ((10, 1000), (40, 2000), (100, 3000), (150, 5000)):
        h.receipt(1, days(age), [("P1", "garden", 1, amount)], bonus_spent=100 if age == 10 else 0)
    for n, price in enumerate((100, 200, 300)):
        h.event(1, "Product Viewed", days(5 + n), product_id=f"P{n}", price=price, brand="Fiskars")
    h.event(1, "Message Delivered", days(3), delivery_id="d1", channel="email", campaign_id=7)
    h.event(
        1,
        "Message Opened",
        days(3) - timedelta(hours=3),  # 09:00 UTC = 12:00 in Moscow
        delivery_id="d1",
        channel="email",
        campaign_id=7,
    )
    # 2: never bought (a prospect), a phone without consent
    h.customer(2, gender="m", birthday=date(1975, 7, 1), city="Kazan", attributes={"score": 2})
    h.reach(2, "sms", contact=True, consent=False)
    # 3: returns only
    h.customer(3, gender="f", city="Moscow")
    h.receipt(3, days(5), [("P2", "tools", 1, 500)], kind="return")
    # 4: window boundary: one sale exactly 90 days ago (outside), one a second later (inside)
    h.customer(4, gender="m", birthday=date(1985, 6, 30), city="Moscow")
    h.receipt(4, days(90), [("P3", "paint", 2, 700)])
    h.receipt(4, days(90) + timedelta(seconds=1), [("P3", "paint", 1, 700)], store="S2")
    # 5: history recorded under 55, merged into 5
    h.customer(5, gender="f", city="Kazan")
    h.alias(55, 5)
    h.receipt(55, days(20), [("P4", "lighting", 3, 300)], channel="online", store="S3")
    # 6: moved from S1 (a year ago and more) to S2
    h.customer(6, gender="m", city="Saint Petersburg", email=True)
    h.reach(6, "email", contact=False, consent=True)
    for age in (400, 450, 500):
        h.receipt(6, days(age), [("P5", "garden", 1, 1000)], store="S1")
    for age in (30, 200):
        h.receipt(6, days(age), [("P6", "tools", 1, 1500)], store="S2")
    # 7: push engagement late in the evening, unsubscribed from promotions
    h.customer(7, gender="f", city="Moscow", offset=180)
    h.reach(7, "push", contact=True, consent=True)
    for n in range(2):
        h.event(7, "Message Delivered", days(4 + n), delivery_id=f"p{n}", channel="push")
    h.event(
        7,
        "Message Clicked",
        days(4) + timedelta(hours=8, minutes=30),
        delivery_id="p0",
        channel="push",
    )
    h.event(7, "Unsubscribed", days(2), channel="email", topic="promotions", brand_id=BRAND)
    # 8: a big basket of several categories, lapsed
    h.customer(8, city="Kazan")
    h.receipt(
        8,
        days(300),
        [("P7", "paint", 2, 900), ("P8", "garden", 1, 4000), ("P9", "lighting", 5, 100)],
    )
    # 9: no profile fields at all, one tiny sale today
    h.customer(9)
    h.receipt(9, days(0.1), [("P1", "garden", 1, 50)])
    # seeded random customers
    rnd = random.Random(20250630)
    for cid in range(100, 140):
        h.customer(
            cid,
            gender=rnd.choice(["f", "m", None]),
            birthday=date(rnd.randint(1950, 2005), rnd.randint(1, 12), rnd.randint(1, 28))
            if rnd.random() < 0.8
            else None,
            city=rnd.choice(["Moscow", "Kazan", "Saint Petersburg"]),
            offset=rnd.choice([120, 180, 300]),
            attributes={"score": rnd.randint(0, 10)} if rnd.random() < 0.5 else {},
            email=rnd.random() < 0.6,
        )
        for channel in ("email", "sms", "push"):
            if rnd.random() < 0.5:
                h.reach(cid, channel, contact=rnd.random() < 0.8, consent=rnd.random() < 0.6)
        for _ in range(rnd.randint(0, 12)):
            lines = [
                (
                    f"P{rnd.randint(1, 9)}",
                    rnd.choice(CATEGORIES),
                    rnd.randint(1, 3),
                    rnd.randint(1, 50) * 100,
                )
                for _ in range(rnd.randint(1, 3))
            ]
            h.receipt(
                cid,
                days(rnd.uniform(0, 700)),
                lines,
                store=rnd.choice(STORES),
                kind="return" if rnd.random() < 0.08 else "sale",
                channel=rnd.choice(["offline", "online"]),
                bonus_spent=rnd.choice([0, 0, 100]),
            )
        for _ in range(rnd.randint(0, 6)):
            h.event(cid, "Product Viewed", days(rnd.uniform(0, 60)), price=rnd.randint(1, 50) * 10)
        for n in range(rnd.randint(0, 4)):
            channel = rnd.choice(["email", "push", "sms"])
            at = days(rnd.uniform(1, 300))
            h.event(
                cid,
                "Message Delivered",
                at,
                delivery_id=f"x{cid}-{n}",
                channel=channel,
                campaign_id=rnd.choice([7, 8]),
            )
            if rnd.random() < 0.5:
                h.event(
                    cid,
                    "Message Opened",
                    at + timedelta(hours=rnd.randint(0, 30)),
                    delivery_id=f"x{cid}-{n}",
                    channel=channel,
                    campaign_id=7,
                )
    return h


def load_with_metrics(warehouse: Warehouse, workspace_id: int) -> None:
    """The history of ``build(workspace_id)`` in ``warehouse``, every customer's metrics built
    as of ``NOW``."""
    build(workspace_id).load(warehouse)
    rows = mw.compute_metrics(warehouse, workspace_id=workspace_id, now=NOW)
    mw.replace_rows(warehouse, mw.METRICS, workspace_id=workspace_id, customer_ids=None, rows=rows)


def duckdb_with_history(folder: Path, workspace_id: int) -> Warehouse:
    """A DuckDB warehouse in ``folder`` holding ``load_with_metrics``'s history."""
    opened = Warehouse(f"duckdb://{folder / 'w.duckdb'}", data_dir=folder)
    load_with_metrics(opened, workspace_id)
    return opened
