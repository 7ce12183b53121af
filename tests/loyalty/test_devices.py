"""App device secrets at rest: sealed (AES-GCM under a key derived from the installation's
secret, bound to the device), rows from before sealing still readable, a sealed secret moved
to another device or read with another installation secret refused without writing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tactful.core import clock
from tactful.core.errors import ConfigError
from tactful.core.runtime import Runtime
from tactful.core.security import Signer
from tactful.loyalty.models import Device
from tactful.loyalty.service import codes
from tests.loyalty.conftest import Shop, create_customer, ledger_state
from tests.loyalty.test_pos import enrol_device


def identify(client: TestClient, shop: Shop, code: str) -> Any:
    return client.post(
        "/v1/loyalty/pos/identify",
        headers=shop.pos,
        json={"customer": {"kind": "code", "value": code}, "store_id": "S1", "terminal_id": "T1"},
    )


def stored_secret(runtime: Runtime, ref: str) -> str:
    with runtime.db.scope(readonly=True) as session:
        return str(session.scalar(select(Device.secret).where(Device.ref == ref)))


def set_stored_secret(runtime: Runtime, ref: str, value: str) -> None:
    with runtime.db.scope() as session:
        session.execute(update(Device).where(Device.ref == ref).values(secret=value))


def test_a_device_secret_is_stored_sealed_and_still_makes_valid_codes(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    stored = stored_secret(runtime, device["ref"])
    assert stored.startswith("v1:")
    assert device["secret"] not in stored
    assert codes.open_secret(runtime.signer, device["ref"], stored) == device["secret"]
    r = identify(client, shop, codes.make_code(device["secret"], device["ref"], "A", clock.now()))
    assert r.status_code == 200, r.text
    assert r.json()["customer_id"] == anna


def test_a_plain_secret_from_before_sealing_stays_readable(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    device = enrol_device(client, shop, anna)
    set_stored_secret(runtime, device["ref"], device["secret"])
    r = identify(client, shop, codes.make_code(device["secret"], device["ref"], "R", clock.now()))
    assert r.status_code == 200, r.text
    assert (r.json()["customer_id"], r.json()["redeem_code_valid"]) == (anna, True)


def test_a_sealed_secret_opens_only_for_its_device_and_installation(
    client: TestClient, runtime: Runtime, shop: Shop, anna: int
) -> None:
    with runtime.db.scope() as session:
        boris = create_customer(session, card="2000222", first_name="Boris")
    annas = enrol_device(client, shop, anna)
    boriss = enrol_device(client, shop, boris)
    # Anna's sealed secret copied onto Boris's device: it no longer opens there
    set_stored_secret(runtime, boriss["ref"], stored_secret(runtime, annas["ref"]))
    before = ledger_state(runtime)
    r = identify(client, shop, codes.make_code(annas["secret"], boriss["ref"], "A", clock.now()))
    assert r.status_code == 500
    assert [e["field"] for e in r.json()["errors"]] == ["TACTFUL_SECURITY_SECRET_KEY"]
    assert ledger_state(runtime) == before
    # another installation's key cannot open Anna's secret either
    other = Signer("another installation's secret")
    sealed = stored_secret(runtime, annas["ref"])
    assert codes.open_secret(runtime.signer, annas["ref"], sealed) == annas["secret"]
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        codes.open_secret(other, annas["ref"], sealed)
