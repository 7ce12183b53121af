"""Bulk paths for imports: e-mails checked per domain agree with email-validator, consents
from files, identity sets resolved by lookup or by the resolver, repeated bad contacts kept
once."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.customers import bulk
from tactful.customers.contacts import normalise, normalise_email, parse_email
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.models import Consent, ConsentChange, Customer, Identity
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

ADDRESS_PARTS = st.text(alphabet="abcXYZ019._%+-@ ", min_size=0, max_size=12)
DOMAINS = st.sampled_from(
    ["mail.ru", "Example.COM", "x.test", "localhost", "a..b.ru", "-x.ru", "x.c", "x.123", "ya.ru "]
)


@settings(max_examples=400, deadline=None)
@given(local=ADDRESS_PARTS, domain=DOMAINS, raw=ADDRESS_PARTS)
def test_email_fast_path_agrees_with_email_validator(local: str, domain: str, raw: str) -> None:
    for value in (f"{local}@{domain}", raw, f" {local.upper()}@{domain} "):
        assert normalise_email.__wrapped__(value) == parse_email(value)


def record(*idents: tuple[str, str], seen: bool = True, at: datetime = AT) -> ProfileRecord:
    return ProfileRecord(
        idents=[
            normalise(kind, value, region="RU", namespace="user_id" if kind == "external" else "")
            for kind, value in idents
        ],
        source="import",
        at=at,
        seen=seen,
    )


def workspace(session: Session) -> Workspace:
    return session.scalars(select(Workspace)).one()


def test_resolve_records_by_lookup_or_resolver(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        ws = workspace(session)
        [known] = resolve_profiles(
            session, workspace=ws, records=[record(("external", "c1"), seen=False)]
        ).customer_ids
        found = bulk.resolve_records(
            session,
            workspace=ws,
            records=[
                record(("external", "c1"), at=LATER),  # known: a lookup
                record(("external", "c1"), ("card", "5555")),  # a new card for c1
                record(("external", "c2")),  # nobody yet
                record(("phone", "12345")),  # no valid identity
            ],
            actor="test",
        )
        assert found[0] == found[1] == known
        assert found[2] not in (None, known)
        assert found[3] is None
        customer = session.get(Customer, known)
        assert customer is not None
        session.refresh(customer)
        assert customer.last_seen_at == LATER
        owners = {(i.kind, i.value): i.customer_id for i in session.scalars(select(Identity))}
        assert owners == {
            ("external", "c1"): known,
            ("card", "5555"): known,
            ("external", "c2"): found[2],
        }


def test_the_same_bad_contact_is_kept_once(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        ws = workspace(session)
        for _ in range(2):
            resolution = resolve_profiles(
                session, workspace=ws, records=[record(("external", "c1"), ("phone", "12345"))]
            )
        assert resolution.changed == [False]
        invalid = session.scalars(select(Identity).where(Identity.valid.is_(False))).all()
        assert [(i.kind, i.value, i.status) for i in invalid] == [("phone", "12345", "invalid")]


def consents(session: Session) -> list[tuple[int, str, str, str, str]]:
    rows = session.scalars(select(Consent).order_by(Consent.customer_id, Consent.channel))
    return [(c.customer_id, c.brand_scope, c.kind, c.channel, c.status) for c in rows]


def test_consents_from_a_file(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        ws = workspace(session)
        a, b = resolve_profiles(
            session, workspace=ws, records=[record(("external", "a")), record(("external", "b"))]
        ).customer_ids
        evidence = {"import": 1, "line": 7}

        def apply(*values: tuple[int, str, str, bool]) -> list[bool]:
            return bulk.apply_consents(
                session,
                workspace_id=ws.id,
                values=[
                    bulk.ConsentValue(
                        customer_id=c,
                        kind=kind,
                        channel=channel,
                        granted=granted,
                        evidence=evidence,
                        brand_id=None if kind == "personal_data" else tenant.brand_id,
                    )
                    for c, kind, channel, granted in values
                ],
                source="import",
                actor="import:1",
                at=AT,
            )

        changed = apply(
            (a, "personal_data", "*", True),
            (a, "advertising", "email", True),
            (b, "advertising", "email", False),  # never given: nothing recorded
        )
        assert changed == [True, True, False]
        scope = f"b{tenant.brand_id}"
        assert consents(session) == [
            (a, "ws", "personal_data", "*", "granted"),
            (a, scope, "advertising", "email", "granted"),
        ]
        # the same file again changes nothing; a later file revoking does
        assert apply((a, "personal_data", "*", True), (a, "advertising", "email", True)) == [
            False,
            False,
        ]
        assert apply((a, "advertising", "email", False)) == [True]
        assert consents(session)[1] == (a, scope, "advertising", "email", "revoked")
        history = session.scalars(select(ConsentChange).order_by(ConsentChange.id)).all()
        assert [(h.channel, h.status, h.previous_status, h.evidence) for h in history] == [
            ("*", "granted", None, evidence),
            ("email", "granted", None, evidence),
            ("email", "revoked", "granted", evidence),
        ]
        assert session.scalar(select(func.count()).select_from(Consent)) == 2
