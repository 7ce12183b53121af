"""Providers (endpoints, credentials, limits) and sender identities per brand."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.messaging import store
from tactful.messaging.channels import PROVIDER_KINDS
from tactful.messaging.channels.push import service_account
from tactful.messaging.models import MessageProvider, SenderIdentity
from tactful.tenancy.service import get_brand, record_audit

SECRET_WORDS = ("token", "password", "secret", "private_key", "key")


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """A provider's configuration with its secrets hidden."""
    return {
        k: ("***" if any(w in k.lower() for w in SECRET_WORDS) and v else v)
        for k, v in config.items()
    }


def create_provider(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    kind: str,
    name: str,
    config: dict[str, Any],
    rate_per_second: float | None = None,
    concurrency: int = 4,
    enabled: bool = True,
    actor: str,
) -> MessageProvider:
    """Configure a provider for a brand's channel."""
    get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    if kind not in PROVIDER_KINDS:
        raise ValidationFailed(f"kind must be one of {sorted(PROVIDER_KINDS)}", field="kind")
    channel, required = PROVIDER_KINDS[kind]
    missing = [k for k in required if config.get(k) in (None, "")]
    if missing:
        raise ValidationFailed(
            f"a {kind} provider needs {', '.join(missing)}", field=f"config.{missing[0]}"
        )
    if kind == "fcm":
        _check_fcm(config)
    if any(p.name == name for p in store.providers(session, workspace_id)):
        raise Conflict(f"a provider {name!r} already exists", field="name")
    now = clock.now()
    row = MessageProvider(
        workspace_id=workspace_id,
        brand_id=brand_id,
        channel=channel,
        kind=kind,
        name=name,
        config=config,
        rate_per_second=rate_per_second,
        concurrency=concurrency,
        enabled=enabled,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="provider.created",
        target_type="message_provider",
        target_id=row.id,
        brand_id=brand_id,
        details={"kind": kind, "name": name, "config": masked(config)},
    )
    return row


def _check_fcm(config: dict[str, Any]) -> None:
    if config.get("access_token"):
        return
    try:
        account = service_account(config)
    except ValueError as exc:
        raise ValidationFailed(
            f"service_account is not JSON: {exc}", field="config.service_account"
        ) from exc
    if account is None:
        raise ValidationFailed(
            "an fcm provider needs access_token or service_account", field="config.service_account"
        )
    missing = [k for k in ("client_email", "private_key") if not account.get(k)]
    if missing:
        raise ValidationFailed(
            f"the service account has no {', '.join(missing)}", field="config.service_account"
        )


def list_providers(session: Session, *, workspace_id: int) -> list[MessageProvider]:
    """The workspace's providers."""
    return store.providers(session, workspace_id)


def create_sender(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    channel: str,
    provider_id: int,
    address: str,
    name: str | None = None,
    reply_to: str | None = None,
    is_default: bool = True,
    actor: str,
) -> SenderIdentity:
    """Add a sender identity (from-address, SMS sender id, bot, app) to a brand."""
    get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    provider = store.provider(session, workspace_id, provider_id)
    if provider is None:
        raise NotFound(f"provider {provider_id} does not exist", field="provider_id")
    if provider.channel != channel or provider.brand_id != brand_id:
        raise ValidationFailed(
            f"provider {provider_id} sends {provider.channel} for brand {provider.brand_id}",
            field="provider_id",
        )
    if is_default:
        for other in store.senders(session, workspace_id):
            if other.brand_id == brand_id and other.channel == channel:
                other.is_default = False
    row = SenderIdentity(
        workspace_id=workspace_id,
        brand_id=brand_id,
        channel=channel,
        provider_id=provider_id,
        name=name,
        address=address,
        reply_to=reply_to,
        is_default=is_default,
        created_at=clock.now(),
    )
    session.add(row)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="sender.created",
        target_type="message_sender",
        target_id=row.id,
        brand_id=brand_id,
        details={"channel": channel, "address": address},
    )
    return row


def list_senders(session: Session, *, workspace_id: int) -> list[SenderIdentity]:
    """The workspace's sender identities."""
    return store.senders(session, workspace_id)
