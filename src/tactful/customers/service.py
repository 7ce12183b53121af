"""Customer use cases: profiles, lookups by identity, attributes, consents and topics,
contact status, reverting merges, and the timeline registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.dialect import insert_ignore
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.core.runtime import Runtime
from tactful.customers import store
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles, source_priority
from tactful.customers.models import (
    ADVERTISING,
    ANY_CHANNEL,
    CHANNELS,
    CONSENT_KINDS,
    CONTACT_BOUNCED,
    CONTACT_COMPLAINED,
    CONTACT_INVALID,
    CONTACT_OK,
    EMAIL,
    GRANTED,
    IDENTITY_KINDS,
    PERSONAL_DATA,
    PHONE,
    PUSH_TOKEN,
    REVOKED,
    TELEGRAM,
    TOPIC,
    AttributeCatalog,
    Consent,
    ConsentChange,
    Customer,
    CustomerMerge,
    Identity,
)
from tactful.customers.profile import apply_traits, infer_type
from tactful.tenancy.models import Workspace
from tactful.tenancy.service import get_brand, get_workspace, record_audit

CONSENT_CHANGED_EVENT = "customers.consent_changed"
CONTACT_STATUS_EVENT = "customers.contact_status_changed"


def brand_scope(brand_id: int | None) -> str:
    """The consent scope key of a brand, or of the whole workspace."""
    return "ws" if brand_id is None else f"b{brand_id}"


def get_customer(session: Session, *, workspace_id: int, customer_id: int) -> Customer:
    """A customer by id; a merged id leads to the surviving customer."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.workspace_id != workspace_id:
        raise NotFound(f"customer {customer_id} does not exist", field="customer_id")
    seen = {customer.id}
    while customer.merged_into_id is not None:
        survivor = session.get(Customer, customer.merged_into_id)
        if survivor is None or survivor.id in seen:
            break
        seen.add(survivor.id)
        customer = survivor
    return customer


def find_customer(
    session: Session, *, workspace: Workspace, kind: str, value: str, namespace: str = ""
) -> Customer:
    """A customer by any identity (phone and e-mail are normalised first)."""
    if kind not in IDENTITY_KINDS:
        raise ValidationFailed(f"kind must be one of {list(IDENTITY_KINDS)}", field="kind")
    ident = normalise(kind, value, region=workspace.phone_region, namespace=namespace)
    if not ident.valid:
        raise ValidationFailed(f"{value!r} is not a valid {kind}: {ident.reason}", field="value")
    customer_id = store.find_by_identity(
        session, workspace.id, ident.kind, ident.namespace, ident.value
    )
    if customer_id is None:
        raise NotFound(f"no customer has the {kind} {ident.value}", field="value")
    return get_customer(session, workspace_id=workspace.id, customer_id=customer_id)


def customers_by_ids(
    session: Session, *, workspace_id: int, customer_ids: Sequence[int]
) -> dict[int, Customer]:
    """Customers by id (merged ones included, as they are; see ``merged_into_id``)."""
    found = store.customers_by_ids(session, customer_ids)
    return {cid: c for cid, c in found.items() if c.workspace_id == workspace_id}


def profiles_by_ids(
    session: Session, *, workspace_id: int, customer_ids: Sequence[int], columns: Sequence[str]
) -> dict[int, Any]:
    """Customers of the workspace by id, as plain rows of ``id`` and ``columns`` (for
    reading many where the ORM objects are not needed)."""
    found = store.customer_rows(session, customer_ids, ("workspace_id", *columns))
    return {cid: row for cid, row in found.items() if row.workspace_id == workspace_id}


def identity_owners(
    session: Session, *, workspace_id: int, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """Which customer owns each valid ``(kind, namespace, value)``."""
    return store.identity_owners(session, workspace_id, keys)


def search(
    session: Session,
    *,
    workspace_id: int,
    query: str | None,
    limit: int = 50,
    after_id: int | None = None,
) -> list[Customer]:
    """Customers whose name or any identity contains ``query``."""
    return store.search_customers(
        session, workspace_id, query=query or None, limit=min(max(limit, 1), 500), after_id=after_id
    )


def count_customers(session: Session, *, workspace_id: int) -> int:
    """Known customers (not anonymous, not merged away)."""
    return store.count_customers(session, workspace_id)


@dataclass(frozen=True)
class ContactQuality:
    """How clean a workspace's contact data is."""

    invalid: int  # phones and e-mails that failed validation
    bounced: int
    complained: int
    without_contact: int  # known customers with neither an e-mail nor a phone
    merged: int  # duplicates merged into another customer (merges in force)


def contact_quality(session: Session, *, workspace_id: int) -> ContactQuality:
    """Invalid, bounced and complained contacts, customers without any contact, and
    duplicates merged."""
    problems = store.problem_contacts(session, workspace_id, [PHONE, EMAIL])
    return ContactQuality(
        invalid=problems.get(CONTACT_INVALID, 0),
        bounced=problems.get(CONTACT_BOUNCED, 0),
        complained=problems.get(CONTACT_COMPLAINED, 0),
        without_contact=store.count_without_contact(session, workspace_id),
        merged=store.count_merges(session, workspace_id),
    )


def identities(session: Session, customer_id: int) -> list[Identity]:
    return store.identities_of(session, [customer_id])


def merges(session: Session, customer_id: int) -> list[CustomerMerge]:
    return store.merges_of(session, customer_id)


def update_profile(
    session: Session,
    *,
    workspace: Workspace,
    customer_id: int,
    traits: dict[str, Any],
    source: str,
    actor: str,
) -> Customer:
    """Update attributes (custom ones need no schema change) and identities from traits."""
    customer = get_customer(session, workspace_id=workspace.id, customer_id=customer_id)
    idents = []
    for kind, trait in (("email", "email"), ("phone", "phone"), ("card", "loyalty_card")):
        if isinstance(traits.get(trait), str) and traits[trait].strip():
            idents.append(normalise(kind, traits[trait], region=workspace.phone_region))
    if idents:
        # new identities may belong to someone else: resolution decides (and may merge)
        resolution = resolve_profiles(
            session,
            workspace=workspace,
            records=[
                ProfileRecord(
                    idents=idents,
                    source=source,
                    at=clock.now(),
                    traits=traits,
                    customer_id=customer.id,
                )
            ],
            actor=actor,
        )
        customer = get_customer(
            session, workspace_id=workspace.id, customer_id=resolution.customer_ids[0]
        )
        note_attributes(session, workspace_id=workspace.id, values=resolution.custom_attributes)
        return customer
    custom = apply_traits(customer, traits, source=source, priority=source_priority(workspace))
    customer.updated_at = clock.now()
    note_attributes(session, workspace_id=workspace.id, values=custom)
    return customer


def note_attributes(session: Session, *, workspace_id: int, values: dict[str, Any]) -> None:
    """Record custom attribute names and their inferred types in the catalog."""
    if not values:
        return
    now = clock.now()
    rows = [
        {
            "workspace_id": workspace_id,
            "name": name,
            "type": infer_type(value),
            "example": str(value)[:200],
            "first_seen_at": now,
            "last_seen_at": now,
        }
        for name, value in sorted(values.items())
    ]
    session.execute(
        insert_ignore(session, AttributeCatalog, rows, conflict=["workspace_id", "name"])
    )


def attribute_catalog(session: Session, *, workspace_id: int) -> list[AttributeCatalog]:
    """Custom attributes with their inferred types."""
    return store.attribute_catalog(session, workspace_id)


@dataclass(frozen=True)
class ConsentInput:
    """One consent or subscription change."""

    kind: str
    status: str
    channel: str = ANY_CHANNEL
    topic: str = ""
    brand_id: int | None = None


def _validate_consent(change: ConsentInput, index: int) -> None:
    where = f"changes[{index}]"
    if change.kind not in CONSENT_KINDS:
        raise ValidationFailed(f"kind must be one of {list(CONSENT_KINDS)}", field=f"{where}.kind")
    if change.status not in (GRANTED, REVOKED):
        raise ValidationFailed("status must be 'granted' or 'revoked'", field=f"{where}.status")
    if change.channel != ANY_CHANNEL and change.channel not in CHANNELS:
        raise ValidationFailed(
            f"channel must be '*' or one of {list(CHANNELS)}", field=f"{where}.channel"
        )
    if change.kind == TOPIC and not change.topic:
        raise ValidationFailed("a topic subscription names its topic", field=f"{where}.topic")
    if change.kind != TOPIC and change.topic:
        raise ValidationFailed("only topic subscriptions name a topic", field=f"{where}.topic")
    if change.kind == ADVERTISING and change.channel == ANY_CHANNEL:
        raise ValidationFailed("advertising consent is given per channel", field=f"{where}.channel")
    if change.kind == PERSONAL_DATA and change.brand_id is not None:
        raise ValidationFailed(
            "personal-data consent is given to the workspace, not a brand",
            field=f"{where}.brand_id",
        )


def set_consents(
    session: Session,
    *,
    workspace_id: int,
    customer_id: int,
    changes: Sequence[ConsentInput],
    source: str,
    evidence: dict[str, Any],
    actor: str,
    at: datetime | None = None,
    audit: bool = True,
) -> list[Consent]:
    """Apply consent changes with their evidence; history and audit keep every change."""
    for index, change in enumerate(changes):
        _validate_consent(change, index)
        if change.brand_id is not None:
            get_brand(session, workspace_id=workspace_id, brand_id=change.brand_id)
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    when = at or clock.now()
    keys = [(brand_scope(c.brand_id), c.kind, c.channel, c.topic) for c in changes]
    current = store.consent_rows(session, [customer.id], keys)
    result: list[Consent] = []
    for change, (scope, kind, channel, topic) in zip(changes, keys, strict=True):
        consent = current.get((customer.id, scope, kind, channel, topic))
        previous = consent.status if consent else None
        if consent is None:
            consent = Consent(
                workspace_id=workspace_id,
                customer_id=customer.id,
                brand_scope=scope,
                kind=kind,
                channel=channel,
                topic=topic,
                status=change.status,
                source=source,
                evidence=evidence,
                changed_at=when,
            )
            session.add(consent)
            current[(customer.id, scope, kind, channel, topic)] = consent
        elif previous != change.status:
            consent.status, consent.source = change.status, source
            consent.evidence, consent.changed_at = evidence, when
        result.append(consent)
        if previous == change.status:
            continue
        session.add(
            ConsentChange(
                workspace_id=workspace_id,
                customer_id=customer.id,
                brand_scope=scope,
                kind=kind,
                channel=channel,
                topic=topic,
                status=change.status,
                previous_status=previous,
                source=source,
                evidence=evidence,
                actor=actor,
                at=when,
            )
        )
        if audit:
            record_audit(
                session,
                workspace_id=workspace_id,
                actor=actor,
                action="consent.changed",
                target_type="customer",
                target_id=customer.id,
                brand_id=change.brand_id,
                details={
                    "kind": kind,
                    "channel": channel,
                    "topic": topic,
                    "status": change.status,
                    "previous": previous,
                    "source": source,
                },
            )
        key, payload = consent_event(
            workspace_id=workspace_id,
            customer_id=customer.id,
            brand_id=change.brand_id,
            kind=kind,
            channel=channel,
            topic=topic,
            status=change.status,
            previous=previous,
            source=source,
            at=when,
        )
        domain_events.publish(session, CONSENT_CHANGED_EVENT, payload, key=key)
    session.flush()
    return result


def consent_event(
    *,
    workspace_id: int,
    customer_id: int,
    brand_id: int | None,
    kind: str,
    channel: str,
    topic: str,
    status: str,
    previous: str | None,
    source: str,
    at: datetime,
) -> tuple[str, dict[str, Any]]:
    """The key and payload of a ``customers.consent_changed`` domain event."""
    scope = brand_scope(brand_id)
    return f"{customer_id}:{scope}:{kind}:{channel}:{topic}:{at.isoformat()}", {
        "workspace_id": workspace_id,
        "customer_id": customer_id,
        "brand_id": brand_id,
        "kind": kind,
        "channel": channel,
        "topic": topic,
        "status": status,
        "previous": previous,
        "source": source,
        "at": at.isoformat(),
    }


def consents(session: Session, *, workspace_id: int, customer_id: int) -> list[Consent]:
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    return store.consents_of(session, [customer.id])


def consent_history(
    session: Session, *, workspace_id: int, customer_id: int
) -> list[ConsentChange]:
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    return store.consent_history(session, customer.id)


def set_contact_status(
    session: Session,
    *,
    workspace_id: int,
    kind: str,
    value: str,
    status: str,
    reason: str,
    actor: str,
) -> Identity | None:
    """Mark a contact bounced, complained or invalid (or ok again); returns it if known."""
    identity = (
        session.query(Identity)
        .filter(
            Identity.workspace_id == workspace_id,
            Identity.kind == kind,
            Identity.value == value,
            store.VALID_IDENTITY,
        )
        .one_or_none()
    )
    if identity is None:
        return None
    if identity.status != status:
        previous = identity.status
        identity.status, identity.status_reason, identity.status_at = status, reason, clock.now()
        record_audit(
            session,
            workspace_id=workspace_id,
            actor=actor,
            action="contact.status_changed",
            target_type="customer",
            target_id=identity.customer_id,
            details={"kind": kind, "status": status, "previous": previous, "reason": reason},
        )
        domain_events.publish(
            session,
            CONTACT_STATUS_EVENT,
            {
                "workspace_id": workspace_id,
                "customer_id": identity.customer_id,
                "kind": kind,
                "status": status,
                "reason": reason,
            },
            key=f"{identity.id}:{status}:{clock.now().isoformat()}",
        )
    return identity


def deliverable(identity: Identity) -> bool:
    """True when a contact may be used for delivery."""
    return identity.valid and identity.status == CONTACT_OK


# Which identity kind carries each channel.
CHANNEL_CONTACTS = {
    "email": EMAIL,
    "sms": PHONE,
    "viber": PHONE,
    "call": PHONE,
    "push": PUSH_TOKEN,
    "telegram": TELEGRAM,
}


@dataclass(frozen=True)
class Reach:
    """How a customer can be reached: usable addresses and consents that allow a message."""

    addresses: dict[str, str]  # channel -> address (the newest usable contact)
    channels: frozenset[str]  # channels a message of the asked class may use


def reachability(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    customer_ids: Sequence[int],
    message_class: str = "marketing",
    topic: str | None = None,
) -> dict[int, Reach]:
    """Usable contacts and the channels a message may use, for many customers at once.

    Transactional messages need only a usable contact. Service messages also respect the
    topic. Marketing needs personal-data consent, advertising consent for the brand and
    channel, and the topic (opt-out topics count as subscribed until left).
    """
    ids = list(dict.fromkeys(customer_ids))
    contacts = store.usable_contacts(
        session, workspace_id, ids, sorted(set(CHANNEL_CONTACTS.values()))
    )
    consent_rows = store.consent_states(session, ids, brand_scopes=["ws", brand_scope(brand_id)])
    topic_default = store.topic_default(session, workspace_id, brand_id, topic) if topic else True
    result: dict[int, Reach] = {}
    for cid in ids:
        addresses = {
            channel: contacts[(cid, kind)]
            for channel, kind in CHANNEL_CONTACTS.items()
            if (cid, kind) in contacts
        }
        # an outgoing webhook goes to the brand's endpoint, not to a customer contact
        addresses["webhook"] = ""
        states = consent_rows.get(cid, {})
        allowed: set[str] = set()
        for channel in addresses:
            if message_class != "transactional" and topic is not None:
                state = states.get((brand_scope(brand_id), TOPIC, ANY_CHANNEL, topic))
                subscribed = state == GRANTED or (state is None and topic_default)
                if not subscribed:
                    continue
            if message_class == "marketing":
                if states.get(("ws", PERSONAL_DATA, ANY_CHANNEL, "")) != GRANTED:
                    continue
                if states.get((brand_scope(brand_id), ADVERTISING, channel, "")) != GRANTED:
                    continue
            allowed.add(channel)
        result[cid] = Reach(addresses=addresses, channels=frozenset(allowed))
    return result


def topic_subscribed_by_default(
    session: Session, *, workspace_id: int, brand_id: int | None, key: str
) -> bool:
    """Whether a topic counts as subscribed until the customer leaves it (unknown: yes)."""
    return store.topic_default(session, workspace_id, brand_id, key)


def revert_merge(session: Session, *, workspace_id: int, merge_id: int, actor: str) -> Customer:
    """Undo a merge: the merged customer gets back its identities, consents and profile."""
    merge = session.get(CustomerMerge, merge_id)
    if merge is None or merge.workspace_id != workspace_id:
        raise NotFound(f"merge {merge_id} does not exist", field="merge_id")
    if merge.reverted_at is not None:
        raise Conflict(f"merge {merge_id} was already reverted")
    merged = session.get(Customer, merge.merged_id)
    survivor = session.get(Customer, merge.survivor_id)
    assert merged is not None
    assert survivor is not None
    details = merge.details
    identity_ids = [int(i) for i in details.get("identity_ids", [])]
    for identity in session.query(Identity).filter(Identity.id.in_(identity_ids)):
        identity.customer_id = merged.id
    for consent in session.query(Consent).filter(
        Consent.id.in_([int(i) for i in details.get("consents_moved", [])])
    ):
        consent.customer_id = merged.id
    profile = details.get("merged_profile", {})
    merged.merged_into_id = None
    merged.attributes = profile.get("attributes") or {}
    merged.attribute_sources = profile.get("attribute_sources") or {}
    merged.email, merged.phone = profile.get("email"), profile.get("phone")
    before = details.get("survivor_before", {})
    survivor.attributes = before.get("attributes", survivor.attributes)
    survivor.attribute_sources = before.get("attribute_sources", survivor.attribute_sources)
    survivor.email, survivor.phone = before.get("email"), before.get("phone")
    now = clock.now()
    merged.updated_at = survivor.updated_at = now
    merge.reverted_at = now
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="customer.unmerged",
        target_type="customer",
        target_id=merged.id,
        details={"merge_id": merge.id, "survivor_id": survivor.id},
    )
    domain_events.publish(
        session,
        "customers.unmerged",
        {"workspace_id": workspace_id, "survivor_id": survivor.id, "merged_id": merged.id},
        key=f"unmerge:{merge.id}",
    )
    session.flush()
    return merged


def workspace_of(session: Session, workspace_id: int) -> Workspace:
    return get_workspace(session, workspace_id)


# -- the unified timeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineItem:
    """One entry of a customer's timeline, from any feature."""

    at: datetime
    kind: str  # "event", "purchase", "message", "loyalty" …
    title: str
    details: dict[str, Any]
    source: str


# (runtime, session, workspace id, customer ids (survivor and merged aliases), before, limit)
TimelineSource = Callable[
    [Runtime, Session, int, list[int], datetime | None, int], list[TimelineItem]
]
_TIMELINE_SOURCES: dict[str, TimelineSource] = {}


def register_timeline_source(name: str, source: TimelineSource) -> None:
    """Features above customers contribute timeline items (wired in ``wiring.py``)."""
    _TIMELINE_SOURCES[name] = source


def timeline(
    runtime: Runtime,
    session: Session,
    *,
    workspace_id: int,
    customer_id: int,
    before: datetime | None,
    limit: int = 50,
) -> list[TimelineItem]:
    """A customer's events, purchases, messages and loyalty operations, newest first."""
    customer = get_customer(session, workspace_id=workspace_id, customer_id=customer_id)
    ids = [
        customer.id,
        *(
            m.merged_id
            for m in store.merges_of(session, customer.id)
            if m.survivor_id == customer.id and m.reverted_at is None
        ),
    ]
    items: list[TimelineItem] = []
    for source in _TIMELINE_SOURCES.values():
        items.extend(source(runtime, session, workspace_id, ids, before, limit))
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:limit]
