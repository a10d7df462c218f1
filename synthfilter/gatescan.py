"""The gate's pass over an export, in bounded memory: records are scored a batch at a time into
compact columns in temporary files (numbers, LSH band keys, MinHash signatures, ids / titles /
links), and never held; then the numbers are read back and the pipeline's own decide stage runs
over those columns, as ``SynthFilter.decide`` would over ``annotate``'s.

Records come from a ``RecordSource``: a list (``synthfilter.gate(records)``) or export files
read again whenever the records are needed once more (writing the approved subset).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from synthfilter.pipeline.stages import (
    REASONS, STATUS_MALFORMED, STATUS_OK, Annotations, Decisions, decide,
    record_uniforms,
)
from synthfilter.ratio import human_loss_excess
from synthfilter.records import is_missing

if TYPE_CHECKING:
    from synthfilter.api import SynthFilter
    from synthfilter.io.cms import CmsRecord, ExportInput, ReadOptions

EXCLUDED_CODE = len(REASONS)  # the reason code of items that are not gated
REASON_NAMES = (*REASONS, "excluded")
STRING_COLUMNS = ("id", "title", "link", "path", "source")
_NO_TEXT_SALT = np.uint64(xxhash.xxh3_64_intdigest(b"no-text:synthfilter.api"))  # as api.annotations_from_columns


# -- where the records come from -------------------------------------------------------------------


class RecordSource:
    """Records that can be read more than once, in the same order, with the same ids."""

    def __iter__(self) -> Iterator[CmsRecord]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> CmsRecord:
        if i < 0:
            i += len(self)
        for j, rec in enumerate(self):
            if j == i:
                return rec
        raise IndexError(i)

    def first_pass(self) -> Iterator[CmsRecord]:
        return iter(self)

    def set_ids(self, fixes: dict[int, str]) -> None:
        """Ids that ``make_ids_unique`` would have qualified, by record index."""


class ListSource(RecordSource):
    def __init__(self, records: list[CmsRecord]):
        self.records = records

    def __iter__(self) -> Iterator[CmsRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> CmsRecord:  # type: ignore[override]
        return self.records[i]

    def set_ids(self, fixes: dict[int, str]) -> None:
        for i, rid in fixes.items():
            self.records[i].id = rid


class ExportSource(RecordSource):
    """The records of export files, read from the files each time (``iter_exports``)."""

    def __init__(self, paths: Sequence[Any], opts: ReadOptions):
        self.paths = list(paths)
        self.opts = opts
        self.inputs: list[ExportInput] = []
        self.ignored: list[str] = []
        self.fixes: dict[int, str] = {}
        self._n: int | None = None

    def first_pass(self) -> Iterator[CmsRecord]:
        from synthfilter.io.cms import iter_exports

        self.inputs.clear()
        self.ignored.clear()
        n = 0
        for rec in iter_exports(self.paths, self.opts, self.inputs, self.ignored):
            n += 1
            yield rec
        self._n = n

    def __iter__(self) -> Iterator[CmsRecord]:
        from synthfilter.io.cms import iter_exports
        from synthfilter.io.shards import InputError

        n = 0
        for i, rec in enumerate(iter_exports(self.paths, self.opts)):
            if i in self.fixes:
                rec.id = self.fixes[i]
            n += 1
            yield rec
        if self._n is not None and n != self._n:
            raise InputError(", ".join(map(str, self.paths)), f"the export changed while it was gated ({self._n:,} "
                             f"records the first time, {n:,} now); gate it again")

    def __len__(self) -> int:
        if self._n is None:
            self._n = sum(1 for _ in self.first_pass())
        return self._n

    def set_ids(self, fixes: dict[int, str]) -> None:
        self.fixes = dict(fixes)


# -- compact columns -------------------------------------------------------------------------------


class _StringStore:
    """Per-record strings in a temporary file, one orjson line per batch of records (no pyarrow:
    its first array costs the process some 45 MB of memory for good)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: Any = None
        self.starts = [0]  # first record of each batch
        self.offsets = [0]  # byte offset of each batch's line

    def append(self, recs: Sequence[CmsRecord]) -> None:
        import orjson

        if self._file is None:
            self._file = open(self.path, "wb")
        line = orjson.dumps([[getattr(r, c) for c in STRING_COLUMNS] for r in recs]) + b"\n"
        self._file.write(line)
        self.starts.append(self.starts[-1] + len(recs))
        self.offsets.append(self.offsets[-1] + len(line))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _batch(self, f: Any, k: int) -> list[list[str | None]]:
        import orjson

        f.seek(self.offsets[k])
        return orjson.loads(f.read(self.offsets[k + 1] - self.offsets[k]))

    def batches(self, column: str) -> Iterator[list[Any]]:
        """The column's values, batch by batch (one batch in memory at a time)."""
        c = STRING_COLUMNS.index(column)
        if len(self.starts) == 1:
            return
        with open(self.path, "rb") as f:
            for k in range(len(self.starts) - 1):
                yield [row[c] for row in self._batch(f, k)]

    def rows(self, rows: np.ndarray) -> Iterator[list[str | None]]:
        """The strings of each of ``rows`` (sorted, unique), in that order, one batch read at a time."""
        if len(rows) and len(self.starts) > 1:
            which = np.searchsorted(self.starts, rows, side="right") - 1
            bounds = np.searchsorted(which, np.arange(len(self.starts)))
            with open(self.path, "rb") as f:
                for k in np.unique(which).tolist():
                    batch = self._batch(f, k)
                    for j in (rows[bounds[k]:bounds[k + 1]] - self.starts[k]).tolist():
                        yield batch[j]

    def take(self, rows: np.ndarray) -> dict[str, list[str | None]]:
        """The strings of ``rows`` (sorted, unique), column by column, in that order."""
        out: dict[str, list[str | None]] = {c: [] for c in STRING_COLUMNS}
        for values in self.rows(rows):
            for c, value in zip(STRING_COLUMNS, values):
                out[c].append(value)
        return out


class _ColumnFiles:
    """Per-record numbers appended batch by batch to temporary files, one file per column, and
    read back whole when the scan is over: per-batch arrays in lists would cost a header each,
    leave the heap fragmented, and hold every column twice while they are joined."""

    def __init__(self, tmp: Path, dtypes: dict[str, Any]):
        self.tmp = tmp
        self.dtypes = {k: np.dtype(v) for k, v in dtypes.items()}
        self._files: dict[str, Any] = {}

    def _path(self, name: str) -> Path:
        return self.tmp / f"column-{name}.bin"

    def append(self, name: str, values: Any) -> None:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = open(self._path(name), "wb")
        f.write(np.ascontiguousarray(values).astype(self.dtypes[name], copy=False).tobytes())

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def load(self, name: str) -> np.ndarray:
        if name not in self._files:
            return np.zeros(0, self.dtypes[name])
        return np.fromfile(self._path(name), dtype=self.dtypes[name])


class _BandColumns:
    """(records, bands) LSH band keys kept band by band in files: ``keys[:, j]`` reads band j
    alone (what the decide stage reads), so the whole matrix is never in memory."""

    ndim = 2
    dtype = np.dtype(np.uint64)

    def __init__(self, paths: list[Path], n: int):
        self.paths = paths
        self.shape = (n, len(paths))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None) and isinstance(key[1], (int, np.integer)):
            return np.fromfile(self.paths[int(key[1])], dtype=np.uint64, count=self.shape[0])
        whole = np.stack([np.fromfile(p, dtype=np.uint64, count=self.shape[0]) for p in self.paths], axis=1)
        return whole[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.stack([np.fromfile(p, dtype=np.uint64, count=self.shape[0]) for p in self.paths], axis=1)
        return whole if dtype is None else whole.astype(dtype)


class _SignatureRows:
    """(records, num_perm) MinHash signatures in a file, read row by row (what near-duplicate
    verification asks for): a memory map would bring into the process's resident memory every
    page the candidate rows touch, which is most of the file, and the file grows with the export."""

    ndim = 2
    dtype = np.dtype(np.uint32)

    def __init__(self, path: Path, n: int, num_perm: int):
        self.path = path
        self.shape = (n, num_perm)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        width = self.shape[1] * 4
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = b"".join([os.pread(fd, width, r * width) for r in unique.tolist()])
        finally:
            os.close(fd)
        return np.frombuffer(data, dtype=np.uint32).reshape(len(unique), self.shape[1])[inverse]


class RecordStrings:
    """Ids, titles, links, paths and sources of the records a result names (offending items
    and the records duplicates were kept in place of), final ids applied. They stay in an
    anonymous temporary file, one orjson list per record, and are read back a record at a time:
    a big export names hundreds of thousands of items, too many to hold as Python strings."""

    def __init__(self, rows: np.ndarray, values: Iterable[list[str | None]], fixes: dict[int, str]):
        import orjson

        self.rows = rows
        self.fixes = fixes
        self._file = tempfile.TemporaryFile(prefix="synthfilter-gate-strings-")
        ends = np.zeros(len(rows), dtype=np.int64)
        end = 0
        for k, row in enumerate(values):
            # Written at once: each bytes orjson returns holds 4 KB or more, whatever its length.
            line = orjson.dumps(row)
            self._file.write(line)
            end += len(line)
            ends[k] = end
        self._file.flush()
        self._ends = ends
        self._last: tuple[int, list[str | None]] = (-1, [])

    def _values(self, row: int) -> list[str | None]:
        if self._last[0] == row:  # an item asks for several strings of the same record
            return self._last[1]
        import orjson

        pos = int(np.searchsorted(self.rows, row))
        if pos >= len(self.rows) or self.rows[pos] != row:
            raise KeyError(row)
        start = int(self._ends[pos - 1]) if pos else 0
        values = orjson.loads(os.pread(self._file.fileno(), int(self._ends[pos]) - start, start))
        self._last = (row, values)
        return values

    def get(self, row: int, column: str) -> str | None:
        if column == "id" and row in self.fixes:
            return self.fixes[row]
        return self._values(row)[STRING_COLUMNS.index(column)]


@dataclass
class GateScan:
    """Everything the gate keeps of an export: per record (all, excluded ones too) and per
    gated record, as arrays; the strings of the records it will name."""

    n: int
    gated: np.ndarray  # int64: record index of each gated record
    excluded_kinds: Counter
    status: np.ndarray  # per gated record
    provenance: np.ndarray  # int8 codes per gated record (after the no-detector rule)
    labels: np.ndarray  # int8 provenance codes per gated record as the map gave them
    score: np.ndarray  # float32 per gated record
    language: np.ndarray | None  # uint8 codes into synthfilter.language.CODES per gated record; None: not identified
    decisions: Decisions
    report: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    fixes: dict[int, str] = field(default_factory=dict)
    store: Any = None  # _StringStore, until ``strings`` is built
    strings: RecordStrings | None = None
    provenance_tally: dict[str, Any] | None = None  # ProvenanceMapper.take_tally() with a provenance field
    human_loss: str | None = None  # why the target broke ratio.max_human_loss (the plan went on without it)

    # per record (all) ---------------------------------------------------------------------------
    def reason_codes(self) -> np.ndarray:
        out = np.full(self.n, EXCLUDED_CODE, dtype=np.int8)
        out[self.gated] = self.decisions.reason
        return out

    def position(self, i: int) -> int:
        """Where record ``i`` is among the gated records (its index into the arrays of a value
        per gated record), or -1 where it was not gated."""
        if len(self.gated) == self.n:
            return i
        p = int(np.searchsorted(self.gated, i))
        return p if p < len(self.gated) and self.gated[p] == i else -1

    def duplicate_row(self, i: int) -> int:
        """The record index of the one kept in place of record ``i``, else -1."""
        p = self.position(i)
        d = int(self.decisions.duplicate_of[p]) if p >= 0 else -1
        return int(self.gated[d]) if d >= 0 else -1

    def duplicate_rows(self, rows: np.ndarray) -> np.ndarray:
        """``duplicate_row`` of each of ``rows`` (gated records)."""
        dup = self.decisions.duplicate_of[np.searchsorted(self.gated, rows)]
        out = np.full(len(rows), -1, dtype=np.int64)
        has = dup >= 0
        out[has] = self.gated[dup[has]]
        return out

    def kept_rows(self) -> np.ndarray:
        """The record indices of the records duplicates were kept in place of (repeats included)."""
        dup = self.decisions.duplicate_of
        return self.gated[dup[dup >= 0]]

    def scores(self) -> np.ndarray:
        out = np.full(self.n, np.nan, dtype=np.float32)
        out[self.gated] = self.score
        return out

    def language_codes(self) -> np.ndarray | None:
        """Per record, its language code (into ``synthfilter.language.CODES``) where it was gated
        and has text, else -1; None when the config identifies no language."""
        if self.language is None:
            return None
        out = np.full(self.n, -1, dtype=np.int16)
        has_text = self.status != STATUS_MALFORMED
        out[self.gated[has_text]] = self.language[has_text]
        return out

    def provenance_codes(self) -> np.ndarray:
        """Per record, the provenance label as mapped (decide may have seen none: ``provenance``)."""
        out = np.zeros(self.n, dtype=np.int8)
        out[self.gated] = self.labels
        return out


def _chunks(records: Iterable[CmsRecord], size: int) -> Iterator[list[CmsRecord]]:
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def scan(source: RecordSource, sf: SynthFilter, prov_field: str | None, batch_size: int,
         no_estimate_message: Any, require_target: bool = True) -> tuple[GateScan, Path]:
    """Score every record of ``source`` (one pass), make ids unique, decide. Returns the scan
    and its temporary directory (the caller removes it once the strings it needs are taken).

    ``no_estimate_message(unknown_ok, known_any)`` returns the note for a detector-less run
    whose records are only partly labelled (and raises when that cannot go on), or None.
    ``require_target``: as ``stages.decide``'s.
    """
    tmp = Path(tempfile.mkdtemp(prefix="synthfilter-gate-"))
    try:
        return _scan(source, sf, prov_field, batch_size, no_estimate_message, tmp, require_target), tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _scan(source: RecordSource, sf: SynthFilter, prov_field: str | None, batch_size: int,
          no_estimate_message: Any, tmp: Path, require_target: bool = True) -> GateScan:
    t0 = time.perf_counter()
    cfg = sf.config
    near, verify = cfg.dedup.near, cfg.dedup.verify
    store = _StringStore(tmp / "strings.jsonl")
    columns = _ColumnFiles(tmp, {"status": np.int8, "hash_hi": np.uint64, "hash_lo": np.uint64, "length": np.int32,
                                 "score": np.float32, "provenance": np.int8, "id_hash": np.uint64, "gated": np.int64,
                                 "language": np.uint8})
    band_files: list[Any] = []
    band_paths: list[Path] = []
    sig_path = tmp / "signatures.u32"
    sig_file = open(sig_path, "wb") if near and verify else None
    excluded_kinds: Counter = Counter()
    n = n_gated = 0
    num_perm = cfg.dedup.num_perm
    try:
        for chunk in _chunks(source.first_pass(), batch_size):
            store.append(chunk)
            digest = xxhash.xxh3_64_intdigest
            columns.append("id_hash", np.fromiter((digest(str(r.id).encode("utf-8")) for r in chunk), np.uint64,
                                                  len(chunk)))
            gated = [j for j, r in enumerate(chunk) if r.excluded is None]
            for r in chunk:
                if r.excluded is not None:
                    excluded_kinds[(r.excluded or "").split(" (")[0]] += 1
            columns.append("gated", np.asarray(gated, dtype=np.int64) + n)
            n += len(chunk)
            if not gated:
                continue
            values = [chunk[j].text for j in gated]
            prov = None
            if prov_field:
                prov = [chunk[j].lookup(prov_field) for j in gated]
                prov = [None if is_missing(v) else v for v in prov]
            scored = sf._score_values(values, prov)
            if "language" in scored:
                columns.append("language", scored["language"])
            # As run: a record in a language --languages drops, or one that repeats itself under
            # --reject-repetitive, is set aside before dedup.
            aside = (scored["status"] == STATUS_OK) & (scored["set_aside"] != STATUS_OK)
            scored["status"][aside] = scored["set_aside"][aside]
            for k in ("status", "hash_hi", "hash_lo", "length", "score", "provenance"):
                columns.append(k, scored[k])
            if near:
                bands = scored["bands"]
                bad = np.flatnonzero(scored["status"] != STATUS_OK)
                if len(bad):
                    # Rows without text get band keys of their own so that they never match anything.
                    nb = bands.shape[1]
                    own = (bad + n_gated).astype(np.uint64)[:, None] * np.uint64(nb) + np.arange(nb, dtype=np.uint64)
                    bands[bad] = own ^ _NO_TEXT_SALT
                if not band_files:
                    band_paths = [tmp / f"band-{b:03d}.u64" for b in range(bands.shape[1])]
                    band_files = [open(p, "wb") for p in band_paths]
                for b, f in enumerate(band_files):
                    f.write(np.ascontiguousarray(bands[:, b]).tobytes())
                if sig_file is not None:
                    sig_file.write(np.ascontiguousarray(scored["signatures"], dtype=np.uint32).tobytes())
                    num_perm = scored["signatures"].shape[1]
            n_gated += len(gated)
    finally:
        store.close()
        columns.close()
        for f in band_files:
            f.close()
        if sig_file is not None:
            sig_file.close()

    status = columns.load("status")
    labels = columns.load("provenance")
    ok = status == STATUS_OK
    language = columns.load("language") if sf.scorer.uses_language else None
    provenance = labels
    messages = []
    note = no_estimate_message(ok & (labels == 0), bool((ok & (labels != 0)).any()))
    del ok
    if note is not None:
        messages.append(note)
        provenance = np.zeros_like(labels)  # the labels only steer which copy of a group is kept
    fixes = unique_ids(store, columns.load("id_hash"))
    uniform = np.zeros(n_gated, dtype=np.float64)
    if n_gated:
        gated_set = np.zeros(n, dtype=bool)
        gated_set[columns.load("gated")] = True
        pos = 0
        for k, ids in enumerate(store.batches("id")):
            lo = store.starts[k]
            rows = np.flatnonzero(gated_set[lo:lo + len(ids)])
            if len(rows):
                final = [fixes.get(lo + int(j), ids[j]) for j in rows.tolist()]
                uniform[pos:pos + len(rows)] = record_uniforms(cfg.seed, final)
                pos += len(rows)
        del gated_set
    bands_cols = _BandColumns(band_paths, n_gated) if near and band_paths else None
    if near and bands_cols is None:
        bands_cols = np.zeros((0, 0), dtype=np.uint64)
    sigs = None
    if near and verify:
        sigs = (_SignatureRows(sig_path, n_gated, num_perm) if n_gated
                else np.zeros((0, num_perm), dtype=np.uint32))
    score = columns.load("score")
    ann = Annotations(
        shard=np.zeros(n_gated, dtype=np.int32), status=status, hash_hi=columns.load("hash_hi"),
        hash_lo=columns.load("hash_lo"), score=score, provenance=provenance, uniform=uniform,
        length=columns.load("length"), bands=bands_cols, signatures=sigs, language=language,
    )
    del uniform
    card = sf.scorer.detector.card if sf.scorer.uses_detector else None
    # The target is the gate's own (from --max-synthetic) unless --target-ratio set it: with nothing
    # to downsample by, the synthetic rule says so (exit 1) and the approved subset is not downsampled.
    # A gate never refuses: ratio.max_human_loss is a rule that fails (exit 1), the reports and the
    # approved subset (downsampled to the target as planned) written all the same. So the plan is
    # made without the limit, and its human loss compared with it here.
    limit = cfg.ratio.max_human_loss
    decisions = decide(ann, replace(cfg, ratio=replace(cfg.ratio, max_human_loss=None)), card,
                       require_target=require_target)
    human_loss: str | None = None
    syn = decisions.synthetic or {}
    if limit is not None and (syn.get("estimated_human_loss") or 0.0) > limit + 1e-12:
        dropped = float(syn["estimated_human_dropped"])
        human_loss = human_loss_excess(syn["target_ratio"], dropped, dropped / syn["estimated_human_loss"], limit,
                                       "ratio.max_human_loss")
    del ann, sigs
    from synthfilter.pipeline.run import build_report

    meta: dict[str, Any] = {"records": n_gated, "size": 0, "malformed": 0}
    if prov_field:
        meta["provenance_tally"] = sf.scorer.provenance.take_tally()
    report = build_report(["export"], {"export": meta}, decisions, cfg, time.perf_counter() - t0, sf.scorer)
    report["input"]["bytes"] = None
    source.set_ids(fixes)
    # Read back only now: what decide needs is all that is in memory while it runs.
    return GateScan(n=n, gated=columns.load("gated"), excluded_kinds=excluded_kinds, status=status,
                    provenance=provenance, labels=labels, score=score, language=language, decisions=decisions,
                    report=report, messages=messages, fixes=fixes, store=store,
                    provenance_tally=meta.get("provenance_tally"), human_loss=human_loss)


def unique_ids(store: _StringStore, id_hash: np.ndarray) -> dict[int, str]:
    """``make_ids_unique`` without holding the ids: ids whose hash occurs more than once are read
    back, and those that really repeat are qualified with their file (``<file>:<id>``, ``#2``...)."""
    if len(id_hash) < 2:
        return {}
    values, counts = np.unique(id_hash, return_counts=True)
    repeated = values[counts > 1]
    if not len(repeated):
        return {}
    rows = np.flatnonzero(np.isin(id_hash, repeated))
    taken = store.take(rows)
    ids, paths, sources = taken["id"], taken["path"], taken["source"]
    counted = Counter(ids)
    seen: Counter[str] = Counter()
    fixes = {}
    for row, rid, path, src in zip(rows.tolist(), ids, paths, sources):
        if counted[rid] > 1:
            base = f"{path or src}:{rid}"
            seen[base] += 1
            fixes[row] = base if seen[base] == 1 else f"{base}#{seen[base]}"
    return fixes


def take_strings(gs: GateScan, rows: np.ndarray) -> RecordStrings:
    rows = np.unique(rows.astype(np.int64))
    return RecordStrings(rows, gs.store.rows(rows), gs.fixes)
