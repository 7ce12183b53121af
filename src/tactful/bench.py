"""The benchmark harness behind ``tactful bench``.

Each ``benchmarks/bench_*.py`` module defines ``NAME``, ``TITLE`` and ``run(scale)`` returning
:class:`BenchResult` rows. Every row measures our code and a named baseline in the same
process, so the ratio holds on a noisy machine.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

import tactful
from tactful.core.errors import NotFound
from tactful.core.runtime import prepare_heap_for_serving
from tactful.messaging import service as messaging


@dataclass
class BenchResult:
    """One measurement of ours against a baseline doing the same work."""

    benchmark: str
    case: str
    ours_seconds: float
    baseline: str
    baseline_seconds: float | None
    items: int = 0
    unit: str = "items"
    target: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.baseline_seconds:
            return None
        return self.ours_seconds / self.baseline_seconds

    def rate(self, seconds: float | None) -> str:
        if not seconds or not self.items:
            return ""
        return f"{self.items / seconds:,.0f} {self.unit}/s"


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: …; elapsed()`` in seconds."""
    started = time.perf_counter()
    finished: list[float] = []

    def elapsed() -> float:
        return (finished[0] if finished else time.perf_counter()) - started

    try:
        yield elapsed
    finally:
        finished.append(time.perf_counter())


@contextmanager
def serving_heap() -> Iterator[None]:
    """Run the block with this process's garbage collector set up as ``serve`` and ``worker``
    set theirs (:func:`prepare_heap_for_serving`), then put it back: a benchmark that runs
    our code in its own process measures it as the serving processes run it."""
    threshold = gc.get_threshold()
    prepare_heap_for_serving()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Wait until ``proc`` accepts connections on ``port`` (fails if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{what} did not start within {timeout:.0f} s")


def smtp_sink(port: int) -> subprocess.Popen[bytes]:
    """aiosmtpd in its own process on ``port``, taking every message and dropping it."""
    command = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink"]
    sink = subprocess.Popen([*command, "-l", f"127.0.0.1:{port}"])  # noqa: S603
    wait_for_port(port, sink, "the SMTP server", 30)
    return sink


def smtp_sender(
    session: Any, *, workspace_id: int, brand_id: int, port: int, concurrency: int
) -> None:
    """A brand's e-mail sender ("Garden Shop") through an SMTP provider on a local ``port``."""
    provider = messaging.create_provider(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        kind="smtp",
        name="bench",
        config={"host": "127.0.0.1", "port": port},
        concurrency=concurrency,
        actor="bench",
    )
    messaging.create_sender(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        channel="email",
        provider_id=provider.id,
        address="news@shop.example",
        name="Garden Shop",
        actor="bench",
    )


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The real ``tactful serve`` on a data folder (its log in ``serve.log`` there)."""
    env = {
        **os.environ,
        "TACTFUL_DATA_DIR": str(data_dir),
        "TACTFUL_LOG_LEVEL": "WARNING",
        "TACTFUL_SERVER_PORT": str(port),
    }
    with (data_dir / "serve.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "tactful", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    wait_for_port(port, server, "tactful serve", 120)
    return server


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Interrupt a server and wait for it (killed after a minute)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def benchmarks_dir() -> Path:
    package = Path(tactful.__file__).resolve().parent
    for candidate in (package / "_benchmarks", package.parents[1] / "benchmarks"):
        if candidate.is_dir():
            return candidate
    raise NotFound("the benchmarks folder is missing from this installation")


def discover() -> dict[str, ModuleType]:
    """Benchmark modules by NAME."""
    found: dict[str, ModuleType] = {}
    for path in sorted(benchmarks_dir().glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(f"tactful_benchmarks.{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # registered first, as an import would, so dataclasses and pickling inside work
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        found[str(module.NAME)] = module
    return found


def run_benchmarks(
    names: list[str], *, scale: str, output: Path | None, console: Console
) -> list[BenchResult]:
    """Run the chosen benchmarks (all by default), print a table, optionally save JSON."""
    modules = discover()
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise NotFound(f"unknown benchmark(s) {unknown}; available: {sorted(modules)}")
    results: list[BenchResult] = []
    for name in names or list(modules):
        module = modules[name]
        console.print(f"[bold]{name}[/]: {module.TITLE} (scale {scale})")
        rows: list[BenchResult] = module.run(scale)
        results.extend(rows)
        _print(rows, console)
    if output is not None:
        output.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "scale": scale,
                    "results": [asdict(r) | {"ratio": r.ratio} for r in results],
                },
                indent=2,
                default=str,
            )
        )
    return results


def _print(rows: list[BenchResult], console: Console) -> None:
    table = Table("case", "ours", "baseline", "baseline time", "ours / baseline", "target")
    for row in rows:
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "–"
        ours = f"{row.ours_seconds:.3f} s"
        if row.items:
            ours += f" ({row.rate(row.ours_seconds)})"
        base = f"{row.baseline_seconds:.3f} s" if row.baseline_seconds is not None else "–"
        if row.items and row.baseline_seconds:
            base += f" ({row.rate(row.baseline_seconds)})"
        table.add_row(row.case, ours, row.baseline, base, ratio, row.target)
    console.print(table)
    for row in rows:
        for key, value in row.extra.items():
            console.print(f"  {row.case} · {key}: {value}", soft_wrap=True)
