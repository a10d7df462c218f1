"""One run at a time per output directory, and no worker process outliving its run.

The run holds an exclusive ``flock`` on the output directory for as long as it works there; a
second run on the same directory stops at once with a message naming the first. Each worker
process holds a shared lock on ``_synthfilter/workers.lock`` for its whole life and ends as soon
as the run's main process does (``die_with_parent``), so a killed run leaves no worker behind;
should one survive anyway, the next run finds it through the lock, stops it, and only then
touches the directory.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

WORKERS_LOCK = "workers.lock"
_held: list[int] = []  # the worker's lock file descriptor, open for the life of the process


def _flock(fd: int, exclusive: bool, block: bool = False) -> bool:
    """Take a lock on ``fd``: True when taken, False when another process holds it.
    A file system without locks counts as taken (nothing better can be done there)."""
    import fcntl

    flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if block else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return True
        raise


class RunLock:
    """The exclusive lock on an output directory (created when missing). ``created`` says the
    directory did not exist before, so a run that stops before writing anything can remove it."""

    def __init__(self, out: Path, work_dir: str):
        self.out = out
        self.work_dir = work_dir
        self.created = False
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        from synthfilter.pipeline.run import UsageError

        if not self.out.exists():
            self.out.mkdir(parents=True)
            self.created = True
        fd = os.open(self.out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        if not _flock(fd, exclusive=True):
            os.close(fd)
            raise UsageError(f"{self.out}: another synthfilter run{self._holder()} is writing to this directory; "
                             "wait for it to finish, or stop it and rerun with --resume")
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            pid = json.loads((self.out / self.work_dir / "run.json").read_text()).get("pid")
        except (OSError, ValueError):
            return ""
        return f" (pid {pid})" if pid else ""

    def release(self) -> None:
        """Drop the lock; a directory ``acquire`` created and the run left empty goes too (a run
        that stopped before writing anything leaves nothing behind)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
            if self.created and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# -- workers ------------------------------------------------------------------------------------


def die_with_parent(main_pid: int) -> None:
    """End this worker as soon as the run's main process ends, however it ends (SIGKILL too).

    The kernel kills the worker when its parent dies (Linux ``PR_SET_PDEATHSIG``), but a
    forkserver's child has the forkserver as parent, and the forkserver stays alive as long as
    its children do; so a daemon thread also waits on the main process itself (a pidfd on Linux,
    else a poll) and exits the worker when it is gone.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        parent = os.getppid()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)  # the parent died before the request took effect
    try:
        pidfd: int | None = os.pidfd_open(main_pid)  # type: ignore[attr-defined]
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            import select

            select.select([pidfd], [], [])  # readable once the main process has ended
            os._exit(1)
        while True:
            time.sleep(0.2)
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    import threading

    threading.Thread(target=watch, name="synthfilter-watch-main", daemon=True).start()


def hold_worker_lock(lock_path: str) -> None:
    """Take the shared workers' lock for the rest of this process's life."""
    fd = os.open(lock_path, os.O_RDONLY)
    _flock(fd, exclusive=False, block=True)
    _held.append(fd)


def worker_init(lock_path: str | None, main_pid: int) -> None:
    """The process pool's initializer: pandas kept out of pyarrow's way, Ctrl-C left to the main
    process (which stops the workers itself), death with the run, and the workers' lock."""
    from synthfilter.io.shards import pyarrow_without_pandas

    pyarrow_without_pandas()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(main_pid)
    if lock_path is not None:
        hold_worker_lock(lock_path)


def wait_workers_gone(lock_path: Path, timeout: float = 10.0) -> bool:
    """Wait until no process holds the workers' lock (each worker holds it until its very end,
    when its files close and it can write nothing more); False at the deadline.

    Not the pool's ``join``: a forkserver's worker is joined through the fork server, and a
    SIGTERM to the process group may kill the server first; ``join`` then returns at once while
    the worker may still be finishing a write that the run's clean-up must come after.
    """
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return True
    try:
        deadline = time.monotonic() + timeout
        while not _flock(fd, exclusive=True):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True
    finally:
        os.close(fd)  # the lock goes with it


def _lock_holders(path: Path) -> list[int]:
    """Processes holding a lock on ``path``, from /proc/locks (Linux); [] where unknown."""
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return []
    pids = set()
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  READ  1234 fd:01:5678 0 EOF" ("->" marks a blocked waiter)
        if "->" in parts or len(parts) < 6:
            continue
        try:
            pid, inode = int(parts[4]), int(parts[5].split(":")[-1])
        except ValueError:
            continue
        if inode == st.st_ino and pid != os.getpid():
            pids.add(pid)
    return sorted(pids)


def stop_orphaned_workers(work: Path, note: Callable[[str], None], wait_s: float = 60.0) -> list[int]:
    """Stop worker processes a killed run left behind (they hold the workers' lock), before a
    new run touches ``work``; returns their pids. UsageError when they cannot be stopped."""
    from synthfilter.pipeline.run import UsageError

    path = work / WORKERS_LOCK
    if not path.exists():
        return []
    fd = os.open(path, os.O_RDONLY)
    try:
        if _flock(fd, exclusive=True):
            return []
        pids = _lock_holders(path)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pids:
            note(f"note: stopped {len(pids)} worker process(es) left running by the interrupted run "
                 f"(pid {', '.join(map(str, pids))})")
        else:
            note("note: waiting for worker processes of the interrupted run to exit")
        deadline = time.monotonic() + wait_s
        while not _flock(fd, exclusive=True):
            if time.monotonic() > deadline:
                raise UsageError(f"{work.parent}: worker processes of an earlier run still hold {path}; stop them "
                                 f"(fuser -k {path}) and rerun with --resume")
            time.sleep(0.05)
        return pids
    finally:
        os.close(fd)
