"""The score stage's annotation files as Ray datasets: read back in chunks by one task per shard,
and looked up by global record index."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from synthfilter.pipeline.ray.storage import Store
from synthfilter.pipeline.stages import KEPT, STATUS_OK, reason_of_status

CHUNK_ROWS = 65_536


# "language": only in the annotations of a run that identifies languages (cfg.identifies_language).
ANN_TABLE_COLUMNS = ("id", "status", "hash_hi", "hash_lo", "score", "provenance", "uniform", "length", "language")


@dataclass(frozen=True)
class AnnotationPart:
    """One shard's annotation files: rows ``offset .. offset + n`` of the global order."""

    folder: str
    offset: int
    n: int
    bands: int
    num_perm: int


class FileAnnotations:
    """The decide stage's input on the engine's work files: one Ray task per shard reads its
    annotations in chunks (only the columns a pass needs), so no pass holds a whole corpus.

    Columns: those of ``ann.arrow``, ``bands`` and ``sigs`` (matrices), and ``reason`` (the
    record's decision, once the decide stage has saved the shard's ``overrides.arrow``).
    """

    def __init__(self, work: Store, parts: Sequence[AnnotationPart]):
        self.work = work
        self.parts = [p for p in parts if p.n > 0]
        self.total = sum(p.n for p in parts)

    def map_chunks(self, fn: Callable[..., dict[str, np.ndarray] | None], columns: Sequence[str],
                   **fn_kwargs: Any) -> Any:
        """A dataset of ``fn(chunk, **fn_kwargs)`` over every chunk of annotations."""
        import ray

        items = [{"part": pickle.dumps(p)} for p in self.parts] or [{"part": b""}]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        return ds.map_batches(_map_file_chunks, batch_size=1, fn_kwargs={
            "work": self.work, "columns": tuple(columns), "fn": fn, "fn_kwargs": fn_kwargs,
        })

    def lookup(self, requests: Any, columns: Sequence[str]) -> Any:
        """``requests`` (a dataset with ``gidx``) with the asked-for columns of each record:
        rows go to the task of their shard, which reads only the chunks they fall in."""
        from synthfilter.pipeline.ray.session import grouped

        offsets = np.array([p.offset for p in self.parts], np.int64)
        tagged = requests.map_batches(_tag_part, batch_format="numpy", batch_size=None, fn_kwargs={"offsets": offsets})
        return grouped(tagged, _lookup_part, key="shard", work=self.work, parts=self.parts, columns=tuple(columns))


def _tag_part(batch: dict[str, np.ndarray], offsets: np.ndarray) -> dict[str, np.ndarray]:
    return {**batch, "shard": np.searchsorted(offsets, batch["gidx"], side="right") - 1}


def _lookup_part(batch: dict[str, np.ndarray], work: Store, parts: Sequence[AnnotationPart],
                 columns: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    part = parts[int(batch["shard"][0])]
    requests = {k: v for k, v in batch.items() if k != "shard"}
    order = np.argsort(requests["gidx"], kind="stable")
    requests = {k: v[order] for k, v in requests.items()}
    found = [attach(requests, chunk, columns)
             for chunk in read_chunks(work, part, columns, only=np.unique(requests["gidx"]))]
    found = [f for f in found if f is not None]
    if not found:
        return None
    return {k: np.concatenate([f[k] for f in found]) for k in found[0]}


def positions_in(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each of ``values`` is in ``sorted_keys`` (ascending), -1 where it is not (int64)."""
    at = np.full(len(values), -1, dtype=np.int64)
    if len(sorted_keys) and len(values):
        pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
        hit = sorted_keys[pos] == values
        at[hit] = pos[hit]
    return at


def attach(requests: dict[str, np.ndarray], chunk: dict[str, np.ndarray],
           columns: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The rows of ``requests`` (sorted by ``gidx``; a record may be asked for more than once)
    whose record is in ``chunk``, with the chunk's ``columns`` of that record added."""
    g = chunk["gidx"]
    if not len(g) or not len(requests["gidx"]):
        return None
    order = np.argsort(g, kind="stable")
    pos = positions_in(g[order], requests["gidx"])
    hit = np.flatnonzero(pos >= 0)
    if not len(hit):
        return None
    at = order[pos[hit]]
    out = {k: v[hit] for k, v in requests.items()}
    for c in columns:
        out[c] = chunk[c][at]
    return out


def _map_file_chunks(batch: dict[str, np.ndarray], work: Store, columns: tuple[str, ...],
                     fn: Callable[..., Any], fn_kwargs: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    for blob in batch["part"]:
        if not blob:
            continue
        for chunk in read_chunks(work, pickle.loads(blob), columns):
            out = fn(chunk, **fn_kwargs)
            if out is not None and len(next(iter(out.values()))):
                yield out


def read_overrides(work: Store, folder: str) -> Any:
    """A shard's non-kept decisions (row, reason, duplicate_of, posterior), or None."""
    import pyarrow.ipc as ipc

    if not work.exists(f"{folder}/overrides.arrow"):
        return None
    with work.open_input(f"{folder}/overrides.arrow") as f:
        return ipc.open_file(f).read_all()


def read_chunks(work: Store, part: AnnotationPart, columns: Sequence[str], chunk_rows: int | None = None,
                only: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of one shard's annotations: ``gidx`` (global index) plus the asked-for columns;
    with ``only`` (sorted global indices), just the chunks that hold one of them."""
    import pyarrow.ipc as ipc

    chunk_rows = chunk_rows or CHUNK_ROWS
    table_cols = [c for c in columns if c in ANN_TABLE_COLUMNS]
    if "reason" in columns and "status" not in table_cols:
        table_cols.append("status")
    table = None
    if table_cols:
        with work.open_input(f"{part.folder}/ann.arrow") as f:
            table = ipc.open_file(f).read_all().select(table_cols)
    overrides = read_overrides(work, part.folder) if "reason" in columns else None
    o_rows = overrides.column("row").to_numpy() if overrides is not None else np.zeros(0, np.int64)
    o_reason = overrides.column("reason").to_numpy() if overrides is not None else np.zeros(0, np.int8)
    matrices = {name: (fname, width, dtype) for name, fname, width, dtype in (
        ("bands", "bands.u64", part.bands, np.uint64), ("sigs", "sigs.u32", part.num_perm, np.uint32),
    ) if name in columns}
    handles = {name: work.open_input(f"{part.folder}/{fname}") for name, (fname, _, _) in matrices.items()}
    try:
        for lo in range(0, part.n, chunk_rows):
            hi = min(part.n, lo + chunk_rows)
            if only is not None and np.searchsorted(only, part.offset + lo) == np.searchsorted(only, part.offset + hi):
                continue
            chunk: dict[str, np.ndarray] = {"gidx": np.arange(part.offset + lo, part.offset + hi, dtype=np.int64)}
            if table is not None:
                sl = table.slice(lo, hi - lo)
                for c in table_cols:
                    col = sl.column(c)
                    chunk[c] = np.asarray(col.to_pylist(), dtype=object) if c == "id" else col.to_numpy()
            if "reason" in columns:
                reason = np.where(chunk["status"] == STATUS_OK, KEPT, reason_of_status(chunk["status"])).astype(np.int8)
                a, b = np.searchsorted(o_rows, [lo, hi])
                reason[o_rows[a:b] - lo] = o_reason[a:b]
                chunk["reason"] = reason
            for name, (_, width, dtype) in matrices.items():
                itemsize = np.dtype(dtype).itemsize
                raw = handles[name].read_at((hi - lo) * width * itemsize, lo * width * itemsize)
                chunk[name] = np.frombuffer(raw, dtype=dtype).reshape(hi - lo, width)
            yield chunk
    finally:
        for h in handles.values():
            h.close()
