"""The decide stage on Ray: duplicate groups found, verified and contracted on the cluster, with
the local engine's own rules (``dedup.clusters.bucket_links``, ``stages.survivors``); the
driver sees counts, never an edge or a per-record array (a target ratio aside, see
``estimate.decide_target_ratio``).

Passes, each a Ray Data shuffle over compact rows:
1. keys: every record's normalised-text hash and band keys, grouped; exact groups give edges
   (member -> smallest record), shared band keys give bucket members;
2. verify: bucket members with their signatures (read by their shard's task), grouped by
   bucket, linked by ``bucket_links`` (no verification: linked in pass 1);
3. components: ``components.connected_components`` over exact and near edges;
4. survivors: each group's records with what the keep rule reads (and their signatures, to split
   the group at its survivor), grouped by component, ``survivors`` (split) and ``duplicate_reasons``
   as in ``stages.decide``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from synthfilter.config import Config
from synthfilter.io.shards import Shard
from synthfilter.dedup.clusters import bucket_links, runs_of_equal
from synthfilter.pipeline.ray.components import connected_components
from synthfilter.pipeline.ray.session import collect, grouped, partitions_for
from synthfilter.pipeline.stages import (
    KEPT, REASONS, STATUS_OK, Annotations, duplicate_reasons, record_language_counts, survivors,
)

EXACT_KIND = -1  # the "band" of exact-hash rows in the key shuffle
MAX_ROUNDS = 8  # bucket_links' rounds, as near_duplicate_components runs them
DECISION, CLUSTER = 0, 1  # rows of the survivors pass: a rejected record, a cluster's size
NODE_COLUMNS = ("hash_hi", "hash_lo", "score", "provenance", "length", "id")


@dataclass
class RayDecisions:
    """The decide stage's result: the non-kept decisions stay on the cluster (``rows``: gidx,
    reason, duplicate_of (the kept record's id), posterior, score, provenance); the driver has
    counts only."""

    rows: Any
    totals: dict[str, int]
    cluster_sizes: Any  # RunLengthArray of the sizes of groups of >= 2
    synthetic: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    languages: dict[str, Any] | None = None  # report.json's "languages" section (``language_counts_on_ray``)
    # Per shard, stages.ids_across_shards, where the decide stage ran in one task (which finds them)
    ids_across_shards: dict[str, dict[str, Any]] | None = None

    def counts(self) -> dict[str, int]:
        return dict(self.totals)


def decide_on_ray(source: Any, total: int, cfg: Config, card: dict[str, Any] | None, set_aside: np.ndarray | None,
                  n_bands: int, num_perm: int, shards: Sequence[Shard] | None = None, metas: dict[str, dict[str, Any]] | None = None) -> RayDecisions:
    """``stages.decide`` for annotations that stay on the cluster (``source.map_chunks`` and
    ``source.lookup``).

    With the run's ``shards`` and ``metas``, work files on this node's file system and at most
    ``one_task.one_task_records()`` records, the local engine's decide runs in one task instead
    (``one_task``: the same decisions, without the shuffles). ``set_aside``: records per reason
    that the score stage set aside, malformed ones included (``stages.set_aside_counts``; None:
    none).
    """
    from synthfilter.pipeline.ray.estimate import decide_estimate, decide_target_ratio
    from synthfilter.pipeline.ray.one_task import decide_in_one_task, one_task_records
    from synthfilter.pipeline.ray.write import RunLengthArray

    if shards is not None and metas is not None and source.work.local is not None and total <= one_task_records():
        near = cfg.dedup.near and n_bands > 0
        rows, summary = decide_in_one_task(source.work, shards, metas, source.parts, cfg, card, near)
        decisions = RayDecisions(rows=rows.materialize(), totals={},
                                 cluster_sizes=RunLengthArray(summary["sizes"], summary["counts"], np.int64),
                                 synthetic=summary["synthetic"], warnings=list(summary["warnings"]),
                                 ids_across_shards=summary.get("ids_across_shards"))
        decisions.totals = reason_totals(decisions.rows, total, set_aside)
        return decisions
    dups = duplicate_rows(source, total, cfg, n_bands)
    sizes = collect(dups.map_batches(_size_counts, batch_format="numpy", batch_size=None))
    if sizes:
        size, count = sizes["size"], sizes["count"]
        uniq, inverse = np.unique(size, return_inverse=True)
        size, count = uniq, np.bincount(inverse, weights=count).astype(np.int64)
    else:
        size = count = np.zeros(0, np.int64)
    decisions = RayDecisions(rows=dups.filter(expr=_is_decision()), totals={},
                             cluster_sizes=RunLengthArray(size, count, np.int64))
    if cfg.ratio.target_ratio is None:
        decide_estimate(source, decisions, total, cfg, card)
    else:
        decide_target_ratio(source, decisions, cfg, card)
    decisions.rows = decisions.rows.materialize()
    decisions.totals = reason_totals(decisions.rows, total, set_aside)
    return decisions


def language_counts_on_ray(source: Any, cfg: Config) -> np.ndarray:
    """The local engine's language count matrix (``stages.record_language_counts``), summed over
    chunks of the annotations with their saved decisions (``reason``: after ``save_overrides``)."""
    return summed_language_counts(
        collect(source.map_chunks(_language_counts, ["status", "score", "provenance", "language", "reason"], cfg=cfg)))


def summed_language_counts(got: dict[str, np.ndarray]) -> np.ndarray:
    """The language count matrices of chunks (``{"counts": (chunks, cells)}``, collected), summed."""
    from synthfilter.language import CODES

    shape = (len(CODES), len(REASONS) + 2)
    return got["counts"].reshape(-1, *shape).sum(axis=0) if got else np.zeros(shape, np.int64)


def _language_counts(chunk: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    counts = record_language_counts(chunk["language"], chunk["reason"], chunk["score"], chunk["provenance"], cfg)
    return {"counts": counts.ravel()[None]}


def _is_decision() -> Any:
    from ray.data.expressions import col

    return col("kind") == DECISION


def reason_totals(rows: Any, total: int, set_aside: np.ndarray | None = None) -> dict[str, int]:
    got = collect(rows.map_batches(_reason_counts, batch_format="numpy", batch_size=None))
    c = got["counts"].reshape(-1, len(REASONS)).sum(axis=0) if got else np.zeros(len(REASONS), np.int64)
    if set_aside is not None:  # set aside by the score stage: no decision row of their own
        c += set_aside
    c[KEPT] = total - int(c[1:].sum())
    return {name: int(c[i]) for i, name in enumerate(REASONS)}


def _reason_counts(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"counts": np.bincount(batch["reason"].astype(np.int64), minlength=len(REASONS))}


def duplicate_rows(source: Any, total: int, cfg: Config, n_bands: int) -> Any:
    """A materialized dataset of the duplicates' decision rows and the clusters' size rows."""
    import ray

    near = cfg.dedup.near and n_bands > 0
    if not (cfg.dedup.exact or near):
        return _empty_decisions(ray)
    key_rows = total * ((n_bands if near else 0) + 1)
    cols = ["status", "hash_hi", "hash_lo"] + (["bands"] if near else [])
    keyed = source.map_chunks(_emit_keys, cols, exact=cfg.dedup.exact, n_bands=n_bands if near else 0,
                              parts=partitions_for(key_rows))
    found = grouped(keyed, _find_groups, rows=key_rows, verify=cfg.dedup.verify).materialize()
    edges = found.map_batches(_edges_of, batch_format="numpy", batch_size=None)
    if near and cfg.dedup.verify:
        members = found.map_batches(_members_of, batch_format="numpy", batch_size=None).materialize()
        n_members = members.count()
        if n_members:
            parts = partitions_for(n_members)
            with_sigs = source.lookup(members, ["sigs"]).map_batches(
                _by_bucket, batch_format="numpy", batch_size=None, fn_kwargs={"parts": parts})
            edges = edges.union(grouped(with_sigs, _verify_buckets, rows=n_members, threshold=cfg.dedup.verify_at))
    edges = edges.materialize()
    n_edges = edges.count()
    if not n_edges:
        return _empty_decisions(ray)
    labels = connected_components(edges, n_edges).materialize()
    n_nodes = labels.count()
    parts = partitions_for(n_nodes)
    # With verification, the clusters are split at their survivors as in stages.decide: the
    # members' signatures travel with them.
    split = near and cfg.dedup.verify
    nodes = source.lookup(labels, NODE_COLUMNS + (("sigs",) if split else ())).map_batches(
        _by_label, batch_format="numpy", batch_size=None, fn_kwargs={"parts": parts})
    return grouped(nodes, _choose_survivors, rows=n_nodes, rules=tuple(cfg.dedup.keep_rule),
                   threshold=cfg.dedup.verify_at if split else None).materialize()


def _empty_decisions(ray: Any) -> Any:
    import pyarrow as pa

    return ray.data.from_arrow(pa.table({
        "kind": pa.array([], pa.int8()), "gidx": pa.array([], pa.int64()), "reason": pa.array([], pa.int8()),
        "duplicate_of": pa.array([], pa.string()), "posterior": pa.array([], pa.float32()),
        "score": pa.array([], pa.float32()), "provenance": pa.array([], pa.int8()),
    })).materialize()


# -- 1. keys ------------------------------------------------------------------------------------------


def _emit_keys(chunk: dict[str, np.ndarray], exact: bool, n_bands: int, parts: int) -> dict[str, np.ndarray]:
    """Rows to group: the normalised-text hash and every band key of each usable record."""
    ok = chunk["status"] == STATUS_OK
    g = chunk["gidx"][ok]
    kinds, k1, k2, gidx = [], [], [], []
    if exact:
        kinds.append(np.full(len(g), EXACT_KIND, np.int16))
        k1.append(chunk["hash_hi"][ok])
        k2.append(chunk["hash_lo"][ok])
        gidx.append(g)
    if n_bands:
        bands = chunk["bands"][ok]
        kinds.append(np.tile(np.arange(n_bands, dtype=np.int16), len(g)))
        k1.append(bands.ravel())
        k2.append(np.zeros(len(g) * n_bands, np.uint64))
        gidx.append(np.repeat(g, n_bands))
    key1 = np.concatenate(k1)
    key2 = np.concatenate(k2)
    return {"part": ((key1 ^ key2) % np.uint64(parts)).astype(np.int64), "kind": np.concatenate(kinds),
            "k1": key1, "k2": key2, "gidx": np.concatenate(gidx)}


def _find_groups(batch: dict[str, np.ndarray], verify: bool) -> dict[str, np.ndarray]:
    """Per partition: exact-duplicate edges (smallest record -> member); the members of every
    shared band key (``v`` = -1), or without verification their bucket links."""
    kind, k1, k2, gidx = batch["kind"], batch["k1"], batch["k2"], batch["gidx"]
    order = np.lexsort((gidx, k2, k1, kind))
    kind, k1, k2, gidx = kind[order], k1[order], k2[order], gidx[order]
    starts, lengths = runs_of_equal(kind, k1, k2)
    at = np.repeat(starts, lengths) + _ranks(lengths)
    group = np.repeat(np.arange(len(starts)), lengths)
    exact_row = kind[at] == EXACT_KIND
    out_kind, out_key, out_u, out_v = [], [], [], []
    # Exact groups and unverified buckets: every member linked to the group's smallest record.
    linked = exact_row | (not verify)
    u, v = bucket_links(gidx[at[linked]], group[linked], None)
    out_kind.append(np.zeros(len(u), np.int16))
    out_key.append(np.zeros(len(u), np.uint64))
    out_u.append(u)
    out_v.append(v)
    if verify:
        members = at[~exact_row]
        out_kind.append(kind[members])
        out_key.append(k1[members])
        out_u.append(gidx[members])
        out_v.append(np.full(len(members), -1, np.int64))
    return {"kind": np.concatenate(out_kind), "key": np.concatenate(out_key), "u": np.concatenate(out_u),
            "v": np.concatenate(out_v)}


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., len - 1 for each run length, concatenated."""
    total = int(np.sum(lengths))
    if total == 0:
        return np.zeros(0, np.int64)
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(np.r_[0, lengths[:-1]]), lengths)


def _edges_of(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    linked = batch["v"] >= 0
    return {"u": batch["u"][linked], "v": batch["v"][linked]}


def _members_of(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    member = batch["v"] < 0
    return {"band": batch["kind"][member], "key": batch["key"][member], "gidx": batch["u"][member]}


# -- 2. verify ------------------------------------------------------------------------------------------


def _by_bucket(batch: dict[str, np.ndarray], parts: int) -> dict[str, np.ndarray]:
    return {**batch, "part": ((batch["key"] ^ batch["band"].astype(np.uint64)) % np.uint64(parts)).astype(np.int64)}


def _verify_buckets(batch: dict[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    """Per partition: the verified links of each bucket (``bucket_links``, all rounds)."""
    order = np.lexsort((batch["gidx"], batch["key"], batch["band"]))
    band, key, gidx, sigs = batch["band"][order], batch["key"][order], batch["gidx"][order], batch["sigs"][order]
    group = np.cumsum(np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1])]) if len(band) else band
    num_perm = sigs.shape[1]

    def similar(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.count_nonzero(sigs[a] == sigs[b], axis=1) / num_perm >= threshold

    # Positions in the sorted rows stand for the records: a bucket's first is its smallest.
    u, v = bucket_links(np.arange(len(gidx)), group, similar, MAX_ROUNDS)
    return {"u": gidx[u], "v": gidx[v]}


# -- 4. survivors -----------------------------------------------------------------------------------------


def _by_label(batch: dict[str, np.ndarray], parts: int) -> dict[str, np.ndarray]:
    return {**batch, "part": (batch["label"] % parts).astype(np.int64)}


def _choose_survivors(batch: dict[str, np.ndarray], rules: tuple[str, ...],
                      threshold: float | None = None) -> dict[str, np.ndarray]:
    """Per partition of whole groups: the keep rule's survivor of each (the groups split at it,
    ``stages.survivors``, with a ``threshold``), the others' reasons."""
    order = np.lexsort((batch["gidx"], batch["label"]))
    b = {k: v[order] for k, v in batch.items()}
    n = len(order)
    # Compact indices in global order, so "earliest record" ties break as in stages.decide.
    compact = Annotations(
        shard=np.zeros(n, np.int32), status=np.zeros(n, np.int8), hash_hi=b["hash_hi"], hash_lo=b["hash_lo"],
        score=b["score"], provenance=b["provenance"], uniform=np.zeros(n), length=b["length"],
        signatures=b.get("sigs"),
    )
    label, survivor = survivors(b["label"], compact, rules, threshold if n else None)
    dup = np.flatnonzero(survivor != np.arange(n))
    reason = duplicate_reasons(survivor, b["hash_hi"], b["hash_lo"], dup)
    _, sizes = np.unique(label, return_counts=True)
    size = sizes[sizes >= 2]  # one row a cluster (its size in ``gidx``)
    k = len(size)
    return {
        "kind": np.r_[np.full(len(dup), DECISION, np.int8), np.full(k, CLUSTER, np.int8)],
        "gidx": np.r_[b["gidx"][dup], size].astype(np.int64),
        "reason": np.r_[reason, np.zeros(k, np.int8)].astype(np.int8),
        "duplicate_of": np.r_[b["id"][survivor[dup]], np.full(k, "", object)].astype(object),
        "posterior": np.full(len(dup) + k, np.nan, np.float32),
        "score": np.r_[b["score"][dup], np.full(k, np.nan)].astype(np.float32),
        "provenance": np.r_[b["provenance"][dup], np.zeros(k, np.int8)].astype(np.int8),
    }


def _size_counts(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """How many clusters there are of each size, from the clusters' rows."""
    size, count = np.unique(batch["gidx"][batch["kind"] == CLUSTER], return_counts=True)
    return {"size": size, "count": count.astype(np.int64)}
