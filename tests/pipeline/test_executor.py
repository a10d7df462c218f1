"""The run's process pool (``ShardExecutor``): a failed or interrupted stage ends its workers
before the run cleans up after them."""

from __future__ import annotations

import os
import signal
import time
from multiprocessing import forkserver
from pathlib import Path

import pytest

from synthfilter.pipeline.run import ShardExecutor
from synthfilter.pipeline.runlock import _lock_holders


class Stop(Exception):
    pass


_HELD: list[bytes] = []


def _task(size: int) -> None:
    """A worker's task: returns at once for 0, else fills ``size`` bytes of memory (slow to tear
    down when the worker is killed) and waits to be stopped."""
    if size:
        _HELD.append(b"\x01" * size)  # touched pages: the kernel frees them as the worker exits
        time.sleep(120)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads lock holders from Linux /proc/locks")
def test_the_pool_exits_after_its_workers_even_when_the_fork_server_died_first(tmp_path: Path) -> None:
    # A SIGTERM sent to the run's process group kills the fork server along with the workers,
    # and the pool's join (made through the server) then returns at once, while a worker may
    # still be ending. The run removes its temporary files as soon as the pool exits, so a
    # worker finishing a write after that left one behind (seen in CI). A worker holds the
    # workers' lock until its last moment: none may hold it once the pool has exited. The 1 GiB
    # worker takes the kernel long enough to tear down for this to fail without the wait.
    lock = tmp_path / "workers.lock"
    lock.touch()
    box: dict[str, ShardExecutor] = {}
    pids: list[int] = []

    def on_done(shard: int, result: None) -> None:
        pids.extend(box["ex"]._pool._processes)  # noqa: SLF001 - the pool's own workers
        while len(_lock_holders(lock)) < 2:
            time.sleep(0.01)
        time.sleep(0.5)  # the other worker has filled its memory
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)  # noqa: SLF001
        raise Stop

    with pytest.raises(Stop):
        with ShardExecutor(2, 2, worker_lock=lock) as ex:
            box["ex"] = ex
            ex.map(_task, [0, 1 << 30], (), on_done)
    assert len(pids) == 2
    assert _lock_holders(lock) == []
