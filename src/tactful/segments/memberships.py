"""Materialised memberships: refresh (enter/exit changes, domain events), status on
failure, member lists and exports (CSV, Parquet, hashed contacts for ad platforms)."""

from __future__ import annotations

import csv
import hashlib
import io
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.orm import Session

from tactful.core import clock, domain_events
from tactful.core.errors import ValidationFailed
from tactful.core.jobs.queue import enqueue, enqueue_coalesced
from tactful.core.runtime import Runtime
from tactful.segments import service, store
from tactful.segments.definition import parse
from tactful.segments.models import (
    ENTERED,
    EXITED,
    FAILED,
    OK,
    Segment,
    SegmentChange,
    SegmentMembership,
)
from tactful.tenancy import service as tenancy

MEMBERSHIP_EVENT = "segments.membership_changed"
REFRESH_JOB = "segments.refresh"
EVENT_CHUNK = 5000
EXPORT_FORMATS = ("csv", "parquet")
AD_PLATFORMS = ("google", "meta")


@dataclass(frozen=True)
class RefreshOutcome:
    """What a refresh did (or why it failed)."""

    segment_id: int
    status: str
    members: int
    entered: int
    exited: int
    error: str | None = None


def refresh_segment(
    runtime: Runtime, session: Session, *, workspace_id: int, segment_id: int
) -> RefreshOutcome:
    """Evaluate a segment, store who entered and who exited, and publish the changes.

    A failure is recorded on the segment (status, error; the last good refresh time stays)
    and the memberships are left as they were.
    """
    segment = service.get_segment(
        session, workspace_id=workspace_id, segment_id=segment_id, lock=True
    )
    now = clock.now()
    try:
        node = parse(segment.definition)
        current = set(
            service.evaluate_members(
                runtime.warehouse,
                lambda moment: service.compiler_at(runtime, session, workspace_id, moment),
                node,
                now,
            )
        )
    except Exception as exc:
        segment.status = FAILED
        segment.last_error = "".join(traceback.format_exception_only(exc)).strip()[-4000:]
        segment.last_refresh_at = now
        segment.next_refresh_at = service.next_run(segment, now)
        session.flush()
        return RefreshOutcome(segment.id, FAILED, segment.member_count, 0, 0, segment.last_error)
    previous = store.member_ids(session, segment.id)
    entered = sorted(current - previous)
    exited = sorted(previous - current)
    segment.refreshes += 1
    refresh = segment.refreshes
    store.add_members(session, segment.id, entered, now)
    store.remove_members(session, segment.id, exited)
    store.add_changes(session, segment.id, ENTERED, entered, refresh, now)
    store.add_changes(session, segment.id, EXITED, exited, refresh, now)
    for start in range(0, max(len(entered), len(exited)), EVENT_CHUNK):
        domain_events.publish(
            session,
            MEMBERSHIP_EVENT,
            {
                "workspace_id": workspace_id,
                "segment_id": segment.id,
                "refresh": refresh,
                "entered": entered[start : start + EVENT_CHUNK],
                "exited": exited[start : start + EVENT_CHUNK],
                "at": now.isoformat(),
            },
            key=f"{segment.id}:{refresh}:{start // EVENT_CHUNK}",
        )
    segment.status, segment.last_error = OK, None
    segment.last_refresh_at = segment.last_good_refresh_at = now
    segment.member_count = len(current)
    segment.next_refresh_at = service.next_run(segment, now)
    session.flush()
    return RefreshOutcome(segment.id, OK, len(current), len(entered), len(exited))


def queue_refresh(session: Session, *, segment_id: int) -> None:
    """Ask the workers for a refresh (several asks while one is pending make one run)."""
    enqueue_coalesced(
        session, REFRESH_JOB, {"segment_id": segment_id}, key=f"{REFRESH_JOB}:{segment_id}"
    )


def queue_due(session: Session) -> int:
    """Enqueue one keyed refresh per scheduled segment whose time has come."""
    count = 0
    for segment in store.due_scheduled(session, clock.now()):
        due = segment.next_refresh_at
        assert due is not None
        count += enqueue(
            session,
            REFRESH_JOB,
            {"segment_id": segment.id},
            key=f"{REFRESH_JOB}:{segment.id}:at:{due.isoformat()}",
        )
    return count


def queue_continuous(session: Session, *, workspace_id: int) -> int:
    """After profiles or metrics changed, refresh the workspace's continuous segments."""
    ids = store.continuous(session, workspace_id)
    for segment_id in ids:
        queue_refresh(session, segment_id=segment_id)
    return len(ids)


def workspace_of(session: Session, segment_id: int) -> int | None:
    """The workspace a segment belongs to (None when it is gone)."""
    segment = session.get(Segment, segment_id)
    return None if segment is None else segment.workspace_id


def members(
    session: Session, *, workspace_id: int, segment_id: int, after_id: int = 0, limit: int = 100
) -> list[SegmentMembership]:
    """Current members, by customer id (page with ``after_id``)."""
    service.get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    return store.members(session, segment_id, after_id=after_id, limit=min(max(limit, 1), 10_000))


def changes(
    session: Session,
    *,
    workspace_id: int,
    segment_id: int,
    before_id: int | None = None,
    limit: int = 100,
) -> list[SegmentChange]:
    """Enter and exit changes, newest first."""
    service.get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    return store.changes(session, segment_id, before_id=before_id, limit=min(max(limit, 1), 1000))


def _all_members(session: Session, segment_id: int) -> list[SegmentMembership]:
    found: list[SegmentMembership] = []
    after = 0
    while page := store.members(session, segment_id, after_id=after, limit=10_000):
        found.extend(page)
        after = page[-1].customer_id
    return found


def _contacts(session: Session, workspace_id: int, ids: Sequence[int]) -> dict[int, Any]:
    people: dict[int, Any] = {}
    for start in range(0, len(ids), 900):
        for customer in store.customers(session, ids[start : start + 900]):
            if customer.workspace_id == workspace_id:
                people[customer.id] = customer
    return people


def export_members(
    session: Session, *, workspace_id: int, segment_id: int, format: str, actor: str
) -> bytes:
    """The members with their contact fields as CSV or Parquet (an audited export)."""
    if format not in EXPORT_FORMATS:
        raise ValidationFailed(f"format must be one of {list(EXPORT_FORMATS)}", field="format")
    segment = service.get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    rows = _all_members(session, segment.id)
    people = _contacts(session, workspace_id, [r.customer_id for r in rows])
    columns = ["customer_id", "entered_at", "first_name", "last_name", "email", "phone"]
    records = [
        {
            "customer_id": r.customer_id,
            "entered_at": clock.ensure_utc(r.entered_at).isoformat(),
            **{
                name: getattr(people.get(r.customer_id), name, None)
                for name in ("first_name", "last_name", "email", "phone")
            },
        }
        for r in rows
    ]
    tenancy.record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="segment.exported",
        target_type="segment",
        target_id=segment.id,
        brand_id=segment.brand_id,
        details={"format": format, "rows": len(records), "version": segment.version},
    )
    if format == "parquet":
        table = pa.Table.from_pylist(
            records,
            schema=pa.schema(
                [(c, pa.int64() if c == "customer_id" else pa.string()) for c in columns]
            ),
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(records)
    return text.getvalue().encode()


def sha256(value: str) -> str:
    """The lower-case hex SHA-256 of a text."""
    return hashlib.sha256(value.encode()).hexdigest()


def hashed_email(email: str) -> str:
    """SHA-256 of an e-mail trimmed and lower-cased (the platforms' normalisation)."""
    return sha256(email.strip().lower())


def hashed_phone(phone: str, platform: str) -> str:
    """SHA-256 of an E.164 phone: with the "+" for Google Customer Match, digits only (with
    the country code) for Meta."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    return sha256(f"+{digits}" if platform == "google" else digits)


def export_for_ads(
    session: Session, *, workspace_id: int, segment_id: int, platform: str, actor: str
) -> bytes:
    """A CSV of SHA-256 hashes of the members' normalised e-mails and phones, never the
    contacts themselves, for an ad platform's customer match (an audited export)."""
    if platform not in AD_PLATFORMS:
        raise ValidationFailed(f"platform must be one of {list(AD_PLATFORMS)}", field="platform")
    segment = service.get_segment(session, workspace_id=workspace_id, segment_id=segment_id)
    rows = _all_members(session, segment.id)
    people = _contacts(session, workspace_id, [r.customer_id for r in rows])
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["email_sha256", "phone_sha256"])
    written = 0
    for row in rows:
        person = people.get(row.customer_id)
        email = hashed_email(person.email) if person is not None and person.email else ""
        phone = hashed_phone(person.phone, platform) if person is not None and person.phone else ""
        if email or phone:
            writer.writerow([email, phone])
            written += 1
    tenancy.record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="segment.exported_for_ads",
        target_type="segment",
        target_id=segment.id,
        brand_id=segment.brand_id,
        details={"platform": platform, "rows": written, "version": segment.version},
    )
    return text.getvalue().encode()
