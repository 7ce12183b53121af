"""Importing customers: bad rows reported with their row number and reason while the rest
is imported, invalid contacts kept but undeliverable, inferred attribute types, consents with
the import as evidence, merges, column mapping, CSV and Parquet alike, and a second run that
imports nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from tactful.core.errors import ValidationFailed
from tactful.core.jobs.models import Job
from tactful.core.runtime import Runtime
from tactful.customers.contacts import normalise
from tactful.customers.models import (
    AttributeCatalog,
    Consent,
    ConsentChange,
    Customer,
    CustomerMerge,
    Identity,
)
from tactful.events import service
from tactful.events.importing import customers as customer_import
from tactful.events.models import ImportRun
from tactful.tenancy.models import AuditEntry
from tests.conftest import Tenant
from tests.events.conftest import Importer, count_rows, counts, errors, write_text

CUSTOMERS_CSV = """
external_id,phone,email,first_name,birthday,gender,consent_email,consent_personal_data,garden_m2,vip,joined
C1,+7 912 000-00-01,Anna@Mail.ru,Anna,1985-04-02,f,true,true,12,true,2024-01-05
C2,12345,boris@mail.ru,Boris,1979-11-30,m,false,true,7.5,false,2023-12-31
C3,+7 912 000-00-03,,Vera,31.12.1990,f,true,true,3,false,2024-02-01
,,,Nobody,,,,,,,
C5,+7 912 000-00-05,dima@mail.ru,Dima,,m,maybe,true,,,
C6,+7 912 000-00-06,olga@mail.ru,Olga,1990-01-01,f,true,true,5,true,2024-03-03,surplus
,not-a-phone,not-an-email,Ghost,,,,,,,
C8,+7 912 000-00-01,,Anna P.,,,,,,,
"""

STORED = (Customer, Identity, Consent, ConsentChange, AttributeCatalog, CustomerMerge)


def snapshot(runtime: Runtime) -> dict[str, int]:
    return {model.__name__: count_rows(runtime, model) for model in STORED}


def profiles(runtime: Runtime) -> dict[str, dict[str, object]]:
    """Each customer by its smallest external id: profile, identities and consents."""
    with runtime.db.scope(readonly=True) as session:
        found: dict[str, dict[str, object]] = {}
        for customer in session.scalars(select(Customer).where(Customer.merged_into_id.is_(None))):
            idents = session.scalars(
                select(Identity).where(Identity.customer_id == customer.id).order_by(Identity.id)
            ).all()
            externals = sorted(i.value for i in idents if i.kind == "external")
            consents = session.scalars(
                select(Consent).where(Consent.customer_id == customer.id)
            ).all()
            found[externals[0] if externals else f"#{customer.id}"] = {
                "first_name": customer.first_name,
                "birthday": customer.birthday,
                "gender": customer.gender,
                "email": customer.email,
                "phone": customer.phone,
                "attributes": customer.attributes,
                "identities": sorted(
                    (i.kind, i.value, i.valid, i.status, i.status_reason) for i in idents
                ),
                "consents": sorted(
                    (c.brand_scope, c.kind, c.channel, c.status, c.evidence["line"])
                    for c in consents
                ),
            }
        return found


def test_bad_rows_are_reported_and_the_rest_imported_once(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    path = write_text(tmp_path / "customers.csv", CUSTOMERS_CSV)
    run = run_import("customers", path)
    assert counts(run) == ("done", 8, 3, 0, 5)
    assert run.error_file == str(tmp_path / "customers.errors.csv")
    phone = normalise("phone", "not-a-phone", region="RU")
    email = normalise("email", "not-an-email", region="RU")
    assert errors(tmp_path / "customers.errors.csv") == [
        ["line", "field", "reason"],
        ["3", "birthday", "not a date (YYYY-MM-DD)"],
        [
            "4",
            "external_id",
            "no identity: a customer row needs one of external_id, phone, email, loyalty_card, "
            "app_device_id, anonymous_id",
        ],
        ["5", "consent_email", "not true or false"],
        ["6", "", "not a CSV row of the header's columns: more values than columns"],
        [
            "7",
            "phone",
            "no valid identity to match the customer by (phone 'not-a-phone': "
            f"{phone.reason}; email 'not-an-email': {email.reason})",
        ],
    ]
    scope = f"b{tenant.brand_id}"
    assert profiles(runtime) == {
        # row 8 shares row 1's phone: the same person, known by a second customer id
        "C1": {
            "first_name": "Anna P.",
            "birthday": date(1985, 4, 2),
            "gender": "f",
            "email": "anna@mail.ru",
            "phone": "+79120000001",
            "attributes": {"garden_m2": 12.0, "vip": True, "joined": "2024-01-05"},
            "identities": [
                ("email", "anna@mail.ru", True, "ok", None),
                ("external", "C1", True, "ok", None),
                ("external", "C8", True, "ok", None),
                ("phone", "+79120000001", True, "ok", None),
            ],
            "consents": [
                (scope, "advertising", "email", "granted", 1),
                ("ws", "personal_data", "*", "granted", 1),
            ],
        },
        # an invalid phone is kept, undeliverable with the reason; not consenting records nothing
        "C2": {
            "first_name": "Boris",
            "birthday": date(1979, 11, 30),
            "gender": "m",
            "email": "boris@mail.ru",
            "phone": None,
            "attributes": {"garden_m2": 7.5, "vip": False, "joined": "2023-12-31"},
            "identities": [
                ("email", "boris@mail.ru", True, "ok", None),
                ("external", "C2", True, "ok", None),
                ("phone", "12345", False, "invalid", "not a valid phone number in region RU"),
            ],
            "consents": [("ws", "personal_data", "*", "granted", 2)],
        },
    }
    with runtime.db.scope(readonly=True) as session:
        catalog = session.scalars(select(AttributeCatalog).order_by(AttributeCatalog.name))
        assert [(a.name, a.type) for a in catalog] == [
            ("garden_m2", "number"),
            ("joined", "date"),
            ("vip", "boolean"),
        ]
        consent = session.scalars(select(Consent).where(Consent.kind == "advertising")).one()
        assert consent.evidence == {"import_id": run.id, "file": "customers.csv", "line": 1}
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "import.finished"))
        assert [a.details["imported"] for a in audit] == [3]

    before = snapshot(runtime)
    again = run_import("customers", path)
    assert counts(again) == ("done", 8, 0, 3, 5)
    assert snapshot(runtime) == before
    assert len(errors(tmp_path / "customers.errors.csv")) == 6


def test_csv_and_parquet_import_the_same_data(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    table = pa.table(
        {
            "external_id": ["P1", "P2", "P3"],
            "phone": ["89120000011", None, "+7 (912) 000-00-13"],
            "birthday": pa.array([date(1980, 1, 2), None, date(2001, 12, 31)], pa.date32()),
            "consent_sms": [True, False, None],
            "consent_personal_data": [True, True, False],
            "visits": pa.array([3, 0, 12], pa.int64()),
            "score": [0.5, 1.0, 2.25],
            "member": [True, False, True],
            "registered": pa.array(
                [
                    datetime(2024, 1, 19, 3, 22, 12, tzinfo=UTC),
                    datetime(2023, 5, 1, tzinfo=UTC),
                    None,
                ],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    pq.write_table(table, tmp_path / "people.parquet")
    write_text(
        tmp_path / "people.csv",
        """
external_id,phone,birthday,consent_sms,consent_personal_data,visits,score,member,registered
P1,89120000011,1980-01-02,true,true,3,0.5,true,2024-01-19 03:22:12+00
P2,,,false,true,0,1.0,false,2023-05-01T00:00:00Z
P3,+7 (912) 000-00-13,2001-12-31,,false,12,2.25,true,
""",
    )
    from_csv = run_import("customers", tmp_path / "people.csv")
    assert counts(from_csv) == ("done", 3, 3, 0, 0)
    stored = profiles(runtime)
    assert stored["P1"]["attributes"] == {
        "visits": 3,
        "score": 0.5,
        "member": True,
        "registered": "2024-01-19T03:22:12+00:00",
    }
    assert stored["P3"]["consents"] == []  # personal-data consent refused, sms not stated
    from_parquet = run_import("customers", tmp_path / "people.parquet")
    assert counts(from_parquet) == ("done", 3, 0, 3, 0)
    assert profiles(runtime) == stored


def test_a_row_naming_two_customers_merges_them(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    first = write_text(
        tmp_path / "crm.csv",
        "external_id,phone,email\nA,+79120000021,\nB,,b@example.com\n",
    )
    assert counts(run_import("customers", first)) == ("done", 2, 2, 0, 0)
    linking = write_text(tmp_path / "shop.csv", "phone,email\n8 912 000 00 21,B@Example.com\n")
    assert counts(run_import("customers", linking)) == ("done", 1, 1, 0, 0)
    with runtime.db.scope(readonly=True) as session:
        merge = session.scalars(select(CustomerMerge)).one()
        survivor = session.get(Customer, merge.survivor_id)
        assert survivor is not None
        assert (survivor.phone, survivor.email) == ("+79120000021", "b@example.com")
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "customer.merged"))
        assert [a.details["merged_id"] for a in audit] == [merge.merged_id]
        job = session.scalars(select(Job).where(Job.name == "events.apply_merge")).one()
        assert job.payload["survivor_id"] == merge.survivor_id
    assert counts(run_import("customers", linking)) == ("done", 1, 0, 1, 0)


def test_chunks_and_the_last_row_of_a_person_winning(
    runtime: Runtime,
    tenant: Tenant,
    run_import: Importer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(customer_import, "CHUNK", 2)
    monkeypatch.setattr(customer_import, "CONSENT_CHUNK", 3)
    path = write_text(
        tmp_path / "crm.csv",
        """
external_id,phone,city,consent_email,consent_sms
K1,+79120000031,Perm,true,true
K2,+79120000032,Omsk,true,false
K3,+79120000033,Kazan,false,true
K4,+79120000034,Tver,true,true
K5,+79120000031,Perm,false,true
K6,+79120000036,Sochi,true,
""",
    )
    assert counts(run_import("customers", path)) == ("done", 6, 6, 0, 0)
    stored = profiles(runtime)
    assert sorted(stored) == ["K1", "K2", "K3", "K4", "K6"]
    scope = f"b{tenant.brand_id}"
    # K5 is K1 again (the same phone): its later row decides that e-mail was refused
    assert stored["K1"]["consents"] == [(scope, "advertising", "sms", "granted", 5)]
    assert stored["K2"]["consents"] == [(scope, "advertising", "email", "granted", 2)]
    assert stored["K6"]["consents"] == [(scope, "advertising", "email", "granted", 6)]
    before = snapshot(runtime)
    assert counts(run_import("customers", path)) == ("done", 6, 0, 6, 0)
    assert snapshot(runtime) == before


def test_column_mapping_by_flags_and_by_file(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    path = write_text(
        tmp_path / "export.csv",
        "Client ID,Mobile Phone,E-mail,Name,Notes,Internal\n"
        "X-1,+79120000041,x1@example.com,Ira,likes roses,secret\n",
    )
    with pytest.raises(ValidationFailed) as refused:
        run_import("customers", path)
    assert refused.value.field == "map"
    assert "'Client ID'" in refused.value.message
    with pytest.raises(ValidationFailed, match="the file does not have"):
        run_import("customers", path, mapping={"Client Id": "external_id"})
    with pytest.raises(ValidationFailed, match="both map to 'external_id'"):
        run_import(
            "customers",
            path,
            mapping={"Client ID": "external_id", "Mobile Phone": "external_id", "Internal": ""},
        )
    with runtime.db.scope(readonly=True) as session:
        assert session.scalars(select(ImportRun)).all() == []  # refused before a run began

    flags = service.parse_mapping(
        [
            "Client ID=external_id",
            "Mobile Phone=phone",
            "Name=first_name",
            "Notes=notes",
            "Internal=",
        ]
    )
    assert counts(run_import("customers", path, mapping=flags)) == ("done", 1, 1, 0, 0)
    assert profiles(runtime)["X-1"]["attributes"] == {"notes": "likes roses"}
    for name, text in (
        (
            "mapping.toml",
            '[columns]\n"Client ID" = "external_id"\n"Mobile Phone" = "phone"\n'
            'Name = "first_name"\nNotes = "notes"\nInternal = ""\n',
        ),
        (
            "mapping.yaml",
            "Client ID: external_id\nMobile Phone: phone\nName: first_name\nNotes: notes\n"
            "Internal:\n",
        ),
        (
            "mapping.json",
            '{"Client ID": "external_id", "Mobile Phone": "phone", "Name": "first_name", '
            '"Notes": "notes", "Internal": ""}',
        ),
    ):
        assert service.load_mapping_file(write_text(tmp_path / name, text)) == flags
    with pytest.raises(ValidationFailed, match="column=field"):
        service.parse_mapping(["Client ID"])


def test_a_nul_character_rejects_its_row_and_long_numbers_stay_text(
    runtime: Runtime, tenant: Tenant, run_import: Importer, tmp_path: Path
) -> None:
    """A NUL character (no database of ours can store one) failed the whole import on
    PostgreSQL; a column of numbers too long for 64 bits was typed as an integer and failed it
    on both databases. The row is rejected with its field now, and such a column is text."""
    path = write_text(
        tmp_path / "customers.csv",
        "external_id,first_name,loyalty_no\n"
        "C1,An\x00na,12\n"
        "C2,Boris,99999999999999999999\n"
        "C3,Vera,7\n",
    )
    run = run_import("customers", path)
    assert counts(run) == ("done", 3, 2, 0, 1)
    assert errors(tmp_path / "customers.errors.csv") == [
        ["line", "field", "reason"],
        ["1", "first_name", "must not contain the NUL character (\\u0000)"],
    ]
    found = profiles(runtime)
    assert sorted(found) == ["C2", "C3"]
    assert (found["C2"]["first_name"], found["C2"]["attributes"]) == (
        "Boris",
        {"loyalty_no": "99999999999999999999"},
    )
    assert found["C3"]["attributes"] == {"loyalty_no": "7"}
