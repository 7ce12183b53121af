"""Browser tests: a real ``tactful serve`` on a free port (embedded SQLite + DuckDB in a temp
folder), driven by Playwright through Debian's Chromium. Screenshots of each page are saved
under ``artifacts/screenshots/<test>/``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tactful import wiring
from tactful.config import Settings
from tactful.core.migrate import upgrade
from tactful.core.runtime import Runtime, build_runtime
from tactful.tenancy import service as tenancy
from tactful.testing.postgres import free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Server:
    url: str
    data_dir: Path
    owner_email: str
    owner_password: str
    admin_key: str

    @property
    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=60
        )


# Called with the migrated, initialised runtime before the server starts (to load data).
Prepare = Callable[[Runtime], None]


@contextlib.contextmanager
def serving(data_dir: Path, prepare: Prepare | None = None) -> Iterator[Server]:
    """A real ``tactful serve`` on a free port over a fresh data folder (optionally filled by
    ``prepare`` first), stopped afterwards."""
    wiring.install()
    runtime = build_runtime(Settings(data_dir=data_dir))
    upgrade(runtime.db.engine)
    with runtime.db.scope() as session:
        init = tenancy.initialize(session, phone_region="RU", timezone="Europe/Moscow")
    if prepare is not None:
        prepare(runtime)
    runtime.close()
    assert init.owner_password
    assert init.admin_key
    assert init.owner_email
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACTFUL_")}
    env.update(
        TACTFUL_DATA_DIR=str(data_dir), TACTFUL_SERVER_PORT=str(port), TACTFUL_LOG_LEVEL="WARNING"
    )
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tactful", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError((data_dir / "server.log").read_text())
        yield Server(url, data_dir, init.owner_email, init.owner_password, init.admin_key)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("e2e") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module. Not for the session: Playwright's sync API keeps an
    event loop running in the main thread until it stops, and every later test that runs a
    loop of its own (asyncio.run) would fail."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/install installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Shots:
    """Saves numbered screenshots of a test's pages."""

    def __init__(self, page: object, folder: Path) -> None:
        self.page, self.folder, self.count = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def shots(page: object, request: pytest.FixtureRequest) -> Shots:
    return Shots(page, ARTIFACTS / request.node.name)


def sign_in(
    page: object, server: Server, *, email: str | None = None, password: str | None = None
) -> None:
    page.goto(f"{server.url}/login")  # type: ignore[attr-defined]
    page.fill("input[name=email]", email or server.owner_email)  # type: ignore[attr-defined]
    page.fill("input[name=password]", password or server.owner_password)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
