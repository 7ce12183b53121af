"""Fixtures for the contact policy: customers with contacts, consents and time zones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.contacts import normalise
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.service import ConsentInput
from tactful.tenancy.models import Workspace
from tests.conftest import Tenant

AT = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # 09:00 in Moscow

MakeCustomer = Callable[..., int]


@pytest.fixture
def make_customer(runtime: Runtime, tenant: Tenant) -> MakeCustomer:
    """Create a customer with an e-mail, a phone and a push token, and (by default) every
    marketing consent for the tenant's brand."""
    counter = iter(range(1, 10_000))

    def make(
        *,
        timezone: str = "Europe/Moscow",
        consent: bool = True,
        is_test: bool = False,
        channels: tuple[str, ...] = ("email", "sms", "push", "viber"),
        session: Session | None = None,
    ) -> int:
        n = next(counter)

        def create(s: Session) -> int:
            workspace = s.get(Workspace, tenant.workspace_id)
            assert workspace is not None
            idents = [
                normalise("external", f"p{n}", region="RU", namespace="user_id"),
                normalise("email", f"p{n}@example.com", region="RU"),
                normalise("phone", f"+7912{n:07d}", region="RU"),
                normalise("push_token", f"token-{n}", region="RU"),
            ]
            [cid] = resolve_profiles(
                s,
                workspace=workspace,
                records=[
                    ProfileRecord(
                        idents=idents,
                        source="test",
                        at=AT,
                        traits={"timezone": timezone, "is_test": is_test},
                    )
                ],
            ).customer_ids
            if consent:
                changes = [ConsentInput(kind="personal_data", status="granted")] + [
                    ConsentInput(
                        kind="advertising", channel=c, status="granted", brand_id=tenant.brand_id
                    )
                    for c in channels
                ]
                customers.set_consents(
                    s,
                    workspace_id=tenant.workspace_id,
                    customer_id=cid,
                    changes=changes,
                    source="test",
                    evidence={},
                    actor="test",
                    at=AT,
                    audit=False,
                )
            return cid

        if session is not None:
            return create(session)
        with runtime.db.scope() as s:
            return create(s)

    return make
