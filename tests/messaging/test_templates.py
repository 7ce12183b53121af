"""Templates over the API: syntax errors refused with line and column, unknown variables
flagged, test content detected, previews with a sample or a real customer."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.messaging.conftest import Brand, MakeCustomer

from tactful.core.runtime import Runtime
from tactful.customers import service as customers
from tactful.customers.models import Customer
from tactful.messaging.models import MessageTemplate
from tactful.messaging.service.templates import CONTEXT_COLUMNS, customer_context

CART_ONE = {"event": {"items": [{"name": "Rake", "price": 990}]}}


def _count(runtime: Runtime) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(MessageTemplate)) or 0)


def test_a_syntax_error_is_refused_with_line_and_column(
    runtime: Runtime, brand: Brand, client: TestClient
) -> None:
    before = _count(runtime)
    body = {
        "brand_id": brand.tenant.brand_id,
        "key": "broken",
        "name": "Broken",
        "parts": {
            "email": {
                "subject": "Hi",
                "body": "<mj-section><mj-column>\n<mj-text>\n"
                "  Hello {{ customer.first_name </mj-text></mj-column></mj-section>",
            }
        },
    }
    response = client.post("/v1/templates", json=body, headers=brand.tenant.headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "https://tactful.dev/problems/validation_failed"
    [error] = problem["errors"]
    assert (error["field"], error["line"], error["column"]) == ("parts.email.body", 3, 9)
    assert "(line 3, column 9)" in error["reason"]
    assert _count(runtime) == before
    sms = {**body, "parts": {"sms": {"text": "{% if customer.first_name %}Hi"}}}
    [sms_error] = client.post("/v1/templates", json=sms, headers=brand.tenant.headers).json()[
        "errors"
    ]
    assert (sms_error["field"], sms_error["line"], sms_error["column"]) == ("parts.sms.text", 1, 1)
    assert _count(runtime) == before


def test_unknown_variables_are_flagged_and_test_content_detected(
    brand: Brand, client: TestClient
) -> None:
    body = {
        "brand_id": brand.tenant.brand_id,
        "key": "flagged",
        "name": "Flagged",
        "parts": {
            "sms": {
                "text": "Hi {{ customer.first_name }}\n{{ custmer.city }} {{ customer.shoe_size }}"
                " {{ customer.attributes.favourite }} — TEST"
            }
        },
    }
    response = client.post("/v1/templates", json=body, headers=brand.tenant.headers)
    assert response.status_code == 201
    saved = response.json()
    assert saved["is_test_content"] is True
    assert [(w["variable"], w["line"], w["column"]) for w in saved["warnings"]] == [
        ("custmer.city", 2, 4),
        ("customer.shoe_size", 2, 23),
        ("customer.attributes.favourite", 2, 48),
    ]
    clean = {**body, "key": "clean", "parts": {"sms": {"text": "Contest for {{ customer.city }}"}}}
    checked = client.post("/v1/templates/validate", json=clean, headers=brand.tenant.headers)
    assert checked.json() == {"errors": [], "warnings": [], "is_test_content": False}


def test_preview_with_a_sample_and_with_a_real_customer(
    runtime: Runtime, brand: Brand, client: TestClient, make_customer: MakeCustomer
) -> None:
    url = f"/v1/templates/{brand.template_id}/preview"
    sample = client.post(
        url,
        json={
            "channel": "email",
            "context": {"event": {"items": [{"name": "Rake", "price": 990}]}},
        },
        headers=brand.tenant.headers,
    ).json()
    assert sample["subject"] == "Anna, your cart"
    assert "Hello Anna, your cart is waiting." in sample["text"]
    assert "Rake: 990 ₽" in sample["text"]
    assert sample["html"].startswith("<!doctype html>")
    assert sample["warnings"] == []
    cid = make_customer()
    real = client.post(
        url, json={"channel": "sms", "customer_id": cid}, headers=brand.tenant.headers
    ).json()
    assert real["text"] == ", your cart is waiting"  # the customer has no first name
    missing = client.post(
        url, json={"channel": "sms", "customer_id": 999_999}, headers=brand.tenant.headers
    )
    assert missing.status_code == 404


def test_a_customers_plain_row_gives_templates_what_the_customer_does(
    runtime: Runtime, brand: Brand, make_customer: MakeCustomer
) -> None:
    cid = make_customer()
    with runtime.db.scope() as session:
        customer = session.get(Customer, cid)
        assert customer is not None
        customer.first_name, customer.last_name, customer.gender = "Anna", "Ivanova", "f"
        customer.birthday, customer.city = date(1990, 5, 17), "Kazan"
        customer.locale, customer.attributes = "ru", {"tier": "gold", "pets": 2}
    workspace_id = brand.tenant.workspace_id
    with runtime.db.scope(readonly=True) as session:
        customer = session.get(Customer, cid)
        assert customer is not None
        [row] = customers.profiles_by_ids(
            session, workspace_id=workspace_id, customer_ids=[cid], columns=CONTEXT_COLUMNS
        ).values()
        expected = customer_context(customer)

        assert customer_context(row) == expected
        # another workspace's customer is not read
        assert (
            customers.profiles_by_ids(
                session, workspace_id=workspace_id + 1, customer_ids=[cid], columns=CONTEXT_COLUMNS
            )
            == {}
        )
    assert expected["name"] == "Anna Ivanova"
    assert expected["attributes"] == {"tier": "gold", "pets": 2}
