"""Signing in: wrong passwords, keeping what was typed, roles and the navigation."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Server, Shots, sign_in

pytestmark = pytest.mark.e2e


def test_sign_in_out(page: object, server: Server, shots: Shots) -> None:
    page.goto(f"{server.url}/")  # type: ignore[attr-defined]
    assert page.url == f"{server.url}/login?next=/"  # type: ignore[attr-defined]
    shots("sign-in")
    sign_in(page, server, password="not the password")
    error = page.locator(".error.banner")  # type: ignore[attr-defined]
    assert error.inner_text() == "the e-mail or password is wrong"
    assert page.input_value("input[name=email]") == server.owner_email  # type: ignore[attr-defined]
    shots("wrong-password")
    sign_in(page, server)
    page.wait_for_url(f"{server.url}/")  # type: ignore[attr-defined]
    assert page.locator("[data-metric=customers]").inner_text() == "0"  # type: ignore[attr-defined]
    nav = page.locator("header.top nav a").all_inner_texts()  # type: ignore[attr-defined]
    assert nav[:2] == ["Dashboard", "Customers"]
    assert "Settings" in nav
    shots("dashboard")
    page.click("text=Sign out")  # type: ignore[attr-defined]
    page.wait_for_url(f"{server.url}/login")  # type: ignore[attr-defined]
    page.goto(f"{server.url}/")  # type: ignore[attr-defined]
    assert "/login" in page.url  # type: ignore[attr-defined]
