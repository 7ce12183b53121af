"""``tactful loyalty``: verify the ledger and print the reports from the command line."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from tactful.core.runtime import Runtime
from tactful.loyalty.cli import app
from tactful.loyalty.models import Account
from tests.loyalty.conftest import Shop, confirm_body, receipt


def test_verify_liability_and_activity(
    client: TestClient,
    runtime: Runtime,
    shop: Shop,
    anna: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = confirm_body("p1", "2000111", receipt(100_000))
    assert client.post("/v1/loyalty/pos/confirm", headers=shop.pos, json=body).status_code == 200
    monkeypatch.setenv("TACTFUL_DATABASE_URL", runtime.settings.database_url)
    monkeypatch.setenv("TACTFUL_DATA_DIR", str(runtime.settings.data_dir))
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(shop.program_id)])
    assert (ok.exit_code, ok.output.strip()) == (0, "1 account(s) checked, 0 mismatch(es).")
    liability = runner.invoke(app, ["liability", str(shop.program_id), "--months", "13"])
    assert liability.exit_code == 0
    text = " ".join(liability.output.split())  # the console wraps at its width
    assert "Outstanding: 50 points (0 available, 50 pending) worth 5000 RUB minor units" in text
    activity = runner.invoke(app, ["activity", str(shop.program_id), "--days", "1"])
    assert activity.exit_code == 0
    assert "total" in activity.output
    # a cache that disagrees with the ledger is caught, and the command fails
    with runtime.db.scope() as session:
        session.execute(update(Account).values(pending=51))
    broken = runner.invoke(app, ["verify", str(shop.program_id)])
    assert broken.exit_code == 1
    assert "1 account(s) checked, 1 mismatch(es)." in broken.output
