"""Ids that records of more than one shard hold, found on the cluster: ``stages.ids_across_shards``
for annotations that stay there (the one-task decide stage runs the local function itself).

One shuffle of the records' ids, partitioned by their uniform (a hash of the id: equal ids meet in
one partition); each partition sends back a row per shard it found repeated ids first in (how
many, the smallest, and the next shard holding it), so the driver holds no id beyond those.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from synthfilter.io.shards import Shard
from synthfilter.pipeline.ray.session import collect, grouped, partitions_for


def ids_across_shards_on_ray(source: Any, shards: Sequence[Shard], offsets: Sequence[int]) -> dict[str, dict[str, Any]]:
    """``stages.ids_across_shards`` over ``source`` (``FileAnnotations``): the same keys per shard."""
    found: dict[str, dict[str, Any]] = {sh.rel: {"ids_across_shards": 0} for sh in shards}
    if len(shards) < 2 or not source.total:
        return found
    parts = partitions_for(source.total)
    rows = source.map_chunks(_emit_ids, ["id", "uniform"], starts=np.asarray(offsets, np.int64), parts=parts)
    got = collect(grouped(rows, _across_in_partition, rows=source.total))
    if not got:
        return found
    for home in np.unique(got["home"]).tolist():
        at = np.flatnonzero(got["home"] == home)
        best = min(at.tolist(), key=lambda i: got["example"][i])
        found[shards[home].rel] = {"ids_across_shards": int(got["count"][at].sum()),
                                   "id_across_example": str(got["example"][best]),
                                   "id_across_other": shards[int(got["other"][best])].rel}
    return found


def _emit_ids(chunk: dict[str, np.ndarray], starts: np.ndarray, parts: int) -> dict[str, np.ndarray]:
    """Each record's id and shard, in the partition its uniform falls in."""
    part = np.minimum((chunk["uniform"] * parts).astype(np.int64), parts - 1)
    shard = (np.searchsorted(starts, chunk["gidx"], side="right") - 1).astype(np.int32)
    return {"part": part, "id": chunk["id"], "shard": shard}


def _across_in_partition(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ids of one partition that more than one shard holds, summed per the first shard holding
    each: ``home``, ``count``, ``example`` (the smallest) and ``other`` (the next shard holding it)."""
    ids, shard = batch["id"], batch["shard"]
    by_shard = np.argsort(shard, kind="stable")
    order = by_shard[np.argsort(ids[by_shard], kind="stable")]  # by id, then shard
    ids, shard = ids[order], shard[order]
    new = np.ones(len(ids), dtype=bool)
    new[1:] = ids[1:] != ids[:-1]
    starts = np.flatnonzero(new)
    # Where a run of one id passes from one shard to the next; its first such place.
    cross = np.flatnonzero(~new[1:] & (shard[1:] != shard[:-1])) + 1
    run, first = np.unique(np.searchsorted(starts, cross, side="right") - 1, return_index=True)
    home, other, example = shard[starts[run]], shard[cross[first]], ids[starts[run]]
    out: dict[str, list[Any]] = {"home": [], "count": [], "example": [], "other": []}
    for h in np.unique(home).tolist():
        at = np.flatnonzero(home == h)
        best = min(at.tolist(), key=example.__getitem__)
        out["home"].append(h)
        out["count"].append(len(at))
        out["example"].append(example[best])
        out["other"].append(other[best])
    return {"home": np.asarray(out["home"], np.int32), "count": np.asarray(out["count"], np.int64),
            "example": np.asarray(out["example"], dtype=object), "other": np.asarray(out["other"], np.int32)}
