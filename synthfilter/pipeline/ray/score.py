"""The score stage on Ray Data: the local engine's ``score_shard`` for whole shards, a few tasks
per CPU each scoring its shards in turn (the detector loads once per worker process); a shard
scored by an interrupted run is reused."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synthfilter.config import Config
from synthfilter.io.shards import InputError
from synthfilter.pipeline.ray.session import cluster_cpus
from synthfilter.pipeline.ray.storage import ShardSource, Store, local_shard, shard_dir
from synthfilter.pipeline.run import Progress, UsageError
from synthfilter.pipeline.stages import ConservationError, Scorer, input_stamp, score_shard


class ScoreShards:
    """``score_shard`` for whole shards with one scorer (detector, MinHasher), built once. The
    annotation files land in the run's work directory."""

    def __init__(self, cfg: Config, work_root: str, bands: tuple[int, int] | None):
        self.cfg = cfg
        self.work = Store(work_root)
        self.scorer = Scorer(cfg)
        if self.scorer.uses_near:
            # The driver's choice of bands x rows (the same in every process).
            self.scorer._bands = bands
            _ = self.scorer.hasher
        if self.scorer.uses_detector:
            _ = self.scorer.detector

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        metas = [outcome(self.score, pickle.loads(blob)) for blob in batch["source"]]
        return {"meta": np.array(metas, dtype=object)}

    def score(self, src: ShardSource) -> dict[str, Any]:
        work_local = self.work.local
        if work_local is not None and src.uri is None:
            return score_shard(src.shard, self.cfg, work_local, self.scorer)
        with tempfile.TemporaryDirectory(prefix="synthfilter-") as tmp:
            scratch = Path(tmp)
            with local_shard(src, scratch) as shard:
                meta = score_shard(shard, self.cfg, scratch / "work", self.scorer)
            if src.uri is not None:
                meta.update(path=src.uri, size=src.size, mtime_ns=src.mtime_ns)
            rel = shard_dir(src.shard)
            folder = scratch / "work" / rel
            for f in sorted(folder.iterdir()):
                if f.name != "score.json":
                    self.work.upload(f, f"{rel}/{f.name}")
            # score.json last: it is the marker that says the shard's annotations are complete.
            self.work.write_bytes(f"{rel}/score.json", json.dumps(meta, indent=1).encode())
        return meta


# The scorer a worker process built for this run's score tasks (Ray runs a job's tasks in the
# same few worker processes, so each builds it once, as an actor would). Dropped by
# ``forget_scorers`` before the later stages, which do not need its memory.
_SCORERS: dict[tuple[str, str, Any], ScoreShards] = {}


def score_shards(batch: dict[str, np.ndarray], cfg: Config, work_root: str,
                 bands: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """Ray Data task: ``score_shard`` for the shards of ``batch``, with this process's scorer.

    Tasks rather than an actor pool: a job's later tasks (the decide task, the write stage) then
    find worker processes that already imported Ray Data and synthfilter (some 1.5 s on a small
    cluster), where an actor pool's processes end with it."""
    # The whole config: settings that decide no output (on_error) still change what scoring
    # does, and a long-lived cluster's worker kept a failed run's scorer for its --resume under
    # --on-error quarantine, which then failed on the same record again.
    key = (json.dumps(cfg.to_dict(), sort_keys=True, default=str), work_root, bands)
    scorer = _SCORERS.get(key)
    if scorer is None:
        _SCORERS.clear()
        scorer = _SCORERS[key] = ScoreShards(cfg, work_root, bands)
    return scorer(batch)


def forget_scorers() -> None:
    """Drop this worker process's scorer (and its detector) once scoring is over."""
    _SCORERS.clear()


def outcome(fn: Callable[[ShardSource], Any], src: ShardSource) -> str:
    """``fn(src)`` as JSON; a bad input or a failed check comes back as data, so the driver can
    raise the same one-line error as the local engine (exceptions that cross Ray get wrapped)."""
    try:
        return json.dumps({"rel": src.shard.rel, "result": fn(src)})
    except InputError as e:
        return json.dumps({"rel": src.shard.rel, "input_error": [e.path, e.message, e.line]})
    except ConservationError as e:
        return json.dumps({"rel": src.shard.rel, "conservation_error": str(e)})


def result_of(outcome: str) -> tuple[str, Any]:
    d = json.loads(outcome)
    if "input_error" in d:
        raise InputError(*d["input_error"])
    if "conservation_error" in d:
        raise ConservationError(d["conservation_error"])
    return d["rel"], d["result"]


def previous_meta(src: ShardSource, work: Store) -> dict[str, Any] | None:
    """The shard's score summary from an interrupted run, if it is complete and still valid."""
    rel = f"{shard_dir(src.shard)}/score.json"
    if not work.exists(rel):
        return None
    meta = json.loads(work.read_bytes(rel))
    if src.uri is None:
        stamp = input_stamp(src.shard.path)
        size, mtime = stamp["size"], stamp["mtime_ns"]
    else:
        size, mtime = src.size, src.mtime_ns
    if meta.get("size") != size or meta.get("mtime_ns") != mtime:
        raise UsageError(f"{src.location}: input changed since the interrupted run; use --overwrite to start again")
    return meta


def items_of(sources: Sequence[ShardSource], blocks: int | None = None) -> Any:
    """The shards as a dataset of pickled sources: one a block, or spread over ``blocks`` blocks,
    for one map whose tasks return a few bytes each (``unreserved``)."""
    import ray

    from synthfilter.pipeline.ray.session import unreserved

    items = [{"source": pickle.dumps(s)} for s in sources]
    return unreserved(ray.data.from_items(items, override_num_blocks=max(1, min(len(items), blocks or len(items)))))


# Score tasks per worker (each scores ~1/(this x workers) of the shards).
SCORE_TASKS_PER_CPU = 4


def score_all(sources: Sequence[ShardSource], cfg: Config, work: Store, progress: Progress,
               scorer: Scorer) -> dict[str, dict[str, Any]]:
    metas: dict[str, dict[str, Any]] = {}
    todo = []
    for src in sources:
        meta = previous_meta(src, work) if cfg.resume else None
        if meta is not None:
            metas[src.shard.rel] = meta
        else:
            todo.append(src)
    progress.stage("score", len(todo))
    if not todo:
        return metas
    cpus = cluster_cpus()
    workers = cfg.workers if 0 < cfg.workers < cpus else cpus
    # A few tasks per CPU, each scoring its shards in turn (a Ray Data task costs some 0.1-0.2 s
    # to schedule on a small cluster, as in the write stage). A concurrency cap only when
    # --workers asks for fewer than the cluster's CPUs: without the resource reservation
    # (``unreserved``), a cap equal to the CPUs left one worker idle while the other ran the
    # last two tasks in turn (measured: 1.5 s of one idle core at 1 M records on 2 CPUs).
    cap = {"concurrency": max(1, min(workers, len(todo)))} if workers < cpus else {}
    ds = items_of(todo, SCORE_TASKS_PER_CPU * workers).map_batches(
        score_shards, batch_size=None, **cap,
        fn_kwargs={"cfg": cfg, "work_root": work.root, "bands": scorer.bands if scorer.uses_near else None},
    )
    for row in ds.iter_rows():
        _, meta = result_of(row["meta"])
        metas[meta["rel"]] = meta
        progress.shard_done(meta["rel"], meta["records"])
    return metas

