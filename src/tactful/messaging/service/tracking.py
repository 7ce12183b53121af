"""Tracking: signed links (open pixel, click redirects, one-click unsubscribe, preference
centre), and what happens when a customer follows them."""

from __future__ import annotations

import base64
import hmac
import html
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import NotFound, Unauthorized, ValidationFailed
from tactful.core.security import Signer
from tactful.customers import service as customers
from tactful.customers.service import ConsentInput
from tactful.customers.topics import list_topics
from tactful.messaging import store
from tactful.messaging.models import CLICKED, READ, Delivery
from tactful.messaging.service.deliveries import advance
from tactful.tenancy.service import get_brand

OPEN = "messaging.open"
CLICK = "messaging.click"
UNSUBSCRIBE = "messaging.unsubscribe"
PREFERENCES = "messaging.preferences"
# a link's opening up to its address, and a web address: what click tracking follows
LINK_OPENING = r'(<a\b[^>]*?\bhref=")'
WEB_ADDRESS = r'https?://[^"]+'
HREF = re.compile(rf'{LINK_OPENING}({WEB_ADDRESS})"', re.IGNORECASE)
PIXEL = (
    '<img src="{src}" width="1" height="1" alt="" '
    'style="display:block;border:0;height:1px;width:1px">'
)
# channels a customer can switch on or off in the preference centre
PREFERENCE_CHANNELS = ("email", "sms", "push", "viber", "telegram")


SIGNATURE_CHARS = 20  # 80 bits of HMAC-SHA256: enough for a link, short in a URL


def sign(signer: Signer, purpose: str, *parts: int | str) -> str:
    """A compact signed token: the parts joined with dots, then an HMAC of them."""
    payload = ".".join(str(p) for p in parts)
    return f"{payload}.{signer.hmac_hex(payload.encode(), purpose=purpose)[:SIGNATURE_CHARS]}"


def verify(signer: Signer, purpose: str, token: str, count: int) -> list[str]:
    """The parts of a token signed for ``purpose``; 401 when it was not."""
    payload, _, signature = token.rpartition(".")
    parts = payload.split(".")
    expected = signer.hmac_hex(payload.encode(), purpose=purpose)[:SIGNATURE_CHARS]
    if len(parts) != count or not hmac.compare_digest(signature, expected):
        raise Unauthorized("the link or token is invalid")
    return parts


def _ids(signer: Signer, purpose: str, token: str, count: int) -> list[int]:
    parts = verify(signer, purpose, token, count)
    if not all(p.isdigit() for p in parts):
        raise Unauthorized("the link or token is invalid")
    return [int(p) for p in parts]


@dataclass(frozen=True)
class Links:
    """The signed links of one delivery."""

    unsubscribe: str
    preferences: str
    open: str
    public_url: str
    signer: Signer
    delivery_id: int

    def as_context(self) -> dict[str, str]:
        return {"unsubscribe": self.unsubscribe, "preferences": self.preferences}

    def click(self, url: str) -> str:
        encoded = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
        return f"{self.public_url}/t/c/{sign(self.signer, CLICK, self.delivery_id, encoded)}"


def links_for(
    signer: Signer,
    public_url: str,
    *,
    delivery_id: int,
    workspace_id: int,
    brand_id: int,
    customer_id: int,
) -> Links:
    """Signed links for a delivery (tokens carry ids only, never personal data)."""
    preferences = sign(signer, PREFERENCES, workspace_id, brand_id, customer_id)
    return Links(
        unsubscribe=f"{public_url}/u/{sign(signer, UNSUBSCRIBE, delivery_id)}",
        preferences=f"{public_url}/p/{preferences}",
        open=f"{public_url}/t/o/{sign(signer, OPEN, delivery_id)}",
        public_url=public_url,
        signer=signer,
        delivery_id=delivery_id,
    )


def track_links(document: str, links: Links) -> str:
    """Send every web link of an HTML document through the click redirect (but the
    message's own unsubscribe and preference links)."""
    return HREF.sub(lambda match: _tracked(match, links), document)


def _tracked(match: re.Match[str], links: Links) -> str:
    return f'{match.group(1)}{tracked_address(match.group(2), links)}"'


def tracked_address(address: str, links: Links) -> str:
    """A web link's address as written in HTML, through the click redirect, unless it is
    the message's own unsubscribe or preference link."""
    url = html.unescape(address)
    if url.startswith((links.unsubscribe, links.preferences)):
        return address
    return html.escape(links.click(url))


def pixel(links: Links) -> str:
    """The open pixel of a message."""
    return PIXEL.format(src=html.escape(links.open))


def track_html(document: str, links: Links) -> str:
    """Send every web link through the click redirect and add the open pixel."""
    tracked = track_links(document, links)
    if "</body>" in tracked:
        return tracked.replace("</body>", f"{pixel(links)}</body>", 1)
    return tracked + pixel(links)


def _delivery(session: Session, delivery_id: int) -> Delivery:
    delivery = store.delivery(session, delivery_id)
    if delivery is None:
        raise NotFound("the message no longer exists")
    return delivery


def record_open(session: Session, *, signer: Signer, token: str) -> None:
    """The open pixel was loaded: the delivery was read."""
    [delivery_id] = _ids(signer, OPEN, token, 1)
    delivery = _delivery(session, delivery_id)
    advance(session, delivery, READ, dedupe_key=f"{delivery.id}:open")


def record_click(session: Session, *, signer: Signer, token: str) -> str:
    """A tracked link was followed: record the click, return where it leads."""
    delivery_id, encoded = verify(signer, CLICK, token, 2)
    try:
        url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except ValueError as exc:
        raise ValidationFailed("the link has no web address", field="token") from exc
    if not delivery_id.isdigit() or not url.startswith(("http://", "https://")):
        raise ValidationFailed("the link has no web address", field="token")
    delivery = _delivery(session, int(delivery_id))
    now = clock.now()
    advance(
        session,
        delivery,
        CLICKED,
        at=now,
        details={"url": url},
        dedupe_key=f"{delivery.id}:click:{url[:120]}:{now.isoformat()}",
    )
    return url


def unsubscribe_target(session: Session, *, signer: Signer, token: str) -> Delivery:
    """The delivery an unsubscribe link belongs to (the link is checked, nothing changes)."""
    [delivery_id] = _ids(signer, UNSUBSCRIBE, token, 1)
    return _delivery(session, delivery_id)


def unsubscribe_view(
    session: Session, *, signer: Signer, token: str, public_url: str
) -> dict[str, str]:
    """What the unsubscribe page says: the brand, what stops, the preference centre link."""
    delivery = unsubscribe_target(session, signer=signer, token=token)
    links = links_for(
        signer,
        public_url,
        delivery_id=delivery.id,
        workspace_id=delivery.workspace_id,
        brand_id=delivery.brand_id,
        customer_id=delivery.customer_id,
    )
    brand = get_brand(session, workspace_id=delivery.workspace_id, brand_id=delivery.brand_id)
    what = f"“{delivery.topic}” messages" if delivery.topic else f"{delivery.channel} offers"
    return {"brand": brand.name, "what": what, "preferences": links.preferences}


def unsubscribe(
    session: Session, *, signer: Signer, token: str, evidence: dict[str, Any]
) -> Delivery:
    """One-click unsubscribe (RFC 8058): leave the message's topic, or, without a topic,
    revoke advertising consent on its channel for the brand."""
    delivery = unsubscribe_target(session, signer=signer, token=token)
    if delivery.topic:
        change = ConsentInput(
            kind="topic", status="revoked", topic=delivery.topic, brand_id=delivery.brand_id
        )
    else:
        change = ConsentInput(
            kind="advertising",
            status="revoked",
            channel=str(delivery.channel or "*"),
            brand_id=delivery.brand_id,
        )
    customers.set_consents(
        session,
        workspace_id=delivery.workspace_id,
        customer_id=delivery.customer_id,
        changes=[change],
        source="unsubscribe_link",
        evidence={**evidence, "delivery_id": delivery.id},
        actor=f"customer:{delivery.customer_id}",
    )
    return delivery


@dataclass(frozen=True)
class Preferences:
    """What the preference centre shows a customer."""

    workspace_id: int
    brand_id: int
    customer_id: int
    brand_name: str
    topics: list[dict[str, Any]]  # key, name, description, subscribed
    channels: list[dict[str, Any]]  # channel, subscribed


def _preference_target(signer: Signer, token: str) -> tuple[int, int, int]:
    workspace_id, brand_id, customer_id = _ids(signer, PREFERENCES, token, 3)
    return workspace_id, brand_id, customer_id


def preferences(session: Session, *, signer: Signer, token: str) -> Preferences:
    """A customer's topics and channels for one brand, from a signed link."""
    workspace_id, brand_id, customer_id = _preference_target(signer, token)
    brand = get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    customer = customers.get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    states = {
        (c.brand_scope, c.kind, c.channel, c.topic): c.status
        for c in customers.consents(session, workspace_id=workspace_id, customer_id=customer.id)
    }
    scope = customers.brand_scope(brand_id)
    topics = [
        {
            "key": t.key,
            "name": t.name,
            "description": t.description,
            "subscribed": states.get(
                (scope, "topic", "*", t.key), "granted" if t.default_subscribed else "revoked"
            )
            == "granted",
        }
        for t in list_topics(session, workspace_id=workspace_id)
        if t.brand_id == brand_id
    ]
    channels = [
        {"channel": ch, "subscribed": states.get((scope, "advertising", ch, "")) == "granted"}
        for ch in PREFERENCE_CHANNELS
    ]
    return Preferences(workspace_id, brand_id, customer.id, brand.name, topics, channels)


def save_preferences(
    session: Session,
    *,
    signer: Signer,
    token: str,
    topics: set[str],
    channels: set[str],
    evidence: dict[str, Any],
) -> Preferences:
    """Apply the preference centre's form: the topics and channels left ticked."""
    current = preferences(session, signer=signer, token=token)
    unknown = sorted(channels - set(PREFERENCE_CHANNELS))
    if unknown:
        raise ValidationFailed(f"unknown channels {unknown}", field="channels")
    known_topics = {t["key"] for t in current.topics}
    if topics - known_topics:
        raise ValidationFailed(f"unknown topics {sorted(topics - known_topics)}", field="topics")
    changes = [
        ConsentInput(
            kind="topic",
            status="granted" if t["key"] in topics else "revoked",
            topic=t["key"],
            brand_id=current.brand_id,
        )
        for t in current.topics
        if t["subscribed"] != (t["key"] in topics)
    ] + [
        ConsentInput(
            kind="advertising",
            status="granted" if c["channel"] in channels else "revoked",
            channel=c["channel"],
            brand_id=current.brand_id,
        )
        for c in current.channels
        if c["subscribed"] != (c["channel"] in channels)
    ]
    if changes:
        customers.set_consents(
            session,
            workspace_id=current.workspace_id,
            customer_id=current.customer_id,
            changes=changes,
            source="preference_centre",
            evidence=evidence,
            actor=f"customer:{current.customer_id}",
        )
    return preferences(session, signer=signer, token=token)
