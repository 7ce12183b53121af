"""Every route refuses a value no database can store (a NUL character, an integer beyond 64
bits) in its path, query or validated JSON body with a 422 naming the field, after the
caller's key is judged, and writes nothing: such a value used to reach the database and fail
the request with a 500."""

from __future__ import annotations

from fastapi.testclient import TestClient
from httpx import Response

from tactful.core import storable
from tests.conftest import Tenant


def refused(response: Response, *fields: str, reason: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"] == [{"field": f, "reason": reason} for f in fields]


def test_an_integer_beyond_64_bits_in_the_path_or_query_is_refused(
    client: TestClient, tenant: Tenant
) -> None:
    headers = tenant.headers
    refused(
        client.get("/v1/customers/99999999999999999999", headers=headers),
        "path.customer_id",
        reason=storable.RANGE_REASON,
    )
    refused(
        client.get("/v1/customers", params={"after_id": "-9223372036854775809"}, headers=headers),
        "query.after_id",
        reason=storable.RANGE_REASON,
    )
    refused(  # validation reads underscores between digits and a fraction of zeros
        client.get("/v1/customers/1_000_000_000_000_000_000_000.0", headers=headers),
        "path.customer_id",
        reason=storable.RANGE_REASON,
    )
    # the largest one is an ordinary id: no such customer
    assert client.get("/v1/customers/9223372036854775807", headers=headers).status_code == 404
    found = client.get("/v1/customers", params={"after_id": str(-(2**63))}, headers=headers)
    assert (found.status_code, found.json()) == (200, [])


def test_a_nul_character_in_a_query_is_refused_and_long_digits_in_text_are_not(
    client: TestClient, tenant: Tenant
) -> None:
    refused(
        client.get("/v1/customers", params={"q": "An\x00na"}, headers=tenant.headers),
        "query.q",
        reason=storable.NUL_REASON,
    )
    long_digits = client.get(
        "/v1/customers/lookup",
        params={"kind": "card", "value": "123456789012345678901234"},
        headers=tenant.headers,
    )
    assert long_digits.status_code == 404, long_digits.text


def test_the_key_is_judged_before_the_value(client: TestClient, tenant: Tenant) -> None:
    wrong = {"Authorization": "Bearer tk_not_a_key"}
    assert client.get("/v1/customers/99999999999999999999", headers=wrong).status_code == 401
    assert client.get("/v1/customers", params={"q": "\x00"}, headers=wrong).status_code == 401
