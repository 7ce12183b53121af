"""Run a worker in a subprocess: ``python run_worker.py DB_URL DATA_DIR once|forever``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import job_fixtures

from tactful import wiring
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import build_runtime
from tactful.worker import run_process

if __name__ == "__main__":
    settings = job_fixtures.settings_from_argv()
    runtime = build_runtime(settings)
    wiring.install()
    if sys.argv[3] == "once":
        Worker(runtime).run_pending()
    else:
        run_process(runtime, concurrency=4)
    runtime.close()
