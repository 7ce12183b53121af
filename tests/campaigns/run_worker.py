"""A real worker process for the crash test: ``python run_worker.py DB_URL DATA_DIR`` runs
job workers and monitors (short leases, so another process takes over a dead one's jobs
quickly) until it is killed or terminated."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from tactful import wiring
from tactful.config import DatabaseSettings, JobSettings, Settings
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import build_runtime

if __name__ == "__main__":
    settings = Settings(
        data_dir=sys.argv[2],
        database=DatabaseSettings(url=sys.argv[1]),
        jobs=JobSettings(concurrency=4, lease_seconds=6, poll_seconds=0.1),
    )
    runtime = build_runtime(settings)
    wiring.install()
    worker = Worker(runtime)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    worker.run_forever()
    runtime.close()
