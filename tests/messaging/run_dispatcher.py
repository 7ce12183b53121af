"""A real dispatcher process for the crash test: ``python run_dispatcher.py DB_URL DATA_DIR``
runs a job worker until it is killed."""

from __future__ import annotations

import sys

from tactful import wiring
from tactful.config import DatabaseSettings, JobSettings, Settings
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import build_runtime

if __name__ == "__main__":
    settings = Settings(
        data_dir=sys.argv[2],
        database=DatabaseSettings(url=sys.argv[1]),
        jobs=JobSettings(concurrency=1),
    )
    runtime = build_runtime(settings)
    wiring.install()
    Worker(runtime, run_monitors=False).run_forever()
