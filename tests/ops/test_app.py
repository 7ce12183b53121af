"""The HTTP app: health, metrics, OpenAPI, problem details."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tenant


def test_healthz_reports_database(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"


def test_metrics_are_prometheus_text(client: TestClient, tenant: Tenant) -> None:
    client.get("/v1/workspace", headers=tenant.headers)
    text = client.get("/metrics").text
    assert 'tactful_jobs{status="queued"} 0.0' in text
    assert 'tactful_http_requests_total{method="GET",route="/v1/workspace",status="2xx"}' in text


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Tactful"
    assert "/v1/api-keys" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_unknown_route_is_a_problem(client: TestClient) -> None:
    response = client.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert response.headers["x-request-id"]


def test_malformed_json_is_a_422_problem(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        "/v1/brands",
        content=b"{not json",
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["reason"].startswith("JSON decode error")
