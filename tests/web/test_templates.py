"""The template editor: syntax errors with line and column next to the editor and the typed
text kept, saving, unknown variables, the live preview for a customer, test sends to test
recipients only; roles without templates are refused."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.messaging.models import MessageTemplate
from tactful.tenancy.service import get_workspace
from tests.conftest import Tenant
from tests.reports.shop import Shop
from tests.web.conftest import SignIn

BROKEN_BODY = (
    "<mj-section><mj-column>\n"
    "<mj-text>Hello {{ customer.first_name }}</mj-text>\n"
    "<mj-text>{% if customer.city %}From {{ customer.city }}{% endfi %}</mj-text>\n"
    "</mj-column></mj-section>"
)
GOOD_BODY = (
    "<mj-section><mj-column>\n"
    "<mj-text>Hello {{ customer.first_name }}, size {{ customer.attributes.shoe_size }}</mj-text>\n"
    "</mj-column></mj-section>"
)


def column_of_typo() -> int:
    return BROKEN_BODY.splitlines()[2].index("endfi") + 1


def editor_form(tenant: Tenant, **fields: str) -> dict[str, Any]:
    return {
        "brand_id": str(tenant.brand_id),
        "kind": "message",
        "key": "welcome",
        "name": "Welcome",
        "layout_id": "",
        "parts.email.subject": "Welcome, {{ customer.first_name }}",
        "parts.email.body": GOOD_BODY,
        **fields,
    }


def templates_count(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(MessageTemplate)) or 0)


def test_syntax_errors_are_shown_at_the_editor_and_nothing_is_saved(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    marketer = sign_in("marketer")
    assert marketer.get("/templates/new").status == 200
    before = templates_count(runtime)
    broken = marketer.post("/templates", editor_form(tenant, **{"parts.email.body": BROKEN_BODY}))
    assert broken.status == 422
    column = BROKEN_BODY.splitlines()[2].index("endfi") + 1
    assert broken.error("parts.email.body") == f"unexpected tag 'endfi' (line 3, column {column})"
    assert broken.value("parts.email.body") == BROKEN_BODY
    assert broken.value("key") == "welcome"
    bad_key = marketer.post("/templates", editor_form(tenant, key="Bad key!"))
    assert bad_key.status == 422
    assert bad_key.error("key") == "String should match pattern '^[a-z0-9_\\-]{1,64}$'"
    empty = marketer.post(
        "/templates", editor_form(tenant, **{"parts.email.subject": "", "parts.email.body": ""})
    )
    assert (empty.status, empty.error("parts")) == (
        422,
        "Dictionary should have at least 1 item after validation, not 0",
    )
    assert templates_count(runtime) == before


def test_save_preview_and_test_send(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    marketer = sign_in("marketer")
    saved = marketer.post("/templates", editor_form(tenant, **{"parts.sms.text": "Hi!"}))
    assert saved.status == 303
    location = saved.response.headers["location"]
    template_id = int(location.split("/")[2].split("?")[0])
    page = marketer.get(f"/templates/{template_id}", saved="1")
    assert page.text(".notice") == "Saved."
    assert page.value("parts.email.body") == GOOD_BODY
    assert page.value("parts.sms.text") == "Hi!"
    column = GOOD_BODY.splitlines()[1].index("customer.attributes") + 1
    assert page.texts("[data-warning]") == [
        f"email.body, line 2, column {column}: no customer has the attribute 'shoe_size'"
    ]
    listing = marketer.get("/templates")
    assert listing.texts(f"[data-template='{template_id}'] td")[:5] == [
        "Welcome",
        "welcome",
        "message",
        "Main brand",
        "email, sms",
    ]

    preview = marketer.post(
        "/templates/preview",
        editor_form(tenant, preview_channel="email", preview_customer=str(shop.anna)),
        htmx=True,
    )
    assert preview.text("[data-rendered='subject']") == "Welcome, Anna"
    assert preview.has("iframe.preview")
    assert preview.text("[data-rendered='text']").startswith("Hello Anna, size")
    broken = marketer.post(
        "/templates/preview",
        editor_form(tenant, preview_channel="email", **{"parts.email.body": BROKEN_BODY}),
        htmx=True,
    )
    [error] = broken.html.select("[data-field='parts.email.body']")
    assert (error["data-line"], error["data-column"]) == ("3", str(column_of_typo()))
    sample = marketer.post(
        "/templates/preview",
        editor_form(
            tenant, preview_channel="sms", **{"parts.sms.text": "Hi {{ customer.first_name }}"}
        ),
        htmx=True,
    )
    assert sample.text("[data-rendered='text']") == "Hi Anna"

    nobody = marketer.post(f"/templates/{template_id}/test-send", {"channel": "email"}, htmx=True)
    assert nobody.text("[data-field='test-send']") == "the workspace has no test customers"
    with runtime.db.scope() as session:
        customers.update_profile(
            session,
            workspace=get_workspace(session, tenant.workspace_id),
            customer_id=shop.boris,
            traits={"is_test": True},
            source="test",
            actor="test",
        )
    sent = marketer.post(f"/templates/{template_id}/test-send", {"channel": "email"}, htmx=True)
    assert [
        row[1:] for row in (r.split() for r in sent.texts("[data-table='test-send'] tr")[1:])
    ] == [["scheduled", "email", "ok"]]


def test_roles_without_templates_are_refused(
    tenant: Tenant, shop: Shop, sign_in: SignIn, runtime: Runtime
) -> None:
    before = templates_count(runtime)
    for role in ("analyst", "support"):
        browser = sign_in(role)
        assert browser.get("/templates").status == 403
        assert browser.post("/templates", editor_form(tenant)).status == 403
        assert browser.post("/templates/1/test-send", {"channel": "sms"}).status == 403
    assert templates_count(runtime) == before
