"""The benchmark harness: every benchmark module loads, and a block run with the serving
processes' collector settings leaves this process's collector as it was."""

from __future__ import annotations

import gc

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
