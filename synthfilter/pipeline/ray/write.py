"""The write stage on Ray Data: each shard's decisions saved next to its annotations by the
cluster, then the local engine's ``write_shard`` per shard; and the report's extras (score
histogram by decision, diversity sample) computed where the annotations are."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from synthfilter.config import Config
from synthfilter.pipeline.ray.score import forget_scorers, items_of, outcome, result_of
from synthfilter.pipeline.ray.session import cluster_cpus, collect, grouped
from synthfilter.pipeline.ray.annotations import AnnotationPart, FileAnnotations, read_overrides
from synthfilter.pipeline.ray.storage import ShardSource, Store, local_shard, shard_dir
from synthfilter.pipeline.run import Progress
from synthfilter.pipeline.stages import KEPT, REASONS, STATUS_OK, reason_of_status, set_aside_counts, write_shard


def save_overrides(work: Store, sources: Sequence[ShardSource], offsets: Sequence[int], rows: Any) -> np.ndarray:
    """Each shard's non-kept decisions (local row, reason, duplicate_of id, posterior) as
    ``overrides.arrow`` in its work folder, written by one task per shard (the write tasks
    read only their own). Returns the (shards, reasons) counts of those decisions."""
    folders = [shard_dir(s.shard) for s in sources]
    for folder in folders:  # a decide stage that was interrupted may have saved some already
        work.delete(f"{folder}/overrides.arrow")
    tagged = rows.select_columns(["gidx", "reason", "duplicate_of", "posterior"]).map_batches(
        _tag_shard, batch_format="numpy", batch_size=None, fn_kwargs={"offsets": np.asarray(offsets[:-1], np.int64)})
    got = collect(grouped(tagged, _save_shard, key="shard", work=work, folders=folders,
                          offsets=np.asarray(offsets, np.int64)))
    counts = np.zeros((len(sources), len(REASONS)), np.int64)
    if got:
        np.add.at(counts, got["shard"], got["counts"].reshape(-1, len(REASONS)))
    return counts


def _tag_shard(batch: dict[str, np.ndarray], offsets: np.ndarray) -> dict[str, np.ndarray]:
    return {**batch, "shard": np.searchsorted(offsets, batch["gidx"], side="right") - 1}


def _save_shard(batch: dict[str, np.ndarray], work: Store, folders: Sequence[str],
                offsets: np.ndarray) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    si = int(batch["shard"][0])
    order = np.argsort(batch["gidx"])
    table = pa.table({
        "row": pa.array(batch["gidx"][order] - offsets[si], type=pa.int64()),
        "reason": pa.array(batch["reason"][order], type=pa.int8()),
        "duplicate_of": pa.array(batch["duplicate_of"][order].tolist(), type=pa.string()),
        "posterior": pa.array(batch["posterior"][order], type=pa.float32()),
    })
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    work.write_bytes(f"{folders[si]}/overrides.arrow", sink.getvalue().to_pybytes())
    return {"shard": np.array([si]), "counts": np.bincount(batch["reason"].astype(np.int64), minlength=len(REASONS))[None]}


def per_shard_counts(decided: np.ndarray, metas: Sequence[dict[str, Any]]) -> np.ndarray:
    """(shards, reasons) record counts, from the saved decisions and the shards' malformed counts."""
    counts = decided.copy()
    for si, m in enumerate(metas):
        counts[si] += set_aside_counts(m)
        counts[si, KEPT] = int(m["records"]) - counts[si, 1:].sum()
    return counts


def shard_decisions_table(work: Store, folder: str) -> Any:
    """decisions.arrow of one shard (the local engine's layout), from its status and overrides."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with work.open_input(f"{folder}/ann.arrow") as f:
        status = ipc.open_file(f).read_all().column("status").to_numpy()
    n = len(status)
    reason = np.where(status == STATUS_OK, KEPT, reason_of_status(status)).astype(np.int8)
    duplicate_of: list[str | None] = [None] * n
    posterior = np.full(n, np.nan, dtype=np.float32)
    o = read_overrides(work, folder)
    if o is not None:
        rows = o.column("row").to_numpy()
        reason[rows] = o.column("reason").to_numpy()
        posterior[rows] = o.column("posterior").to_numpy()
        for r, d in zip(rows.tolist(), o.column("duplicate_of").to_pylist()):
            duplicate_of[r] = d
    return pa.table({
        "reason": pa.array(reason, type=pa.int8()),
        "duplicate_of": pa.array(duplicate_of, type=pa.string()),
        "posterior": pa.array(posterior, type=pa.float32()),
    })


def _write_ipc(path: Path, table: Any) -> None:
    import pyarrow.ipc as ipc

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with ipc.new_file(str(tmp), table.schema) as w:
        w.write_table(table)
    os.replace(tmp, path)


def write_shards(batch: dict[str, np.ndarray], cfg: Config, work_root: str, out_root: str) -> dict[str, np.ndarray]:
    """Ray Data task: ``write_shard`` for whole shards. A retried task rewrites the same files
    under temporary names and renames them into place, so no record is ever written twice."""
    forget_scorers()
    work, out = Store(work_root), Store(out_root)
    results = [outcome(lambda src: _write_one(src, cfg, work, out), pickle.loads(blob)) for blob in batch["source"]]
    return {"result": np.array(results, dtype=object)}


def _write_one(src: ShardSource, cfg: Config, work: Store, out: Store) -> dict[str, int]:
    """One shard: its decisions.arrow from the sparse decisions, then the local engine's write."""
    folder = shard_dir(src.shard)
    table = shard_decisions_table(work, folder)
    if work.local is not None and out.local is not None and src.uri is None:
        _write_ipc(work.local / folder / "decisions.arrow", table)
        counts = write_shard(src.shard, cfg, work.local, out.local)
    else:
        with tempfile.TemporaryDirectory(prefix="synthfilter-") as tmp:
            scratch = Path(tmp)
            work.download(f"{folder}/ann.arrow", scratch / "work" / folder / "ann.arrow")
            _write_ipc(scratch / "work" / folder / "decisions.arrow", table)
            with local_shard(src, scratch) as shard:
                counts = write_shard(shard, cfg, scratch / "work", scratch / "out")
            for sub in ("rejected", "kept"):  # kept last: with the marker, it says the shard is done
                f = scratch / "out" / sub / src.shard.rel
                if f.exists():
                    out.upload(f, f"{sub}/{src.shard.rel}")
            work.write_bytes(f"{folder}/written.json", json.dumps(counts).encode())
    return counts



# Write tasks per CPU of the cluster (each writes ~1/(this x CPUs) of the shards).
WRITE_TASKS_PER_CPU = 4


def write_all(sources: Sequence[ShardSource], cfg: Config, work: Store, out: Store,
               progress: Progress) -> dict[str, dict[str, int]]:
    written: dict[str, dict[str, int]] = {}
    todo = []
    for src in sources:
        folder = shard_dir(src.shard)
        if cfg.resume and work.exists(f"{folder}/written.json") and out.exists(f"kept/{src.shard.rel}"):
            written[src.shard.rel] = json.loads(work.read_bytes(f"{folder}/written.json"))
        else:
            todo.append(src)
    progress.stage("write", len(todo))
    if not todo:
        return written
    # A few tasks per CPU, each writing its shards in turn: a Ray Data task costs some 0.1 s to
    # schedule, about as much as writing a 10,000-record shard (issue 15: 100 shards, 8.2 s -> 5.3 s).
    blocks = WRITE_TASKS_PER_CPU * cluster_cpus()
    ds = items_of(todo, blocks).map_batches(write_shards, batch_size=None, fn_kwargs={
        "cfg": cfg, "work_root": work.root, "out_root": out.root,
    })
    for row in ds.iter_rows():
        rel, counts = result_of(row["result"])
        written[rel] = counts
        progress.shard_done(rel, counts["kept"] + counts["rejected"])
    return written


# -- report extras: diversity sample, score histogram ---------------------------------------------


class RunLengthArray:
    """A long 1-D array given as (value, repeat) runs; slices are built on demand, so a chart
    that reads a billion-record array in chunks never holds it whole."""

    def __init__(self, values: np.ndarray, repeats: np.ndarray, dtype: Any):
        keep = repeats > 0
        self.values = np.asarray(values[keep], dtype=dtype)
        self.ends = np.cumsum(repeats[keep])
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, _ = key.indices(len(self))
        first = np.searchsorted(self.ends, lo, side="right")
        last = np.searchsorted(self.ends, max(hi - 1, lo), side="right")
        starts = np.r_[0, self.ends[:-1]]
        reps = np.minimum(self.ends[first:last + 1], hi) - np.maximum(starts[first:last + 1], lo)
        return np.repeat(self.values[first:last + 1], np.maximum(reps, 0)).astype(self.dtype)

    def max(self) -> Any:
        return self.values.max()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[0:len(self)].astype(dtype or self.dtype)


def _score_counts_by_reason(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from synthfilter.report.charts import score_counts

    return {"counts": score_counts(chunk["score"], chunk["reason"], len(REASONS))[None]}


def score_histogram_arrays(source: FileAnnotations) -> tuple[Any, Any]:
    """(scores, reasons) for ``render_run_report``: the per-reason score histogram, computed on
    the workers (decisions read from the saved overrides), as run-length arrays that give the
    chart the same counts."""
    from synthfilter.report.charts import score_counts

    got = collect(source.map_chunks(_score_counts_by_reason, ["status", "score", "reason"]))
    bins = score_counts(np.zeros(0), np.zeros(0, np.int8), len(REASONS)).shape[1]
    counts = got["counts"].sum(axis=0) if got else np.zeros((len(REASONS), bins), np.int64)
    centres = (np.arange(bins) + 0.5) / bins
    values = np.tile(centres, len(REASONS))
    codes = np.repeat(np.arange(len(REASONS)), bins)
    reps = counts.ravel()
    return RunLengthArray(values, reps, np.float32), RunLengthArray(codes, reps, np.int8)


def _sample_rows(batch: dict[str, np.ndarray], work: Store) -> Iterator[dict[str, np.ndarray]]:
    import pyarrow.ipc as ipc

    for blob in batch["part"]:
        if not blob:
            continue
        part: AnnotationPart = pickle.loads(blob)
        if not work.exists(f"{part.folder}/sample.arrow"):
            continue
        with work.open_input(f"{part.folder}/sample.arrow") as f:
            t = ipc.open_file(f).read_all()
        if t.num_rows:
            yield {"uniform": t.column("uniform").to_numpy(), "gidx": t.column("index").to_numpy() + part.offset,
                   "text": np.asarray(t.column("text").to_pylist(), dtype=object),
                   "group": np.asarray(t.column("group").to_pylist(), dtype=object)}


def diversity_on_ray(source: FileAnnotations, cfg: Config) -> dict[str, Any]:
    """``run.diversity_report`` with the corpus-wide bottom-k sample chosen by a Ray sort
    (the k records with the smallest uniforms over all shards' samples)."""
    import ray

    from synthfilter.diversity import diversity_section

    k = cfg.report.sample_size
    items = [{"part": pickle.dumps(p)} for p in source.parts] or [{"part": b""}]
    samples = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _sample_rows, batch_size=1, fn_kwargs={"work": source.work})
    got = collect(samples.sort(["uniform", "gidx"]).limit(k))
    if not got:
        return diversity_section([], [], [], [], seed=cfg.seed)
    order = np.lexsort((got["gidx"], got["uniform"]))[:k]
    g = got["gidx"][order]
    texts = got["text"][order].tolist()
    groups = got["group"][order].tolist()
    with_sigs = cfg.dedup.near and any(p.num_perm for p in source.parts)
    columns = ["reason"] + (["sigs"] if with_sigs else [])
    found = collect(source.lookup(ray.data.from_numpy(np.sort(g)).rename_columns({"data": "gidx"}), columns))
    at = np.searchsorted(found["gidx"][np.argsort(found["gidx"])], g)
    by_g = {c: found[c][np.argsort(found["gidx"])][at] for c in columns}
    kept = by_g["reason"] == KEPT
    sigs = by_g["sigs"] if with_sigs else None
    return diversity_section(
        texts, [t for t, keep in zip(texts, kept) if keep], groups, [x for x, keep in zip(groups, kept) if keep],
        before_sigs=sigs, after_sigs=None if sigs is None else sigs[kept], seed=cfg.seed,
    )
