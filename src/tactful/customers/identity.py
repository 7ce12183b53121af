"""Identity resolution: records naming identifiers become one customer each.

A batch of records is resolved together: one query finds the owners of every identifier in
the batch, the records are then walked in order (new identifiers attach to the customer,
a record naming identities of two customers merges them), and the changes are written in
bulk. Used by the event resolver and by bulk imports alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.customers import store
from tactful.customers.contacts import Ident
from tactful.customers.models import (
    ANONYMOUS,
    CONTACT_INVALID,
    CONTACT_OK,
    DEVICE,
    EMAIL,
    MATCHABLE_KINDS,
    PHONE,
    Consent,
    Customer,
    CustomerMerge,
    Identity,
)
from tactful.customers.profile import (
    DEFAULT_SOURCE_PRIORITY,
    STANDARD_TRAITS,
    Profile,
    apply_traits,
    fill_from,
)
from tactful.tenancy.models import Workspace
from tactful.tenancy.service import record_audit

ANONYMOUS_KINDS = frozenset({ANONYMOUS, DEVICE})
MERGED_EVENT = "customers.merged"


@dataclass
class ProfileRecord:
    """Identifiers and traits from one call, import row or receipt."""

    idents: Sequence[Ident]
    source: str
    at: datetime
    traits: dict[str, Any] = field(default_factory=dict)
    # a record about a known customer (a profile update) anchors to it
    customer_id: int | None = None
    # False for records that describe a customer without them acting (an imported CRM row):
    # they leave last_seen_at alone
    seen: bool = True


@dataclass
class Resolution:
    """The customer of each record, in order, and what changed."""

    customer_ids: list[int]
    created: int = 0
    # per record: did it create or change anything (a customer, identity, trait or merge)
    changed: list[bool] = field(default_factory=list)
    merges: list[tuple[int, int]] = field(default_factory=list)
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    # ids of the customers this resolution created
    created_ids: list[int] = field(default_factory=list)


def source_priority(workspace: Workspace) -> list[str]:
    """The workspace's source priority for attribute conflicts."""
    configured = (workspace.settings or {}).get("source_priority")
    if isinstance(configured, list) and configured:
        return [str(s) for s in configured]
    return list(DEFAULT_SOURCE_PRIORITY)


@dataclass(slots=True)
class NewCustomer:
    """A customer this resolution creates: built in memory and inserted once (a plain object,
    because the ORM's change tracking would cost more than the work itself)."""

    workspace_id: int
    anonymous: bool
    created_at: datetime
    first_name: str | None = None
    last_name: str | None = None
    gender: str | None = None
    birthday: date | None = None
    timezone: str | None = None
    city: str | None = None
    locale: str | None = None
    email: str | None = None
    phone: str | None = None
    is_test: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    attribute_sources: dict[str, Any] = field(default_factory=dict)
    last_seen_at: datetime | None = None
    merged_into_id: int | None = None
    updated_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.updated_at = self.created_at

    def row(self) -> dict[str, Any]:
        """The customers row to insert."""
        return {name: getattr(self, name) for name in _NEW_CUSTOMER_FIELDS}


_NEW_CUSTOMER_FIELDS = tuple(NewCustomer.__dataclass_fields__)


class _Batch:
    """In-memory state of one resolution: owners of identifiers, merges, new customers."""

    def __init__(self, contacts: dict[int, Any]) -> None:
        # real customers touched by the batch: the contact state of each
        # (store.contact_states), and loaded as customers those whose profile it writes
        self.contacts = contacts
        self.customers: dict[int, Customer] = {}
        self.created: dict[int, NewCustomer] = {}  # temporary id -> customer to create
        self.parent: dict[int, int] = {}  # union-find: merged -> survivor
        self.next_tmp = -1
        self.anonymous_tmp: dict[int, bool] = {}
        self.merges: list[tuple[int, int, str]] = []  # real survivor, real merged, reason

    def find(self, cid: int) -> int:
        root = cid
        while root in self.parent:
            root = self.parent[root]
        while cid != root:  # path compression
            self.parent[cid], cid = root, self.parent[cid]
        return root

    def new_customer(self, anonymous: bool) -> int:
        cid = self.next_tmp
        self.next_tmp -= 1
        self.anonymous_tmp[cid] = anonymous
        return cid

    def is_anonymous(self, cid: int) -> bool:
        if cid < 0:
            return self.anonymous_tmp[cid]
        return bool(self.contacts[cid].anonymous)

    def profile(self, cid: int) -> Profile:
        return self.created[cid] if cid < 0 else self.customers[cid]

    def survivor(self, ids: set[int]) -> int:
        # An existing customer beats a new one, a known one beats an anonymous one, and the
        # oldest wins among equals.
        return min(ids, key=lambda c: (c < 0, self.is_anonymous(c), abs(c)))

    def union(self, ids: set[int], reason: str) -> int:
        keep = self.survivor(ids)
        for other in ids - {keep}:
            self.parent[other] = keep
            if other > 0:
                self.merges.append((keep, other, reason))
            elif keep < 0:
                # two new customers fold into one, which is known if either was
                self.anonymous_tmp[keep] = self.anonymous_tmp[keep] and self.anonymous_tmp[other]
            # a new customer folded into an existing one simply never gets created
        return keep


def resolve_profiles(
    session: Session,
    *,
    workspace: Workspace,
    records: Sequence[ProfileRecord],
    actor: str = "system",
) -> Resolution:
    """Find or create the customer of every record, merging where a record names identities
    of several customers, and apply the records' traits in order."""
    now = clock.now()
    keys = {i.key for r in records for i in r.idents if i.valid}
    stored = store.identity_owners(session, workspace.id, keys)
    owners = {k: v for k, v in stored.items() if k[0] in MATCHABLE_KINDS}
    anchors = {r.customer_id for r in records if r.customer_id is not None}
    batch = _Batch(store.contact_states(session, set(owners.values()) | anchors))
    # identities to write: key -> (ident, index of the record that brought it, source)
    pending: dict[tuple[str, str, str], tuple[Ident, int, str]] = {}
    # delivery addresses (push tokens, chats) follow the customer who last presented them
    addresses: dict[tuple[str, str, str], tuple[Ident, int, str]] = {}
    invalid: list[tuple[Ident, int, str]] = []
    assigned: list[int] = []
    changed = [False] * len(records)

    for index, record in enumerate(records):
        matchable = [i for i in record.idents if i.valid and i.kind in MATCHABLE_KINDS]
        matched = {batch.find(owners[i.key]) for i in matchable if i.key in owners}
        if record.customer_id is not None:
            matched.add(batch.find(record.customer_id))
        anonymous_only = all(i.kind in ANONYMOUS_KINDS for i in matchable)
        if not matched:
            cid = batch.new_customer(anonymous_only)
            changed[index] = True
        elif len(matched) == 1:
            cid = matched.pop()
        else:
            names = ", ".join(sorted({f"{i.kind}" for i in matchable if i.key in owners}))
            cid = batch.union(
                matched,
                f"one record named identities of several customers ({names}) from {record.source}",
            )
            changed[index] = True
        if cid < 0 and not anonymous_only:
            batch.anonymous_tmp[cid] = False
        for ident in record.idents:
            if ident.valid and ident.kind in MATCHABLE_KINDS:
                if ident.key not in owners:
                    owners[ident.key] = cid
                    pending[ident.key] = (ident, index, record.source)
                    changed[index] = True
            elif ident.valid:
                addresses[ident.key] = (ident, index, record.source)
            else:
                invalid.append((ident, index, record.source))
        assigned.append(cid)

    # New customers are built in memory, take the records' traits there and are written once.
    roots = sorted({batch.find(c) for c in assigned if batch.find(c) < 0}, reverse=True)
    for tmp in roots:
        batch.created[tmp] = NewCustomer(
            workspace_id=workspace.id, anonymous=batch.anonymous_tmp[tmp], created_at=now
        )

    # Existing customers are loaded only where the batch writes their profile: merges, and
    # records that bring traits or contacts. The others only move last_seen_at.
    writing = {batch.find(s) for s, _, _ in batch.merges} | {m for _, m, _ in batch.merges}
    for index, record in enumerate(records):
        cid = batch.find(assigned[index])
        if (
            cid > 0
            and cid not in writing
            and _writes_profile(record, batch.contacts[cid], pending, index)
        ):
            writing.add(cid)
    batch.customers = store.customers_by_ids(session, writing)

    priority = source_priority(workspace)
    for survivor, merged, reason in batch.merges:
        # a survivor is always an existing customer: existing ones win over new ones
        _merge(
            session,
            workspace=workspace,
            survivor=batch.customers[batch.find(survivor)],
            merged=batch.customers[merged],
            reason=reason,
            actor=actor,
            priority=priority,
        )

    roots_of = [batch.find(c) for c in assigned]
    custom = _apply_records(batch, records, roots_of, changed, priority, pending, now)
    store.mark_seen(session, seen=_seen_only(batch, records, roots_of))
    real_ids = store.insert_customers(session, [batch.created[tmp].row() for tmp in roots])
    real_of = dict(zip(roots, real_ids, strict=True))

    def final(cid: int) -> int:
        root = batch.find(cid)
        return real_of.get(root, root)

    identity_rows: list[dict[str, Any]] = []
    for key, (ident, index, source) in pending.items():
        owner = final(owners[key]) if key in owners else final(assigned[index])
        identity_rows.append(_identity_row(workspace.id, owner, ident, source, now))
    known_invalid = store.invalid_identities(
        session, workspace.id, {final(assigned[index]) for _, index, _ in invalid} - set(real_ids)
    )
    for ident, index, source in invalid:
        owner = final(assigned[index])
        if (owner, *ident.key) in known_invalid:
            continue  # the same bad contact seen again: kept once
        known_invalid.add((owner, *ident.key))
        changed[index] = True
        identity_rows.append(_identity_row(workspace.id, owner, ident, source, now))
    for key, (ident, index, source) in addresses.items():
        owner = final(assigned[index])
        if key not in stored:
            identity_rows.append(_identity_row(workspace.id, owner, ident, source, now))
            changed[index] = True
        elif stored[key] != owner:
            store.reassign_identity(session, workspace.id, key, owner)
            changed[index] = True
    store.insert_rows(session, Identity, identity_rows)

    return Resolution(
        customer_ids=[final(c) for c in assigned],
        created=len(real_ids),
        created_ids=real_ids,
        changed=changed,
        merges=[(final(s), m) for s, m, _ in batch.merges],
        custom_attributes=custom,
    )


def _writes_profile(
    record: ProfileRecord,
    contact: Any,
    pending: dict[tuple[str, str, str], tuple[Ident, int, str]],
    index: int,
) -> bool:
    """Whether applying ``record`` (record ``index`` of the batch) may write to the profile
    of the existing customer whose contact state is ``contact``, as :func:`_apply_records`
    would apply it. Judged on the stored state: until some record writes to a profile, the
    batch leaves that state as it was."""
    return bool(record.traits) or any(
        _contact_write(ident, contact, pending, index) is not None for ident in record.idents
    )


def _contact_write(
    ident: Ident,
    contact: Any,
    pending: dict[tuple[str, str, str], tuple[Ident, int, str]],
    index: int,
) -> tuple[str, Any] | None:
    """The profile field and value that ``ident`` of record ``index`` writes to a profile
    with the contact state ``contact`` (its ``email``, ``phone`` and ``anonymous``), if any:
    an e-mail or phone where there is none or this record brought it first, and a known
    identity makes an anonymous profile known."""
    if not ident.valid:
        return None
    new_here = pending.get(ident.key, (None, -1, ""))[1] == index
    if ident.kind == EMAIL:
        return ("email", ident.value) if contact.email is None or new_here else None
    if ident.kind == PHONE:
        return ("phone", ident.value) if contact.phone is None or new_here else None
    if contact.anonymous and ident.kind not in ANONYMOUS_KINDS:
        return ("anonymous", False)
    return None


def _seen_only(
    batch: _Batch, records: Sequence[ProfileRecord], customer_ids: Sequence[int]
) -> dict[int, datetime]:
    """The latest moment each existing, not loaded customer was seen in the batch, where it
    is later than the stored one."""
    seen: dict[int, datetime] = {}
    for record, cid in zip(records, customer_ids, strict=True):
        if cid < 0 or cid in batch.customers or not record.seen:
            continue
        stored = batch.contacts[cid].last_seen_at
        if (stored is None or record.at > stored) and (cid not in seen or record.at > seen[cid]):
            seen[cid] = record.at
    return seen


def _identity_row(
    workspace_id: int, customer_id: int, ident: Ident, source: str, now: datetime
) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "customer_id": customer_id,
        "kind": ident.kind,
        "namespace": ident.namespace,
        "value": ident.value,
        "raw_value": ident.raw[:320],
        "valid": ident.valid,
        "status": CONTACT_OK if ident.valid else CONTACT_INVALID,
        "status_reason": ident.reason,
        "status_at": None if ident.valid else now,
        "source": source[:50],
        "created_at": now,
    }


def _profile_state(customer: Profile) -> tuple[Any, ...]:
    """What records can change on a profile (to tell a real change from a repeat)."""
    return (
        *(getattr(customer, name) for name in STANDARD_TRAITS),
        customer.is_test,
        customer.anonymous,
        customer.email,
        customer.phone,
        dict(customer.attributes or {}),
        dict(customer.attribute_sources or {}),
    )


def _apply_records(
    batch: _Batch,
    records: Sequence[ProfileRecord],
    customer_ids: Sequence[int],
    changed: list[bool],
    priority: Sequence[str],
    pending: dict[tuple[str, str, str], tuple[Ident, int, str]],
    now: datetime,
) -> dict[str, Any]:
    """Apply each record's traits and contacts to its customer; returns the custom attributes
    written.

    A record counts as a change when it changed its customer's profile and the profile
    after the batch differs from before it: two records of one person that disagree (a
    duplicate in a CRM export) change nothing when the same batch comes again.
    """
    custom_written: dict[str, Any] = {}
    before: dict[int, tuple[Any, ...]] = {}
    touching: dict[int, list[int]] = {}  # customer -> records that changed their profile
    for index, (record, cid) in enumerate(zip(records, customer_ids, strict=True)):
        if cid > 0 and cid not in batch.customers:
            continue  # nothing to write but last_seen_at: see _seen_only
        customer = batch.profile(cid)
        # The state before the record, taken only when the record is about to write to the
        # profile (most events only move ``last_seen_at``, which is not part of it). Until
        # then the batch's records left the state as it was, so the first one taken for a
        # customer is also the state before the batch.
        state: tuple[Any, ...] | None = None

        def snapshot(cid: int = cid, customer: Profile = customer) -> None:
            nonlocal state
            if state is None:
                state = _profile_state(customer)
                before.setdefault(cid, state)

        # What writes to the profile here is what _writes_profile predicts: change both.
        if record.traits:
            snapshot()
            custom = apply_traits(customer, record.traits, source=record.source, priority=priority)
            custom_written.update(custom)
        for ident in record.idents:
            write = _contact_write(ident, customer, pending, index)
            if write is not None:
                snapshot()
                setattr(customer, *write)
        if record.seen and (customer.last_seen_at is None or record.at > customer.last_seen_at):
            customer.last_seen_at = record.at
        if state is not None and _profile_state(customer) != state:
            touching.setdefault(cid, []).append(index)
    for cid, indices in touching.items():
        customer = batch.profile(cid)
        if _profile_state(customer) != before[cid]:
            customer.updated_at = now
            for index in indices:
                changed[index] = True
    return custom_written


def _merge(
    session: Session,
    *,
    workspace: Workspace,
    survivor: Customer,
    merged: Customer,
    reason: str,
    actor: str,
    priority: Sequence[str],
) -> CustomerMerge:
    """Make ``merged`` an alias of ``survivor``: identities, consents and profile follow."""
    now = clock.now()
    snapshot = {
        "first_name": merged.first_name,
        "last_name": merged.last_name,
        "gender": merged.gender,
        "birthday": merged.birthday.isoformat() if merged.birthday else None,
        "timezone": merged.timezone,
        "city": merged.city,
        "email": merged.email,
        "phone": merged.phone,
        "attributes": merged.attributes,
        "attribute_sources": merged.attribute_sources,
        "anonymous": merged.anonymous,
    }
    survivor_before = {
        "attributes": survivor.attributes,
        "attribute_sources": survivor.attribute_sources,
        "email": survivor.email,
        "phone": survivor.phone,
    }
    moved = store.move_identities(session, source=merged.id, target=survivor.id)
    consents_moved, consents_dropped = _merge_consents(session, survivor.id, merged.id)
    fill_from(survivor, merged, priority=priority)
    if survivor.anonymous and not merged.anonymous:
        survivor.anonymous = False
    survivor.updated_at = now
    merged.merged_into_id = survivor.id
    merged.updated_at = now
    # customers merged into the merged one earlier now point at the final survivor
    session.execute(
        update(Customer)
        .where(Customer.merged_into_id == merged.id)
        .values(merged_into_id=survivor.id)
        .execution_options(synchronize_session=False)
    )
    record = CustomerMerge(
        workspace_id=workspace.id,
        survivor_id=survivor.id,
        merged_id=merged.id,
        reason=reason,
        details={
            "identity_ids": moved,
            "consents_moved": consents_moved,
            "consents_dropped": consents_dropped,
            "merged_profile": snapshot,
            "survivor_before": survivor_before,
        },
        actor=actor,
        at=now,
    )
    session.add(record)
    session.flush()
    record_audit(
        session,
        workspace_id=workspace.id,
        actor=actor,
        action="customer.merged",
        target_type="customer",
        target_id=survivor.id,
        details={"merged_id": merged.id, "merge_id": record.id, "reason": reason},
    )
    domain_events.publish(
        session,
        MERGED_EVENT,
        {"workspace_id": workspace.id, "survivor_id": survivor.id, "merged_id": merged.id},
        key=f"{merged.id}->{survivor.id}:{record.id}",
    )
    return record


def _merge_consents(
    session: Session, survivor_id: int, merged_id: int
) -> tuple[list[int], list[dict[str, Any]]]:
    """Move the merged customer's consents; where both have one, the newer change wins."""
    mine = {
        (c.brand_scope, c.kind, c.channel, c.topic): c
        for c in store.consents_of(session, [survivor_id])
    }
    moved: list[int] = []
    dropped: list[dict[str, Any]] = []
    for consent in store.consents_of(session, [merged_id]):
        key = (consent.brand_scope, consent.kind, consent.channel, consent.topic)
        current = mine.get(key)
        if current is None:
            consent.customer_id = survivor_id
            moved.append(consent.id)
            continue
        loser = consent if current.changed_at >= consent.changed_at else current
        if loser is current:
            # the merged customer's consent is newer: it replaces the survivor's
            dropped.append(_consent_snapshot(current))
            session.delete(current)
            session.flush()
            consent.customer_id = survivor_id
            moved.append(consent.id)
            mine[key] = consent
        else:
            dropped.append(_consent_snapshot(consent))
            session.delete(consent)
    session.flush()
    return moved, dropped


def _consent_snapshot(consent: Consent) -> dict[str, Any]:
    return {
        "customer_id": consent.customer_id,
        "brand_scope": consent.brand_scope,
        "kind": consent.kind,
        "channel": consent.channel,
        "topic": consent.topic,
        "status": consent.status,
        "source": consent.source,
        "evidence": consent.evidence,
        "changed_at": consent.changed_at.isoformat(),
    }
