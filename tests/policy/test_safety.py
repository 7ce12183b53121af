"""Safety rails: confirmed audience sizes and template content rules."""

from __future__ import annotations

from datetime import date

import pytest

from tactful.core.errors import Conflict
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer
from tactful.policy import service as policy
from tactful.policy.service import ContentRules
from tests.conftest import Tenant
from tests.policy.conftest import MakeCustomer

TODAY = date(2026, 6, 1)


def _people(runtime: Runtime, make_customer: MakeCustomer) -> dict[str, int]:
    ids = {name: make_customer() for name in ("anna", "boris", "unknown", "teen", "tester")}
    with runtime.db.scope() as session:
        for name, (gender, birthday, is_test) in {
            "anna": ("f", date(1990, 6, 2), False),
            "boris": ("m", date(1960, 1, 1), False),
            "unknown": (None, None, False),
            "teen": ("f", date(2010, 6, 1), False),
            "tester": ("f", date(1985, 1, 1), True),
        }.items():
            customer = session.get(Customer, ids[name])
            assert customer is not None
            customer.gender, customer.birthday, customer.is_test = gender, birthday, is_test
    return ids


def test_content_rules_refuse_audiences_outside_them(
    runtime: Runtime, tenant: Tenant, make_customer: MakeCustomer
) -> None:
    ids = _people(runtime, make_customer)
    everyone = list(ids.values())
    with runtime.db.scope(readonly=True) as session:

        def check(rules: ContentRules, audience: list[int] = everyone) -> dict[str, int]:
            return policy.audience_violations(
                session,
                workspace_id=tenant.workspace_id,
                customer_ids=audience,
                rules=rules,
                today=TODAY,
            )

        assert check(ContentRules(gender="f")) == {"other_gender": 1}
        assert check(ContentRules(min_age=18)) == {"younger_than_allowed": 1}  # teen is 16
        assert check(ContentRules(max_age=35)) == {"older_than_allowed": 2}  # boris, tester
        # anna turns 36 tomorrow: today she is 35
        assert check(ContentRules(max_age=35), [ids["anna"]]) == {}
        assert check(ContentRules(reads_as_test=True)) == {"test_content_to_real_customers": 4}
        assert check(ContentRules(reads_as_test=True), [ids["tester"]]) == {}
        with pytest.raises(Conflict) as refused:
            policy.check_content(
                session,
                workspace_id=tenant.workspace_id,
                customer_ids=everyone,
                rules=ContentRules(gender="m"),
                today=TODAY,
            )
        assert refused.value.message == (
            "the template's content rules refuse this audience: 3 other gender"
        )


def test_confirmed_size_with_tolerance() -> None:
    policy.check_confirmation(expected=1000, actual=1050, tolerance=0.05)
    with pytest.raises(Conflict) as refused:
        policy.check_confirmation(expected=1000, actual=1051, tolerance=0.05)
    assert refused.value.field == "expected_recipients"
