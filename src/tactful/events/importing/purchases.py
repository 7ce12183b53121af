"""Importing purchases: one row per receipt line, receipt-level columns repeated on each.

DuckDB checks every row with the rules the HTTP API applies to a receipt, then each receipt
as a whole (its lines agree on the receipt's columns, line numbers do not repeat, the total
adds up); a receipt with a rejected row is rejected whole. Historical imports resolve each
receipt's customer and append receipts and lines to the warehouse exactly as the loader
shapes purchases sent over HTTP; live imports send the receipts through the inbox instead.
"""

from __future__ import annotations

from typing import Any

from tactful.core import clock
from tactful.customers.models import ANONYMOUS, CARD, DEVICE, EMAIL, EXTERNAL, PHONE
from tactful.events import store
from tactful.events.importing import history, people, reader
from tactful.events.importing.context import Counts, ImportContext
from tactful.events.ingest import MAX_FUTURE, IngestContext, ingest_purchases
from tactful.events.models import PURCHASE
from tactful.events.resolver import catalog_rows
from tactful.events.schemas import (
    DEFAULT_CURRENCY,
    MAX_CODE,
    MAX_EMAIL,
    MAX_ID,
    MAX_LINE_NO,
    MAX_LINES,
    MAX_MONEY,
    MAX_QUANTITY,
    MAX_RECEIPT_ID,
)
from tactful.events.warehouse import RECEIPT_LINES, RECEIPTS
from tactful.tenancy.models import Workspace

CUSTOMER_FIELDS = {
    "customer_external_id": EXTERNAL,
    "customer_card": CARD,
    "customer_phone": PHONE,
    "customer_email": EMAIL,
    "customer_anonymous_id": ANONYMOUS,
    "customer_device_id": DEVICE,
}
CUSTOMER_LIMITS = {
    "customer_external_id": MAX_ID,
    "customer_card": MAX_CODE,
    "customer_phone": MAX_CODE,
    "customer_email": MAX_EMAIL,
    "customer_anonymous_id": MAX_ID,
    "customer_device_id": MAX_ID,
}
RECEIPT_FIELDS = (
    "kind",
    "original_receipt_id",
    "store_id",
    "channel",
    "occurred_at",
    "total",
    "bonus_accrued",
    "bonus_spent",
    "currency",
    *CUSTOMER_FIELDS,
)
SPEC = reader.KindSpec(
    kind="purchases",
    fields=(
        "receipt_id",
        "line_no",
        "product_id",
        "category_id",
        "category",
        "quantity",
        "unit_price",
        "discount",
        "amount",
        *RECEIPT_FIELDS,
    ),
    aliases={
        "user_id": "customer_external_id",
        "customer_id": "customer_external_id",
        "external_id": "customer_external_id",
        "card": "customer_card",
        "loyalty_card": "customer_card",
        "phone": "customer_phone",
        "email": "customer_email",
        "anonymous_id": "customer_anonymous_id",
        "device_id": "customer_device_id",
        "type": "kind",
        "original_receipt": "original_receipt_id",
        "store": "store_id",
        "timestamp": "occurred_at",
        "time": "occurred_at",
        "product": "product_id",
        "sku": "product_id",
        "category_name": "category",
        "qty": "quantity",
        "price": "unit_price",
        "line_discount": "discount",
    },
    required=(
        ("receipt_id",),
        ("store_id",),
        ("occurred_at",),
        ("product_id",),
        ("quantity",),
        ("unit_price",),
    ),
)
LIVE_CHUNK = 2000  # receipts per transaction when going through the inbox


def _rules(ctx: ImportContext, has_stores: bool) -> list[tuple[str, str, str]]:
    """Row checks in order: (condition, field, reason as SQL)."""
    future = (clock.now() + MAX_FUTURE).isoformat()
    rules: list[tuple[str, str, str]] = [
        ("receipt_id IS NULL", "receipt_id", "'missing'"),
        (
            f"length(receipt_id) > {MAX_RECEIPT_ID}",
            "receipt_id",
            f"'longer than {MAX_RECEIPT_ID} characters'",
        ),
        (
            "kind NOT IN ('sale', 'return')",
            "kind",
            "'must be sale or return, not ' || kind",
        ),
        (
            "kind = 'return' AND original_receipt_id IS NULL",
            "original_receipt_id",
            "'a return names original_receipt_id, the sale it returns'",
        ),
        (
            "kind = 'sale' AND original_receipt_id IS NOT NULL",
            "original_receipt_id",
            "'only a return names original_receipt_id'",
        ),
        (
            f"length(original_receipt_id) > {MAX_RECEIPT_ID}",
            "original_receipt_id",
            f"'longer than {MAX_RECEIPT_ID} characters'",
        ),
        ("store_id IS NULL", "store_id", "'missing'"),
        (f"length(store_id) > {MAX_CODE}", "store_id", f"'longer than {MAX_CODE} characters'"),
    ]
    if has_stores:
        rules.append(
            (
                "NOT known_store",
                "store_id",
                "'unknown store ' || store_id || ' (import stores first)'",
            )
        )
    rules += [
        (
            "channel NOT IN ('offline', 'online')",
            "channel",
            "'must be offline or online, not ' || channel",
        ),
        ("occurred_text IS NULL", "occurred_at", "'missing'"),
        (
            "occurred_at IS NULL",
            "occurred_at",
            "'not a date and time: ' || occurred_text || ' (e.g. 2026-05-01T10:00:00+03:00)'",
        ),
        (
            f"occurred_at > TIMESTAMPTZ '{future}'",
            "occurred_at",
            "'more than a day in the future'",
        ),
        ("product_id IS NULL", "product_id", "'missing'"),
        (f"length(product_id) > {MAX_CODE}", "product_id", f"'longer than {MAX_CODE} characters'"),
        (
            f"length(category_id) > {MAX_CODE}",
            "category_id",
            f"'longer than {MAX_CODE} characters'",
        ),
        ("quantity_text IS NULL", "quantity", "'missing'"),
        ("quantity IS NULL", "quantity", "'not a number: ' || quantity_text"),
        ("quantity <= 0", "quantity", "'must be greater than 0'"),
        (f"quantity > {MAX_QUANTITY}", "quantity", f"'must be at most {MAX_QUANTITY}'"),
        ("unit_price_text IS NULL", "unit_price", "'missing'"),
        (
            "unit_price IS NULL",
            "unit_price",
            "'not a whole number of minor units: ' || unit_price_text",
        ),
    ]
    for name in ("unit_price", "discount", "amount", "total", "bonus_accrued", "bonus_spent"):
        if name != "unit_price":
            rules.append(
                (
                    f"{name}_text IS NOT NULL AND {name} IS NULL",
                    name,
                    f"'not a whole number of minor units: ' || {name}_text",
                )
            )
        rules += [
            (f"{name} < 0", name, "'must not be negative'"),
            (f"{name} > {MAX_MONEY}", name, f"'must be at most {MAX_MONEY}'"),
        ]
    rules += [
        (
            "discount > gross",
            "discount",
            "'discount ' || discount || ' exceeds quantity × unit_price (' || gross || ')'",
        ),
        (
            "amount IS NOT NULL AND amount <> gross - discount",
            "amount",
            "'amount ' || amount || ' differs from quantity × unit_price − discount (' "
            "|| (gross - discount) || ')'",
        ),
        (
            "line_no_text IS NOT NULL AND (line_no IS NULL OR line_no < 1 "
            f"OR line_no > {MAX_LINE_NO})",
            "line_no",
            f"'not a line number from 1 to {MAX_LINE_NO}: ' || line_no_text",
        ),
        (
            "currency IS NOT NULL AND NOT regexp_full_match(currency, '[A-Za-z]{3}')",
            "currency",
            "'not a 3-letter currency code: ' || currency",
        ),
    ]
    for name, limit in CUSTOMER_LIMITS.items():
        if ctx.source.has(name):
            rules.append((f"length({name}) > {limit}", name, f"'longer than {limit} characters'"))
    return rules


def _checks(rules: list[tuple[str, str, str]]) -> str:
    """The first failing rule's field and reason, or NULLs."""
    field = " ".join(f"WHEN {condition} THEN '{name}'" for condition, name, _ in rules)
    reason = " ".join(f"WHEN {condition} THEN {text}" for condition, _, text in rules)
    return f"CASE {field} END AS field, CASE {reason} END AS reason"


MONEY = ("unit_price", "discount", "amount", "total", "bonus_accrued", "bonus_spent")


def _stage(ctx: ImportContext) -> None:
    """The table ``lines``: every row typed, with the field and reason of a rejected one."""
    con, source = ctx.con, ctx.source
    with ctx.runtime.db.scope(readonly=True) as session:
        stores = store.store_ids(session, ctx.workspace_id)
    con.execute("CREATE TABLE known_stores (store_id VARCHAR)")
    if stores:
        con.executemany("INSERT INTO known_stores VALUES (?)", [[s] for s in stores])
    texts = ("receipt_id", "original_receipt_id", "store_id", "product_id", "category_id")
    values = [
        "line",
        *(f"{source.text(name)} AS {name}" for name in (*texts, *CUSTOMER_FIELDS)),
        f"coalesce(lower({source.text('kind')}), 'sale') AS kind",
        f"coalesce(lower({source.text('channel')}), 'offline') AS channel",
        f"upper({source.text('currency')}) AS currency",
        f"{source.moment('occurred_at')} AS occurred_at",
        f"{source.text('occurred_at')} AS occurred_text",
        f"{source.number('quantity')} AS quantity",
        f"{source.text('quantity')} AS quantity_text",
        f"{source.whole('line_no')} AS line_no",
        f"{source.text('line_no')} AS line_no_text",
        *(f"{source.whole(name)} AS {name}" for name in MONEY),
        *(f"{source.text(name)} AS {name}_text" for name in MONEY),
        f"{people.who(source, list(CUSTOMER_FIELDS))} AS who",
    ]
    kept = [
        "line",
        *texts,
        *CUSTOMER_FIELDS,
        "kind",
        "channel",
        "currency",
        "occurred_at",
        "quantity",
        "line_no",
        "unit_price",
        "coalesce(discount, 0) AS discount",
        "total",
        "coalesce(bonus_accrued, 0) AS bonus_accrued",
        "coalesce(bonus_spent, 0) AS bonus_spent",
        "gross",
        "who",
    ]
    con.execute(
        f"CREATE TABLE lines AS SELECT {', '.join(kept)}, {_checks(_rules(ctx, bool(stores)))} "  # noqa: S608
        "FROM (SELECT v.*, TRY_CAST(round_even(v.quantity * v.unit_price, 0) AS BIGINT) AS gross, "
        "k.store_id IS NOT NULL AS known_store "
        f"FROM (SELECT {', '.join(values)} FROM src) v "
        "LEFT JOIN known_stores k ON k.store_id = v.store_id)"
    )


def _check_receipts(ctx: ImportContext) -> None:
    """Reject what only shows across a receipt's rows, and every row of a rejected receipt."""
    con = ctx.con
    # Rows without a line number are numbered by their place in the receipt, as over HTTP.
    if con.execute(
        "SELECT count(*) FROM lines WHERE line_no IS NULL AND receipt_id IS NOT NULL"
    ).fetchone()[0]:
        con.execute(
            "UPDATE lines SET line_no = p.position FROM (SELECT line, row_number() OVER "
            "(PARTITION BY receipt_id ORDER BY line) AS position FROM lines "
            "WHERE receipt_id IS NOT NULL) p WHERE lines.line = p.line AND lines.line_no IS NULL"
        )
    con.execute(
        "UPDATE lines SET field = 'line_no', reason = 'receipt ' || lines.receipt_id || "
        "' already has line ' || lines.line_no || ' (row ' || r.first_line || ')' "
        "FROM (SELECT receipt_id, line_no, min(line) AS first_line FROM lines "
        "WHERE field IS NULL AND receipt_id IS NOT NULL GROUP BY ALL HAVING count(*) > 1) r "
        "WHERE lines.receipt_id = r.receipt_id AND lines.line_no = r.line_no "
        "AND lines.line > r.first_line AND lines.field IS NULL"
    )
    receipt_columns = ", ".join(RECEIPT_FIELDS)
    con.execute(
        "CREATE TABLE receipt_checks AS SELECT receipt_id, count(*) AS n, "  # noqa: S608
        "min(line) FILTER (WHERE field IS NOT NULL) AS bad_line, "
        "min(h) <> max(h) AS mixed, sum(gross - discount) FILTER (WHERE field IS NULL) AS due, "
        f"max(total) AS total FROM (SELECT *, hash({receipt_columns}) AS h FROM lines "
        "WHERE receipt_id IS NOT NULL) GROUP BY receipt_id"
    )
    disagree = " ".join(
        f"WHEN count(DISTINCT coalesce(CAST({c} AS VARCHAR), chr(0))) > 1 THEN '{c}'"
        for c in RECEIPT_FIELDS
    )
    con.execute(
        f"CREATE TABLE receipt_problems AS SELECT receipt_id, CASE {disagree} END AS field, "  # noqa: S608
        "'the rows of receipt ' || receipt_id || ' disagree on ' || CASE "
        f"{disagree} END AS reason FROM lines WHERE receipt_id IN "
        "(SELECT receipt_id FROM receipt_checks WHERE mixed) GROUP BY receipt_id"
    )
    con.execute(
        "INSERT INTO receipt_problems SELECT receipt_id, 'receipt_id', "  # noqa: S608
        f"'a receipt has at most {MAX_LINES} lines; ' || receipt_id || ' has ' || n "
        f"FROM receipt_checks WHERE NOT mixed AND n > {MAX_LINES}"
    )
    con.execute(
        "INSERT INTO receipt_problems SELECT receipt_id, 'total', 'total ' || total || "  # noqa: S608
        "' differs from the sum of line amounts (' || due || ')' FROM receipt_checks "
        f"WHERE NOT mixed AND n <= {MAX_LINES} AND bad_line IS NULL AND total <> due"
    )
    con.execute(
        "INSERT INTO receipt_problems SELECT receipt_id, 'receipt_id', 'another row of receipt ' "  # noqa: S608
        "|| receipt_id || ' was rejected (row ' || bad_line || ')' FROM receipt_checks "
        f"WHERE NOT mixed AND n <= {MAX_LINES} AND bad_line IS NOT NULL"
    )
    con.execute(
        "UPDATE lines SET field = p.field, reason = p.reason FROM receipt_problems p "
        "WHERE lines.receipt_id = p.receipt_id AND lines.field IS NULL"
    )
    con.execute("INSERT INTO rejects SELECT line, field, reason FROM lines WHERE field IS NOT NULL")


def run(ctx: ImportContext) -> Counts:
    """Check the staged file, then import its valid receipts."""
    ctx.progress("checking rows", 0, ctx.source.total)
    _stage(ctx)
    _check_receipts(ctx)
    ctx.progress("checking rows", ctx.source.total, ctx.source.total)
    _note_catalog(ctx)
    if ctx.options.live:
        return _live(ctx)
    return _history(ctx)


def _note_catalog(ctx: ImportContext) -> None:
    kinds = [
        r[0]
        for r in ctx.con.execute("SELECT DISTINCT kind FROM lines WHERE field IS NULL").fetchall()
    ]
    with ctx.runtime.db.scope() as session:
        store.note_catalog(
            session, catalog_rows((ctx.workspace_id, PURCHASE, kind, {}) for kind in kinds)
        )


def _history(ctx: ImportContext) -> Counts:
    """Append new receipts and lines to the warehouse, each with its customer."""
    con = ctx.con
    valid = "SELECT receipt_id FROM lines WHERE field IS NULL"
    history.known_keys(
        ctx,
        table=RECEIPT_LINES,
        probe=f"{valid} GROUP BY 1",
        keys=["receipt_id", "line_no"],
        into="known_lines",
    )
    history.known_keys(
        ctx, table=RECEIPTS, probe=f"{valid} GROUP BY 1", keys=["receipt_id"], into="known_receipts"
    )
    # rows still to write: their line, or their receipt's header, is not in the warehouse yet
    con.execute(
        "CREATE TABLE todo AS SELECT l.*, k.receipt_id IS NULL AS new_line, "
        "r.receipt_id IS NULL AS new_receipt FROM lines l "
        "LEFT JOIN known_lines k ON k.receipt_id = l.receipt_id AND k.line_no = l.line_no "
        "LEFT JOIN known_receipts r ON r.receipt_id = l.receipt_id "
        "WHERE l.field IS NULL AND (k.receipt_id IS NULL OR r.receipt_id IS NULL)"
    )
    valid_rows = int(con.execute("SELECT count(*) FROM lines WHERE field IS NULL").fetchone()[0])
    new_rows = int(con.execute("SELECT count(*) FROM todo WHERE new_line").fetchone()[0])
    present = [f for f in CUSTOMER_FIELDS if ctx.source.has(f)]
    if present:
        chosen = ", ".join(f"any_value({f}) AS {f}" for f in present)
        con.execute(
            f"CREATE TABLE people AS SELECT who, {chosen}, max(occurred_at) AS last_at, "  # noqa: S608
            "min(line) AS position FROM todo WHERE who IS NOT NULL GROUP BY who"
        )
        people.resolve(ctx, {f: CUSTOMER_FIELDS[f] for f in present}, "customers of receipts")
    else:
        con.execute("CREATE TABLE resolved (who VARCHAR, customer_id BIGINT)")
    con.execute(
        "CREATE TABLE todo_people AS SELECT t.*, r.customer_id FROM todo t "
        "LEFT JOIN resolved r ON r.who = t.who"
    )
    amount = "gross - discount"
    signed = f"CASE WHEN kind = 'return' THEN -({amount}) ELSE {amount} END"
    history.append(
        ctx,
        table=RECEIPT_LINES,
        sql=f"SELECT NULL, {ctx.workspace_id}, receipt_id, line_no, customer_id, store_id, "  # noqa: S608
        "channel, kind, occurred_at, product_id, category_id, quantity, unit_price, discount, "
        f"{amount}, {signed} FROM todo_people WHERE new_line ORDER BY line",
        stage="receipt lines",
        total=new_rows,
    )
    receipts = int(
        con.execute("SELECT count(DISTINCT receipt_id) FROM todo WHERE new_receipt").fetchone()[0]
    )
    tag, historical = reader.literal(ctx.tag), "true"
    history.append(
        ctx,
        table=RECEIPTS,
        sql=f"SELECT NULL, {ctx.workspace_id}, receipt_id, any_value(customer_id), "  # noqa: S608
        "any_value(store_id), any_value(channel), any_value(kind), any_value(original_receipt_id), "
        "any_value(occurred_at), count(*), sum(quantity), sum(gross), sum(discount), "
        f"sum({amount}), sum({signed}), any_value(bonus_accrued), any_value(bonus_spent), "
        f"coalesce(any_value(currency), '{DEFAULT_CURRENCY}'), {tag}, {historical} "
        "FROM todo_people WHERE new_receipt GROUP BY receipt_id ORDER BY min(line)",
        stage="receipts",
        total=receipts,
    )
    return Counts(imported=new_rows, duplicate=valid_rows - new_rows)


def _payload(rows: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """One receipt as the HTTP API takes it."""
    first = rows[0]
    customer = {
        key: first[field]
        for field, key in (
            ("customer_external_id", "user_id"),
            ("customer_card", "card"),
            ("customer_phone", "phone"),
            ("customer_email", "email"),
            ("customer_anonymous_id", "anonymous_id"),
            ("customer_device_id", "device_id"),
        )
        if first.get(field) is not None
    }
    body: dict[str, Any] = {
        "receipt_id": first["receipt_id"],
        "kind": first["kind"],
        "original_receipt_id": first["original_receipt_id"],
        "store_id": first["store_id"],
        "channel": first["channel"],
        "occurred_at": clock.ensure_utc(first["occurred_at"]).isoformat(),
        "total": first["total"],
        "bonus_accrued": first["bonus_accrued"],
        "bonus_spent": first["bonus_spent"],
        "lines": [
            {
                "line_no": row["line_no"],
                "product_id": row["product_id"],
                "category_id": row["category_id"],
                "quantity": row["quantity"],
                "unit_price": row["unit_price"],
                "discount": row["discount"],
            }
            for row in rows
        ],
    }
    if first["currency"] is not None:
        body["currency"] = first["currency"]
    if customer:
        body["customer"] = {**customer, "namespace": namespace}
    return body


def _live(ctx: ImportContext) -> Counts:
    """Send the valid receipts through the inbox, as calls to POST /v1/purchases would."""
    con = ctx.con
    total = int(con.execute("SELECT count(*) FROM lines WHERE field IS NULL").fetchone()[0])
    sql = (
        "SELECT *, min(line) OVER (PARTITION BY receipt_id) AS first_line FROM lines "
        "WHERE field IS NULL ORDER BY first_line, line_no"
    )
    counts = Counts()
    receipts: list[list[dict[str, Any]]] = []
    done = 0
    ctx.progress("receipts", 0, total)
    for table in reader.batches(con, sql, size=50_000):
        for row in table.to_pylist():
            if receipts and receipts[-1][0]["receipt_id"] == row["receipt_id"]:
                receipts[-1].append(row)
            else:
                receipts.append([row])
        # the last receipt may continue in the next batch
        while len(receipts) > LIVE_CHUNK:
            chunk, receipts = receipts[:LIVE_CHUNK], receipts[LIVE_CHUNK:]
            done += _send(ctx, chunk, counts)
            ctx.progress("receipts", done, total)
    if receipts:
        done += _send(ctx, receipts, counts)
        ctx.progress("receipts", done, total)
    return counts


def _send(ctx: ImportContext, receipts: list[list[dict[str, Any]]], counts: Counts) -> int:
    payloads = [_payload(rows, ctx.options.namespace) for rows in receipts]
    rejects: list[tuple[int, str | None, str]] = []
    with ctx.runtime.db.scope() as session:
        workspace = session.get(Workspace, ctx.workspace_id)
        assert workspace is not None
        result = ingest_purchases(
            session,
            IngestContext(workspace=workspace, source=ctx.tag, historical=False),
            payloads,
        )
        for rows, item in zip(receipts, result.results, strict=True):
            if item.status == "accepted":
                counts.imported += len(rows)
            elif item.status == "duplicate":
                counts.duplicate += len(rows)
            else:
                reason = "; ".join(f"{e.field}: {e.reason}" for e in item.errors)
                rejects += [(int(row["line"]), None, reason) for row in rows]
    reader.add_rejects(ctx.con, rejects)
    return sum(len(rows) for rows in receipts)
