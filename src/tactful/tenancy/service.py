"""Tenancy use cases: workspaces, brands, API keys, the audit log, first-start setup."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.auth import SCOPES, Principal
from tactful.core.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from tactful.core.runtime import ensure_installation_secret
from tactful.core.security import hash_api_key, hashes_match, new_api_key, split_api_key
from tactful.tenancy import store, users
from tactful.tenancy.audit import record_audit
from tactful.tenancy.models import ApiKey, AuditEntry, Brand, ChannelPrice, Workspace

__all__ = ["record_audit"]  # the audit helper every feature imports from here

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# last_used_at is written at most this often, so authentication is nearly always a read.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def _check_slug(slug: str, field: str) -> None:
    if not SLUG.match(slug):
        raise ValidationFailed(
            "use lowercase letters, digits and dashes (up to 63 characters)", field=field
        )


def check_timezone(name: str, field: str = "timezone") -> str:
    """An IANA time zone name, or a 422 naming the field."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailed(f"{name!r} is not an IANA time zone", field=field) from exc
    return name


def check_region(code: str, field: str = "phone_region") -> str:
    """An ISO 3166 alpha-2 region that phone numbers are parsed in."""
    code = code.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationFailed(f"{code!r} is not a phone numbering region", field=field)
    return code


def create_workspace(
    session: Session,
    *,
    slug: str,
    name: str,
    phone_region: str,
    timezone: str,
    currency: str = "RUB",
) -> Workspace:
    """Create a workspace (a separate customer base)."""
    _check_slug(slug, "slug")
    if store.workspace_by_slug(session, slug) is not None:
        raise Conflict(f"a workspace {slug!r} already exists", field="slug")
    workspace = Workspace(
        slug=slug,
        name=name,
        phone_region=check_region(phone_region),
        timezone=check_timezone(timezone),
        currency=currency.upper(),
        settings={},
        created_at=clock.now(),
    )
    session.add(workspace)
    session.flush()
    return workspace


def first_workspace(session: Session) -> Workspace | None:
    """The installation's first workspace (the one people sign in to)."""
    return store.first_workspace(session)


def get_workspace(session: Session, workspace_id: int) -> Workspace:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound(f"workspace {workspace_id} does not exist")
    return workspace


def create_brand(
    session: Session, *, workspace_id: int, slug: str, name: str, actor: str = "system"
) -> Brand:
    """Add a brand to a workspace."""
    _check_slug(slug, "slug")
    if store.brand_by_slug(session, workspace_id, slug) is not None:
        raise Conflict(f"a brand {slug!r} already exists in this workspace", field="slug")
    brand = Brand(workspace_id=workspace_id, slug=slug, name=name, created_at=clock.now())
    session.add(brand)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="brand.created",
        target_type="brand",
        target_id=brand.id,
        details={"slug": slug},
    )
    return brand


def get_brand(session: Session, *, workspace_id: int, brand_id: int) -> Brand:
    brand = session.get(Brand, brand_id)
    if brand is None or brand.workspace_id != workspace_id:
        raise NotFound(f"brand {brand_id} does not exist in this workspace", field="brand_id")
    return brand


def list_brands(session: Session, *, workspace_id: int) -> list[Brand]:
    return list(store.brands(session, workspace_id))


def issue_api_key(
    session: Session,
    *,
    workspace_id: int,
    name: str,
    scopes: list[str],
    brand_id: int | None = None,
    actor: str = "system",
) -> tuple[ApiKey, str]:
    """Create a key; the plain key is returned once and never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValidationFailed(
            f"scopes must be a non-empty subset of {list(SCOPES)}"
            + (f"; unknown: {unknown}" if unknown else ""),
            field="scopes",
        )
    if brand_id is not None:
        get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    plain, prefix, digest = new_api_key()
    key = ApiKey(
        workspace_id=workspace_id,
        brand_id=brand_id,
        name=name,
        prefix=prefix,
        key_hash=digest,
        scopes=sorted(set(scopes)),
        created_at=clock.now(),
    )
    session.add(key)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="api_key.issued",
        target_type="api_key",
        target_id=key.id,
        details={"name": name, "scopes": key.scopes, "brand_id": brand_id},
    )
    return key, plain


def revoke_api_key(session: Session, *, workspace_id: int, key_id: int, actor: str) -> ApiKey:
    """Revoke a key at once."""
    key = session.get(ApiKey, key_id)
    if key is None or key.workspace_id != workspace_id:
        raise NotFound(f"API key {key_id} does not exist", field="key_id")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="api_key.revoked",
            target_type="api_key",
            target_id=key.id,
        )
    return key


def list_api_keys(session: Session, *, workspace_id: int) -> list[ApiKey]:
    return list(store.api_keys(session, workspace_id))


def authenticate_api_key(session: Session, plain: str) -> Principal:
    """Resolve a presented key to its principal, or raise 401."""
    prefix = split_api_key(plain.strip())
    key = store.api_key_by_prefix(session, prefix) if prefix else None
    if key is None or not hashes_match(key.key_hash, hash_api_key(plain.strip())):
        raise Unauthorized("the API key is not valid")
    if key.revoked_at is not None:
        raise Unauthorized("the API key has been revoked")
    now = clock.now()
    # Authentication writes nothing: the caller records a due use in a transaction of its
    # own (the API does it after the response). A read-only request never commits, and
    # inside a write request the key's row would be locked until the request commits, so
    # every concurrent request with the same key (all the tills of a shop) would queue
    # behind it.
    due = key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION
    return Principal(
        workspace_id=key.workspace_id,
        brand_id=key.brand_id,
        scopes=frozenset(key.scopes),
        actor=f"api_key:{key.id}",
        key_id=key.id,
        unrecorded_use=now if due else None,
    )


def record_api_key_use(session: Session, key_id: int, at: datetime) -> None:
    """Record that a key was used at a moment (never moving its last use back)."""
    store.record_api_key_use(session, key_id, at)


# Typical prices (minor units) a new brand starts with: free push, cheap e-mail, dearer
# messengers and SMS. Brands change them to their providers' contracts.
DEFAULT_PRICES = {
    "push": 0,
    "email": 10,
    "webhook": 0,
    "telegram": 0,
    "viber": 150,
    "sms": 350,
    "call": 2500,
}
PRICE_CHANNELS = tuple(DEFAULT_PRICES)


def set_channel_price(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    channel: str,
    price: int,
    provider: str = "default",
    currency: str | None = None,
    actor: str = "system",
) -> ChannelPrice:
    """Set a brand's price per message on a channel (minor units)."""
    if channel not in PRICE_CHANNELS:
        raise ValidationFailed(f"channel must be one of {list(PRICE_CHANNELS)}", field="channel")
    if price < 0:
        raise ValidationFailed("a price cannot be negative", field="price")
    get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    workspace = get_workspace(session, workspace_id)
    row = session.scalar(
        select(ChannelPrice).where(
            ChannelPrice.brand_id == brand_id,
            ChannelPrice.channel == channel,
            ChannelPrice.provider == provider,
        )
    )
    now = clock.now()
    if row is None:
        row = ChannelPrice(
            workspace_id=workspace_id,
            brand_id=brand_id,
            channel=channel,
            provider=provider,
            price=price,
            currency=(currency or workspace.currency).upper(),
            updated_at=now,
        )
        session.add(row)
    else:
        row.price, row.updated_at = price, now
        if currency:
            row.currency = currency.upper()
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="price.set",
        target_type="brand",
        target_id=brand_id,
        brand_id=brand_id,
        details={"channel": channel, "provider": provider, "price": price},
    )
    return row


def channel_prices(session: Session, *, brand_id: int) -> dict[str, int]:
    """Price per message by channel for a brand (the cheapest provider's, else the default)."""
    prices = dict(DEFAULT_PRICES)
    configured: dict[str, int] = {}
    for row in session.scalars(select(ChannelPrice).where(ChannelPrice.brand_id == brand_id)):
        configured[row.channel] = min(row.price, configured.get(row.channel, row.price))
    prices.update(configured)
    return prices


def list_channel_prices(session: Session, *, workspace_id: int) -> list[ChannelPrice]:
    return list(
        session.scalars(
            select(ChannelPrice)
            .where(ChannelPrice.workspace_id == workspace_id)
            .order_by(ChannelPrice.brand_id, ChannelPrice.channel)
        )
    )


@dataclass(frozen=True)
class InitResult:
    """What ``initialize`` found or created."""

    created: bool
    workspace: Workspace
    brand: Brand
    admin_key: str | None
    owner_email: str | None = None
    owner_password: str | None = None


def initialize(
    session: Session,
    *,
    phone_region: str,
    timezone: str,
    workspace_slug: str = "default",
    workspace_name: str = "Default workspace",
    brand_slug: str = "main",
    brand_name: str = "Main brand",
    owner_email: str = "owner@example.com",
) -> InitResult:
    """Create the first workspace, brand, admin key and owner account; does nothing if a
    workspace exists."""
    ensure_installation_secret(session)
    existing = store.first_workspace(session)
    if existing is not None:
        brands = store.brands(session, existing.id)
        if not brands:
            brand = create_brand(
                session, workspace_id=existing.id, slug=brand_slug, name=brand_name
            )
        else:
            brand = brands[0]
        return InitResult(created=False, workspace=existing, brand=brand, admin_key=None)
    workspace = create_workspace(
        session,
        slug=workspace_slug,
        name=workspace_name,
        phone_region=phone_region,
        timezone=timezone,
    )
    brand = create_brand(session, workspace_id=workspace.id, slug=brand_slug, name=brand_name)
    _key, plain = issue_api_key(
        session, workspace_id=workspace.id, name="initial admin key", scopes=["admin"]
    )
    password = users.generated_password()
    owner = users.create_user(
        session,
        workspace_id=workspace.id,
        email=owner_email,
        name="Owner",
        password=password,
        roles=[(None, "owner")],
        actor="system",
    )
    return InitResult(
        created=True,
        workspace=workspace,
        brand=brand,
        admin_key=plain,
        owner_email=owner.email,
        owner_password=password,
    )


def list_audit(
    session: Session,
    *,
    workspace_id: int,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Audit rows, newest first (page with ``before_id``)."""
    return list(
        store.audit_entries(
            session,
            workspace_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            before_id=before_id,
            limit=min(max(limit, 1), 1000),
        )
    )
