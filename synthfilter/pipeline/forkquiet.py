"""Imported in the fork server (one of its preload modules): keeps a run's Ctrl-C to one line.

When Ctrl-C stops a run while its pool is still starting, the fork server may go on to fork a
worker the pool asked for, after the run's main process has exited and unlinked the pool's
semaphores. That worker then fails to open them (``FileNotFoundError`` while unpickling a
``SemLock``) and the fork server prints the traceback under the run's own one-line message.
Such a worker has no run to work for: its failure is silenced. Any other error is shown.
"""

from __future__ import annotations

import sys
from types import TracebackType


def _from_orphaned_semlock(kind: type[BaseException], tb: TracebackType | None) -> bool:
    if not issubclass(kind, FileNotFoundError):
        return False
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "__setstate__" and code.co_filename.replace("\\", "/").endswith("multiprocessing/synchronize.py"):
            return True
        tb = tb.tb_next
    return False


def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if _from_orphaned_semlock(kind, tb):
        return
    sys.__excepthook__(kind, exc, tb)


sys.excepthook = excepthook
