"""Bad configuration stops start-up with one sentence naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tactful.config import DatabaseSettings, Settings, WarehouseSettings
from tactful.core.errors import ConfigError
from tactful.core.runtime import build_runtime


def _tactful(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TACTFUL_")}
    return subprocess.run(
        [sys.executable, "-m", "tactful", *args],
        env={**clean, "TACTFUL_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        (
            {"TACTFUL_DATABASE_URL": "postgresql://tactful@127.0.0.1:1/nothing"},
            "Error: TACTFUL_DATABASE_URL: cannot connect to "
            "postgresql://tactful@127.0.0.1:1/nothing: ",
        ),
        (
            {"TACTFUL_DATABASE_URL": "mysql://x@localhost/db"},
            "Error: TACTFUL_DATABASE_URL uses the unsupported scheme 'mysql'",
        ),
        (
            {"TACTFUL_WAREHOUSE_URL": "bigtable://somewhere"},
            "Error: TACTFUL_WAREHOUSE_URL uses the unknown scheme 'bigtable'",
        ),
    ],
)
def test_bad_settings_give_one_sentence(tmp_path: Path, env: dict[str, str], sentence: str) -> None:
    result = _tactful(tmp_path, "migrate", **env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(sentence), lines[0]


def test_unwritable_data_folder_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _tactful(tmp_path, "init", TACTFUL_DATA_DIR=str(blocker / "data"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"Error: TACTFUL_DATA_DIR: the data folder {blocker / 'data'} is not writable"
    ), line


def test_unknown_warehouse_scheme_raises_config_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, warehouse=WarehouseSettings(url="ftp://x"))
    with pytest.raises(ConfigError) as err:
        build_runtime(settings)
    assert err.value.field == "TACTFUL_WAREHOUSE_URL"


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", database=DatabaseSettings())
    assert settings.database_url == f"sqlite:///{(tmp_path / 'd' / 'tactful.sqlite3')}"
    assert settings.warehouse_url == f"duckdb://{(tmp_path / 'd' / 'warehouse.duckdb')}"


def test_environment_variables_fill_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TACTFUL_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("TACTFUL_JOBS_LEASE_SECONDS", "15")
    monkeypatch.setenv("TACTFUL_DATA_DIR", "/srv/tactful")
    settings = Settings()
    assert settings.database.url == "postgresql://u@h/db"
    assert settings.jobs.lease_seconds == 15
    assert settings.data_dir == Path("/srv/tactful")


def test_second_process_gets_a_sentence_not_a_lock_traceback(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    runtime = build_runtime(settings)
    runtime.warehouse.ping()  # this process now owns the DuckDB file
    try:
        code = (
            "from tactful.core.warehouse import Warehouse\n"
            "from pathlib import Path\n"
            f"w = Warehouse({settings.warehouse_url!r}, data_dir=Path('.'))\n"
            "try:\n    w.ping()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    finally:
        runtime.close()
    assert out.startswith(
        f"Unavailable The warehouse {tmp_path / 'data' / 'warehouse.duckdb'} is "
        f"in use by another Tactful process (PID {os.getpid()})"
    )
    assert out.endswith("stop that process, or reach the data through its HTTP API.")
