"""Identity resolution: one customer per person across identifiers; merges; anonymous to
known; invalid contacts kept but never matched; attribute conflicts by source priority."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tactful.core.jobs.models import Job
from tactful.core.runtime import Runtime
from tactful.customers import service
from tactful.customers.contacts import Ident, normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.models import Customer, CustomerMerge, Identity
from tactful.tenancy.models import AuditEntry, Workspace
from tests.conftest import Tenant

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def ident(kind: str, value: str, namespace: str = "") -> Ident:
    if kind == "external" and not namespace:
        namespace = "user_id"
    return normalise(kind, value, region="RU", namespace=namespace)


def resolve(session: Session, *records: tuple[list[Ident], dict[str, object], str]) -> list[int]:
    workspace = session.scalars(select(Workspace)).one()
    result = resolve_profiles(
        session,
        workspace=workspace,
        records=[
            ProfileRecord(idents=idents, traits=dict(traits), source=source, at=AT)
            for idents, traits, source in records
        ],
    )
    return result.customer_ids


def customers_count(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))
        )
        or 0
    )


def test_phone_and_email_are_normalised_and_matched(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        [a] = resolve(
            session,
            (
                [ident("phone", "8 (912) 345-67-89"), ident("email", "Anna.Petrova@Mail.RU")],
                {},
                "api",
            ),
        )
        [b] = resolve(session, ([ident("phone", "+79123456789")], {}, "api"))
        [c] = resolve(session, ([ident("email", "anna.petrova@mail.ru")], {}, "api"))
        assert a == b == c
        customer = session.get(Customer, a)
        assert customer is not None
        assert (customer.phone, customer.email, customer.anonymous) == (
            "+79123456789",
            "anna.petrova@mail.ru",
            False,
        )
        assert customers_count(session) == 1


def test_invalid_contacts_are_kept_but_never_matched(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        [a, b] = resolve(
            session,
            ([ident("external", "c1"), ident("phone", "12345")], {}, "import"),
            (
                [ident("external", "c2"), ident("phone", "12345"), ident("email", "ivan@@mail")],
                {},
                "import",
            ),
        )
        assert a != b
        rows = session.scalars(
            select(Identity).where(Identity.valid.is_(False)).order_by(Identity.id)
        ).all()
        assert [(r.customer_id, r.kind, r.value, r.status) for r in rows] == [
            (a, "phone", "12345", "invalid"),
            (b, "phone", "12345", "invalid"),
            (b, "email", "ivan@@mail", "invalid"),
        ]
        assert rows[0].status_reason == "not a valid phone number in region RU"
        assert "@" in (rows[2].status_reason or "")
        customer_b = session.get(Customer, b)
        assert customer_b is not None
        assert (customer_b.phone, customer_b.email) == (None, None)


def test_record_naming_two_customers_merges_them(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        [a] = resolve(
            session,
            (
                [ident("card", "2000 1234 5678 9"), ident("external", "c1")],
                {"first_name": "Anna", "vip": True},
                "crm",
            ),
        )
        [b] = resolve(
            session,
            ([ident("email", "anna@example.com")], {"last_name": "Petrova", "vip": False}, "shop"),
        )
        assert a != b
        [c] = resolve(
            session,
            ([ident("card", "2000123456789"), ident("email", "ANNA@example.com")], {}, "pos"),
        )
        assert c == a  # the older customer survives
        survivor = session.get(Customer, a)
        merged = session.get(Customer, b)
        assert survivor is not None
        assert merged is not None
        assert merged.merged_into_id == a
        assert (survivor.first_name, survivor.last_name, survivor.email) == (
            "Anna",
            "Petrova",
            "anna@example.com",
        )
        # crm outranks shop: the conflicting attribute keeps crm's value
        assert survivor.attributes == {"vip": True}
        owners = {(i.kind, i.value): i.customer_id for i in session.scalars(select(Identity))}
        assert owners == {
            ("card", "2000123456789"): a,
            ("external", "c1"): a,
            ("email", "anna@example.com"): a,
        }
        merge = session.scalars(select(CustomerMerge)).one()
        assert (merge.survivor_id, merge.merged_id) == (a, b)
        assert merge.reason.startswith("one record named identities of several customers")
        audit = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "customer.merged")
        ).one()
        assert audit.details["merged_id"] == b
        job = session.scalars(select(Job).where(Job.name == "events.apply_merge")).one()
        assert (job.payload["survivor_id"], job.payload["merged_id"]) == (a, b)


def test_chain_of_three_merges(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        a, b, c = resolve(
            session,
            ([ident("external", "a")], {}, "import"),
            ([ident("external", "b"), ident("card", "1111")], {}, "import"),
            ([ident("external", "c"), ident("email", "c@example.com")], {}, "import"),
        )
        assert len({a, b, c}) == 3
        resolve(session, ([ident("external", "a"), ident("card", "1111")], {}, "pos"))
        resolve(session, ([ident("card", "1111"), ident("email", "c@example.com")], {}, "pos"))
        assert customers_count(session) == 1
        for customer_id in (b, c):
            alias = session.get(Customer, customer_id)
            assert alias is not None
            assert alias.merged_into_id == a
        workspace = session.scalars(select(Workspace)).one()
        for kind, value in (("card", "1111"), ("email", "c@example.com")):
            assert (
                service.find_customer(session, workspace=workspace, kind=kind, value=value).id == a
            )
        assert service.get_customer(session, workspace_id=workspace.id, customer_id=c).id == a
        merges = session.scalars(select(CustomerMerge).order_by(CustomerMerge.id)).all()
        assert [(m.survivor_id, m.merged_id) for m in merges] == [(a, b), (a, c)]


def test_merges_inside_one_batch(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        ids = resolve(
            session,
            ([ident("external", "x")], {}, "import"),
            ([ident("email", "x@example.com")], {}, "import"),
            ([ident("external", "x"), ident("email", "x@example.com")], {}, "import"),
        )
        assert len(set(ids)) == 1
        assert customers_count(session) == 1
        assert session.scalar(select(func.count()).select_from(CustomerMerge)) == 0


def test_anonymous_activity_joins_the_profile(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        [anon] = resolve(session, ([ident("anonymous", "browser-1")], {}, "web"))
        visitor = session.get(Customer, anon)
        assert visitor is not None
        assert visitor.anonymous is True
        [known] = resolve(
            session,
            (
                [ident("external", "u-9"), ident("anonymous", "browser-1")],
                {"first_name": "Oleg"},
                "web",
            ),
        )
        assert known == anon
        assert visitor.anonymous is False
        assert visitor.first_name == "Oleg"
        # a second browser of a customer who already exists merges into them
        [other] = resolve(session, ([ident("anonymous", "browser-2")], {}, "web"))
        [again] = resolve(
            session, ([ident("external", "u-9"), ident("anonymous", "browser-2")], {}, "web")
        )
        assert again == known
        assert session.get(Customer, other).merged_into_id == known  # type: ignore[union-attr]


def test_source_priority_decides_conflicts(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        [cid] = resolve(
            session, ([ident("external", "p")], {"first_name": "Анна", "city": "Пермь"}, "crm")
        )
        resolve(
            session,
            (
                [ident("external", "p")],
                {"first_name": "Anya", "city": "Perm", "favourite": "roses"},
                "api",
            ),
        )
        customer = session.get(Customer, cid)
        assert customer is not None
        assert (customer.first_name, customer.city, customer.attributes) == (
            "Анна",
            "Пермь",
            {"favourite": "roses"},
        )
        resolve(session, ([ident("external", "p")], {"first_name": "Анастасия"}, "crm"))
        assert customer.first_name == "Анастасия"


def test_revert_merge_restores_both(runtime: Runtime, tenant: Tenant) -> None:
    with runtime.db.scope() as session:
        a, b = resolve(
            session,
            ([ident("external", "a")], {"tier": "gold"}, "crm"),
            ([ident("email", "b@example.com")], {"pets": 2}, "shop"),
        )
        resolve(session, ([ident("external", "a"), ident("email", "b@example.com")], {}, "pos"))
        merge = session.scalars(select(CustomerMerge)).one()
        survivor = session.get(Customer, a)
        assert survivor is not None
        assert survivor.attributes == {"tier": "gold", "pets": 2}
        restored = service.revert_merge(
            session, workspace_id=tenant.workspace_id, merge_id=merge.id, actor="test"
        )
        assert restored.id == b
        assert restored.merged_into_id is None
        assert restored.attributes == {"pets": 2}
        assert survivor.attributes == {"tier": "gold"}
        owners = {(i.kind, i.value): i.customer_id for i in session.scalars(select(Identity))}
        assert owners == {("external", "a"): a, ("email", "b@example.com"): b}
        with pytest.raises(Exception, match="already reverted"):
            service.revert_merge(
                session, workspace_id=tenant.workspace_id, merge_id=merge.id, actor="test"
            )


def test_records_that_only_see_a_customer_move_last_seen_forward_never_back(
    runtime: Runtime, tenant: Tenant
) -> None:
    """Events that write nothing to a known profile only move ``last_seen_at`` (without
    loading the customer); in the same batch as a record that writes to the profile, the
    latest moment still wins."""
    early, mid, late = (datetime(2026, 5, day, 12, 0, tzinfo=UTC) for day in (2, 3, 4))

    def seen(session: Session, *records: tuple[str, datetime, dict[str, object]]) -> list[int]:
        workspace = session.scalars(select(Workspace)).one()
        return resolve_profiles(
            session,
            workspace=workspace,
            records=[
                ProfileRecord(idents=[ident("anonymous", a)], traits=t, source="api", at=at)
                for a, at, t in records
            ],
        ).customer_ids

    with runtime.db.scope() as session:
        first, second = seen(session, ("a1", mid, {}), ("a2", mid, {}))
    with runtime.db.scope() as session:
        before = {c.id: c.updated_at for c in session.scalars(select(Customer))}
        assert seen(
            session,
            ("a1", early, {}),  # older than the stored moment: kept
            ("a2", late, {}),
            ("a2", early, {}),  # the batch's latest wins
        ) == [first, second, second]
    with runtime.db.scope() as session:
        got = {c.id: (c.last_seen_at, c.updated_at) for c in session.scalars(select(Customer))}
    assert got == {first: (mid, before[first]), second: (late, before[second])}

    with runtime.db.scope() as session:  # a record writing traits beside seen-only ones
        assert seen(
            session, ("a1", late, {}), ("a1", early, {"first_name": "Anna"}), ("a2", mid, {})
        ) == [first, first, second]
    with runtime.db.scope() as session:
        customers = {c.id: c for c in session.scalars(select(Customer))}
        assert customers[first].first_name == "Anna"
        assert [customers[first].last_seen_at, customers[second].last_seen_at] == [late, late]
