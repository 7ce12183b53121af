"""Starting the job runner: in its own process (``tactful worker``) or inside ``serve``.

On the embedded default ``serve`` runs the jobs in threads of its own process, except those
registered with ``own_process`` (sending messages: rendering, MIME, TLS), which a second
process it starts and watches runs. Python runs one thread of a process at a time, so in
one process the sending of yesterday's decisions slowed the API and the triggers deciding
the next ones; on two cores the second process works beside them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

import structlog

from tactful import wiring
from tactful.core.errors import ConfigError
from tactful.core.jobs.registry import own_process_jobs
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime, prepare_heap_for_serving

log = structlog.get_logger("tactful.worker")

# how long a crashed sending process waits before it is started again (doubling up to the cap)
RESTART_SECONDS, RESTART_MAX_SECONDS = 1.0, 60.0
# a sending process that ran this long before it ended starts again at once
HEALTHY_SECONDS = 60.0


def start_in_thread(
    runtime: Runtime, *, skip: frozenset[str] = frozenset()
) -> tuple[Worker, threading.Thread]:
    """Run the worker loops in a daemon thread of this process (embedded mode), leaving the
    jobs named in ``skip`` to another process."""
    wiring.install()
    worker = Worker(runtime, skip=skip)
    thread = threading.Thread(target=worker.run_forever, name="tactful-worker", daemon=True)
    thread.start()
    return worker, thread


def run_process(
    runtime: Runtime,
    *,
    concurrency: int | None = None,
    own_process_only: bool = False,
    parent: int | None = None,
) -> None:
    """Run the worker loops in the foreground until SIGTERM/SIGINT (or, with ``parent``,
    until that process is gone). ``own_process_only``: just the jobs registered to run in
    a process of their own, no monitors (``serve``'s second process on SQLite)."""
    if runtime.db.dialect == "sqlite" and not own_process_only:
        raise ConfigError(
            "TACTFUL_DATABASE_URL: separate worker processes need PostgreSQL; on the embedded "
            "SQLite default the worker runs inside `tactful serve`",
            field="TACTFUL_DATABASE_URL",
        )
    wiring.install()
    worker = (
        Worker(runtime, concurrency=concurrency, only=own_process_jobs(), run_monitors=False)
        if own_process_only
        else Worker(runtime, concurrency=concurrency)
    )

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(worker, parent), daemon=True).start()
    prepare_heap_for_serving()
    worker.run_forever()


def _watch_parent(worker: Worker, parent: int) -> None:
    """Stop when the process that started this one is gone (killed without a chance to
    stop its children)."""
    while not worker.stopped:
        if os.getppid() != parent:
            log.warning("worker.parent_gone", parent=parent)
            worker.stop()
            return
        time.sleep(1.0)


class OwnProcessWorker:
    """The second process of ``serve`` on the embedded default: ``tactful worker
    --own-process-jobs``, started again (with a growing pause) whenever it ends before
    ``stop``."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="own-process", daemon=True)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._process is None else self._process.pid

    def start(self) -> OwnProcessWorker:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "tactful", "worker", "--own-process-jobs"]
        command += ["--parent", str(os.getpid())]
        with self._lock:
            if not self._stopping.is_set():
                # a session of its own: a terminal's Ctrl-C reaches ``serve``, which stops
                # this process itself (and this process stops if ``serve`` is killed)
                self._process = subprocess.Popen(command, start_new_session=True)  # noqa: S603

    def _supervise(self) -> None:
        pause = RESTART_SECONDS
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            if process is None:
                return
            started_at = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started_at > HEALTHY_SECONDS:
                pause = RESTART_SECONDS
            log.error("worker.own_process_ended", code=code, restart_in=pause)
            if self._stopping.wait(pause):
                return
            pause = min(pause * 2, RESTART_MAX_SECONDS)
            self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the process to finish its jobs and end; killed after ``timeout`` seconds."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
