"""Accepting calls: validate each item, normalise its identities, and commit it to the inbox.

A call is acknowledged only after its rows are committed (the request's transaction commits
before the response is sent). A repeated ``messageId`` (or receipt id) is accepted and
ignored. Identity resolution happens right after, in the resolver job, in batches.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from tactful.core import clock, storable
from tactful.core.jobs.queue import enqueue_coalesced
from tactful.customers.contacts import Ident, normalise
from tactful.customers.models import ANONYMOUS, CARD, DEVICE, EMAIL, EXTERNAL, PHONE, PUSH_TOKEN
from tactful.events import store
from tactful.events.models import PURCHASE
from tactful.events.schemas import (
    CALL_ADAPTER,
    CALL_MODELS,
    PURCHASE_ADAPTER,
    IngestResponse,
    ItemError,
    ItemResult,
    Purchase,
    SegmentCall,
)
from tactful.tenancy.models import Workspace

RESOLVE_JOB = "events.resolve"
USER_ID_NAMESPACE = "user_id"
MAX_FUTURE = timedelta(days=1)


@dataclass(frozen=True)
class IngestContext:
    """Where a batch comes from."""

    workspace: Workspace
    source: str
    brand_id: int | None = None
    historical: bool = False
    received_at: datetime | None = None
    # look for values no database can store (core.storable) in each item; False when the raw
    # text showed there are none
    check_storable: bool = True


def errors_of(exc: ValidationError, prefix: str) -> list[ItemError]:
    """Pydantic errors as (field path, reason) pairs."""
    found = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        if loc and loc[0] in CALL_MODELS:  # the tag of a discriminated union, not a field
            loc = loc[1:]
        parts = [
            part
            for part in loc
            if isinstance(part, int)
            or (part not in ("function-after",) and not str(part).endswith("Call"))
        ]
        reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.append(ItemError(field=_located(prefix, parts) or prefix, reason=reason))
    return found


def _located(prefix: str, parts: Sequence[str | int]) -> str:
    """A field's path as the results name it: ``batch[3].properties.tags[0]``."""
    path = prefix
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _unstorable(raw: Any, prefix: str) -> list[ItemError]:
    """The item's values no database can store, as errors naming each field."""
    return [ItemError(field=_located(prefix, path), reason=r) for path, r in storable.faults(raw)]


def _trait(container: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = container.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return None


def segment_identities(call: SegmentCall, region: str) -> list[Ident]:
    """Identifiers a Segment call carries: userId, anonymousId, traits, device, externalIds."""
    found: list[Ident] = []
    if call.userId is not None:
        found.append(normalise(EXTERNAL, call.userId, region=region, namespace=USER_ID_NAMESPACE))
    if call.anonymousId is not None:
        found.append(normalise(ANONYMOUS, call.anonymousId, region=region))
    traits: dict[str, Any] = dict(call.context.get("traits") or {})
    if _field(call, "type") == "identify":
        traits.update(_field(call, "traits") or {})
    email = _trait(traits, "email")
    if email:
        found.append(normalise(EMAIL, email, region=region))
    phone = _trait(traits, "phone")
    if phone:
        found.append(normalise(PHONE, phone, region=region))
    card = _trait(traits, "loyalty_card", "loyaltyCard", "card")
    if card:
        found.append(normalise(CARD, card, region=region))
    device = call.context.get("device")
    if isinstance(device, dict):
        if _trait(device, "id"):
            found.append(normalise(DEVICE, str(device["id"]), region=region))
        if _trait(device, "token"):
            found.append(normalise(PUSH_TOKEN, str(device["token"]), region=region))
    for external in call.context.get("externalIds") or []:
        if isinstance(external, dict) and _trait(external, "id") and _trait(external, "type"):
            found.append(
                normalise(
                    EXTERNAL,
                    str(external["id"]),
                    region=region,
                    namespace=str(external["type"])[:50],
                )
            )
    return found


def purchase_identities(purchase: Purchase, region: str) -> list[Ident]:
    """Identifiers a receipt carries."""
    customer = purchase.customer
    if customer is None:
        return []
    found: list[Ident] = []
    if customer.user_id:
        found.append(
            normalise(
                EXTERNAL,
                customer.user_id,
                region=region,
                namespace=customer.namespace or USER_ID_NAMESPACE,
            )
        )
    for kind, value in (
        (CARD, customer.card),
        (PHONE, customer.phone),
        (EMAIL, customer.email),
        (ANONYMOUS, customer.anonymous_id),
        (DEVICE, customer.device_id),
    ):
        if value and value.strip():
            found.append(normalise(kind, value, region=region))
    return found


def occurred_at(call: SegmentCall, received_at: datetime) -> datetime:
    """When it happened, corrected for the sender's clock skew the way Segment does."""
    stamp = call.timestamp or call.originalTimestamp
    if stamp is None:
        return received_at
    stamp = clock.ensure_utc(stamp)
    if call.sentAt is not None:
        return stamp + (received_at - clock.ensure_utc(call.sentAt))
    return stamp


def _field(call: SegmentCall, name: str) -> Any:
    """A field some call types have (``getattr`` on a pydantic model that lacks the field
    raises inside and costs more than the rest of the call)."""
    return call.__dict__.get(name)


def _segment_row(call: SegmentCall, ctx: IngestContext, received_at: datetime) -> dict[str, Any]:
    kind = _field(call, "type")
    name = _field(call, "event") or _field(call, "name")
    traits = dict(_field(call, "traits") or {})
    properties = dict(_field(call, "properties") or {})
    if kind == "alias":
        properties = {"previousId": _field(call, "previousId")}
    if kind == "group":
        properties = {"groupId": _field(call, "groupId")}
    if kind == "page" and _field(call, "category"):
        properties.setdefault("category", _field(call, "category"))
    return {
        "message_id": call.messageId or f"tactful-{uuid.uuid4().hex}",
        "type": kind,
        "name": name,
        "user_id": call.userId,
        "anonymous_id": call.anonymousId,
        "identities": [i.as_list() for i in segment_identities(call, ctx.workspace.phone_region)],
        "traits": traits,
        "properties": properties,
        "context": call.context,
        "occurred_at": occurred_at(call, received_at),
    }


def _purchase_row(purchase: Purchase, ctx: IngestContext) -> dict[str, Any]:
    body = purchase.model_dump(mode="json", exclude={"customer", "message_id"})
    for number, line in enumerate(body["lines"], start=1):
        line["line_no"] = line["line_no"] or number
    customer = purchase.customer
    return {
        "message_id": purchase.message_id or f"receipt:{purchase.receipt_id}",
        "type": PURCHASE,
        "name": purchase.kind,
        "user_id": customer.user_id if customer else None,
        "anonymous_id": customer.anonymous_id if customer else None,
        "identities": [
            i.as_list() for i in purchase_identities(purchase, ctx.workspace.phone_region)
        ],
        "traits": {},
        "properties": body,
        "context": {},
        "occurred_at": clock.ensure_utc(purchase.occurred_at),
    }


def _validate_segment(raw: dict[str, Any], kind: str | None, prefix: str) -> SegmentCall:
    if kind is not None:
        return CALL_MODELS[kind].model_validate({**raw, "type": kind})
    if not isinstance(raw.get("type"), str) or raw["type"] not in CALL_MODELS:
        raise ValueError(f"type must be one of {sorted(CALL_MODELS)}")
    call: SegmentCall = CALL_ADAPTER.validate_python(raw)
    return call


def ingest_segment(
    session: Session,
    ctx: IngestContext,
    items: Sequence[Any],
    *,
    kind: str | None = None,
    envelope: dict[str, Any] | None = None,
) -> IngestResponse:
    """Accept Segment-spec calls; invalid items are rejected one by one, the rest kept."""
    received_at = ctx.received_at or clock.now()
    base = envelope or {}
    rows: list[tuple[int, dict[str, Any]]] = []
    results: list[ItemResult] = []
    for index, raw in enumerate(items):
        prefix = f"batch[{index}]" if kind is None else ""
        if not isinstance(raw, dict):
            results.append(
                ItemResult(
                    index=index,
                    message_id=None,
                    status="rejected",
                    errors=[ItemError(field=prefix, reason="not an object")],
                )
            )
            continue
        merged = dict(raw)
        if base.get("context"):
            merged["context"] = {**base["context"], **(raw.get("context") or {})}
        if base.get("sentAt") and not raw.get("sentAt"):
            merged["sentAt"] = base["sentAt"]
        message_id = raw.get("messageId") if isinstance(raw.get("messageId"), str) else None
        unstorable = _unstorable(merged, prefix) if ctx.check_storable else []
        if unstorable:
            results.append(
                ItemResult(
                    index=index,
                    message_id=message_id,
                    status="rejected",
                    errors=unstorable,
                )
            )
            continue
        try:
            call = _validate_segment(merged, kind, prefix)
            row = _segment_row(call, ctx, received_at)
        except ValidationError as exc:
            results.append(
                ItemResult(
                    index=index,
                    message_id=message_id,
                    status="rejected",
                    errors=errors_of(exc, prefix),
                )
            )
            continue
        except ValueError as exc:
            results.append(
                ItemResult(
                    index=index,
                    message_id=message_id,
                    status="rejected",
                    errors=[ItemError(field=f"{prefix}.type".lstrip("."), reason=str(exc))],
                )
            )
            continue
        if row["occurred_at"] > received_at + MAX_FUTURE:
            results.append(
                ItemResult(
                    index=index,
                    message_id=row["message_id"],
                    status="rejected",
                    errors=[
                        ItemError(
                            field=f"{prefix}.timestamp".lstrip("."),
                            reason="more than a day in the future",
                        )
                    ],
                )
            )
            continue
        rows.append((index, row))
        results.append(ItemResult(index=index, message_id=row["message_id"], status="accepted"))
    return _store(session, ctx, rows, results, received_at)


def ingest_purchases(
    session: Session, ctx: IngestContext, items: Sequence[dict[str, Any]], *, single: bool = False
) -> IngestResponse:
    """Accept receipts; invalid ones are rejected one by one, the rest kept."""
    received_at = ctx.received_at or clock.now()
    rows: list[tuple[int, dict[str, Any]]] = []
    results: list[ItemResult] = []
    for index, raw in enumerate(items):
        prefix = "" if single else f"purchases[{index}]"
        errors = _unstorable(raw, prefix) if ctx.check_storable else []
        purchase = None
        if not errors:
            try:
                purchase = PURCHASE_ADAPTER.validate_python(raw)
            except ValidationError as exc:
                errors = errors_of(exc, prefix)
        if purchase is None:
            message_id = raw.get("receipt_id") if isinstance(raw, dict) else None
            results.append(
                ItemResult(
                    index=index,
                    message_id=message_id and f"receipt:{message_id}",
                    status="rejected",
                    errors=errors,
                )
            )
            continue
        row = _purchase_row(purchase, ctx)
        if row["occurred_at"] > received_at + MAX_FUTURE:
            results.append(
                ItemResult(
                    index=index,
                    message_id=row["message_id"],
                    status="rejected",
                    errors=[
                        ItemError(
                            field=f"{prefix}.occurred_at".lstrip("."),
                            reason="more than a day in the future",
                        )
                    ],
                )
            )
            continue
        rows.append((index, row))
        results.append(ItemResult(index=index, message_id=row["message_id"], status="accepted"))
    return _store(session, ctx, rows, results, received_at)


def _store(
    session: Session,
    ctx: IngestContext,
    rows: list[tuple[int, dict[str, Any]]],
    results: list[ItemResult],
    received_at: datetime,
) -> IngestResponse:
    """Insert accepted rows; rows whose message id is already known become duplicates."""
    common = {
        "workspace_id": ctx.workspace.id,
        "brand_id": ctx.brand_id,
        "received_at": received_at,
        "source": ctx.source[:100],
        "historical": ctx.historical,
    }
    inserted: set[str] = set()
    values = [{**common, **row} for _, row in rows]
    # the first of several items with one message id wins; the others are duplicates
    first_index: dict[str, int] = {}
    for index, row in rows:
        first_index.setdefault(row["message_id"], index)
    unique_values = [
        v
        for (index, row), v in zip(rows, values, strict=True)
        if first_index[row["message_id"]] == index
    ]
    if unique_values:
        inserted = store.insert_new_inbox_rows(session, ctx.workspace.id, unique_values)
        enqueue_coalesced(session, RESOLVE_JOB, key=RESOLVE_JOB)
    for index, row in rows:
        if row["message_id"] not in inserted or first_index[row["message_id"]] != index:
            results[index] = ItemResult(
                index=index, message_id=row["message_id"], status="duplicate"
            )
    accepted = sum(r.status == "accepted" for r in results)
    duplicates = sum(r.status == "duplicate" for r in results)
    return IngestResponse(
        accepted=accepted,
        duplicates=duplicates,
        rejected=len(results) - accepted - duplicates,
        results=results,
    )
