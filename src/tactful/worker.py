"""Starting the job runner: in its own process (``tactful worker``) or inside ``serve``."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from tactful import wiring
from tactful.core.errors import ConfigError
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime, freeze_startup_heap


def start_in_thread(runtime: Runtime) -> tuple[Worker, threading.Thread]:
    """Run the worker loops in a daemon thread of this process (embedded mode)."""
    wiring.install()
    worker = Worker(runtime)
    thread = threading.Thread(target=worker.run_forever, name="tactful-worker", daemon=True)
    thread.start()
    return worker, thread


def run_process(runtime: Runtime, *, concurrency: int | None = None) -> None:
    """Run the worker loops in the foreground until SIGTERM/SIGINT."""
    if runtime.db.dialect == "sqlite":
        raise ConfigError(
            "TACTFUL_DATABASE_URL: separate worker processes need PostgreSQL; on the embedded "
            "SQLite default the worker runs inside `tactful serve`",
            field="TACTFUL_DATABASE_URL",
        )
    wiring.install()
    worker = Worker(runtime, concurrency=concurrency)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    freeze_startup_heap()
    worker.run_forever()
