"""The official Segment Python library, unchanged, pointed at a running Tactful server: its
identify and track calls reach the customer's profile and timeline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from segment.analytics.client import Client

from tactful.app import create_app
from tactful.core.runtime import Runtime
from tests.conftest import IngestKey, Tenant


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(runtime: Runtime, tenant: Tenant) -> Iterator[str]:
    """A real HTTP server with the embedded worker, on a free port."""
    port = free_port()
    app = create_app(runtime=runtime, run_worker=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield url
    running.should_exit = True
    thread.join(timeout=60)
    # The app's shutdown asks its worker to stop without waiting for it; wait here, so the
    # runtime is not closed under a job still running.
    for other in threading.enumerate():
        if other.name == "tactful-worker":
            other.join(timeout=60)


def eventually(check: Callable[[], Any], *, timeout: float = 60) -> Any:
    """Poll until ``check`` returns something truthy (the worker runs on its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_segment_library_identify_and_track_reach_the_profile(
    server: str, tenant: Tenant, ingest_key: IngestKey
) -> None:
    write_key = ingest_key.plain
    failures: list[Any] = []
    client = Client(
        write_key=write_key,
        host=server,
        on_error=lambda error, items: failures.append(error),
        max_retries=1,
        upload_interval=0.1,
    )
    client.identify(
        "u-42",
        {"email": "Olga@Example.com", "first_name": "Olga", "phone": "+7 912 000-42-42"},
        anonymous_id="browser-42",
    )
    client.track("u-42", "Order Completed", {"order_id": "o-1", "total": 4217}, message_id="m-1")
    client.page(anonymous_id="browser-42", name="Home", properties={"path": "/"})
    client.flush()
    client.join()
    assert failures == []

    # the embedded worker shares SQLite with the requests, so a request may wait for its lock
    http = httpx.Client(base_url=server, headers=tenant.headers, timeout=90)

    def profile() -> dict[str, Any] | None:
        response = http.get(
            "/v1/customers/lookup",
            params={"kind": "external", "value": "u-42", "namespace": "user_id"},
        )
        return response.json() if response.status_code == 200 else None

    found = eventually(profile)
    assert found is not None, "the profile never appeared"
    assert (found["first_name"], found["email"], found["phone"]) == (
        "Olga",
        "olga@example.com",
        "+79120004242",
    )
    assert {("anonymous", "browser-42"), ("external", "u-42")} <= {
        (i["kind"], i["value"]) for i in found["identities"]
    }

    def timeline() -> list[str]:
        response = http.get(f"/v1/customers/{found['id']}/timeline")
        titles = [item["title"] for item in response.json()] if response.is_success else []
        return titles if len(titles) == 3 else []

    titles = eventually(timeline)
    assert sorted(titles) == ["identify: identify", "page: Home", "track: Order Completed"]

    def loaded() -> bool:
        response = http.get("/v1/events/loader")
        return response.is_success and response.json()["waiting_rows"] == 0

    assert eventually(loaded) is True
