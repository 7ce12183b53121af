"""Who a row is: its identity columns normalised, and the distinct identity sets of a file
resolved to customers (unknown ones become customers, as live calls would make them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from tactful.customers import bulk
from tactful.customers import service as customers
from tactful.customers.contacts import (
    Ident,
    normalise_card,
    normalise_email,
    normalise_phone,
    normalise_plain,
)
from tactful.customers.identity import ProfileRecord
from tactful.customers.models import CARD, EMAIL, EXTERNAL, PHONE
from tactful.events.importing import reader
from tactful.events.importing.context import ImportContext

RESOLVE_CHUNK = 50_000


def identities(
    data: Mapping[str, Sequence[Any]], kinds: Mapping[str, str], *, region: str, namespace: str
) -> list[list[Ident]]:
    """Each row's identities from the columns named in ``kinds`` (column -> identity kind),
    normalised column by column."""
    rows = len(next(iter(data.values()))) if data else 0
    found: list[list[Ident]] = [[] for _ in range(rows)]
    for column, kind in kinds.items():
        values = data.get(column)
        if values is None:
            continue
        present = [i for i, v in enumerate(values) if v is not None]
        texts = [str(values[i]) for i in present]
        if kind == EMAIL:
            idents = [normalise_email(t) for t in texts]
        elif kind == PHONE:
            idents = [normalise_phone(t, region) for t in texts]
        elif kind == CARD:
            idents = [normalise_card(t) for t in texts]
        else:
            space = namespace if kind == EXTERNAL else ""
            idents = [normalise_plain(kind, t, space) for t in texts]
        for i, ident in zip(present, idents, strict=True):
            found[i].append(ident)
    return found


def resolve(ctx: ImportContext, kinds: Mapping[str, str], stage: str) -> None:
    """Resolve the identity sets of the table ``people`` (``who``, the columns of ``kinds``
    and ``last_at``, in the order to resolve them) into the table ``resolved`` (``who``,
    ``customer_id``)."""
    con = ctx.con
    con.execute("CREATE TABLE resolved (who VARCHAR, customer_id BIGINT)")
    total = int(con.execute("SELECT count(*) FROM people").fetchone()[0])
    columns = ", ".join(reader.quote(c) for c in kinds)
    sql = f"SELECT who, {columns}, last_at FROM people ORDER BY position"  # noqa: S608
    done = 0
    ctx.progress(stage, 0, total)
    for table in reader.batches(con, sql, size=RESOLVE_CHUNK):
        data = table.to_pydict()
        idents = identities(
            {c: data[c] for c in kinds}, kinds, region=ctx.region, namespace=ctx.options.namespace
        )
        records = [
            ProfileRecord(idents=found, source=ctx.options.source, at=at, seen=True)
            for found, at in zip(idents, data["last_at"], strict=True)
        ]
        with ctx.runtime.db.scope() as session:
            workspace = customers.workspace_of(session, ctx.workspace_id)
            owners = bulk.resolve_records(
                session, workspace=workspace, records=records, actor=ctx.actor
            )
        result = pa.table(
            {
                "who": pa.array(data["who"], pa.string()),
                "customer_id": pa.array(owners, pa.int64()),
            }
        )
        con.register("resolved_batch", result)
        try:
            con.execute("INSERT INTO resolved SELECT * FROM resolved_batch")
        finally:
            con.unregister("resolved_batch")
        done += table.num_rows
        ctx.progress(stage, done, total)


def who(source: reader.Source, fields: Sequence[str]) -> str:
    """One text key of a row's identity columns (NULL when it has none)."""
    present = [f for f in fields if source.has(f)]
    if not present:
        return "NULL::VARCHAR"
    if len(present) == 1:
        return source.text(present[0])
    parts = ", ".join(f"coalesce({source.text(f)}, '')" for f in present)
    texts = " OR ".join(f"{source.text(f)} IS NOT NULL" for f in present)
    return f"CASE WHEN {texts} THEN concat_ws(chr(31), {parts}) END"
