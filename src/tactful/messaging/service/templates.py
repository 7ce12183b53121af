"""Templates: save (validated), list, preview with a real customer or a sample, and the
personalisation context every render uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.customers import service as customers
from tactful.events import service as events
from tactful.messaging import store
from tactful.messaging.errors import TemplateInvalid
from tactful.messaging.models import BLOCK, LAYOUT, MESSAGE, MessageTemplate
from tactful.messaging.service.rendering import (
    CUSTOMER_FIELDS,
    HTML_FIELDS,
    LAYOUT_ROOTS,
    PART_FIELDS,
    REQUIRED_FIELDS,
    ROOTS,
    Problem,
    Rendered,
    check_mjml,
    check_source,
    reads_as_test,
    render_part,
    renderer_for,
)
from tactful.tenancy.service import get_brand, record_audit

SAMPLE_CUSTOMER: dict[str, Any] = {
    "id": 0,
    "first_name": "Anna",
    "last_name": "Ivanova",
    "name": "Anna Ivanova",
    "gender": "f",
    "birthday": "1990-05-17",
    "age": 36,
    "city": "Moscow",
    "locale": "ru",
    "timezone": "Europe/Moscow",
    "email": "anna@example.com",
    "phone": "+79120000000",
    "attributes": {},
}


def _age(birthday: date | None, today: date) -> int | None:
    if birthday is None:
        return None
    return today.year - birthday.year - ((today.month, today.day) < (birthday.month, birthday.day))


# the columns ``customer_context`` reads besides ``id``: the template's customer fields but
# those it derives (dispatch reads only these, as plain rows)
CONTEXT_COLUMNS = tuple(sorted(CUSTOMER_FIELDS - {"id", "name", "age"}))


def customer_context(customer: Any) -> dict[str, Any]:
    """What ``customer.*`` means in a template, of a ``Customer`` or a row with ``id`` and
    ``CONTEXT_COLUMNS``."""
    name = " ".join(p for p in (customer.first_name, customer.last_name) if p)
    return {
        "id": customer.id,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "name": name or None,
        "gender": customer.gender,
        "birthday": customer.birthday.isoformat() if customer.birthday else None,
        "age": _age(customer.birthday, clock.now().date()),
        "city": customer.city,
        "locale": customer.locale,
        "timezone": customer.timezone,
        "email": customer.email,
        "phone": customer.phone,
        "attributes": dict(customer.attributes or {}),
    }


def product_dict(product: Any) -> dict[str, Any]:
    return {
        "product_id": product.product_id,
        "name": product.name,
        "category": product.category,
        "brand": product.brand,
        "price": product.price,
        "image_url": product.image_url,
        "url": product.url,
    }


def enrich_contexts(
    session: Session, *, workspace_id: int, contexts: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Fill product details into ``event.items`` and turn ``products`` (ids) into product
    records, with one catalogue lookup for all contexts."""
    wanted: list[str] = []
    for context in contexts:
        items = (context.get("event") or {}).get("items") or []
        wanted.extend(
            str(i["product_id"]) for i in items if isinstance(i, dict) and "product_id" in i
        )
        wanted.extend(str(p) for p in context.get("products") or [] if not isinstance(p, dict))
    found = (
        events.products_by_id(session, workspace_id=workspace_id, product_ids=wanted)
        if wanted
        else {}
    )
    enriched: list[dict[str, Any]] = []
    for context in contexts:
        result = dict(context)
        event = result.get("event")
        if isinstance(event, dict) and isinstance(event.get("items"), list):
            items = []
            for item in event["items"]:
                product = found.get(str(item.get("product_id"))) if isinstance(item, dict) else None
                items.append({**product_dict(product), **item} if product else item)
            result["event"] = {**event, "items": items}
        if isinstance(result.get("products"), list):
            result["products"] = [
                p if isinstance(p, dict) else product_dict(found[str(p)])
                for p in result["products"]
                if isinstance(p, dict) or str(p) in found
            ]
        enriched.append(result)
    return enriched


# -- saving and validating ----------------------------------------------------------------


def validate(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    kind: str,
    parts: Mapping[str, Mapping[str, str]],
    layout_id: int | None = None,
) -> tuple[list[Problem], list[Problem]]:
    """Syntax errors (with line and column) and unknown variables of a template."""
    blocks = store.blocks(session, workspace_id, brand_id)
    renderer = renderer_for(blocks)
    attributes = frozenset(
        a.name for a in customers.attribute_catalog(session, workspace_id=workspace_id)
    )
    errors: list[Problem] = []
    warnings: list[Problem] = []
    if layout_id is not None:
        layout = store.template(session, workspace_id, layout_id)
        if layout is None or layout.kind != LAYOUT or layout.brand_id != brand_id:
            errors.append(Problem("", "layout_id", f"layout {layout_id} does not exist"))
    for channel, part in parts.items():
        allowed = PART_FIELDS.get(channel)
        if allowed is None:
            errors.append(Problem(channel, "", f"unknown channel {channel!r}"))
            continue
        if kind != MESSAGE and channel != "email":
            errors.append(Problem(channel, "", "layouts and blocks have an e-mail part only"))
            continue
        wanted = REQUIRED_FIELDS.get(channel, ("text",)) if kind == MESSAGE else ("body",)
        for name in wanted:
            if not str(part.get(name, "")).strip():
                errors.append(Problem(channel, name, "this field is required"))
        for name, source in part.items():
            if name not in allowed:
                errors.append(
                    Problem(channel, name, f"unknown field; {channel} has {', '.join(allowed)}")
                )
                continue
            escape = (channel, name) in HTML_FIELDS
            syntax, unknown = check_source(
                renderer,
                source,
                part=channel,
                field_name=name,
                escape=escape,
                roots=LAYOUT_ROOTS if kind == LAYOUT else ROOTS,
                attributes=attributes,
            )
            errors.extend(syntax)
            warnings.extend(unknown)
            if not syntax and escape and kind != BLOCK:
                mjml_problem = check_mjml(source, part=channel, field_name=name)
                if mjml_problem is not None:
                    errors.append(mjml_problem)
    warnings.sort(key=lambda w: (w.part, w.field, w.line or 0, w.column or 0))
    return errors, warnings


def save_template(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    kind: str,
    key: str,
    name: str,
    parts: dict[str, dict[str, str]],
    layout_id: int | None = None,
    content_rules: dict[str, Any] | None = None,
    sample_context: dict[str, Any] | None = None,
    actor: str,
    template_id: int | None = None,
) -> tuple[MessageTemplate, list[Problem]]:
    """Create (or replace) a template; refused with line and column when it does not parse.
    Returns the template and the unknown variables it uses."""
    get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    rules = content_rules or {}
    if (
        rules.get("min_age") is not None
        and rules.get("max_age") is not None
        and rules["min_age"] > rules["max_age"]
    ):
        raise ValidationFailed("min_age is above max_age", field="content_rules.min_age")
    errors, warnings = validate(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        kind=kind,
        parts=parts,
        layout_id=layout_id,
    )
    if errors:
        raise TemplateInvalid([p.as_dict() for p in errors])
    now = clock.now()
    if template_id is None:
        if store.template_by_key(session, workspace_id, brand_id, kind, key) is not None:
            raise Conflict(f"the brand already has a {kind} {key!r}", field="key")
        row = MessageTemplate(
            workspace_id=workspace_id, brand_id=brand_id, kind=kind, key=key, created_at=now
        )
        session.add(row)
    else:
        row = get_template(session, workspace_id=workspace_id, template_id=template_id)
        if (row.brand_id, row.kind) != (brand_id, kind):
            raise ValidationFailed("a template keeps its brand and kind", field="kind")
        row.version += 1
    row.key, row.name, row.layout_id = key, name, layout_id
    row.parts = {channel: dict(part) for channel, part in parts.items()}
    row.content_rules = rules
    row.sample_context = sample_context or {}
    row.is_test_content = kind == MESSAGE and reads_as_test(parts)
    row.updated_at = now
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="template.saved",
        target_type="message_template",
        target_id=row.id,
        brand_id=brand_id,
        details={"key": key, "kind": kind, "version": row.version},
    )
    return row, warnings


def get_template(session: Session, *, workspace_id: int, template_id: int) -> MessageTemplate:
    """A template by id."""
    row = store.template(session, workspace_id, template_id)
    if row is None:
        raise NotFound(f"template {template_id} does not exist", field="template_id")
    return row


def list_templates(
    session: Session, *, workspace_id: int, kind: str | None = None, brand_id: int | None = None
) -> list[MessageTemplate]:
    """Templates, oldest first."""
    return store.templates(session, workspace_id, kind=kind, brand_id=brand_id)


def layout_source(session: Session, template: MessageTemplate) -> str | None:
    """The MJML of a message's master layout."""
    if template.layout_id is None:
        return None
    layout = store.template(session, template.workspace_id, template.layout_id)
    return None if layout is None else str(layout.parts.get("email", {}).get("body", ""))


def render_template(
    session: Session,
    template: MessageTemplate,
    channel: str,
    context: Mapping[str, Any],
    *,
    blocks: Mapping[str, str] | None = None,
    layout: str | None = None,
) -> Rendered:
    """Render one channel of a message template."""
    part = template.parts.get(channel)
    if part is None:
        raise ValidationFailed(f"template {template.id} has no {channel} part", field="channel")
    if blocks is None:
        blocks = store.blocks(session, template.workspace_id, template.brand_id)
    if layout is None:
        layout = layout_source(session, template)
    return render_part(renderer_for(blocks), channel, part, context, layout=layout)


def _preview_context(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    channel: str,
    customer_id: int | None,
    context: dict[str, Any],
    public_url: str,
) -> dict[str, Any]:
    """What a preview renders with: a real customer's profile (or the sample), the brand,
    placeholder links and the enriched context."""
    if customer_id is not None:
        customer = customers.get_customer(
            session, workspace_id=workspace_id, customer_id=customer_id
        )
        person = customer_context(customer)
    else:
        person = SAMPLE_CUSTOMER
    brand = get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    [extra] = enrich_contexts(session, workspace_id=workspace_id, contexts=[context])
    return {
        **extra,
        "customer": person,
        "brand": {"id": brand.id, "name": brand.name},
        "links": {
            "unsubscribe": f"{public_url}/u/preview",
            "preferences": f"{public_url}/p/preview",
        },
        "message": {"id": 0, "channel": channel},
    }


def preview(
    session: Session,
    *,
    workspace_id: int,
    template_id: int,
    channel: str,
    customer_id: int | None,
    context: dict[str, Any],
    public_url: str,
) -> tuple[Rendered, list[Problem]]:
    """Render a template for a real customer or the sample, with the unknown variables."""
    template = get_template(session, workspace_id=workspace_id, template_id=template_id)
    if template.kind != MESSAGE:
        raise ValidationFailed("only message templates can be previewed", field="template_id")
    full = _preview_context(
        session,
        workspace_id=workspace_id,
        brand_id=template.brand_id,
        channel=channel,
        customer_id=customer_id,
        context={**template.sample_context, **context},
        public_url=public_url,
    )
    rendered = render_template(session, template, channel, full)
    _errors, warnings = validate(
        session,
        workspace_id=workspace_id,
        brand_id=template.brand_id,
        kind=template.kind,
        parts={channel: template.parts[channel]},
        layout_id=template.layout_id,
    )
    return rendered, warnings


def preview_draft(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    parts: Mapping[str, Mapping[str, str]],
    channel: str,
    customer_id: int | None,
    context: dict[str, Any],
    public_url: str,
    layout_id: int | None = None,
) -> tuple[Rendered | None, list[Problem], list[Problem]]:
    """Render one channel of an unsaved message template (an editor's live preview) for a
    real customer or the sample: the rendering (None when the part does not parse), its
    syntax errors with line and column, and its unknown variables. Writes nothing."""
    if channel not in parts:
        raise ValidationFailed(f"the template has no {channel} part", field="channel")
    errors, warnings = validate(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        kind=MESSAGE,
        parts={channel: parts[channel]},
        layout_id=layout_id,
    )
    if errors:
        return None, errors, warnings
    full = _preview_context(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        channel=channel,
        customer_id=customer_id,
        context=context,
        public_url=public_url,
    )
    layout = None
    if layout_id is not None:
        found = store.template(session, workspace_id, layout_id)
        layout = None if found is None else str(found.parts.get("email", {}).get("body", ""))
    blocks = store.blocks(session, workspace_id, brand_id)
    rendered = render_part(renderer_for(blocks), channel, parts[channel], full, layout=layout)
    return rendered, [], warnings
