"""Queries over customers, identities, merges and consents (never commits)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import JSON, Table, bindparam, func, literal_column, or_, select, tuple_, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, ColumnClause
from sqlalchemy.types import TypeEngine

from tactful.core.dialect import reserve_ids
from tactful.customers.models import (
    AttributeCatalog,
    Consent,
    ConsentChange,
    Customer,
    CustomerMerge,
    Identity,
    Topic,
)

LOOKUP_CHUNK = 900
# Valid identities are filtered with the bare column: SQLite uses the partial unique index
# (``WHERE valid``) only for that exact term, and SQLAlchemy would render ``valid = 1``.
VALID_IDENTITY: ColumnClause[Any] = literal_column("identities.valid")


def identity_owners(
    session: Session, workspace_id: int, keys: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """Which customer owns each valid ``(kind, namespace, value)``."""
    by_kind: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, namespace, value in set(keys):
        by_kind[(kind, namespace)].append(value)
    owners: dict[tuple[str, str, str], int] = {}
    for (kind, namespace), values in by_kind.items():
        for start in range(0, len(values), LOOKUP_CHUNK):
            chunk = values[start : start + LOOKUP_CHUNK]
            rows = session.execute(
                select(Identity.value, Identity.customer_id).where(
                    Identity.workspace_id == workspace_id,
                    Identity.kind == kind,
                    Identity.namespace == namespace,
                    VALID_IDENTITY,
                    Identity.value.in_(chunk),
                )
            )
            for value, customer_id in rows:
                owners[(kind, namespace, value)] = customer_id
    return owners


def customers_by_ids(session: Session, ids: Iterable[int]) -> dict[int, Customer]:
    wanted = list(set(ids))
    found: dict[int, Customer] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        for customer in session.scalars(select(Customer).where(Customer.id.in_(chunk))):
            found[customer.id] = customer
    return found


def customer_rows(session: Session, ids: Iterable[int], columns: Sequence[str]) -> dict[int, Any]:
    """``id -> row`` of ``id`` and the named columns: plain rows, for reading many customers
    (loading them as ORM objects costs several times as much)."""
    wanted = list(set(ids))
    selected = [Customer.id, *(getattr(Customer, name) for name in columns if name != "id")]
    found: dict[int, Any] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        for row in session.execute(select(*selected).where(Customer.id.in_(chunk))):
            found[row.id] = row
    return found


def contact_states(session: Session, ids: Iterable[int]) -> dict[int, Any]:
    """``id -> row`` of ``anonymous``, ``email``, ``phone`` and ``last_seen_at``: what the
    resolver needs of a customer whose profile a batch does not write (plain rows: loading
    the customer as an ORM object cost about a quarter of a resolver run)."""
    return customer_rows(session, ids, ("anonymous", "email", "phone", "last_seen_at"))


def mark_seen(session: Session, *, seen: Mapping[int, datetime]) -> None:
    """Move customers' ``last_seen_at`` forward to the given times (never back)."""
    if not seen:
        return
    table = cast(Table, Customer.__table__)
    execute_many(
        session,
        table.update()
        .where(
            table.c.id == bindparam("customer"),
            or_(table.c.last_seen_at.is_(None), table.c.last_seen_at < bindparam("seen")),
        )
        .values(last_seen_at=bindparam("seen")),
        [{"customer": c, "seen": at} for c, at in seen.items()],
        {"customer": table.c.id.type, "seen": table.c.last_seen_at.type},
    )


def merged_into(session: Session, customer_ids: Sequence[int]) -> dict[int, int]:
    """``merged id -> survivor`` for those of ``customer_ids`` that were merged."""
    found: dict[int, int] = {}
    for start in range(0, len(customer_ids), LOOKUP_CHUNK):
        rows = session.execute(
            select(Customer.id, Customer.merged_into_id).where(
                Customer.id.in_(customer_ids[start : start + LOOKUP_CHUNK]),
                Customer.merged_into_id.is_not(None),
            )
        )
        found.update((cid, survivor) for cid, survivor in rows if survivor is not None)
    return found


def insert_customers(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert customers in bulk (one executemany under ids reserved first, as
    ``dialect.insert_with_ids`` explains); returns their ids in the order given."""
    ids = reserve_ids(session, Customer, len(rows))
    insert_rows(session, Customer, [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
    return ids


def insert_rows(session: Session, model: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    """Plain bulk insert of rows that all have the same keys (one executemany).

    The statement is compiled once and each column's bind processor applied directly: the
    general executemany path of SQLAlchemy costs several times more per row, which matters
    for imports of millions of identities and consents.
    """
    if not rows:
        return
    table = model.__table__
    execute_many(session, table.insert(), rows, {c.key: c.type for c in table.columns})


def execute_many(
    session: Session,
    statement: ClauseElement,
    rows: Sequence[dict[str, Any]],
    types: dict[str, TypeEngine[Any]],
) -> None:
    """Execute a statement for many rows (all with the same keys) in one driver executemany,
    each bind processed by the type named in ``types`` (JSON by orjson)."""
    dialect = session.get_bind().dialect
    names = list(rows[0])
    compiled = statement.compile(dialect=dialect, column_keys=names)
    assert isinstance(compiled, SQLCompiler)
    order = list(compiled.positiontup or []) if compiled.positional else names
    columns = []
    for name in order:
        values = [row[name] for row in rows]
        column_type = types[name]
        if isinstance(column_type, JSON):  # orjson: a tenth of json.dumps's cost
            columns.append([None if v is None else orjson.dumps(v).decode() for v in values])
            continue
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            columns.append(values)
            continue
        # rows of a batch mostly share values (the same time, the same source): once each
        processed = {value: process(value) for value in set(values)}
        columns.append([processed[value] for value in values])
    params: list[Any] = list(zip(*columns, strict=True))
    if not compiled.positional:
        params = [dict(zip(order, values, strict=True)) for values in params]
    session.connection().exec_driver_sql(compiled.string, params)


def invalid_identities(
    session: Session, workspace_id: int, customer_ids: Iterable[int]
) -> set[tuple[int, str, str, str]]:
    """``(customer_id, kind, namespace, value)`` of the invalid contacts some customers have."""
    wanted = list(set(customer_ids))
    found: set[tuple[int, str, str, str]] = set()
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        rows = session.execute(
            select(Identity.customer_id, Identity.kind, Identity.namespace, Identity.value).where(
                Identity.workspace_id == workspace_id,
                Identity.customer_id.in_(wanted[start : start + LOOKUP_CHUNK]),
                Identity.valid.is_(False),
            )
        )
        found.update((c, k, n, v) for c, k, n, v in rows)
    return found


def identities_of(session: Session, customer_ids: Sequence[int]) -> list[Identity]:
    return list(
        session.scalars(
            select(Identity).where(Identity.customer_id.in_(customer_ids)).order_by(Identity.id)
        )
    )


def move_identities(session: Session, *, source: int, target: int) -> list[int]:
    """Re-point a customer's identities at another; returns the moved identity ids."""
    ids = list(session.scalars(select(Identity.id).where(Identity.customer_id == source)))
    if ids:
        session.execute(
            update(Identity)
            .where(Identity.id.in_(ids))
            .values(customer_id=target)
            .execution_options(synchronize_session=False)
        )
    return ids


def reassign_identity(
    session: Session, workspace_id: int, key: tuple[str, str, str], customer_id: int
) -> None:
    """Point a valid identity at another customer (a push token on a handed-over phone)."""
    kind, namespace, value = key
    session.execute(
        update(Identity)
        .where(
            Identity.workspace_id == workspace_id,
            Identity.kind == kind,
            Identity.namespace == namespace,
            Identity.value == value,
            VALID_IDENTITY,
        )
        .values(customer_id=customer_id)
        .execution_options(synchronize_session=False)
    )


def consents_of(session: Session, customer_ids: Sequence[int]) -> list[Consent]:
    return list(
        session.scalars(
            select(Consent).where(Consent.customer_id.in_(customer_ids)).order_by(Consent.id)
        )
    )


def consent_history(session: Session, customer_id: int, limit: int = 200) -> list[ConsentChange]:
    return list(
        session.scalars(
            select(ConsentChange)
            .where(ConsentChange.customer_id == customer_id)
            .order_by(ConsentChange.id.desc())
            .limit(limit)
        )
    )


def merges_of(session: Session, customer_id: int) -> list[CustomerMerge]:
    return list(
        session.scalars(
            select(CustomerMerge)
            .where(
                or_(
                    CustomerMerge.survivor_id == customer_id, CustomerMerge.merged_id == customer_id
                )
            )
            .order_by(CustomerMerge.id)
        )
    )


def attribute_catalog(session: Session, workspace_id: int) -> list[AttributeCatalog]:
    return list(
        session.scalars(
            select(AttributeCatalog)
            .where(AttributeCatalog.workspace_id == workspace_id)
            .order_by(AttributeCatalog.name)
        )
    )


def find_by_identity(
    session: Session, workspace_id: int, kind: str, namespace: str, value: str
) -> int | None:
    return session.scalar(
        select(Identity.customer_id).where(
            Identity.workspace_id == workspace_id,
            Identity.kind == kind,
            Identity.namespace == namespace,
            Identity.value == value,
            VALID_IDENTITY,
        )
    )


def contact_identities(
    session: Session, workspace_id: int, customer_ids: Sequence[int], kinds: Sequence[str]
) -> list[Identity]:
    """Valid contact identities of some customers (for delivery and reachability)."""
    return list(
        session.scalars(
            select(Identity)
            .where(
                Identity.workspace_id == workspace_id,
                Identity.customer_id.in_(customer_ids),
                Identity.kind.in_(kinds),
                VALID_IDENTITY,
            )
            .order_by(Identity.customer_id, Identity.id)
        )
    )


def search_customers(
    session: Session, workspace_id: int, *, query: str | None, limit: int, after_id: int | None
) -> list[Customer]:
    stmt = select(Customer).where(
        Customer.workspace_id == workspace_id, Customer.merged_into_id.is_(None)
    )
    if after_id:
        stmt = stmt.where(Customer.id > after_id)
    if query:
        like = f"%{query.lower()}%"
        matching = select(Identity.customer_id).where(
            Identity.workspace_id == workspace_id, func.lower(Identity.value).like(like)
        )
        stmt = stmt.where(
            or_(
                Customer.id.in_(matching),
                func.lower(
                    func.coalesce(Customer.first_name, "")
                    + " "
                    + func.coalesce(Customer.last_name, "")
                ).like(like),
            )
        )
    return list(session.scalars(stmt.order_by(Customer.id).limit(limit)))


def count_customers(session: Session, workspace_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(
                Customer.workspace_id == workspace_id,
                Customer.merged_into_id.is_(None),
                Customer.anonymous.is_(False),
            )
        )
        or 0
    )


def consent_status_by_key(
    session: Session, customer_ids: Sequence[int]
) -> dict[tuple[int, str, str, str, str], tuple[int | None, str | None]]:
    """``(customer, brand_scope, kind, channel, topic) -> (consent id, status)`` of some
    customers."""
    found: dict[tuple[int, str, str, str, str], tuple[int | None, str | None]] = {}
    for start in range(0, len(customer_ids), LOOKUP_CHUNK):
        rows = session.execute(
            select(
                Consent.id,
                Consent.customer_id,
                Consent.brand_scope,
                Consent.kind,
                Consent.channel,
                Consent.topic,
                Consent.status,
            ).where(Consent.customer_id.in_(customer_ids[start : start + LOOKUP_CHUNK]))
        )
        for consent_id, customer, scope, kind, channel, topic, status in rows:
            found[(customer, scope, kind, channel, topic)] = (consent_id, status)
    return found


def consent_rows(
    session: Session, customer_ids: Sequence[int], keys: Sequence[tuple[str, str, str, str]]
) -> dict[tuple[int, str, str, str, str], Consent]:
    """Current consents by (customer, brand_scope, kind, channel, topic)."""
    if not customer_ids or not keys:
        return {}
    rows = session.scalars(
        select(Consent).where(
            Consent.customer_id.in_(customer_ids),
            tuple_(Consent.brand_scope, Consent.kind, Consent.channel, Consent.topic).in_(keys),
        )
    )
    return {(c.customer_id, c.brand_scope, c.kind, c.channel, c.topic): c for c in rows}


def usable_contacts(
    session: Session, workspace_id: int, customer_ids: Sequence[int], kinds: Sequence[str]
) -> dict[tuple[int, str], str]:
    """The newest valid, deliverable contact of each kind per customer."""
    found: dict[tuple[int, str], str] = {}
    for start in range(0, len(customer_ids), LOOKUP_CHUNK):
        chunk = customer_ids[start : start + LOOKUP_CHUNK]
        rows = session.execute(
            select(Identity.customer_id, Identity.kind, Identity.value)
            .where(
                Identity.workspace_id == workspace_id,
                Identity.customer_id.in_(chunk),
                Identity.kind.in_(kinds),
                VALID_IDENTITY,
                Identity.status == "ok",
            )
            .order_by(Identity.id)
        )
        for customer_id, kind, value in rows:
            found[(customer_id, kind)] = value  # later rows are newer and win
    return found


def consent_states(
    session: Session, customer_ids: Sequence[int], *, brand_scopes: Sequence[str]
) -> dict[int, dict[tuple[str, str, str, str], str]]:
    """Consent statuses per customer keyed by (brand scope, kind, channel, topic)."""
    found: dict[int, dict[tuple[str, str, str, str], str]] = defaultdict(dict)
    for start in range(0, len(customer_ids), LOOKUP_CHUNK):
        chunk = customer_ids[start : start + LOOKUP_CHUNK]
        rows = session.execute(
            select(
                Consent.customer_id,
                Consent.brand_scope,
                Consent.kind,
                Consent.channel,
                Consent.topic,
                Consent.status,
            ).where(Consent.customer_id.in_(chunk), Consent.brand_scope.in_(brand_scopes))
        )
        for customer_id, scope, kind, channel, topic, status in rows:
            found[customer_id][(scope, kind, channel, topic)] = status
    return found


def topic_default(session: Session, workspace_id: int, brand_id: int | None, key: str) -> bool:
    """Whether a topic counts as subscribed until the customer leaves it (unknown: yes)."""
    value = session.scalar(
        select(Topic.default_subscribed).where(
            Topic.workspace_id == workspace_id,
            Topic.key == key,
            *([Topic.brand_id == brand_id] if brand_id is not None else []),
        )
    )
    return True if value is None else bool(value)


def problem_contacts(session: Session, workspace_id: int, kinds: Sequence[str]) -> dict[str, int]:
    """Contacts of the given kinds that cannot be used, by status (invalid, bounced,
    complained)."""
    stmt = (
        select(Identity.status, func.count())
        .where(
            Identity.workspace_id == workspace_id,
            Identity.kind.in_(list(kinds)),
            or_(Identity.valid.is_(False), Identity.status != "ok"),
        )
        .group_by(Identity.status)
    )
    return {str(status): int(n) for status, n in session.execute(stmt)}


def count_without_contact(session: Session, workspace_id: int) -> int:
    """Known customers with neither an e-mail nor a phone on file."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(
                Customer.workspace_id == workspace_id,
                Customer.merged_into_id.is_(None),
                Customer.anonymous.is_(False),
                Customer.email.is_(None),
                Customer.phone.is_(None),
            )
        )
        or 0
    )


def count_merges(session: Session, workspace_id: int) -> int:
    """Merges in force (not reverted)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(CustomerMerge)
            .where(CustomerMerge.workspace_id == workspace_id, CustomerMerge.reverted_at.is_(None))
        )
        or 0
    )
