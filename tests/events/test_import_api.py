"""File imports over HTTP: upload, a worker runs the import, status and counts, the error
file; refused uploads (unknown kind, bad file or mapping, missing scope) store nothing."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.customers.models import Customer
from tactful.events import service
from tactful.events.models import ImportRun
from tests.conftest import Tenant
from tests.events.conftest import count_rows

EXPORT = (
    "Client,Phone,Notes\n"
    "A-1,+79120000051,first\n"
    "A-2,+79120000052,second\n"
    ",,nobody\n"
    "A-1,+79120000051,first\n"
)


def test_upload_runs_in_the_worker_and_reports_rejects(
    client: TestClient, tenant: Tenant, worker: Worker, runtime: Runtime
) -> None:
    response = client.post(
        "/v1/imports/customers",
        headers=tenant.headers,
        files={"file": ("crm export.csv", EXPORT.encode(), "text/csv")},
        data={
            "map": ["Client=external_id"],
            "mapping": json.dumps({"Notes": "note"}),
            "source": "crm",
        },
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert (queued["status"], queued["kind"], queued["file_name"]) == (
        "queued",
        "customers",
        "crm_export.csv",
    )
    assert queued["options"]["mapping"] == {"Notes": "note", "Client": "external_id"}
    worker.drain()
    done = client.get(f"/v1/imports/{queued['id']}", headers=tenant.headers).json()
    assert {k: done[k] for k in ("status", "rows_total", "rows_imported", "rows_duplicate")} == {
        "status": "done",
        "rows_total": 4,
        "rows_imported": 2,
        "rows_duplicate": 1,
    }
    assert (done["rows_rejected"], done["errors_url"]) == (1, f"/v1/imports/{queued['id']}/errors")
    rejected = client.get(done["errors_url"], headers=tenant.headers)
    assert rejected.status_code == 200
    assert rejected.headers["content-type"].startswith("text/csv")
    assert rejected.text.splitlines() == [
        "line,field,reason",
        '3,external_id,"no identity: a customer row needs one of external_id, phone, email, '
        'loyalty_card, app_device_id, anonymous_id"',
    ]
    listed = client.get("/v1/imports", headers=tenant.headers).json()
    assert [item["id"] for item in listed] == [queued["id"]]
    assert count_rows(runtime, Customer) == 2
    with runtime.db.scope(readonly=True) as session:
        customer = session.query(Customer).order_by(Customer.id).first()
        assert customer is not None
        assert (customer.attributes, customer.attribute_sources["note"]) == (
            {"note": "first"},
            "crm",
        )

    again = client.post(
        "/v1/imports/customers",
        headers=tenant.headers,
        files={"file": ("crm export.csv", EXPORT.encode(), "text/csv")},
        data={"map": ["Client=external_id", "Notes=note"], "source": "crm"},
    ).json()
    worker.drain()
    second = client.get(f"/v1/imports/{again['id']}", headers=tenant.headers).json()
    assert (second["rows_imported"], second["rows_duplicate"], second["rows_rejected"]) == (0, 3, 1)
    assert count_rows(runtime, Customer) == 2


def test_refused_uploads_store_nothing(
    client: TestClient, tenant: Tenant, runtime: Runtime
) -> None:
    upload = {"file": ("people.csv", EXPORT.encode(), "text/csv")}
    unknown = client.post("/v1/imports/teleports", headers=tenant.headers, files=upload)
    assert unknown.status_code == 404
    assert unknown.json()["errors"] == [
        {
            "field": "kind",
            "reason": "unknown import kind 'teleports'; one of "
            "['customers', 'purchases', 'events', 'stores', 'products']",
        }
    ]
    wrong_type = client.post(
        "/v1/imports/customers",
        headers=tenant.headers,
        files={"file": ("people.xlsx", b"PK...", "application/octet-stream")},
    )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["errors"][0]["field"] == "file"
    unmapped = client.post(
        "/v1/imports/customers",
        headers=tenant.headers,
        files={"file": ("ids.csv", b"Client ID,Notes\nA-1,x\n", "text/csv")},
    )
    assert unmapped.status_code == 422
    assert unmapped.json()["errors"][0]["field"] == "map"
    bad_mapping = client.post(
        "/v1/imports/customers",
        headers=tenant.headers,
        files=upload,
        data={"mapping": "[1, 2]"},
    )
    assert (bad_mapping.status_code, bad_mapping.json()["errors"][0]["field"]) == (422, "mapping")
    ingest = client.post(
        "/v1/api-keys", headers=tenant.headers, json={"name": "site", "scopes": ["ingest"]}
    ).json()["key"]
    forbidden = client.post(
        "/v1/imports/customers",
        headers={"Authorization": f"Bearer {ingest}"},
        files=upload,
        data={"map": ["Client=external_id"]},
    )
    assert forbidden.status_code == 403
    assert client.get("/v1/imports/999", headers=tenant.headers).status_code == 404
    assert count_rows(runtime, ImportRun) == 0
    uploads = service.uploads_dir(runtime)
    assert not uploads.exists() or list(uploads.iterdir()) == []
