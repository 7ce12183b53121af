"""Provider status callbacks: verify the signature, then apply each reported status. Bounces
and complaints update the contact (and, for complaints, the consent) at once."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from tactful.core.errors import NotFound, Unauthorized, ValidationFailed
from tactful.customers import service as customers
from tactful.customers.service import ConsentInput
from tactful.messaging import store
from tactful.messaging.channels import build_channel
from tactful.messaging.channels.base import (
    BLOCKED,
    BOUNCED,
    COMPLAINED,
    DELIVERED,
    FAILED,
    READ,
    Callback,
    CallbackRejected,
    StatusUpdate,
)
from tactful.messaging.models import Delivery
from tactful.messaging.service.deliveries import advance, contact_failed

KEY = re.compile(r"^tactful-(\d+)-\d+$")


def handle_callback(
    session: Session, *, workspace_id: int | None, provider_id: int, callback: Callback
) -> int:
    """Apply a provider's status callback; 401 when its signature is wrong (nothing changes).
    Returns how many statuses were new."""
    provider = store.providers_by_id(session, [provider_id]).get(provider_id)
    if provider is None or (workspace_id is not None and provider.workspace_id != workspace_id):
        raise NotFound(f"provider {provider_id} does not exist", field="provider_id")
    adapter = build_channel(
        provider_id=provider.id,
        kind=provider.kind,
        config=provider.config,
        concurrency=provider.concurrency,
        version=provider.updated_at.isoformat(),
        client=None,
    )
    if not adapter.verify_callback(callback):
        raise Unauthorized("the callback's signature does not match")
    try:
        updates = adapter.parse_callback(callback)
    except CallbackRejected as exc:
        raise ValidationFailed(str(exc), field="body") from exc
    applied = 0
    for update in updates:
        delivery = _find(session, provider.id, update)
        if delivery is None or delivery.workspace_id != provider.workspace_id:
            continue
        applied += apply_status(session, delivery, update, actor=f"provider:{provider.id}")
    return applied


def _find(session: Session, provider_id: int, update: StatusUpdate) -> Delivery | None:
    if update.provider_message_id:
        found = store.delivery_by_provider_message(session, provider_id, update.provider_message_id)
        if found is not None:
            return found
    if update.idempotency_key and (match := KEY.match(update.idempotency_key)):
        found = store.delivery(session, int(match.group(1)))
        if found is not None and found.provider_id == provider_id:
            return found
    if update.status == BLOCKED and update.address:
        return store.latest_delivery_to(session, provider_id, update.address)
    return None


def apply_status(session: Session, delivery: Delivery, update: StatusUpdate, *, actor: str) -> int:
    """One reported status: the delivery moves on; the contact and consent follow."""
    details = {"reason": update.reason} if update.reason else {}
    key = f"cb:{delivery.id}:{update.status}:{update.event_id or ''}"
    if update.status in (DELIVERED, READ):
        return int(
            advance(session, delivery, update.status, at=update.at, details=details, dedupe_key=key)
        )
    if update.status == BOUNCED:
        new = advance(
            session,
            delivery,
            BOUNCED if update.permanent else FAILED,
            at=update.at,
            details={**details, "hard": update.permanent},
            dedupe_key=key,
        )
        if new and update.permanent:
            contact_failed(
                session, delivery, "bounced", update.reason or "hard bounce", actor=actor
            )
        return int(new)
    if update.status == FAILED:
        return int(
            advance(session, delivery, FAILED, at=update.at, details=details, dedupe_key=key)
        )
    if update.status == COMPLAINED:
        new = advance(session, delivery, COMPLAINED, at=update.at, details=details, dedupe_key=key)
        if new:
            contact_failed(
                session, delivery, "complained", update.reason or "complaint", actor=actor
            )
            customers.set_consents(
                session,
                workspace_id=delivery.workspace_id,
                customer_id=delivery.customer_id,
                changes=[
                    ConsentInput(
                        kind="advertising",
                        status="revoked",
                        channel=str(delivery.channel),
                        brand_id=delivery.brand_id,
                    )
                ],
                source="complaint",
                evidence={"delivery_id": delivery.id, "reason": update.reason},
                actor=actor,
            )
        return int(new)
    if update.status == BLOCKED:
        contact_failed(session, delivery, "invalid", update.reason or "blocked", actor=actor)
        return 1
    return 0
