"""Page tests run against the shop of ``tests/reports/shop.py`` (plus a message the policy
refused), built once per database backend and copied for each test, with signed-in
browsers: a FastAPI TestClient carrying a real signed session cookie for a user of a given
role, which sends the CSRF token with every form."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from tactful.app import create_app
from tactful.config import DatabaseSettings, Settings
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime, build_runtime
from tactful.tenancy import service as tenancy
from tactful.tenancy import users
from tactful.testing.postgres import TempPostgres
from tactful.web import session as web_session
from tests.conftest import Tenant
from tests.reports.shop import NOW, Shop, build_shop, post


@dataclass(frozen=True)
class Snapshot:
    """A built shop: its database (SQLite file or PostgreSQL template) and data folder."""

    database: str
    data_dir: Path
    tenant: Tenant
    shop: Shop
    template_id: int  # the SMS template of the refused message


def _build(database_url: str, data_dir: Path) -> tuple[Tenant, Shop, int]:
    runtime = build_runtime(
        Settings(data_dir=data_dir, database=DatabaseSettings(url=database_url))
    )
    try:
        with runtime.db.scope() as session:
            init = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
            assert init.admin_key is not None
            tenant = Tenant(init.workspace.id, init.brand.id, init.admin_key)
        with clock.frozen(NOW), TestClient(create_app(runtime=runtime, run_worker=False)) as c:
            shop = build_shop(c, tenant, Worker(runtime, worker_id="shop"), runtime)
            template = post(
                c,
                tenant,
                "/v1/templates",
                {
                    "brand_id": tenant.brand_id,
                    "key": "spring",
                    "name": "Spring sale",
                    "parts": {"sms": {"text": "Spring sale, {{ customer.first_name }}!"}},
                },
            )
            refused = post(
                c,
                tenant,
                "/v1/messages",
                {
                    "brand_id": tenant.brand_id,
                    "customer_id": shop.vera,
                    "template_id": template["id"],
                    "message_class": "marketing",
                    "steps": [{"channel": "sms"}],
                },
            )
            assert (refused["outcome"], refused["reason"]) == (
                "suppressed",
                "no_advertising_consent",
            )
        return tenant, shop, int(template["id"])
    finally:
        runtime.close()


_SNAPSHOTS: dict[str, Snapshot] = {}


@pytest.fixture
def snapshot(
    db_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Snapshot:
    """The shop of this backend (built by the first test that needs it)."""
    if db_backend not in _SNAPSHOTS:
        folder = tmp_path_factory.mktemp(f"shop-{db_backend}")
        if db_backend == "sqlite":
            template: Path = request.getfixturevalue("sqlite_template")
            database = str(folder / "tactful.sqlite3")
            shutil.copy(template, database)
            url = f"sqlite:///{database}"
        else:
            server: TempPostgres = request.getfixturevalue("pg_server")
            database = "web_shop"
            url = server.create_database(database, template=request.getfixturevalue("pg_template"))
        tenant, shop, template_id = _build(url, folder / "data")
        _SNAPSHOTS[db_backend] = Snapshot(database, folder / "data", tenant, shop, template_id)
    return _SNAPSHOTS[db_backend]


_clones = itertools.count(1)


@pytest.fixture
def db_url(
    db_backend: str, snapshot: Snapshot, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A copy of the shop's database."""
    if db_backend == "sqlite":
        target = tmp_path / "db" / "tactful.sqlite3"
        target.parent.mkdir()
        shutil.copy(snapshot.database, target)
        yield f"sqlite:///{target}"
        return
    server: TempPostgres = request.getfixturevalue("pg_server")
    name = f"web_{next(_clones)}"
    yield server.create_database(name, template=snapshot.database)
    server.drop_database(name)


@pytest.fixture
def settings(db_url: str, snapshot: Snapshot, tmp_path: Path) -> Settings:
    """The shop's data folder (its DuckDB warehouse) copied for this test."""
    shutil.copytree(snapshot.data_dir, tmp_path / "data")
    return Settings(data_dir=tmp_path / "data", database=DatabaseSettings(url=db_url))


@pytest.fixture
def tenant(snapshot: Snapshot, runtime: Runtime) -> Tenant:
    return snapshot.tenant


@pytest.fixture
def shop(snapshot: Snapshot) -> Shop:
    return snapshot.shop


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    """Page tests look at the shop as of ``NOW``."""
    with clock.frozen(NOW):
        yield


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

    def form(self, selector: str = "main form[method=post]") -> dict[str, Any]:
        """The fields a browser would submit from a form as it stands (without the token)."""
        found = self.html.select_one(selector)
        assert found is not None, f"no form {selector}"
        data: dict[str, Any] = {}

        def add(name: str, value: str) -> None:
            if name in data:
                previous = data[name]
                data[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                data[name] = value

        for element in found.select("input[name], textarea[name], select[name]"):
            name = str(element["name"])
            if element.name == "textarea":
                add(name, element.get_text())
            elif element.name == "select":
                chosen = element.select_one("option[selected]") or element.select_one("option")
                if chosen is not None:
                    add(name, str(chosen.get("value", chosen.get_text())))
            elif element.get("type") in ("checkbox", "radio"):
                if element.has_attr("checked"):
                    add(name, str(element.get("value", "on")))
            elif element.get("type") not in ("submit", "button"):
                add(name, str(element.get("value", "")))
        data.pop("csrf", None)
        return data

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
