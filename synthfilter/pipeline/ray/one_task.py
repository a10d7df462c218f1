"""The decide stage of a corpus that one worker can hold, as one Ray task running the local
engine's own ``load_annotations`` + ``decide`` over the run's work files.

Every shuffle of the distributed passes (``decide.duplicate_rows``) costs seconds of start-up
and moves each record's band keys and signatures over the object store; below some tens of
millions of records one process does the same work in a fraction of the time (issue 15:
at 1 M records on 2 CPUs, 76 s of shuffles against 4 s in one process). The task runs on the
driver's node (the work files are on its file system) in a worker process: the driver still
holds counts only, and the non-kept decisions go to the object store as one Arrow table.

Above ``one_task_records()`` records, or with work files behind a URI, ``decide_on_ray`` takes
the distributed path, whose memory does not grow on any one machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthfilter.config import Config
from synthfilter.io.shards import Shard
from synthfilter.pipeline.ray.annotations import AnnotationPart, attach, read_chunks
from synthfilter.pipeline.ray.storage import Store

# Records up to which the decide stage runs in one task: the local engine's decide needs about
# 100 B of anonymous memory per record (RESULTS.md, "Local decide memory"), 1 GB here.
ONE_TASK_RECORDS = 10_000_000
ONE_TASK_ENV = "SYNTHFILTER_RAY_ONE_TASK_RECORDS"


def one_task_records() -> int:
    """The limit: ``ONE_TASK_RECORDS``, or the environment's ``SYNTHFILTER_RAY_ONE_TASK_RECORDS``
    (0: always the distributed path)."""
    raw = os.environ.get(ONE_TASK_ENV, "").strip()
    if not raw:
        return ONE_TASK_RECORDS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        from synthfilter.pipeline.run import UsageError

        raise UsageError(f"{ONE_TASK_ENV} must be a whole number of records >= 0, got {raw!r}")
    return value


def decide_in_one_task(work: Store, shards: Sequence[Shard], metas: dict[str, dict[str, Any]],
                       parts: Sequence[AnnotationPart], cfg: Config, card: dict[str, Any] | None,
                       near: bool) -> tuple[Any, dict[str, Any]]:
    """(the non-kept decisions as a dataset, a summary of counts) from one task on this node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(num_returns=2, max_retries=3)(_decide_task).options(scheduling_strategy=here)
    rows_ref, summary_ref = task.remote(str(work.local), list(shards), metas, list(parts), cfg, card, near)
    summary = ray.get(summary_ref)
    _raise_refusal(summary)
    return ray.data.from_arrow_refs([rows_ref]), summary


def _raise_refusal(summary: dict[str, Any]) -> None:
    """The task's refusal or file error, raised here as the local engine raises it: a policy
    refusal (exit 1) or an OSError (disk full, ...), with its own one-line message rather than a
    worker's traceback."""
    from synthfilter.ratio import HumanLossError, UnreliableDetectorError

    if "refused" in summary:
        kind, message = summary["refused"]
        raise (UnreliableDetectorError if kind == "unreliable" else HumanLossError)(message)
    if "os_error" in summary:
        errno, strerror, filename = summary["os_error"]
        raise OSError(errno, strerror, filename)


def _decide_task(work_dir: str, shards: list[Shard], metas: dict[str, dict[str, Any]],
                 parts: list[AnnotationPart], cfg: Config, card: dict[str, Any] | None,
                 near: bool) -> tuple[Any, dict[str, Any]]:
    from synthfilter.pipeline.ray.score import forget_scorers
    from synthfilter.pipeline.run import load_annotations
    from synthfilter.pipeline.stages import DOWNSAMPLED, EXACT_DUP, NEAR_DUP, decide, ids_across_shards
    from synthfilter.ratio import HumanLossError, UnreliableDetectorError

    forget_scorers()  # this worker may have scored shards: the decide stage needs the memory
    work = Path(work_dir)
    try:
        ann, offsets = load_annotations(shards, work, metas, near=near)
        dec = decide(ann, cfg, card, count_languages=False)
        across = ids_across_shards(shards, work, ann, offsets)  # as the local engine: from the uniforms held
    except HumanLossError as e:  # a policy refused the plan: the driver raises it (exit 1)
        kind = "unreliable" if isinstance(e, UnreliableDetectorError) else "human_loss"
        return _no_rows(), {"refused": (kind, str(e))}
    except OSError as e:  # disk full, a vanished work file: the driver raises it as the local engine would
        return _no_rows(), {"os_error": (e.errno, e.strerror, e.filename)}
    finally:
        for name in ("signatures.u32", "bands.u64"):  # load_annotations' gathered copies
            (work / name).unlink(missing_ok=True)
    rows = np.flatnonzero(np.isin(dec.reason, (EXACT_DUP, NEAR_DUP, DOWNSAMPLED)))
    of = dec.duplicate_of[rows]
    table = _rows_table(rows, dec.reason[rows], _ids_of(Store(work_dir), parts, of),
                        dec.posterior[rows], ann.score[rows], ann.provenance[rows])
    sizes, counts = np.unique(dec.cluster_sizes, return_counts=True)
    return table, {"sizes": sizes.astype(np.int64), "counts": counts.astype(np.int64),
                   "synthetic": dec.synthetic, "warnings": dec.warnings, "ids_across_shards": across}


def _ids_of(work: Store, parts: Sequence[AnnotationPart], gidx: np.ndarray) -> list[str | None]:
    """The record id of each of ``gidx`` (-1: None), read from the shards' annotations."""
    out: list[str | None] = [None] * len(gidx)
    wanted = np.flatnonzero(gidx >= 0)
    if not len(wanted):
        return out
    order = wanted[np.argsort(gidx[wanted], kind="stable")]
    requests = {"gidx": gidx[order], "at": order}
    only = np.unique(requests["gidx"])
    for part in parts:
        if part.n == 0:
            continue
        for chunk in read_chunks(work, part, ["id"], only=only):
            hit = attach(requests, chunk, ["id"])
            if hit is not None:
                for at, rid in zip(hit["at"].tolist(), hit["id"].tolist()):
                    out[at] = rid
    return out


def _no_rows() -> Any:
    empty = np.zeros(0)
    return _rows_table(empty.astype(np.int64), empty.astype(np.int8), [], empty, empty, empty.astype(np.int8))


def _rows_table(gidx: np.ndarray, reason: np.ndarray, duplicate_of: list[str | None], posterior: np.ndarray,
                score: np.ndarray, provenance: np.ndarray) -> Any:
    """The decision rows of ``decide.duplicate_rows`` (kind 0: a decision) as an Arrow table."""
    import pyarrow as pa

    from synthfilter.pipeline.ray.decide import DECISION

    return pa.table({
        "kind": pa.array(np.full(len(gidx), DECISION, np.int8)), "gidx": pa.array(gidx.astype(np.int64)),
        "reason": pa.array(reason.astype(np.int8)), "duplicate_of": pa.array(duplicate_of, pa.string()),
        "posterior": pa.array(posterior.astype(np.float32)), "score": pa.array(score.astype(np.float32)),
        "provenance": pa.array(provenance.astype(np.int8)),
    })
