"""Signed-in browsers for page tests: a FastAPI TestClient carrying a real signed session
cookie for a user of a given role, which sends the CSRF token with every form."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from tactful.core.runtime import Runtime
from tactful.tenancy import users
from tactful.web import session as web_session
from tests.conftest import Tenant

PASSWORD = "correct horse battery"


class Page:
    """A response with its HTML parsed."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.html = BeautifulSoup(response.text, "html.parser")

    def text(self, selector: str) -> str:
        found = self.html.select_one(selector)
        assert found is not None, f"{selector} is not on the page:\n{self.response.text[:3000]}"
        return " ".join(found.get_text(" ").split())

    def texts(self, selector: str) -> list[str]:
        return [" ".join(e.get_text(" ").split()) for e in self.html.select(selector)]

    def has(self, selector: str) -> bool:
        return self.html.select_one(selector) is not None

    def value(self, name: str) -> str:
        """What a form field shows (input value, textarea text or selected option)."""
        found = self.html.select_one(f"[name='{name}']")
        assert found is not None, f"no field {name}"
        if found.name == "textarea":
            return found.get_text()
        if found.name == "select":
            chosen = found.select_one("option[selected]")
            return str(chosen["value"]) if chosen else ""
        return str(found.get("value", ""))

    def error(self, name: str) -> str:
        return self.text(f"em.error[data-field='{name}']")

    def errors(self) -> dict[str, str]:
        return {
            str(e["data-field"]): " ".join(e.get_text(" ").split())
            for e in self.html.select(".error[data-field]")
        }


class Browser:
    """A signed-in person's client."""

    def __init__(self, client: TestClient, csrf: str, user_id: int) -> None:
        self.client, self.csrf, self.user_id = client, csrf, user_id

    def get(self, path: str, **params: Any) -> Page:
        return Page(self.client.get(path, params=params or None, follow_redirects=False))

    def post(self, path: str, data: dict[str, Any] | None = None, *, htmx: bool = False) -> Page:
        headers = {"HX-Request": "true"} if htmx else {}
        return Page(
            self.client.post(
                path,
                data={**(data or {}), "csrf": self.csrf},
                headers=headers,
                follow_redirects=False,
            )
        )


SignIn = Callable[..., Browser]
_emails = itertools.count(1)


@pytest.fixture
def sign_in(client: TestClient, runtime: Runtime, tenant: Tenant) -> SignIn:
    """``sign_in("analyst")``: a new user of that role (for the workspace, or one brand) and
    a browser signed in as them."""

    def make(role: str, brand_id: int | None = None) -> Browser:
        with runtime.db.scope() as session:
            user = users.create_user(
                session,
                workspace_id=tenant.workspace_id,
                email=f"{role}{next(_emails)}@example.com",
                name=role.capitalize(),
                password=PASSWORD,
                roles=[(brand_id, role)],
                actor="test",
            )
            user_id = user.id
        cookie, state = web_session.issue(runtime.signer, user_id)
        browser = TestClient(client.app)
        browser.cookies.set(web_session.COOKIE, cookie)
        return Browser(browser, state.csrf, user_id)

    return make
