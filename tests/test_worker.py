"""``serve``'s second process on the embedded default: ``tactful worker --own-process-jobs``
runs the sending jobs and nothing else, and is started again when it dies."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tactful import wiring
from tactful.config import Settings
from tactful.core.errors import ConfigError
from tactful.core.jobs import queue
from tactful.core.jobs.models import Job
from tactful.core.jobs.registry import own_process_jobs
from tactful.core.migrate import upgrade
from tactful.core.runtime import Runtime, build_runtime
from tactful.messaging.service import DISPATCH_JOB
from tactful.worker import OwnProcessWorker, run_process


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A migrated embedded data folder, named in the environment the child inherits."""
    for name in [n for n in os.environ if n.startswith("TACTFUL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TACTFUL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TACTFUL_LOG_LEVEL", "WARNING")
    wiring.install()
    runtime = build_runtime(Settings(data_dir=tmp_path / "data"))
    upgrade(runtime.db.engine)
    yield runtime
    runtime.close()


def _enqueue(runtime: Runtime, name: str, payload: dict[str, object]) -> int:
    with runtime.db.scope() as session:
        queue.enqueue(session, name, payload)
        return int(session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0)


def _finished_by(runtime: Runtime, job_id: int, timeout: float = 60) -> str:
    """The worker id that finished a job (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with runtime.db.scope(readonly=True) as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.status == "done":
                return str(job.locked_by)
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} was not run in {timeout} s")


def test_sending_jobs_are_the_ones_with_a_process_of_their_own() -> None:
    wiring.install()
    assert own_process_jobs() == {DISPATCH_JOB}


def test_a_plain_worker_process_still_needs_postgresql(embedded: Runtime) -> None:
    with pytest.raises(ConfigError, match="need PostgreSQL"):
        run_process(embedded)


def test_the_second_process_runs_sending_jobs_only_and_comes_back_after_a_crash(
    embedded: Runtime,
) -> None:
    second = OwnProcessWorker().start()
    try:
        first_pid = second.pid
        assert first_pid is not None
        # a dispatch of nothing (its provider is gone): done by the second process
        sending = _enqueue(embedded, DISPATCH_JOB, {"ids": [], "provider_id": None})
        other = _enqueue(embedded, "metrics.sync_changed", {"workspace_id": 1})
        assert _finished_by(embedded, sending).split(":")[1] == str(first_pid)
        os.kill(first_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while second.pid in (first_pid, None) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second.pid not in (first_pid, None)
        again = _enqueue(embedded, DISPATCH_JOB, {"ids": [], "provider_id": None})
        assert _finished_by(embedded, again).split(":")[1] == str(second.pid)
        with embedded.db.scope(readonly=True) as session:
            left = session.get(Job, other)
            assert left is not None
            assert (left.status, left.attempts) == ("queued", 0)  # not a sending job
    finally:
        second.stop()
    assert second.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second.pid, 0)
