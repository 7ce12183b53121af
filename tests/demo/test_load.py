"""``tactful demo --customers 2000 --no-serve`` end to end: the database and the warehouse
hold exactly what the generated files hold, and a second run adds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import func, select
from typer.testing import CliRunner

from tactful.cli import app
from tactful.config import DatabaseSettings, Settings
from tactful.core.runtime import runtime_scope
from tactful.customers.models import Consent, Customer, Identity
from tactful.events.models import ImportRun, Product, Store


def stored(settings: Settings) -> dict[str, Any]:
    with runtime_scope(settings) as runtime:
        with runtime.db.scope(readonly=True) as session:

            def count(*where: Any, model: Any = Customer) -> int:
                stmt = select(func.count()).select_from(model)
                return int(session.scalar(stmt.where(*where)) or 0)

            found = {
                "customer ids": count(Identity.kind == "external", model=Identity),
                "profiles": count(Customer.merged_into_id.is_(None), Customer.anonymous.is_(False)),
                "consents": count(model=Consent),
                "stores": count(model=Store),
                "products": count(model=Product),
                "imports": [
                    (r.kind, r.rows_total, r.rows_imported, r.rows_rejected)
                    for r in session.scalars(select(ImportRun).order_by(ImportRun.id))
                ],
            }
        warehouse = runtime.warehouse
        for table in ("receipts", "receipt_lines", "events"):
            found[table] = int(warehouse.con.execute(warehouse.table(table).count()))
        return found


def test_demo_generates_and_loads_everything_once(db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"TACTFUL_DATA_DIR": str(data), "TACTFUL_DATABASE_URL": db_url}
    runner = CliRunner()
    first = runner.invoke(app, ["demo", "--customers", "2000", "--no-serve"], env=env)
    assert first.exit_code == 0, first.output
    assert "2,000 customers" in " ".join(first.output.split())

    folder = data / "demo"
    customers = pq.read_table(folder / "customers.parquet")
    lines = pq.read_table(folder / "receipts.parquet", columns=["receipt_id"])
    events = pq.read_table(folder / "events.parquet", columns=["event_id"])
    settings = Settings(data_dir=data, database=DatabaseSettings(url=db_url))
    loaded = stored(settings)
    assert loaded["customer ids"] == customers.num_rows == 2000
    # about 1% of the customer rows are people registered twice, merged by phone or e-mail
    assert 0 < 2000 - loaded["profiles"] < 60
    assert loaded["receipts"] == len(pc.unique(lines["receipt_id"]))
    assert loaded["receipt_lines"] == lines.num_rows
    assert loaded["events"] == events.num_rows
    assert loaded["stores"] == pq.read_metadata(folder / "stores.parquet").num_rows
    assert loaded["products"] == pq.read_metadata(folder / "products.parquet").num_rows
    assert loaded["consents"] > 0
    rows = {
        "stores": loaded["stores"],
        "products": loaded["products"],
        "customers": 2000,
        "purchases": lines.num_rows,
        "events": events.num_rows,
    }
    assert loaded["imports"] == [(kind, n, n, 0) for kind, n in rows.items()]

    second = runner.invoke(app, ["demo", "--customers", "2000", "--no-serve"], env=env)
    assert second.exit_code == 0, second.output
    again = stored(settings)
    assert again["imports"][5:] == [(kind, n, 0, 0) for kind, n in rows.items()]
    assert {k: v for k, v in again.items() if k != "imports"} == {
        k: v for k, v in loaded.items() if k != "imports"
    }
