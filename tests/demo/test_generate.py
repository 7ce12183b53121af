"""The demo generator: determinism, the file contract, integrity and realistic behaviour."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tactful.core.errors import ValidationFailed
from tactful.demo import generate as generate_module
from tactful.demo.generate import DemoFiles, generate

AS_OF = date(2025, 6, 30)
CUSTOMERS = 6_000
TABLES = ("stores", "products", "customers", "receipts", "events")


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[DemoFiles, list[tuple[str, float]]]:
    calls: list[tuple[str, float]] = []
    # Small chunks, so ids, e-mails and counters are checked across chunk boundaries too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generate_module, "CHUNK", 2_500)
        files = generate(
            tmp_path_factory.mktemp("demo"),
            customers=CUSTOMERS,
            seed=7,
            as_of=AS_OF,
            progress=lambda stage, fraction: calls.append((stage, fraction)),
        )
    return files, calls


@pytest.fixture(scope="module")
def files(demo: tuple[DemoFiles, list[tuple[str, float]]]) -> DemoFiles:
    return demo[0]


@pytest.fixture(scope="module")
def db(files: DemoFiles) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name in TABLES:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{getattr(files, name)}')")
    con.execute(
        """CREATE TABLE receipt AS
           SELECT receipt_id, any_value(customer_external_id) AS customer,
                  any_value(store_id) AS store_id, any_value(channel) AS channel,
                  any_value(occurred_at) AS occurred_at, any_value(kind) AS kind,
                  any_value(original_receipt_id) AS original, count(*) AS lines
           FROM receipts GROUP BY receipt_id"""
    )
    yield con
    con.close()


def one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


# --- determinism and the file contract -------------------------------------------------------


def test_same_seed_and_day_give_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", customers=1_500, seed=3, as_of=AS_OF)
    second = generate(tmp_path / "b", customers=1_500, seed=3, as_of=AS_OF)
    other = generate(tmp_path / "c", customers=1_500, seed=4, as_of=AS_OF)
    for name in TABLES:
        assert getattr(first, name).read_bytes() == getattr(second, name).read_bytes(), name
    for name in ("customers", "receipts", "events"):
        assert getattr(first, name).read_bytes() != getattr(other, name).read_bytes(), name
    assert (first.receipt_lines_count, first.events_count) == (
        second.receipt_lines_count,
        second.events_count,
    )


def test_reported_counts_match_the_files(files: DemoFiles, db: duckdb.DuckDBPyConnection) -> None:
    assert files.customers_count == CUSTOMERS
    assert pq.ParquetFile(files.customers).metadata.num_rows == CUSTOMERS
    assert pq.ParquetFile(files.receipts).metadata.num_rows == files.receipt_lines_count
    assert pq.ParquetFile(files.events).metadata.num_rows == files.events_count
    assert one(db, "SELECT count(*) FROM receipt") == files.receipts_count
    assert files.seconds > 0
    assert files.directory == files.receipts.parent


def test_progress_reports_every_stage_up_to_the_end(
    demo: tuple[DemoFiles, list[tuple[str, float]]],
) -> None:
    calls = demo[1]
    stages = {stage for stage, _ in calls}
    assert {"catalog", "customers", "receipts", "events"} <= stages
    for stage in ("customers", "receipts", "events"):
        fractions = [f for s, f in calls if s == stage]
        assert fractions == sorted(fractions)
        assert fractions[-1] == 1.0
        assert len(fractions) == 3  # one per chunk of 2,500


SCHEMAS = {
    "stores": {
        "store_id": pa.string(),
        "name": pa.string(),
        "city": pa.string(),
        "region": pa.string(),
        "timezone": pa.string(),
        "format": pa.string(),
        "opened_on": pa.date32(),
    },
    "products": {
        "product_id": pa.string(),
        "name": pa.string(),
        "category_id": pa.string(),
        "category": pa.string(),
        "brand": pa.string(),
        "price": pa.int64(),
        "gender": pa.string(),
        "image_url": pa.string(),
        "seasonal": pa.string(),
    },
    "customers": {
        "external_id": pa.string(),
        "first_name": pa.string(),
        "last_name": pa.string(),
        "gender": pa.string(),
        "birthday": pa.date32(),
        "phone": pa.string(),
        "email": pa.string(),
        "loyalty_card": pa.string(),
        "city": pa.string(),
        "timezone": pa.string(),
        "home_store_id": pa.string(),
        "registered_at": pa.timestamp("us", tz="UTC"),
        "source": pa.string(),
        "consent_email": pa.bool_(),
        "consent_sms": pa.bool_(),
        "consent_push": pa.bool_(),
        "consent_viber": pa.bool_(),
        "consent_personal_data": pa.bool_(),
        "app_device_id": pa.string(),
        "archetype": pa.string(),
    },
    "receipts": {
        "receipt_id": pa.string(),
        "line_no": pa.int32(),
        "customer_external_id": pa.string(),
        "store_id": pa.string(),
        "channel": pa.string(),
        "occurred_at": pa.timestamp("us", tz="UTC"),
        "kind": pa.string(),
        "original_receipt_id": pa.string(),
        "product_id": pa.string(),
        "category_id": pa.string(),
        "quantity": pa.int32(),
        "unit_price": pa.int64(),
        "discount": pa.int64(),
        "bonus_accrued": pa.int64(),
        "bonus_spent": pa.int64(),
    },
    "events": {
        "event_id": pa.string(),
        "customer_external_id": pa.string(),
        "anonymous_id": pa.string(),
        "event": pa.string(),
        "channel": pa.string(),
        "occurred_at": pa.timestamp("us", tz="UTC"),
        "properties": pa.string(),
    },
}


@pytest.mark.parametrize("name", TABLES)
def test_columns_and_types_are_the_contract(files: DemoFiles, name: str) -> None:
    schema = pq.read_schema(getattr(files, name))
    assert {field.name: field.type for field in schema} == SCHEMAS[name]
    assert pq.ParquetFile(getattr(files, name)).metadata.row_group(0).column(0).compression == (
        "SNAPPY"
    )


def test_rejects_an_empty_or_negative_request(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed):
        generate(tmp_path, customers=0)
    with pytest.raises(ValidationFailed):
        generate(tmp_path, customers=10, seed=-1)
    assert list(tmp_path.iterdir()) == []


# --- catalogue -------------------------------------------------------------------------------


def test_stores_span_cities_time_zones_and_one_web_shop(db: duckdb.DuckDBPyConnection) -> None:
    count, cities, zones, ids = (
        db.execute(
            "SELECT count(*), count(DISTINCT city), count(DISTINCT timezone), count(DISTINCT "
            "store_id)"
            " FROM stores"
        ).fetchone()
        or ()
    )
    assert 30 <= count <= 61
    assert ids == count
    assert cities >= 10
    assert zones >= 5
    assert db.execute("SELECT store_id, format FROM stores WHERE format = 'online'").fetchall() == [
        ("WEB", "online")
    ]
    assert (
        one(db, "SELECT count(*) FROM stores WHERE NOT regexp_full_match(store_id, 'S\\d{3}|WEB')")
        == 0
    )
    assert (
        one(
            db,
            "SELECT count(*) FROM stores WHERE format NOT IN ('hypermarket', 'compact', 'online')",
        )
        == 0
    )
    assert one(db, f"SELECT max(opened_on) <= DATE '{AS_OF}' FROM stores")


def test_products_have_categories_prices_and_collections(db: duckdb.DuckDBPyConnection) -> None:
    count, categories = (
        db.execute("SELECT count(*), count(DISTINCT category_id) FROM products").fetchone() or ()
    )
    assert 2_000 <= count <= 6_000
    assert 20 <= categories <= 40
    assert one(db, "SELECT count(*) FROM products WHERE price <= 0") == 0
    assert (
        one(
            db,
            "SELECT count(*) FROM products WHERE image_url != 'https://cdn.example.com/p/' || "
            "product_id || '.jpg'",
        )
        == 0
    )
    assert (
        one(db, "SELECT count(*) FROM products WHERE NOT regexp_full_match(product_id, 'P\\d{6}')")
        == 0
    )
    assert {r[0] for r in db.execute("SELECT DISTINCT gender FROM products").fetchall()} == {
        None,
        "f",
        "m",
    }
    seasons = {r[0] for r in db.execute("SELECT DISTINCT seasonal FROM products").fetchall()}
    assert seasons == {None, "spring", "summer", "autumn", "winter", "new_year"}
    # Shelf prices end in 9 (49 ₽, 1 299 ₽) or, above 10 000 ₽, in 90; so do past prices.
    for table, column in (("products", "price"), ("receipts", "unit_price")):
        assert (
            one(
                db,
                f"SELECT count(*) FROM {table} WHERE ({column} // 100) % 10 != 9"
                f" AND ({column} // 100) % 100 != 90",
            )
            == 0
        )
    # Log-normal prices: each category spreads around its own level.
    spread = (
        db.execute(
            "SELECT min(q90 / q10), max(q50) / min(q50) FROM (SELECT category_id,"
            " quantile_cont(price, 0.1) q10, quantile_cont(price, 0.5) q50,"
            " quantile_cont(price, 0.9) q90 FROM products GROUP BY 1)"
        ).fetchone()
        or ()
    )
    assert spread[0] > 1.5
    assert spread[1] > 50


# --- integrity ---------------------------------------------------------------------------


def test_every_receipt_points_at_existing_rows(db: duckdb.DuckDBPyConnection) -> None:
    assert (
        one(
            db,
            "SELECT count(*) FROM receipts r ANTI JOIN customers c ON c.external_id = "
            "r.customer_external_id",
        )
        == 0
    )
    assert one(db, "SELECT count(*) FROM receipts r ANTI JOIN stores s USING (store_id)") == 0
    assert one(db, "SELECT count(*) FROM receipts r ANTI JOIN products p USING (product_id)") == 0
    assert (
        one(
            db,
            "SELECT count(*) FROM receipts r JOIN products p USING (product_id) WHERE "
            "r.category_id != p.category_id",
        )
        == 0
    )
    assert (
        one(
            db,
            "SELECT count(*) FROM customers c ANTI JOIN stores s ON s.store_id = c.home_store_id",
        )
        == 0
    )
    assert (
        one(
            db,
            "SELECT count(*) FROM events e WHERE customer_external_id IS NOT NULL AND "
            "customer_external_id NOT IN (SELECT external_id FROM customers)",
        )
        == 0
    )


def test_ids_are_unique(db: duckdb.DuckDBPyConnection) -> None:
    assert one(db, "SELECT count(*) - count(DISTINCT (receipt_id, line_no)) FROM receipts") == 0
    assert one(db, "SELECT count(*) - count(DISTINCT event_id) FROM events") == 0
    assert one(db, "SELECT count(*) - count(DISTINCT external_id) FROM customers") == 0
    assert one(db, "SELECT count(loyalty_card) - count(DISTINCT loyalty_card) FROM customers") == 0
    assert (
        one(
            db, "SELECT count(*) FROM customers WHERE NOT regexp_full_match(external_id, 'C\\d{7}')"
        )
        == 0
    )
    # Line numbers run 1..n on every receipt, and receipt-level columns agree on all lines.
    assert (
        one(
            db,
            "SELECT count(*) FROM (SELECT receipt_id FROM receipts GROUP BY 1 HAVING min(line_no) "
            "!= 1 OR max(line_no) != count(*) OR count(DISTINCT (customer_external_id, store_id, "
            "occurred_at, kind, bonus_accrued, bonus_spent)) != 1)",
        )
        == 0
    )


def test_loyalty_cards_are_13_digit_ean_numbers(db: duckdb.DuckDBPyConnection) -> None:
    cards = [
        r[0]
        for r in db.execute(
            "SELECT loyalty_card FROM customers WHERE loyalty_card IS NOT NULL"
        ).fetchall()
    ]
    assert 0.65 <= len(cards) / CUSTOMERS <= 0.8
    for card in cards[:500]:
        assert len(card) == 13
        assert card.isdigit()
        total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(card[:12]))
        assert (10 - total % 10) % 10 == int(card[12])


def test_everything_happens_inside_the_two_year_window(db: duckdb.DuckDBPyConnection) -> None:
    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC) - timedelta(days=730)
    end = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC) + timedelta(days=1)
    for table in ("receipts", "events"):
        low, high = (
            db.execute(f"SELECT min(occurred_at), max(occurred_at) FROM {table}").fetchone() or ()
        )
        assert start <= low
        assert high < end
        assert high > end - timedelta(days=3)
    assert one(db, "SELECT max(registered_at) FROM customers") < end
    # Nobody buys before registering.
    assert (
        one(
            db,
            "SELECT count(*) FROM receipt r JOIN customers c ON c.external_id = r.customer WHERE "
            "r.occurred_at < c.registered_at",
        )
        == 0
    )
    # Nobody buys in a store before it opened.
    assert (
        one(
            db,
            "SELECT count(*) FROM receipt r JOIN stores s USING (store_id) WHERE "
            "r.occurred_at::DATE < s.opened_on",
        )
        == 0
    )


def test_offline_receipts_fall_in_local_opening_hours(db: duckdb.DuckDBPyConnection) -> None:
    hours = (
        db.execute(
            "SELECT min(h), max(h) FROM (SELECT hour(timezone(s.timezone, r.occurred_at)) h"
            " FROM receipt r JOIN stores s USING (store_id) WHERE r.channel = 'offline')"
        ).fetchone()
        or ()
    )
    assert hours[0] >= 8
    assert hours[1] <= 23
    weekend, weekday = (
        db.execute(
            "SELECT avg(n) FILTER (WHERE d IN (0, 6)), avg(n) FILTER (WHERE d NOT IN (0, 6)) FROM"
            " (SELECT dayofweek(occurred_at) d, count(*) n FROM receipt GROUP BY 1)"
        ).fetchone()
        or ()
    )
    assert weekend > 1.2 * weekday


def test_money_stays_in_bounds_and_bonuses_never_overdraw(db: duckdb.DuckDBPyConnection) -> None:
    assert (
        one(
            db,
            "SELECT count(*) FROM receipts WHERE quantity < 1 OR unit_price <= 0 OR discount < 0 "
            "OR discount > quantity * unit_price",
        )
        == 0
    )
    assert (
        one(db, "SELECT count(*) FROM receipts WHERE unit_price % 100 != 0 OR discount % 100 != 0")
        == 0
    )
    assert one(db, "SELECT count(*) FROM receipts WHERE discount > 0") > 0
    assert (
        one(
            db,
            "SELECT count(*) FROM receipts r JOIN customers c ON c.external_id = "
            "r.customer_external_id WHERE c.loyalty_card IS NULL AND (bonus_accrued > 0 OR "
            "bonus_spent > 0)",
        )
        == 0
    )
    assert (
        one(
            db,
            "SELECT count(*) FROM receipts WHERE kind = 'return' AND (bonus_accrued > 0 OR "
            "bonus_spent > 0)",
        )
        == 0
    )
    assert one(db, "SELECT count(*) FROM receipts WHERE bonus_spent > 0") > 0
    balance = one(
        db,
        """SELECT min(balance) FROM (
             SELECT sum(accrued) OVER w - accrued - sum(spent) OVER w AS balance
             FROM (SELECT receipt_id, any_value(customer_external_id) customer,
                          any_value(occurred_at) t,
                          any_value(bonus_accrued) accrued, any_value(bonus_spent) spent
                   FROM receipts GROUP BY 1)
             WINDOW w AS (PARTITION BY customer ORDER BY t, receipt_id
                          ROWS UNBOUNDED PRECEDING))""",
    )
    assert balance >= 0


def test_returns_refer_to_an_earlier_sale_of_the_same_customer(
    db: duckdb.DuckDBPyConnection,
) -> None:
    share = one(db, "SELECT avg((kind = 'return')::INT) FROM receipt")
    assert 0.012 <= share <= 0.03
    assert (
        one(db, "SELECT count(*) FROM receipt WHERE (kind = 'return') != (original IS NOT NULL)")
        == 0
    )
    assert (
        one(
            db,
            """SELECT count(*) FROM receipt r LEFT JOIN receipt s ON s.receipt_id = r.original
           WHERE r.kind = 'return' AND (s.receipt_id IS NULL OR s.kind != 'sale'
             OR s.customer != r.customer OR s.occurred_at >= r.occurred_at
             OR s.store_id != r.store_id)""",
        )
        == 0
    )
    # Every returned line names a product of that sale, in no larger quantity and price.
    assert (
        one(
            db,
            """SELECT count(*) FROM receipts r WHERE r.kind = 'return' AND NOT EXISTS (
             SELECT 1 FROM receipts s WHERE s.receipt_id = r.original_receipt_id
               AND s.product_id = r.product_id AND s.quantity >= r.quantity
               AND s.unit_price = r.unit_price)""",
        )
        == 0
    )


# --- behaviour -----------------------------------------------------------------------------


def test_one_off_customers_buy_exactly_once(db: duckdb.DuckDBPyConnection) -> None:
    counts = db.execute(
        """SELECT DISTINCT n FROM (SELECT c.external_id, count(r.receipt_id) n FROM customers c
           LEFT JOIN receipt r ON r.customer = c.external_id AND r.kind = 'sale'
           WHERE c.archetype = 'one_off' GROUP BY 1)"""
    ).fetchall()
    assert counts == [(1,)]


def test_every_customer_bought_something(db: duckdb.DuckDBPyConnection) -> None:
    assert (
        one(
            db, "SELECT count(*) FROM customers c ANTI JOIN receipt r ON r.customer = c.external_id"
        )
        == 0
    )


def test_churning_customers_stopped_four_months_ago(db: duckdb.DuckDBPyConnection) -> None:
    last = one(
        db,
        "SELECT max(r.occurred_at) FROM receipt r JOIN customers c ON c.external_id = r.customer"
        " WHERE c.archetype = 'churning' AND r.kind = 'sale'",
    )
    assert last < datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=UTC) - timedelta(days=120)
    # …after buying regularly before that.
    assert (
        one(
            db,
            "SELECT median(n) FROM (SELECT count(*) n FROM receipt r JOIN customers c ON "
            "c.external_id = r.customer WHERE c.archetype = 'churning' AND r.kind = 'sale' GROUP "
            "BY r.customer)",
        )
        >= 4
    )


def test_returning_customers_came_back_after_a_long_pause(db: duckdb.DuckDBPyConnection) -> None:
    rows = db.execute(
        f"""SELECT max(t) >= TIMESTAMPTZ '{AS_OF}' - INTERVAL 61 DAY AS recent, max(gap) AS gap
            FROM (SELECT r.customer, r.occurred_at t,
                         r.occurred_at - lag(r.occurred_at)
                           OVER (PARTITION BY r.customer ORDER BY r.occurred_at) gap
                  FROM receipt r JOIN customers c ON c.external_id = r.customer
                  WHERE c.archetype = 'returning' AND r.kind = 'sale')
            GROUP BY customer"""
    ).fetchall()
    assert rows
    assert all(recent for recent, _ in rows)
    assert all(gap is not None and gap >= timedelta(days=150) for _, gap in rows)


def test_rhythm_follows_the_archetype(db: duckdb.DuckDBPyConnection) -> None:
    medians = dict(
        db.execute(
            """SELECT archetype, median(m) FROM (
                 SELECT c.archetype, r.customer, median(epoch(r.occurred_at - r.prev) / 86400) m
                 FROM (SELECT customer, occurred_at,
                         lag(occurred_at) OVER (PARTITION BY customer ORDER BY occurred_at) prev
                       FROM receipt WHERE kind = 'sale') r
                 JOIN customers c ON c.external_id = r.customer
                 WHERE r.prev IS NOT NULL AND r.occurred_at - r.prev > INTERVAL 2 HOUR
                 GROUP BY ALL) GROUP BY 1"""
        ).fetchall()
    )
    assert 8 <= medians["loyal"] <= 20
    assert 20 <= medians["regular"] <= 45
    assert 60 <= medians["occasional"] <= 160
    assert medians["loyal"] < medians["regular"] < medians["occasional"]


def test_archetypes_have_their_shares(db: duckdb.DuckDBPyConnection) -> None:
    shares = dict(
        db.execute(
            "SELECT archetype, count(*) / " + str(CUSTOMERS) + " FROM customers GROUP BY 1"
        ).fetchall()
    )
    assert set(shares) == {"loyal", "regular", "occasional", "one_off", "churning", "returning"}
    assert all(0.04 <= s <= 0.35 for s in shares.values())


def test_visits_with_several_receipts_exist(db: duckdb.DuckDBPyConnection) -> None:
    pairs = one(
        db,
        """SELECT count(*) FROM (SELECT customer, store_id, occurred_at,
             lead(occurred_at) OVER (PARTITION BY customer ORDER BY occurred_at) nxt,
             lead(store_id) OVER (PARTITION BY customer ORDER BY occurred_at) nxt_store
           FROM receipt WHERE kind = 'sale')
           WHERE nxt_store = store_id AND nxt - occurred_at <= INTERVAL 1 HOUR""",
    )
    receipts = one(db, "SELECT count(*) FROM receipt WHERE channel = 'offline'")
    assert 0.03 <= pairs / receipts <= 0.15


def test_online_orders_go_through_the_web_store(db: duckdb.DuckDBPyConnection) -> None:
    assert (
        one(db, "SELECT count(*) FROM receipt WHERE (channel = 'online') != (store_id = 'WEB')")
        == 0
    )
    share = one(db, "SELECT avg((channel = 'online')::INT) FROM receipt")
    assert 0.1 <= share <= 0.35
    assert (
        one(db, "SELECT count(*) FROM customers WHERE home_store_id = 'WEB' AND source != 'online'")
        == 0
    )


def test_seasons_shape_what_is_bought(db: duckdb.DuckDBPyConnection) -> None:
    by_month = dict(
        db.execute(
            "SELECT month(occurred_at), count(*) FROM receipts WHERE category_id = 'christmas' "
            "GROUP BY 1"
        ).fetchall()
    )
    assert by_month[12] > 10 * by_month.get(6, 0)
    garden = dict(
        db.execute(
            "SELECT month(occurred_at), count(*) FROM receipts WHERE category_id IN ('seeds', "
            "'plants') GROUP BY 1"
        ).fetchall()
    )
    assert garden[4] > 3 * garden[11]
    traffic = dict(
        db.execute("SELECT month(occurred_at), count(*) FROM receipt GROUP BY 1").fetchall()
    )
    assert traffic[5] > 1.5 * traffic[1]


def test_gender_specific_products_are_bought_mostly_by_that_gender(
    db: duckdb.DuckDBPyConnection,
) -> None:
    rows = dict(
        db.execute(
            """SELECT p.gender, avg((c.gender = p.gender)::INT) FROM receipts r
               JOIN products p USING (product_id)
               JOIN customers c ON c.external_id = r.customer_external_id
               WHERE p.gender IS NOT NULL GROUP BY 1"""
        ).fetchall()
    )
    assert rows["f"] > 0.85
    assert rows["m"] > 0.85
    assert one(db, "SELECT count(*) FROM receipts WHERE category_id = 'march8'") > 0


def test_lines_per_customer_are_near_twenty(files: DemoFiles) -> None:
    assert 15 <= files.receipt_lines_count / CUSTOMERS <= 25
    assert 2 <= files.events_count / CUSTOMERS <= 10


# --- contacts and identities -----------------------------------------------------------------


def test_missing_and_invalid_contacts_have_realistic_shares(db: duckdb.DuckDBPyConnection) -> None:
    phones = [r[0] for r in db.execute("SELECT phone FROM customers").fetchall()]
    missing = sum(p is None for p in phones) / len(phones)
    assert 0.06 <= missing <= 0.10
    valid = 0
    for phone in phones:
        if phone is not None:
            with contextlib.suppress(phonenumbers.NumberParseException):
                valid += phonenumbers.is_valid_number(phonenumbers.parse(phone, "RU"))
    invalid = 1 - valid / sum(p is not None for p in phones)
    assert 0.01 <= invalid <= 0.04
    formats = one(
        db, "SELECT count(DISTINCT regexp_replace(phone, '\\d', '#', 'g')) FROM customers"
    )
    assert formats >= 6
    email_missing, email_invalid, mixed_case = (
        db.execute(
            """SELECT avg((email IS NULL)::INT),
                  avg((NOT regexp_full_match(trim(email), '[^@\\s]+@[^@\\s]+\\.[a-zA-Z]+'))::INT),
                  avg((email != lower(email))::INT)
           FROM customers"""
        ).fetchone()
        or ()
    )
    assert 0.22 <= email_missing <= 0.28
    assert 0.01 <= email_invalid <= 0.035
    assert mixed_case > 0.02
    app = one(db, "SELECT avg((app_device_id IS NOT NULL)::INT) FROM customers")
    assert 0.25 <= app <= 0.35
    assert one(db, "SELECT count(*) FROM customers WHERE consent_email AND email IS NULL") == 0
    assert (
        one(db, "SELECT count(*) FROM customers WHERE consent_push AND app_device_id IS NULL") == 0
    )


def test_about_one_percent_are_duplicate_people(db: duckdb.DuckDBPyConnection) -> None:
    phone_pairs = db.execute(
        """SELECT list(phone), list(first_name), list(last_name) FROM customers
           WHERE phone IS NOT NULL AND length(regexp_replace(phone, '\\D', '', 'g')) = 11
           GROUP BY right(regexp_replace(phone, '\\D', '', 'g'), 10) HAVING count(*) > 1"""
    ).fetchall()
    email_pairs = db.execute(
        """SELECT list(email), list(first_name) FROM customers WHERE email IS NOT NULL
           GROUP BY lower(trim(email)) HAVING count(*) > 1"""
    ).fetchall()
    share = (len(phone_pairs) + len(email_pairs)) / CUSTOMERS
    assert 0.005 <= share <= 0.015
    # The same person, written differently.
    assert phone_pairs
    assert email_pairs
    for phones, firsts, lasts in phone_pairs:
        assert len(set(phones)) == len(phones)
        assert len(set(firsts)) == 1
        assert len(set(lasts)) == 1
    for emails, firsts in email_pairs:
        assert len(set(emails)) == len(emails)
        assert len(set(firsts)) == 1


# --- events ------------------------------------------------------------------------------------


def test_event_names_and_channels_follow_the_segment_spec(db: duckdb.DuckDBPyConnection) -> None:
    names = {r[0] for r in db.execute("SELECT DISTINCT event FROM events").fetchall()}
    assert names == {
        "Product Viewed",
        "Product Added",
        "Product Added to Wishlist",
        "Cart Viewed",
        "Checkout Started",
        "Order Completed",
        "Application Opened",
    }
    assert {r[0] for r in db.execute("SELECT DISTINCT channel FROM events").fetchall()} == {
        "web",
        "app",
    }
    assert (
        one(
            db,
            "SELECT count(*) FROM events WHERE NOT json_valid(properties) OR "
            "json_type(properties::JSON) != 'OBJECT'",
        )
        == 0
    )
    assert (
        one(
            db,
            "SELECT count(*) FROM events WHERE customer_external_id IS NULL AND anonymous_id IS "
            "NULL",
        )
        == 0
    )
    # App events come from the customer's device.
    assert (
        one(
            db,
            """SELECT count(*) FROM events e
           JOIN customers c ON c.external_id = e.customer_external_id
           WHERE e.channel = 'app' AND e.anonymous_id IS DISTINCT FROM c.app_device_id""",
        )
        == 0
    )


def test_orders_match_online_receipts(db: duckdb.DuckDBPyConnection) -> None:
    orders = one(db, "SELECT count(*) FROM events WHERE event = 'Order Completed'")
    assert orders == one(
        db, "SELECT count(*) FROM receipt WHERE channel = 'online' AND kind = 'sale'"
    )
    assert (
        one(
            db,
            """SELECT count(*) FROM events e
           LEFT JOIN receipt r ON r.receipt_id = json_extract_string(e.properties, '$.order_id')
           WHERE e.event = 'Order Completed'
             AND (r.receipt_id IS NULL OR r.customer != e.customer_external_id
             OR r.occurred_at != e.occurred_at)""",
        )
        == 0
    )
    assert (
        one(
            db,
            """SELECT count(*) FROM (
             SELECT json_extract_string(properties, '$.order_id') AS receipt_id,
                    json_array_length(json_extract(properties, '$.products')) AS items
             FROM events WHERE event = 'Order Completed') e
           JOIN receipt r USING (receipt_id) WHERE e.items != r.lines""",
        )
        == 0
    )


def test_events_name_a_customer_only_after_registration(db: duckdb.DuckDBPyConnection) -> None:
    early = one(
        db,
        """SELECT count(*) FROM events e JOIN customers c ON c.external_id = e.customer_external_id
           WHERE e.occurred_at < c.registered_at""",
    )
    assert early == 0


def test_cart_events_come_before_the_order(db: duckdb.DuckDBPyConnection) -> None:
    late = one(
        db,
        """SELECT count(*) FROM (
             SELECT json_extract_string(properties, '$.cart_id') AS cart,
                    max(occurred_at) FILTER (WHERE event != 'Order Completed') AS browsing,
                    max(occurred_at) FILTER (WHERE event = 'Order Completed') AS ordered
             FROM events GROUP BY 1)
           WHERE cart IS NOT NULL AND browsing >= ordered""",
    )
    assert late == 0


def test_abandoned_carts_exist_including_fresh_ones(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        """CREATE OR REPLACE TEMP VIEW carts AS
           SELECT json_extract_string(properties, '$.cart_id') AS cart_id,
                  max(occurred_at) AS last_at,
                  bool_or(event = 'Order Completed') AS ordered,
                  any_value(customer_external_id) AS customer
           FROM events WHERE json_extract_string(properties, '$.cart_id') IS NOT NULL GROUP BY 1"""
    )
    abandoned = one(db, "SELECT count(*) FROM carts WHERE NOT ordered")
    assert abandoned > 0.03 * CUSTOMERS
    assert (
        one(
            db,
            f"SELECT count(*) FROM carts WHERE NOT ordered AND last_at >= TIMESTAMPTZ '{AS_OF}' - "
            f"INTERVAL 3 DAY",
        )
        >= 3
    )
    assert one(db, "SELECT count(*) FROM carts WHERE NOT ordered AND customer IS NOT NULL") > 0
    # Carts with a checkout and without an order.
    assert (
        one(
            db,
            """SELECT count(DISTINCT json_extract_string(properties, '$.cart_id')) FROM events
           WHERE event = 'Checkout Started' AND json_extract_string(properties, '$.cart_id')
             IN (SELECT cart_id FROM carts WHERE NOT ordered)""",
        )
        > 0
    )


def test_anonymous_ids_are_stable_per_browser(db: duckdb.DuckDBPyConnection) -> None:
    anonymous = one(db, "SELECT count(*) FROM events WHERE customer_external_id IS NULL")
    assert anonymous > 0.05 * one(db, "SELECT count(*) FROM events")
    # One browser belongs to at most one customer; anonymous events of a known browser can be
    # stitched to the customer who later logged in.
    assert (
        one(
            db,
            "SELECT count(*) FROM (SELECT anonymous_id FROM events WHERE customer_external_id IS "
            "NOT NULL GROUP BY 1 HAVING count(DISTINCT customer_external_id) > 1)",
        )
        == 0
    )
    stitched = one(
        db,
        """SELECT count(*) FROM events a WHERE a.customer_external_id IS NULL AND a.anonymous_id IN
           (SELECT anonymous_id FROM events WHERE customer_external_id IS NOT NULL)""",
    )
    assert stitched > 0
    visitors = one(
        db,
        "SELECT count(DISTINCT anonymous_id) FROM events a WHERE anonymous_id NOT IN (SELECT "
        "anonymous_id FROM events WHERE customer_external_id IS NOT NULL)",
    )
    assert visitors > 0
