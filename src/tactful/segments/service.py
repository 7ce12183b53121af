"""Segment use cases: define (validated, versioned), compile, preview, estimate and overlap.
Memberships, refreshes and exports are in :mod:`tactful.segments.memberships`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import ibis
import numpy as np
import orjson
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.core.warehouse import Warehouse
from tactful.customers import service as customers
from tactful.events import service as events
from tactful.segments import store, templates
from tactful.segments.compiler import Compiler
from tactful.segments.definition import CHANNELS, SegmentCondition, dump, parse, walk
from tactful.segments.models import MANUAL, REFRESH_MODES, SCHEDULED, Segment, SegmentVersion
from tactful.segments.rendering import render
from tactful.segments.sources import metrics, use_metrics
from tactful.segments.validation import (
    AGGREGATE_OPERATORS,
    CUSTOM_TYPES,
    OPERATORS,
    STANDARD_ATTRIBUTES,
    Context,
    validate,
)
from tactful.tenancy import service as tenancy

__all__ = ["use_metrics"]
PREVIEW_LIMIT = 100


# -- definitions ------------------------------------------------------------------------------


def _event_catalog(session: Session, workspace_id: int) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for row in events.catalog(session, workspace_id=workspace_id):
        name = row.name
        found.setdefault(name, {})
        if row.property:
            found[name][row.property] = row.value_type or "string"
    return found


def _definition_of(session: Session, workspace_id: int) -> Any:
    cache: dict[int, Any] = {}

    def lookup(segment_id: int) -> Any | None:
        if segment_id not in cache:
            row = store.segment(session, workspace_id, segment_id)
            cache[segment_id] = None if row is None else parse(row.definition)
        return cache[segment_id]

    return lookup


def _attribute_types(session: Session, workspace_id: int) -> dict[str, str]:
    return {a.name: a.type for a in customers.attribute_catalog(session, workspace_id=workspace_id)}


def validation_context(
    session: Session, *, workspace_id: int, segment_id: int | None = None
) -> Context:
    """What definitions of this workspace are checked against."""
    return Context(
        attribute_types=_attribute_types(session, workspace_id),
        metrics={m.name: m for m in metrics().metric_specs()},
        events=_event_catalog(session, workspace_id),
        brand_ids={b.id for b in tenancy.list_brands(session, workspace_id=workspace_id)},
        definition_of=_definition_of(session, workspace_id),
        segment_id=segment_id,
        now=clock.now(),
    )


def check_definition(
    session: Session, *, workspace_id: int, definition: Any, segment_id: int | None = None
) -> tuple[Any, str]:
    """Parse and validate a definition; returns it with its plain-language rendering."""
    node = parse(definition)
    validate(node, validation_context(session, workspace_id=workspace_id, segment_id=segment_id))
    return node, describe(session, workspace_id=workspace_id, node=node)


def describe(session: Session, *, workspace_id: int, node: Any) -> str:
    """A parsed definition in plain language (referenced segments by name)."""

    def name_of(segment_id: int) -> str:
        row = store.segment(session, workspace_id, segment_id)
        return f"segment “{row.name}”" if row else f"segment {segment_id}"

    return render(node, name_of)


@dataclass(frozen=True)
class CatalogueMetric:
    """A metric as the segment builder offers it."""

    name: str
    type: str
    meaning: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    """What conditions can name in a workspace, with the type each is compared as and the
    operators every type takes (the segment builder's menus)."""

    attributes: dict[str, str]  # standard profile fields, then custom attributes
    metrics: list[CatalogueMetric]
    events: dict[str, dict[str, str]]  # event name -> property -> type compared as
    operators: dict[str, list[str]]  # type -> operators
    aggregate_operators: list[str]  # counts and sums of events, purchases, messages


def catalogue(session: Session, *, workspace_id: int) -> Catalogue:
    """Attributes (with inferred types), metrics, events and their properties a definition
    may use in this workspace, and the operators of each type."""
    custom = _attribute_types(session, workspace_id)
    attributes = dict(STANDARD_ATTRIBUTES)
    for name in sorted(custom):
        attributes.setdefault(name, CUSTOM_TYPES.get(custom[name], "string"))
    events_ = {
        name: {prop: CUSTOM_TYPES.get(kind, "string") for prop, kind in sorted(properties.items())}
        for name, properties in sorted(_event_catalog(session, workspace_id).items())
    }
    return Catalogue(
        attributes=attributes,
        metrics=[
            CatalogueMetric(m.name, m.type, m.meaning, tuple(m.values))
            for m in metrics().metric_specs()
        ],
        events=events_,
        operators={kind: sorted(ops) for kind, ops in OPERATORS.items()},
        aggregate_operators=sorted(AGGREGATE_OPERATORS),
    )


def _refresh_settings(mode: str, every: int | None) -> None:
    if mode not in REFRESH_MODES:
        raise ValidationFailed(
            f"refresh_mode must be one of {list(REFRESH_MODES)}", field="refresh_mode"
        )
    if mode == SCHEDULED and not every:
        raise ValidationFailed(
            "a scheduled segment needs refresh_every_minutes", field="refresh_every_minutes"
        )


def create_segment(
    session: Session,
    *,
    workspace_id: int,
    name: str,
    definition: Any,
    actor: str,
    description: str | None = None,
    brand_id: int | None = None,
    refresh_mode: str = MANUAL,
    refresh_every_minutes: int | None = None,
) -> Segment:
    """Create a segment from a valid definition (version 1); nothing is saved otherwise."""
    node, rendered = check_definition(session, workspace_id=workspace_id, definition=definition)
    _refresh_settings(refresh_mode, refresh_every_minutes)
    if brand_id is not None:
        tenancy.get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    if store.by_name(session, workspace_id, name) is not None:
        raise Conflict(f"a segment named {name!r} already exists", field="name")
    now = clock.now()
    segment = Segment(
        workspace_id=workspace_id,
        brand_id=brand_id,
        name=name,
        description=description,
        version=1,
        definition=dump(node),
        refresh_mode=refresh_mode,
        refresh_every_minutes=refresh_every_minutes,
        next_refresh_at=now if refresh_mode == SCHEDULED else None,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    _add_version(session, segment, rendered, actor)
    tenancy.record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="segment.created",
        target_type="segment",
        target_id=segment.id,
        brand_id=brand_id,
        details={"name": name, "definition": rendered},
    )
    return segment


def _add_version(session: Session, segment: Segment, rendered: str, actor: str) -> None:
    session.add(
        SegmentVersion(
            segment_id=segment.id,
            version=segment.version,
            definition=segment.definition,
            description=rendered,
            actor=actor,
            created_at=clock.now(),
        )
    )
    session.flush()


def update_segment(
    session: Session,
    *,
    workspace_id: int,
    segment_id: int,
    actor: str,
    definition: Any | None = None,
    name: str | None = None,
    description: str | None = None,
    refresh_mode: str | None = None,
    refresh_every_minutes: int | None = None,
) -> Segment:
    """Change a segment; a new definition becomes a new version (memberships stay with the
    segment and follow at its next refresh)."""
    segment = get_segment(session, workspace_id=workspace_id, segment_id=segment_id, lock=True)
    changed: dict[str, Any] = {}
    if definition is not None:
        node, rendered = check_definition(
            session, workspace_id=workspace_id, definition=definition, segment_id=segment.id
        )
        stored = dump(node)
        if stored != segment.definition:
            segment.definition = stored
            segment.version += 1
            _add_version(session, segment, rendered, actor)
            changed["definition"] = rendered
    if name is not None and name != segment.name:
        other = store.by_name(session, workspace_id, name)
        if other is not None and other.id != segment.id:
            raise Conflict(f"a segment named {name!r} already exists", field="name")
        segment.name = changed["name"] = name
    if description is not None:
        segment.description = description
    if refresh_mode is not None:
        every = refresh_every_minutes or segment.refresh_every_minutes
        _refresh_settings(refresh_mode, every)
        segment.refresh_mode, segment.refresh_every_minutes = refresh_mode, every
        segment.next_refresh_at = clock.now() if refresh_mode == SCHEDULED else None
        changed["refresh_mode"] = refresh_mode
    segment.updated_at = clock.now()
    if changed:
        tenancy.record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="segment.updated",
            target_type="segment",
            target_id=segment.id,
            brand_id=segment.brand_id,
            details={**changed, "version": segment.version},
        )
    session.flush()
    return segment


def get_segment(
    session: Session, *, workspace_id: int, segment_id: int, lock: bool = False
) -> Segment:
    """A segment of the workspace, or 404."""
    segment = store.segment(session, workspace_id, segment_id, lock=lock)
    if segment is None:
        raise NotFound(f"segment {segment_id} does not exist", field="segment_id")
    return segment


def list_segments(session: Session, *, workspace_id: int) -> list[Segment]:
    """The workspace's segments."""
    return store.segments(session, workspace_id)


def versions(session: Session, *, workspace_id: int, segment_id: int) -> list[SegmentVersion]:
    """Every definition a segment has had, oldest first."""
    get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    return store.versions(session, segment_id)


# -- compiling and evaluating -----------------------------------------------------------------


def compiler(runtime: Runtime, session: Session, *, workspace_id: int) -> Compiler:
    """A compiler for this workspace, now."""
    return compiler_at(runtime, session, workspace_id, clock.now())


def compiler_at(runtime: Runtime, session: Session, workspace_id: int, now: datetime) -> Compiler:
    """A compiler for this workspace at the moment ``now``."""
    return Compiler(
        warehouse=runtime.warehouse,
        source=metrics(),
        workspace_id=workspace_id,
        now=now,
        attribute_types=_attribute_types(session, workspace_id),
        definition_of=_definition_of(session, workspace_id),
    )


def evaluate_members(
    warehouse: Warehouse, compiler_at: Callable[[datetime], Compiler], node: Any, now: datetime
) -> list[int]:
    """The ids of the customers ``node`` selects at ``now`` (whole seconds). The compiled
    query is kept as a template per definition (see ``templates``), so evaluating the same
    definition again, as scheduled and continuous refreshes do, skips compiling it."""
    return templates.member_ids(
        warehouse,
        key=compiler_at(now).identity(node),
        build=lambda moment: compiler_at(moment).members(node),
        now=now,
    )


def _node(
    session: Session, *, workspace_id: int, definition: Any | None, segment_id: int | None
) -> Any:
    if definition is not None:
        node, _text = check_definition(
            session, workspace_id=workspace_id, definition=definition, segment_id=segment_id
        )
        return node
    if segment_id is None:
        raise ValidationFailed("give a definition or a segment", field="definition")
    return parse(get_segment(session, workspace_id=workspace_id, segment_id=segment_id).definition)


def matching(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    definition: Any,
    customer_ids: Sequence[int],
) -> set[int]:
    """Which of ``customer_ids`` a definition matches now (a journey's branch)."""
    if not customer_ids:
        return set()
    members = compiler(runtime, session, workspace_id=workspace_id).members(parse(definition))
    wanted = members.filter(members.customer_id.isin([int(c) for c in customer_ids]))
    found = runtime.warehouse.con.to_pyarrow(wanted)["customer_id"].to_pylist()
    return {int(c) for c in found}


@dataclass(frozen=True)
class Preview:
    """A definition's size and a sample of members with the values that qualified them."""

    size: int
    description: str
    sample: list[dict[str, Any]]


def preview(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    definition: Any | None = None,
    segment_id: int | None = None,
    limit: int = 20,
) -> Preview:
    """Size and a sample (lowest customer ids first) with each condition's value."""
    node = _node(session, workspace_id=workspace_id, definition=definition, segment_id=segment_id)
    compiled = compiler(runtime, session, workspace_id=workspace_id).compile(
        {"member": node}, with_values=True
    )
    members = compiled.table.filter(compiled.table.member)
    con = runtime.warehouse.con
    size = int(con.execute(members.count()))
    rows = con.to_pyarrow(
        members.order_by("customer_id").limit(min(max(limit, 1), PREVIEW_LIMIT))
    ).to_pylist()
    sample = [
        {
            "customer_id": row["customer_id"],
            "values": {path: _plain(row[column]) for column, path in compiled.values.items()},
        }
        for row in rows
    ]
    return Preview(size, describe(session, workspace_id=workspace_id, node=node), sample)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return clock.ensure_utc(value).isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# Compiled size queries of the current minute: compiling a definition costs more than
# counting its members over the materialised metrics, and estimates are asked for repeatedly
# while a marketer edits. Keyed by warehouse, workspace, minute and the definition (with the
# definitions it references), so an edit compiles anew.
_SIZE_SQL: dict[tuple[str, int, datetime, str], str] = {}


def size(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    definition: Any | None = None,
    segment_id: int | None = None,
) -> int:
    """How many customers a definition (or a segment's current one) matches, as of the start
    of the current minute."""
    node = _node(session, workspace_id=workspace_id, definition=definition, segment_id=segment_id)
    warehouse = runtime.warehouse
    anchor = clock.now().replace(second=0, microsecond=0)
    lookup = _definition_of(session, workspace_id)
    referenced = [
        dump(lookup(child.segment_id))
        for _path, child in walk(node)
        if isinstance(child, SegmentCondition) and lookup(child.segment_id) is not None
    ]
    return count_members(
        warehouse,
        workspace_id=workspace_id,
        anchor=anchor,
        key=orjson.dumps([dump(node), referenced]).decode(),
        members=lambda: compiler_at(runtime, session, workspace_id, anchor).members(node),
    )


def count_members(
    warehouse: Warehouse,
    *,
    workspace_id: int,
    anchor: datetime,
    key: str,
    members: Callable[[], ibis.Table],
) -> int:
    """Count the customer ids ``members()`` selects, reusing its compiled SQL within the
    minute ``anchor`` for the same ``key`` (DuckDB and PostgreSQL)."""
    con: Any = warehouse.con
    if warehouse.kind == "pyspark":
        return int(con.execute(members().count()))
    cache_key = (warehouse.url, workspace_id, anchor, key)
    sql = _SIZE_SQL.get(cache_key)
    if sql is None:
        sql = str(ibis.to_sql(members().count(), dialect=con.name))
        if len(_SIZE_SQL) > 256 or any(k[2] != anchor for k in _SIZE_SQL):
            _SIZE_SQL.clear()
        _SIZE_SQL[cache_key] = sql
    row = con.raw_sql(sql).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Estimate:
    """Before sending: size, reach and cost per channel, and the cost of a cascade."""

    size: int
    brand_id: int
    reachable: dict[str, int]
    cost: dict[str, int]  # minor units, if everyone reachable got one message on the channel
    cascade: list[str]
    cascade_reached: int
    cascade_cost: int
    per_channel_in_cascade: dict[str, int] = field(default_factory=dict)


def estimate(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    definition: Any | None = None,
    segment_id: int | None = None,
    cascade: Sequence[str] = ("push", "email", "viber", "sms"),
) -> Estimate:
    """Reachable size per channel (marketing consent, usable contact, not suppressed), its
    cost from the brand's prices, and the cost of a cascade in which each customer costs the
    price of the first channel that reaches them."""
    tenancy.get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    unknown = [c for c in cascade if c not in CHANNELS]
    if unknown or len(set(cascade)) != len(cascade):
        raise ValidationFailed(
            f"cascade lists distinct channels of {list(CHANNELS)}", field="cascade"
        )
    node = _node(session, workspace_id=workspace_id, definition=definition, segment_id=segment_id)
    members = compiler(runtime, session, workspace_id=workspace_id).members(node)
    reach = metrics().reach_table(runtime.warehouse, workspace_id=workspace_id)
    reach = reach.filter(reach.brand_id == brand_id, reach.reachable)
    per_customer = reach.group_by("customer_id").aggregate(
        **{f"r_{c}": ibis.ifelse(reach.channel == c, 1, 0).max() for c in CHANNELS}
    )
    joined = members.left_join(per_customer, members.customer_id == per_customer.customer_id)
    prices = tenancy.channel_prices(session, brand_id=brand_id)
    flags = {c: per_customer[f"r_{c}"].fill_null(0) == 1 for c in CHANNELS}
    first = ibis.cases(*((flags[c], c) for c in cascade), else_=ibis.null("string"))
    row = runtime.warehouse.con.to_pyarrow(
        joined.aggregate(
            size=joined.count(),
            **{f"reach_{c}": ibis.ifelse(flags[c], 1, 0).sum() for c in CHANNELS},
            **{f"first_{c}": ibis.ifelse(first == c, 1, 0).sum() for c in cascade},
        )
    ).to_pylist()[0]
    reachable = {c: int(row[f"reach_{c}"] or 0) for c in CHANNELS}
    first_counts = {c: int(row[f"first_{c}"] or 0) for c in cascade}
    return Estimate(
        size=int(row["size"] or 0),
        brand_id=brand_id,
        reachable=reachable,
        cost={c: reachable[c] * prices.get(c, 0) for c in CHANNELS},
        cascade=list(cascade),
        cascade_reached=sum(first_counts.values()),
        cascade_cost=sum(first_counts[c] * prices.get(c, 0) for c in cascade),
        per_channel_in_cascade=first_counts,
    )


@dataclass(frozen=True)
class Overlap:
    """How two segments' current definitions overlap."""

    first: int
    second: int
    both: int
    either: int


def overlap(
    runtime: Runtime, session: Session, *, workspace_id: int, first_id: int, second_id: int
) -> Overlap:
    """Sizes of two segments and of their intersection and union, in one query."""
    nodes = {
        "a": parse(get_segment(session, workspace_id=workspace_id, segment_id=first_id).definition),
        "b": parse(
            get_segment(session, workspace_id=workspace_id, segment_id=second_id).definition
        ),
    }
    table = compiler(runtime, session, workspace_id=workspace_id).compile(nodes).table
    row = runtime.warehouse.con.to_pyarrow(
        table.aggregate(
            a=ibis.ifelse(table.a, 1, 0).sum(),
            b=ibis.ifelse(table.b, 1, 0).sum(),
            both=ibis.ifelse(table.a & table.b, 1, 0).sum(),
            either=ibis.ifelse(table.a | table.b, 1, 0).sum(),
        )
    ).to_pylist()[0]
    return Overlap(
        int(row["a"] or 0), int(row["b"] or 0), int(row["both"] or 0), int(row["either"] or 0)
    )


def next_run(segment: Segment, now: datetime) -> datetime | None:
    """When a scheduled segment refreshes next."""
    if segment.refresh_mode != SCHEDULED or not segment.refresh_every_minutes:
        return None
    return now + timedelta(minutes=segment.refresh_every_minutes)


def member_ids(session: Session, *, workspace_id: int, segment_id: int) -> np.ndarray:
    """Every current member of a segment, as a sorted int64 array (campaign audiences)."""
    get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    found = store.member_ids(session, segment_id)
    return np.sort(np.fromiter(found, dtype=np.int64, count=len(found)))
