"""Ray itself for the engine: starting or joining a cluster, Ray Data settings, and the few
driver-side helpers every pass uses (broadcast objects, shuffles by partition, small results)."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from typing import Any, Callable, Iterator

import numpy as np

from synthfilter.config import Config
from synthfilter.pipeline.run import UsageError

RAY_INSTALL_HINT = 'Ray is not installed; install the extra with: pip install "synthfilter[ray]"'

# Rows one shuffle partition holds (about 25-40 bytes each, sorted in place on a worker).
ROWS_PER_PARTITION = 2_000_000
# Shuffles of more rows than this use Ray's hash shuffle (see ``grouped``).
HASH_SHUFFLE_ROWS = 20_000_000
# Bytes ``collect`` may bring to the driver at once (None: no limit).
COLLECT_BUDGET: int | None = None


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a UsageError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise UsageError(f"{RAY_INSTALL_HINT} ({e})") from None
    return ray


@contextlib.contextmanager
def ray_session(cfg: Config, on_term: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Use the caller's Ray, else join ``cfg.ray_address``, else start a local cluster.

    A cluster this function joined or started is left (shut down) when the block ends.
    ``on_term``: called on SIGTERM (in the main thread) while the block runs. Ray installs its
    own SIGTERM handler when it starts (a native stack dump, then exit 15 or 134), so it is set
    after ``ray.init``; a run stopped by a scheduler then says that it can be resumed.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if cfg.ray_address:
        kwargs["address"] = cfg.ray_address
    else:
        # "local" (not None): a RAY_ADDRESS in the environment must not redirect a local run.
        kwargs["address"] = "local"
        kwargs["logging_level"] = logging.ERROR  # a private cluster's start-up notes are noise
        if cfg.workers > 0:
            kwargs["num_cpus"] = cfg.workers
    if cfg.ray_address:
        _check_reachable(cfg.ray_address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = cfg.ray_address or "a new local cluster"
        raise UsageError(f"could not start or join Ray at {where}: {str(e).splitlines()[0]}") from None
    previous = None
    if on_term is not None and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: on_term(signum))
    try:
        yield ray
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` address that refuses or does not answer a TCP connection is a one-line
    error: ``ray.init`` retries such an address for as long as it runs, deaf to SIGTERM."""
    import socket

    if "://" in address or address in ("auto", "local") or ":" not in address:
        return  # a Ray Client URI, or Ray's own lookup: ray.init says what it finds
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except ValueError:
        return  # not a port number: left to ray.init
    except OSError as e:
        raise UsageError(f"could not join Ray at {address}: nothing answers there ({e.strerror or e}); start the "
                         "cluster (ray start --head) or check --ray-address") from None


@contextlib.contextmanager
def data_context() -> Iterator[Any]:
    """Ray Data settings for synthfilter's jobs, restored afterwards.

    Sort-based shuffles: synthfilter's shuffles group a few keys per partition, where the
    hash shuffle's per-run aggregator actors cost seconds each. No Ray progress bars or stats
    logs: synthfilter prints its own progress.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = (ctx.shuffle_strategy, ctx.enable_progress_bars, ctx.enable_auto_log_stats)
    data_log = logging.getLogger("ray.data")
    saved_level = data_log.level
    ctx.shuffle_strategy = "sort_shuffle_pull_based"
    data_log.setLevel(logging.ERROR)  # before the next line, which warns that bars are off
    ctx.enable_progress_bars = False
    ctx.enable_auto_log_stats = False
    try:
        yield ctx
    finally:
        ctx.shuffle_strategy, ctx.enable_progress_bars, ctx.enable_auto_log_stats = saved
        data_log.setLevel(saved_level)


def unreserved(ds: Any) -> Any:
    """``ds``, and the datasets made from it, without Ray Data's per-operator resource reservation.

    Only for one map over a few items whose tasks return a few bytes (the score and write
    stages): there is nothing to reserve for, and the reservation starts each execution with a
    CPU budget of zero (Ray Data's autoscaling coordinator grants the cluster's CPUs about 1 s
    later), so every stage ran a single task for its first second (measured on Ray 2.60: 8 tasks
    of 0.8 s on 2 CPUs, 4.4 s instead of 3.3 s). Shuffles and multi-stage passes keep it: it is
    their object-store backpressure.
    """
    ds.context.op_resource_reservation_enabled = False
    return ds


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


_RESOLVED: dict[str, Any] = {}


def resolve(ref: Any) -> Any:
    """``ray.get`` once per worker process for a broadcast object (only the latest is cached)."""
    import ray

    key = ref.hex()
    if key not in _RESOLVED:
        _RESOLVED.clear()
        _RESOLVED[key] = ray.get(ref)
    return _RESOLVED[key]


def partitions_for(rows: int) -> int:
    return max(2 * cluster_cpus(), math.ceil(rows / ROWS_PER_PARTITION))


def collect(ds: Any) -> dict[str, np.ndarray]:
    """All rows of a small dataset (counts, bins, summaries) on the driver, as numpy columns.

    The only way a pass brings rows to the driver; with ``COLLECT_BUDGET`` set (bytes), a
    result larger than that is an error (tests use it to prove the driver holds no edge table).
    """
    parts: dict[str, list[np.ndarray]] = {}
    held = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
            held += v.nbytes
        if COLLECT_BUDGET is not None and held > COLLECT_BUDGET:
            raise RuntimeError(f"the driver was asked to hold {held:,} bytes of rows (budget {COLLECT_BUDGET:,})")
    return {k: np.concatenate(v) for k, v in parts.items()}


def grouped(ds: Any, fn: Callable[..., dict[str, np.ndarray] | None], rows: int = 0, key: str = "part",
            **fn_kwargs: Any) -> Any:
    """``fn`` over the groups of ``ds`` by column ``key``: one call sees all rows of one value.

    ``rows``: about how many rows are shuffled. Up to ``HASH_SHUFFLE_ROWS`` a sort-based shuffle
    (no start-up cost); beyond, Ray's hash shuffle, whose aggregators keep the driver from
    tracking one object per (map block, partition) pair. Either gives the same groups.
    """
    if rows > HASH_SHUFFLE_ROWS:
        ds.context.shuffle_strategy = "hash_shuffle"
        return ds.groupby(key, num_partitions=partitions_for(rows)).map_groups(
            fn, batch_format="numpy", fn_kwargs=fn_kwargs)
    return ds.groupby(key).map_groups(fn, batch_format="numpy", fn_kwargs=fn_kwargs)
