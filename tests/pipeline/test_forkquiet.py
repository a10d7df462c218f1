"""Ctrl-C while the pool starts: a worker forked for a run that has already exited fails to open
the pool's semaphores, and the fork server used to print that traceback under the run's line."""

from __future__ import annotations

import multiprocessing.synchronize
import sys

import pytest

from synthfilter.pipeline import forkquiet
from synthfilter.pipeline.run import _WORKER_PRELOAD


def _exc_info(fn) -> tuple:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception:  # noqa: BLE001
        return sys.exc_info()
    raise AssertionError("no exception")


def test_an_orphaned_workers_semaphore_failure_is_silent_and_other_errors_are_not(capsys: pytest.CaptureFixture[str]) -> None:
    lock = object.__new__(multiprocessing.synchronize.Lock)
    # What unpickling the pool's lock does in a worker once the run has unlinked it.
    orphaned = _exc_info(lambda: lock.__setstate__((0, 1, 1, "/synthfilter-test-no-such-semaphore")))
    assert orphaned[0] is FileNotFoundError
    forkquiet.excepthook(*orphaned)
    assert capsys.readouterr().err == ""
    other = _exc_info(lambda: open("/nonexistent/synthfilter/file"))
    forkquiet.excepthook(*other)
    assert "FileNotFoundError" in capsys.readouterr().err


def test_the_fork_server_imports_it_first() -> None:
    assert _WORKER_PRELOAD[0] == "synthfilter.pipeline.forkquiet"
