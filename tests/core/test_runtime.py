"""Setting a serving process's heap up (in a child process: it changes the interpreter's
collector for good)."""

from __future__ import annotations

import json
import subprocess
import sys

from tactful.core.runtime import SERVING_GC_THRESHOLD

CHILD = """
import gc, json
from tactful.core.runtime import prepare_heap_for_serving
before = gc.get_threshold()
prepare_heap_for_serving()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_a_serving_process_freezes_its_start_up_heap_and_collects_young_objects_less_often() -> (
    None
):
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=120
    )
    seen = json.loads(done.stdout)
    assert seen["before"] == [700, 10, 10]
    assert seen["after"] == [SERVING_GC_THRESHOLD, 10, 10]
    assert seen["frozen"] > 10_000  # the modules, classes and functions imported so far
