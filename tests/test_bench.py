"""The benchmark harness: every benchmark module loads, and a block run with the serving
processes' collector settings leaves this process's collector as it was; the POS benchmark's
CPU per operation."""

from __future__ import annotations

import gc
import time
from typing import Any

from tactful.bench import benchmarks_dir, discover, serving_heap
from tactful.core.runtime import SERVING_GC_THRESHOLD


def test_every_benchmark_module_loads_with_a_name_and_a_run() -> None:
    found = discover()
    files = sorted(p.stem for p in benchmarks_dir().glob("bench_*.py"))
    assert len(found) == len(files)
    assert sorted(m.__name__.rsplit(".", 1)[-1] for m in found.values()) == files
    assert all(callable(m.run) for m in found.values())


def test_serving_heap_sets_the_collector_up_for_the_block_only() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())
    with serving_heap():
        inside = (gc.get_threshold()[0], gc.get_freeze_count())
    assert inside[0] == SERVING_GC_THRESHOLD
    assert inside[1] > before[1]
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_pos_cpu_per_operation_divides_the_machines_and_the_processes_cpu() -> None:
    run_type = discover()["pos"].Run

    def run(cpu: float, busy: float | None, operations: int) -> Any:
        return run_type(2.0, [0.01] * operations, 0, 0, [], cpu, busy)

    assert run(0.004, 0.012, 4).cpu_per_operation() == "3.0 ms / 1.0 ms"
    assert run(0.004, None, 4).cpu_per_operation() == "not measured"
    assert run(0.0, 0.0, 0).cpu_per_operation() == "not measured"


def test_pos_machine_busy_time_only_grows_and_is_unknown_after_an_unknown_start() -> None:
    busy = discover()["pos"]._busy
    first = busy()
    assert first is not None  # Linux: /proc/stat
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # keep a core busy for a while
        pass
    assert busy(first) > 0
    assert busy(None) is None
