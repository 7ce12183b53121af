"""Customer pages: search by any identity, the profile with why a message was not sent,
masking for roles without PII rights, and the audited export only some roles may take."""

from __future__ import annotations

from sqlalchemy import select

from tactful.core.runtime import Runtime
from tactful.tenancy.models import AuditEntry
from tests.conftest import Tenant
from tests.reports.shop import Shop
from tests.web.conftest import SignIn


def audit_actions(runtime: Runtime) -> list[str]:
    with runtime.db.scope(readonly=True) as session:
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_marketer_finds_a_customer_by_phone_reads_why_a_message_was_not_sent_and_exports(
    shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    marketer = sign_in("marketer")
    found = marketer.get("/customers", q="8 (912) 000-00-03")
    assert (found.status, found.response.headers["location"]) == (303, f"/customers/{shop.vera}")
    profile = marketer.get(f"/customers/{shop.vera}")
    assert profile.status == 200
    assert profile.text("h1") == f"Vera #{shop.vera}"
    assert profile.text("[data-field='phone']") == "+79120000003"
    assert profile.text("[data-empty='consents']").startswith("No consent given")
    assert profile.texts("[data-table='decisions'] tr[data-decision] td")[1:] == [
        "api:api_key:1",
        "marketing",
        "—",
        "suppressed",
        "no advertising consent for the brand and channel",
    ]
    assert profile.texts("[data-table='timeline'] [data-why]") == [
        "why not: no advertising consent for the brand and channel"
    ]
    assert profile.texts("[data-table='timeline'] tr[data-kind='purchase'] td")[1:] == [
        "Purchase R4 in S1",
        "5.00 RUB",
    ]
    assert profile.text("[data-metric='lifecycle_stage'] td") == "new"

    by_name = marketer.get("/customers", q="ann")
    assert by_name.texts("[data-table='customers'] tr[data-customer] td")[:4] == [
        str(shop.anna),
        "Anna",
        "anna@example.com",
        "+79120000001",
    ]
    assert marketer.get("/customers", q="nobody").text("[data-empty]") == (
        "No customer matches “nobody”."
    )


def test_analyst_sees_no_personal_data_and_support_never_exports(
    shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    analyst = sign_in("analyst")
    by_phone = analyst.get("/customers", q="+79120000001")
    assert by_phone.status == 200
    assert not by_phone.has("[data-table='customers']")
    assert not by_phone.has("[data-action='export']")
    by_id = analyst.get("/customers", q=str(shop.anna))
    assert by_id.texts("[data-table='customers'] tr[data-customer] td")[1:4] == [
        "A.",
        "a•••@example.com",
        "+7••••••••01",
    ]
    profile = analyst.get(f"/customers/{shop.anna}")
    assert profile.text("h1") == f"A. #{shop.anna}"
    assert profile.text("[data-field='email']") == "a•••@example.com"
    assert "anna@example.com" not in profile.response.text
    assert "+79120000001" not in profile.response.text
    before = audit_actions(runtime)
    refused = analyst.get("/customers/export", q="anna")
    assert refused.status == 403
    assert audit_actions(runtime) == before

    support = sign_in("support")
    page = support.get("/customers", q="anna@example.com")
    assert page.response.headers["location"] == f"/customers/{shop.anna}"
    listing = support.get("/customers")
    assert not listing.has("[data-action='export']")
    before = audit_actions(runtime)
    assert support.get("/customers/export").status == 403
    assert audit_actions(runtime) == before


def test_export_is_a_csv_of_the_search_and_is_audited(
    shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    marketer = sign_in("marketer")
    assert marketer.get("/customers", q="a").has("[data-action='export']")
    exported = marketer.get("/customers/export", q="anna")
    assert exported.status == 200
    assert exported.response.headers["content-type"].startswith("text/csv")
    assert exported.response.text.splitlines() == [
        "customer_id,first_name,last_name,email,phone,city",
        f"{shop.anna},Anna,,anna@example.com,+79120000001,Moscow",
    ]
    assert audit_actions(runtime)[-1] == "customers.exported"


def test_customer_pages_refuse_roles_and_unknown_customers(tenant: Tenant, sign_in: SignIn) -> None:
    pos = sign_in("pos")
    assert pos.get("/customers").status == 403
    assert pos.get("/customers/1").status == 403
    missing = sign_in("marketer").get("/customers/999")
    assert missing.status == 404
    assert missing.text("main p") == "customer 999 does not exist"
