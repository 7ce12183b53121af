"""Logs go to the standard error stream of the moment they are written."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from tactful.core.logging import configure_logging


def test_logs_follow_a_swapped_stderr_and_never_write_to_a_closed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging(level="INFO")
        logging.getLogger("tactful.test").info("one")
        first.close()  # what pytest does to a finished test's captured stream
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("tactful.test").info("two")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "two" in second.getvalue()
    assert "one" not in second.getvalue()
