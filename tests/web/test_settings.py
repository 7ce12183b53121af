"""Settings pages: brands and prices, providers (secrets masked) and senders, people and
their roles, API keys shown once and revoked; a wrong value is shown next to its field with
the typed text kept and nothing stored; roles without the permission neither see the action
nor get it past the server, and a brand's admin cannot reach beyond the brand."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tactful.core.errors import Unauthorized
from tactful.core.runtime import Runtime
from tactful.messaging.models import MessageProvider, SenderIdentity
from tactful.tenancy import service as tenancy
from tactful.tenancy import users
from tactful.tenancy.models import ApiKey, Brand, ChannelPrice, User
from tests.conftest import Tenant
from tests.web.conftest import SignIn

SMTP = '{"host": "localhost", "port": 2525, "password": "hunter2-secret"}'


def count(runtime: Runtime, model: type) -> int:
    with runtime.db.scope(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_brands_and_prices(tenant: Tenant, sign_in: SignIn, runtime: Runtime) -> None:
    admin = sign_in("admin")
    page = admin.get("/settings")
    assert page.status == 200
    assert page.texts("nav.tabs a") == [
        "Brands and prices",
        "Providers and senders",
        "People and roles",
        "API keys",
    ]
    assert page.texts("[data-brand='main'] td") == ["1", "main", "Main brand", "2026-03-04 15:00"]

    bad = admin.post("/settings/brands", {"slug": "Garden Home", "name": "Garden & Home"})
    assert bad.status == 422
    assert bad.errors() == {
        "slug": "use lowercase letters, digits and dashes (up to 63 characters)"
    }
    assert (bad.value("slug"), bad.value("name")) == ("Garden Home", "Garden & Home")
    assert count(runtime, Brand) == 1
    taken = admin.post("/settings/brands", {"slug": "main", "name": "Again"})
    assert (taken.status, taken.error("slug")) == (
        409,
        "a brand 'main' already exists in this workspace",
    )
    assert taken.value("name") == "Again"
    assert count(runtime, Brand) == 1
    created = admin.post("/settings/brands", {"slug": "garden", "name": "Garden & Home"})
    assert (created.status, created.response.headers["location"]) == (303, "/settings?saved=1")
    page = admin.get("/settings", saved="1")
    assert page.text("main .banner, main .notice") == "Saved."
    assert page.texts("[data-brand='garden'] td")[1:3] == ["garden", "Garden & Home"]
    garden = int(page.texts("[data-brand='garden'] td")[0])

    typed = {"brand_id": str(garden), "channel": "sms", "provider": "smsc", "price": "cheap"}
    wrong = admin.post("/settings/prices", typed)
    assert wrong.status == 422
    assert wrong.errors() == {
        "price": "Input should be a valid integer, unable to parse string as an integer"
    }
    form = wrong.form("form[data-form='price']")
    assert form == {"brand_id": str(garden), "channel": "sms", "provider": "smsc", "price": "cheap"}
    negative = admin.post("/settings/prices", {**typed, "price": "-5"})
    assert negative.error("price") == "Input should be greater than or equal to 0"
    assert negative.value("price") == "-5"
    assert count(runtime, ChannelPrice) == 0

    assert admin.post("/settings/prices", {**typed, "price": "420"}).status == 303
    assert admin.post("/settings/prices", {**typed, "channel": "email", "price": "7"}).status == 303
    page = admin.get("/settings")
    assert page.texts("[data-table='prices'] tr td") == [
        *["Garden & Home", "email", "smsc", "0.07 RUB", "2026-03-04 15:00"],
        *["Garden & Home", "sms", "smsc", "4.20 RUB", "2026-03-04 15:00"],
    ]
    with runtime.db.scope(readonly=True) as session:
        assert tenancy.channel_prices(session, brand_id=garden) == {
            **tenancy.DEFAULT_PRICES,
            "sms": 420,
            "email": 7,
        }


def test_providers_with_masked_secrets_and_senders(
    tenant: Tenant, sign_in: SignIn, runtime: Runtime
) -> None:
    admin = sign_in("admin")
    page = admin.get("/settings/channels")
    assert page.status == 200
    assert page.texts("[data-provider]") == []
    assert not page.has("form[data-form='sender']")  # no provider to send through yet
    base = {"brand_id": str(tenant.brand_id), "kind": "smtp", "rate_per_second": ""}

    not_json = admin.post(
        "/settings/providers", {**base, "name": "main-smtp", "config": '{"host": '}
    )
    assert not_json.status == 422
    assert list(not_json.errors()) == ["config"]
    assert not_json.error("config").startswith("not valid JSON: ")
    assert not_json.value("config") == '{"host": '
    assert not_json.value("name") == "main-smtp"
    missing = admin.post(
        "/settings/providers", {**base, "name": "main-smtp", "config": '{"host": "localhost"}'}
    )
    assert (missing.status, missing.errors()) == (
        422,
        {"config.port": "a smtp provider needs port"},
    )
    bad_name = admin.post("/settings/providers", {**base, "name": "Main SMTP", "config": SMTP})
    assert bad_name.errors() == {"name": "String should match pattern '^[a-z0-9_\\-]{1,50}$'"}
    assert (bad_name.value("name"), bad_name.value("config")) == ("Main SMTP", SMTP)
    zero = admin.post(
        "/settings/providers", {**base, "name": "main-smtp", "config": SMTP, "concurrency": "0"}
    )
    assert zero.errors() == {"concurrency": "Input should be greater than or equal to 1"}
    assert zero.value("concurrency") == "0"
    assert count(runtime, MessageProvider) == 0

    saved = admin.post(
        "/settings/providers",
        {**base, "name": "main-smtp", "config": SMTP, "rate_per_second": "50", "concurrency": "8"},
    )
    assert (saved.status, saved.response.headers["location"]) == (303, "/settings/channels?saved=1")
    page = admin.get("/settings/channels")
    with runtime.db.scope(readonly=True) as session:
        (provider,) = session.scalars(select(MessageProvider)).all()
        assert (provider.channel, provider.rate_per_second, provider.concurrency) == (
            "email",
            50,
            8,
        )
        assert provider.config["password"] == "hunter2-secret"
    assert page.texts("[data-provider='main-smtp'] td") == [
        "main-smtp",
        "Main brand",
        "smtp",
        "email",
        '{"host": "localhost", "password": "***", "port": 2525}',
        f"http://127.0.0.1:8000/v1/messaging/webhooks/{provider.id}",
    ]
    assert "hunter2-secret" not in page.response.text

    sender = {
        "brand_id": str(tenant.brand_id),
        "provider_id": str(provider.id),
        "channel": "sms",
        "address": "Shop",
        "name": "",
        "reply_to": "",
    }
    wrong = admin.post("/settings/senders", sender)
    assert (wrong.status, wrong.errors()) == (
        422,
        {"provider_id": f"provider {provider.id} sends email for brand {tenant.brand_id}"},
    )
    assert wrong.form("form[data-form='sender']") == {**sender, "name": "", "reply_to": ""}
    empty = admin.post("/settings/senders", {**sender, "channel": "email", "address": ""})
    assert empty.errors() == {"address": "String should have at least 1 character"}
    assert count(runtime, SenderIdentity) == 0
    good = {**sender, "channel": "email", "address": "news@shop.example", "name": "The Shop"}
    assert admin.post("/settings/senders", {**good, "is_default": "on"}).status == 303
    page = admin.get("/settings/channels")
    assert page.texts("[data-table='senders'] tr td") == [
        *["Main brand", "email", "news@shop.example", "The Shop", "main-smtp", "yes"],
    ]


def test_people_and_roles(tenant: Tenant, sign_in: SignIn, runtime: Runtime) -> None:
    admin = sign_in("admin")
    before = count(runtime, User)
    person = {"email": "kate@shop.example", "name": "Kate", "role": "marketer", "brand_id": ""}

    short = admin.post("/settings/users", {**person, "password": "short"})
    assert (short.status, short.errors()) == (422, {"password": "use at least 10 characters"})
    form = short.form("form[data-form='user']")
    assert form == {**person, "password": ""}  # a password is never sent back
    bad_email = admin.post(
        "/settings/users", {**person, "email": "kate at shop", "password": "long enough pass"}
    )
    assert bad_email.status == 422
    assert list(bad_email.errors()) == ["email"]
    assert bad_email.value("email") == "kate at shop"
    owner = admin.post(
        "/settings/users", {**person, "role": "owner", "password": "long enough pass"}
    )
    assert owner.errors() == {"role": "only an owner may make someone an owner"}
    assert owner.value("role") == "owner"
    assert count(runtime, User) == before

    added = admin.post("/settings/users", {**person, "password": "long enough pass"})
    assert (added.status, added.response.headers["location"]) == (303, "/settings/users?saved=1")
    page = admin.get("/settings/users")
    row = page.texts("[data-user='kate@shop.example'] td")
    assert row[:4] == ["Kate", "kate@shop.example", "marketer", "—"]
    with runtime.db.scope(readonly=True) as session:
        kate = session.scalars(select(User).where(User.email == "kate@shop.example")).one()
        kate_id = kate.id

    changed = admin.post(
        f"/settings/users/{kate_id}/roles", {"role": "analyst", "brand_id": str(tenant.brand_id)}
    )
    assert changed.status == 303
    page = admin.get("/settings/users")
    assert page.texts("[data-user='kate@shop.example'] td")[2] == "analyst of Main brand"
    raise_ = admin.post(f"/settings/users/{kate_id}/roles", {"role": "owner", "brand_id": ""})
    assert (raise_.status, raise_.errors()) == (
        422,
        {"role": "only an owner may make someone an owner"},
    )
    assert raise_.form(f"form[data-form='roles-{kate_id}']") == {"role": "owner", "brand_id": ""}
    with runtime.db.scope(readonly=True) as session:
        principal = users.principal_by_id(session, kate_id)
        assert principal is not None
        assert principal.brand_roles == ((tenant.brand_id, "analyst"),)

    # the owner: no buttons for an admin, and the server refuses all the same
    with runtime.db.scope(readonly=True) as session:
        owner_id = session.scalars(select(User.id).where(User.email == "owner@example.com")).one()
    assert not page.has(f"form[data-form='roles-{owner_id}']")
    assert page.has(f"form[data-form='roles-{kate_id}']")
    refused = admin.post(f"/settings/users/{owner_id}/roles", {"role": "pos", "brand_id": ""})
    assert refused.status == 403
    assert admin.post(f"/settings/users/{owner_id}/disable").status == 403
    assert admin.post(f"/settings/users/{admin.user_id}/roles", {"role": "owner"}).status == 403
    with runtime.db.scope(readonly=True) as session:
        owner_principal = users.principal_by_id(session, owner_id)
        assert owner_principal is not None
        assert owner_principal.brand_roles == ((None, "owner"),)

    assert admin.post(f"/settings/users/{kate_id}/disable").status == 303
    page = admin.get("/settings/users")
    assert page.text("[data-user='kate@shop.example'] .pill") == "disabled"
    assert not page.has(f"form[data-form='roles-{kate_id}']")
    with runtime.db.scope(readonly=True) as session:
        assert users.principal_by_id(session, kate_id) is None


def test_api_keys_are_shown_once_and_revoked(
    tenant: Tenant, sign_in: SignIn, runtime: Runtime
) -> None:
    admin = sign_in("admin")
    before = count(runtime, ApiKey)
    no_scope = admin.post("/settings/api-keys", {"name": "web shop", "brand_id": ""})
    assert (no_scope.status, no_scope.errors()) == (
        422,
        {"scopes": "List should have at least 1 item after validation, not 0"},
    )
    assert no_scope.value("name") == "web shop"
    no_name = admin.post("/settings/api-keys", {"name": "", "scopes": ["ingest", "pos"]})
    assert no_name.errors() == {"name": "String should have at least 1 character"}
    assert no_name.form("form[data-form='key']")["scopes"] == ["ingest", "pos"]
    assert count(runtime, ApiKey) == before

    issued = admin.post(
        "/settings/api-keys",
        {"name": "web shop", "scopes": "ingest", "brand_id": str(tenant.brand_id)},
    )
    assert issued.status == 200
    plain = issued.text("[data-secret] .secret")
    assert issued.text("main .notice, main p.banner:not([data-secret])") == (
        "The key is issued: copy it now, it is not shown again."
    )
    assert issued.texts("[data-key='web shop'] td")[:4] == [
        "web shop",
        plain.split("_")[1],
        "ingest",
        "Main brand",
    ]
    with runtime.db.scope() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == "web shop")).one()
        key_id = key.id
        assert plain not in (key.key_hash, key.prefix)
        principal = tenancy.authenticate_api_key(session, plain)
        assert (principal.scopes, principal.brand_id) == (frozenset({"ingest"}), tenant.brand_id)
    again = admin.get("/settings/api-keys")
    assert not again.has("[data-secret]")
    assert plain not in again.response.text

    assert admin.post(f"/settings/api-keys/{key_id}/revoke").status == 303
    page = admin.get("/settings/api-keys")
    assert page.text("[data-key='web shop'] .pill") == "revoked"
    assert not page.has(f"form[action='/settings/api-keys/{key_id}/revoke']")
    with runtime.db.scope() as session, pytest.raises(Unauthorized):
        tenancy.authenticate_api_key(session, plain)


def test_roles_without_settings_see_nothing_and_are_refused(
    tenant: Tenant, sign_in: SignIn, runtime: Runtime
) -> None:
    brands, keys, people = count(runtime, Brand), count(runtime, ApiKey), count(runtime, User)
    for role in ("marketer", "analyst", "support"):
        browser = sign_in(role)
        home = browser.get("/")
        assert "Settings" not in home.texts("header.top nav a")
        for path in ("/settings", "/settings/channels", "/settings/users", "/settings/api-keys"):
            assert browser.get(path).status == 403
        assert browser.post("/settings/brands", {"slug": "x", "name": "X"}).status == 403
        assert (
            browser.post(
                "/settings/api-keys", {"name": "mine", "scopes": "admin", "brand_id": ""}
            ).status
            == 403
        )
        assert (
            browser.post(
                "/settings/users",
                {"email": "x@example.com", "name": "X", "password": "long enough pass"}
                | {"role": "admin", "brand_id": ""},
            ).status
            == 403
        )
        assert browser.post("/settings/api-keys/1/revoke").status == 403
    assert (count(runtime, Brand), count(runtime, ApiKey), count(runtime, User)) == (
        brands,
        keys,
        people + 3,
    )


def test_a_brand_admin_cannot_reach_beyond_the_brand(
    tenant: Tenant, sign_in: SignIn, runtime: Runtime
) -> None:
    brand_admin = sign_in("admin", brand_id=tenant.brand_id)
    page = brand_admin.get("/settings")
    assert page.status == 200
    assert page.texts("nav.tabs a") == ["Brands and prices", "Providers and senders", "API keys"]
    assert not page.has("form[data-form='brand']")
    assert page.has("form[data-form='price']")
    assert brand_admin.get("/settings/users").status == 403
    brands, users_before = count(runtime, Brand), count(runtime, User)
    assert brand_admin.post("/settings/brands", {"slug": "x", "name": "X"}).status == 403
    everyone = brand_admin.post(
        "/settings/users",
        {"email": "x@example.com", "name": "X", "password": "long enough pass"}
        | {"role": "admin", "brand_id": ""},
    )
    assert everyone.status == 403
    keys = count(runtime, ApiKey)
    wide = brand_admin.post("/settings/api-keys", {"name": "wide", "scopes": "admin"})
    assert wide.status == 403
    assert wide.errors() == {"_": "your role does not allow settings: edit for the whole workspace"}
    assert wide.value("name") == "wide"
    # the initial admin key is for every brand
    assert brand_admin.post("/settings/api-keys/1/revoke").status == 403
    assert (count(runtime, Brand), count(runtime, User), count(runtime, ApiKey)) == (
        brands,
        users_before,
        keys,
    )
    mine = brand_admin.post(
        "/settings/api-keys",
        {"name": "brand shop", "scopes": "ingest", "brand_id": str(tenant.brand_id)},
    )
    assert mine.status == 200
    assert mine.has("[data-secret] .secret")
    assert count(runtime, ApiKey) == keys + 1
