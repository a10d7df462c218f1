"""The score -> decide -> write stages as functions over batches, shards and arrays.

``Scorer.score_texts`` is pure per batch (used by the local engine, ``datasets.map`` and Ray).
``decide`` is pure over the concatenated annotations (ids, hashes, band keys, scores, labels;
never texts). ``score_shard`` and ``write_shard`` put file I/O around them for the engines.
"""

from __future__ import annotations

import base64
import json
import os
import stat as stat_module
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import xxhash

from synthfilter.config import Config, ConfigError
from synthfilter.io.shards import (
    AtomicJsonlWriter,
    AtomicParquetWriter,
    InputError,
    RecordBatch,
    Shard,
    ShardReader,
    atomic_write_bytes,
    dump_json_line,
    parse_json_line,
    tmp_path_for,
)
from synthfilter.records import FieldSpec, fallback_id, get_path, group_label
from synthfilter.text.normalize import normalize_for_dedup

REASONS = ("kept", "malformed", "exact_duplicate", "near_duplicate", "synthetic_downsampled", "language",
           "repetitive")
KEPT, MALFORMED, EXACT_DUP, NEAR_DUP, DOWNSAMPLED, LANGUAGE, REPETITIVE = range(7)
# A record's status after the score stage: usable, malformed, in a language --languages drops, or
# repeating itself under --reject-repetitive (never a duplicate's survivor, never in the estimate:
# like a malformed record, with its reason).
STATUS_OK, STATUS_MALFORMED, STATUS_LANGUAGE, STATUS_REPETITIVE = 0, 1, 2, 3
# The reason of each status, and the score stage's per-shard count of the records set aside.
_REASON_OF_STATUS = np.array([KEPT, MALFORMED, LANGUAGE, REPETITIVE], dtype=np.int8)
SET_ASIDE_COUNTS = {STATUS_LANGUAGE: "language_rejected", STATUS_REPETITIVE: "repetitive_rejected"}
PROVENANCE_NAMES = ("unknown", "human", "machine")


class ConservationError(RuntimeError):
    """Records written != records read for some shard: a bug, never silently accepted."""


# -- score ------------------------------------------------------------------------------------


# Mixed into the band keys of texts that normalise to nothing (``Scorer.score_texts``).
_EMPTY_BAND_SALT = np.uint64(xxhash.xxh3_64_intdigest(b"empty-normalised-text:synthfilter"))

class Scorer:
    """Per-batch scoring: exact hash, MinHash band keys, detector score, provenance label.

    Picklable; the MinHasher and the detector are created lazily once per process.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._hasher: Any = None
        self._detector: Any = None
        self._provenance: Any = None
        self._language: Any = None
        self._bands: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cfg"])  # type: ignore[misc]

    # lazily built parts
    @property
    def hasher(self) -> Any:
        if self._hasher is None:
            from synthfilter.dedup.minhash import MinHasher

            d = self.cfg.dedup
            self._hasher = MinHasher(num_perm=d.num_perm, seed=d.seed, ngram=d.ngram, char_ngram=d.char_ngram)
        return self._hasher

    @property
    def bands(self) -> tuple[int, int]:
        if self._bands is None:
            from synthfilter.dedup.lsh import optimal_bands

            d = self.cfg.dedup
            self._bands = optimal_bands(d.threshold, d.num_perm, verify=d.verify)
        return self._bands

    @property
    def detector(self) -> Any:
        if self._detector is None:
            from synthfilter.detect.model import get_detector

            self._detector = get_detector(self.cfg.detector.model)
        return self._detector

    @property
    def provenance(self) -> Any:
        if self._provenance is None:
            from synthfilter.provenance import ProvenanceMapper

            self._provenance = ProvenanceMapper(self.cfg.ratio.provenance_map)
        return self._provenance

    @property
    def language(self) -> Any:
        if self._language is None:
            from synthfilter.language import LanguageIdentifier

            lang = self.cfg.language
            self._language = LanguageIdentifier(sample_chars=lang.sample_chars, min_confidence=lang.min_confidence)
        return self._language

    @property
    def uses_language(self) -> bool:
        return self.cfg.identifies_language

    @property
    def uses_near(self) -> bool:
        return self.cfg.dedup.near

    @property
    def uses_detector(self) -> bool:
        return self.cfg.detector.enabled

    def dedup_settings(self) -> dict[str, Any] | None:
        if not self.uses_near:
            return None
        b, r = self.bands
        return {**self.hasher.settings(), "threshold": self.cfg.dedup.threshold, "bands": b, "rows": r}

    def score_texts(self, texts: Sequence[str], provenance_values: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
        """Annotate a batch of texts. Pure: same texts + config => same arrays."""
        n = len(texts)
        normalized = [normalize_for_dedup(t) for t in texts]
        # The 128-bit digests in their canonical (big-endian) form, split into two uint64 columns.
        digest = xxhash.xxh3_128_digest
        # A text that normalises to nothing (punctuation, symbols the form drops) is hashed as it
        # stands, behind a NUL no normalised text holds: "!!!" is a copy of "!!!" only.
        empty = [i for i, t in enumerate(normalized) if not t]
        keyed = normalized if not empty else [t or "\x00" + raw for t, raw in zip(normalized, texts)]
        hashes = np.frombuffer(b"".join([digest(t.encode("utf-8", "surrogatepass")) for t in keyed]),
                               dtype=">u8").reshape(n, 2)
        out: dict[str, np.ndarray] = {
            "hash_hi": hashes[:, 0].astype(np.uint64),
            "hash_lo": hashes[:, 1].astype(np.uint64),
            "length": np.fromiter((len(t) for t in texts), dtype=np.int32, count=n),
        }
        rep = self.cfg.repetition
        # With the repetition rule, one tokenisation for it and the MinHash shingles (without it,
        # MinHash tokenises on its own: 10 % faster than going through the token table).
        tokens = None
        if n and rep.reject:
            from synthfilter.text.shingles import DEFAULT_SPACELESS_SHARE, token_hashes_batch

            tokens = token_hashes_batch(normalized, self.hasher.spaceless_share if self.uses_near
                                        else DEFAULT_SPACELESS_SHARE)
        if self.uses_near:
            from synthfilter.dedup.lsh import band_keys

            if not n:
                sigs = np.zeros((0, self.cfg.dedup.num_perm), np.uint32)
            else:
                sigs = (self.hasher.signatures_from_tokens(tokens) if tokens is not None
                        else self.hasher.signatures(normalized))
            b, r = self.bands
            out["signatures"] = sigs
            out["bands"] = band_keys(sigs, b, r) if n else np.zeros((0, b), np.uint64)
            if empty:
                # No shingles, so one signature for all of them: their band keys come from their
                # own hash instead, and only their exact copies share a bucket with them.
                rows = np.asarray(empty)
                out["bands"][rows] = (out["hash_hi"][rows, None] ^ _EMPTY_BAND_SALT
                                      ^ np.arange(b, dtype=np.uint64)[None, :])
        to_score = np.ones(n, dtype=bool)
        # The status of each text: STATUS_OK, or why the score stage sets it aside.
        out["status"] = np.full(n, STATUS_OK, dtype=np.int8)
        if self.uses_language:
            out["language"], out["language_confidence"] = self.language.identify(texts)
            roles = language_roles_of(out["language"], self.cfg)
            out["status"][~roles.allowed] = STATUS_LANGUAGE
            to_score = roles.scored & roles.allowed
        if rep.reject and n:
            from synthfilter.diversity import repeating_from_tokens

            loops = repeating_from_tokens(tokens, rep.min_distinct, rep.min_trigrams)
            # Scored all the same: the score a looping record got is worth seeing in rejected/.
            out["status"][loops & (out["status"] == STATUS_OK)] = STATUS_REPETITIVE
        out["score"] = np.full(n, np.nan, dtype=np.float32)
        if self.uses_detector and to_score.any():
            rows = np.flatnonzero(to_score)
            picked = list(texts) if len(rows) == n else [texts[i] for i in rows.tolist()]
            out["score"][rows] = np.asarray(self.detector.predict_proba(picked), dtype=np.float32)
        if provenance_values is not None and self.cfg.ratio.provenance_field:
            out["provenance"] = np.fromiter((self.provenance.label(v) for v in provenance_values), dtype=np.int8, count=n)
        else:
            out["provenance"] = np.zeros(n, dtype=np.int8)
        return out


def language_roles_of(codes: np.ndarray, cfg: Config) -> Any:
    """The language rules of ``synthfilter.language.language_roles`` under this config."""
    from synthfilter.language import language_roles

    return language_roles(codes, cfg.detector.languages, cfg.language.keep or None)


def record_uniforms(seed: int, ids: Sequence[str]) -> np.ndarray:
    """A stable number in [0, 1) per (seed, record id): drives every random choice."""
    from synthfilter.ratio import record_uniform

    return np.asarray(record_uniform(seed, ids), dtype=np.float64)


# -- per-shard work files -----------------------------------------------------------------------


def shard_key(shard: Shard) -> str:
    return xxhash.xxh3_64_hexdigest(shard.rel.encode("utf-8"))


@dataclass
class WorkPaths:
    """Where one shard's annotations, decisions and markers live under ``OUT/_synthfilter``."""

    root: Path

    @classmethod
    def for_shard(cls, work: Path, shard: Shard) -> "WorkPaths":
        return cls(work / "shards" / shard_key(shard))

    @property
    def meta(self) -> Path:
        return self.root / "score.json"

    @property
    def ann(self) -> Path:
        return self.root / "ann.arrow"

    @property
    def bands(self) -> Path:
        return self.root / "bands.u64"

    @property
    def sigs(self) -> Path:
        return self.root / "sigs.u32"

    @property
    def decisions(self) -> Path:
        return self.root / "decisions.arrow"

    @property
    def written(self) -> Path:
        return self.root / "written.json"

    @property
    def sample(self) -> Path:
        return self.root / "sample.arrow"


class SampleKeeper:
    """The ``k`` records with the smallest per-record hash-uniform, with their texts: a
    deterministic, fixed-size sample (bottom-k) whatever the shard order or worker count."""

    def __init__(self, k: int):
        self.k = k
        self._heap: list[tuple[float, int, str, str]] = []  # (-uniform, index, text, group)

    def offer(self, uniform: np.ndarray, index: Sequence[int], texts: Sequence[str], groups: Sequence[str]) -> None:
        import heapq

        heap = self._heap
        if len(heap) >= self.k:
            # Only records below the current k-th smallest can enter (the bound only falls below).
            candidates = np.flatnonzero(uniform < -heap[0][0]).tolist()
            uniform, index = uniform[candidates], [index[j] for j in candidates]
            texts, groups = [texts[j] for j in candidates], [groups[j] for j in candidates]
        for u, i, t, g in zip(uniform.tolist(), index, texts, groups):
            if len(heap) < self.k:
                heapq.heappush(heap, (-u, i, t, g))
            elif -u > heap[0][0]:
                heapq.heapreplace(heap, (-u, i, t, g))

    def table(self) -> Any:
        import pyarrow as pa

        rows = sorted(self._heap, key=lambda r: (-r[0], r[1]))
        return pa.table({
            "index": pa.array([r[1] for r in rows], type=pa.int64()),
            "uniform": pa.array([-r[0] for r in rows], type=pa.float64()),
            "text": pa.array([r[2] for r in rows], type=pa.string()),
            "group": pa.array([r[3] for r in rows], type=pa.string()),
        })


class _ReaderHolder:
    """A shard's record batches, as the reader gives them. Under ``--on-error quarantine`` the
    reader recovers what is readable around a break (truncated or corrupt compression, an
    unreadable Parquet row group: one malformed record per break), and any other whole-file
    problem becomes one more malformed record, after the last one read."""

    def __init__(self, shard: Shard, cfg: Config, parse: bool = True, raw: bool = True):
        self.reader = ShardReader(shard, max_line_bytes=cfg.max_line_bytes, batch_rows=cfg.batch_size,
                                  recover=cfg.on_error == "quarantine",
                                  fields=(cfg.text_field, cfg.id_field or "id", cfg.ratio.provenance_field))
        self.cfg = cfg
        self.parse = parse
        self.raw = raw

    def __iter__(self) -> Iterator[RecordBatch]:
        next_index, last_line = 0, 0
        try:
            for batch in self.reader.batches(self.parse, self.raw):
                if batch.lines:
                    next_index, last_line = batch.start + len(batch), batch.lines[-1]
                yield batch
        except InputError as e:
            if self.cfg.on_error == "fail":
                raise
            tail = RecordBatch(next_index)
            tail.append(e.line or last_line + 1, None, None, e.message)
            yield tail


def input_stamp(path: Path) -> dict[str, int]:
    """Size and modification time, by which a resumed run knows its input has not changed.

    A named pipe (or another non-regular file) has neither: every write to it moves its mtime,
    and what it will serve next cannot be known without reading it, so it stamps as zeros."""
    st = path.stat()
    if not stat_module.S_ISREG(st.st_mode):
        return {"size": 0, "mtime_ns": 0}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def score_shard(shard: Shard, cfg: Config, work: Path, scorer: Scorer | None = None) -> dict[str, Any]:
    """Read one shard, score it in batches, write its annotation files atomically.

    Returns the shard's score summary (also saved as ``score.json``).
    """
    import pyarrow as pa
    import pyarrow.ipc as ipc

    scorer = scorer or Scorer(cfg)
    paths = WorkPaths.for_shard(work, shard)
    paths.root.mkdir(parents=True, exist_ok=True)
    spec = FieldSpec(cfg.text_field, cfg.id_field, cfg.ratio.provenance_field)
    holder = _ReaderHolder(shard, cfg, raw=False)

    cols: dict[str, list[Any]] = {k: [] for k in ("id", "line", "status", "error")}
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("hash_hi", "hash_lo", "length", "score", "provenance", "uniform",
                                                           "language", "language_confidence")}
    sampler = SampleKeeper(cfg.report.sample_size) if cfg.report.diversity else None
    group_field = cfg.report.group_by
    band_tmp = tmp_path_for(paths.bands)
    sig_tmp = tmp_path_for(paths.sigs)
    band_f = open(band_tmp, "wb") if scorer.uses_near else None
    sig_f = open(sig_tmp, "wb") if scorer.uses_near else None
    num_perm = cfg.dedup.num_perm
    n_bands = scorer.bands[0] if scorer.uses_near else 0

    batch_texts: list[str] = []
    batch_prov: list[Any] = []
    batch_pos: list[int] = []  # position in cols of each text in the batch
    batch_groups: list[str] = []
    malformed = 0
    set_aside = dict.fromkeys(SET_ASIDE_COUNTS.values(), 0)
    # Records before this index are flushed. A counter, not an attribute of ``flush``: a function
    # that refers to itself is a reference cycle, which kept each shard's columns alive until the
    # cyclic collector ran (about 1 KB a record across the shards of an in-process run).
    flushed = 0

    def flush() -> None:
        nonlocal flushed
        n_total = len(cols["id"])
        ann = scorer.score_texts(batch_texts, batch_prov)
        # Fill per-record arrays for this stretch of records (malformed rows get neutral values).
        start = flushed
        count = n_total - start
        pos = np.asarray(batch_pos, dtype=np.int64) - start
        for name, dtype, fill in (
            ("hash_hi", np.uint64, 0), ("hash_lo", np.uint64, 0), ("length", np.int32, 0),
            ("score", np.float32, np.nan), ("provenance", np.int8, 0),
        ):
            a = np.full(count, fill, dtype=dtype)
            a[pos] = ann[name]
            arrays[name].append(a)
        if "language" in ann:
            for name, dtype, fill in (("language", np.uint8, 0), ("language_confidence", np.float32, np.nan)):
                a = np.full(count, fill, dtype=dtype)
                a[pos] = ann[name]
                arrays[name].append(a)
        aside = np.flatnonzero(ann["status"] != STATUS_OK)
        dropped = pos[aside]
        for j, st in zip(dropped.tolist(), ann["status"][aside].tolist()):
            cols["status"][start + j] = st
            set_aside[SET_ASIDE_COUNTS[st]] += 1
        uniform = record_uniforms(cfg.seed, cols["id"][start:n_total])
        arrays["uniform"].append(uniform)
        if sampler is not None:
            sampler.offer(uniform[pos], batch_pos, batch_texts, batch_groups or [shard.rel] * len(batch_pos))
        if band_f is not None and sig_f is not None:
            # Rows without text get band keys of their own so that they never match anything.
            b = np.arange(start, start + count, dtype=np.uint64)[:, None] * np.uint64(n_bands) + np.arange(n_bands, dtype=np.uint64)
            b ^= np.uint64(xxhash.xxh3_64_intdigest(f"no-text:{shard.rel}".encode()))
            s = np.full((count, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
            own = b[dropped]
            b[pos] = ann["bands"]
            s[pos] = ann["signatures"]
            b[dropped] = own  # records the score stage sets aside are nobody's duplicate
            band_f.write(b.tobytes())
            sig_f.write(s.tobytes())
        batch_texts.clear()
        batch_prov.clear()
        batch_pos.clear()
        batch_groups.clear()
        flushed = n_total

    if cfg.ratio.provenance_field:
        scorer.provenance.take_tally()  # count this shard's values only
    fail = cfg.on_error == "fail"
    rel = shard.rel
    extract, record_id = spec.extract, spec.record_id
    ids, errors, statuses = cols["id"], cols["error"], cols["status"]
    try:
        for batch in holder:
            for line, obj, error in zip(batch.lines, batch.objs, batch.errors):
                if error is None:
                    rid, text, prov, error = extract(obj, rel, line)
                else:
                    rid = record_id(obj, rel, line) if obj is not None else fallback_id(rel, line)
                if error is None:
                    batch_pos.append(len(ids))
                    batch_texts.append(text)  # type: ignore[arg-type]
                    batch_prov.append(prov)
                    if group_field is not None:
                        g = get_path(obj, group_field)
                        batch_groups.append(group_label(g))
                    statuses.append(STATUS_OK)
                else:
                    if fail:
                        raise InputError(shard.path, f"{error} (use --on-error quarantine to set bad records aside)", line)
                    malformed += 1
                    statuses.append(STATUS_MALFORMED)
                ids.append(rid)
                errors.append(error)
            cols["line"].extend(batch.lines)
            if len(ids) - flushed >= cfg.batch_size:
                flush()
        if len(ids) > flushed:
            flush()
    finally:
        for f in (band_f, sig_f):
            if f is not None:
                f.close()

    reader = holder.reader
    n = len(cols["id"])
    if n == 0 and cfg.on_error == "fail":
        raise InputError(shard.path, "empty file: no records (remove it, or use --on-error quarantine to note it and go on)")

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(arrays[name]) if arrays[name] else np.zeros(0, dtype=dtype)

    table = pa.table({
        "id": pa.array(cols["id"], type=pa.string()),
        "line": pa.array(cols["line"], type=pa.int64()),
        "status": pa.array(cols["status"], type=pa.int8()),
        "error": pa.array(cols["error"], type=pa.string()),
        "hash_hi": cat("hash_hi", np.uint64),
        "hash_lo": cat("hash_lo", np.uint64),
        "length": cat("length", np.int32),
        "score": cat("score", np.float32),
        "provenance": cat("provenance", np.int8),
        "uniform": cat("uniform", np.float64),
    })
    if scorer.uses_language:
        table = table.append_column("language", pa.array(cat("language", np.uint8), type=pa.uint8()))
        table = table.append_column("language_confidence", pa.array(cat("language_confidence", np.float32), type=pa.float32()))
    tmp = tmp_path_for(paths.ann)
    with ipc.new_file(str(tmp), table.schema) as w:
        w.write_table(table)
    os.replace(tmp, paths.ann)
    if sampler is not None:
        sample_tmp = tmp_path_for(paths.sample)
        with ipc.new_file(str(sample_tmp), sampler.table().schema) as w:
            w.write_table(sampler.table())
        os.replace(sample_tmp, paths.sample)
    if scorer.uses_near:
        os.replace(band_tmp, paths.bands)
        os.replace(sig_tmp, paths.sigs)
    meta = {
        "rel": shard.rel,
        "path": str(shard.path),
        "format": shard.format,
        "compression": shard.compression,
        **input_stamp(shard.path),
        "sha256": reader.sha256,
        "records": n,
        "malformed": malformed,
        **set_aside,
        "blank_lines": reader.blank_lines,
        "empty": n == 0,
        "breaks": [b.to_dict() for b in reader.breaks],
        "unreadable_bytes": sum(b.unreadable_bytes for b in reader.breaks),
        "bands": n_bands,
        "num_perm": num_perm if scorer.uses_near else 0,
    }
    if cfg.ratio.provenance_field:
        meta["provenance_tally"] = scorer.provenance.take_tally()
    if cfg.id_field:  # named on purpose: count the records it did not name (they fall back to <shard>:<line>)
        meta["ids_missing"] = sum(1 for rid, line, st in zip(cols["id"], cols["line"], cols["status"])
                                  if st != STATUS_MALFORMED and rid == fallback_id(rel, line))
    # Records whose id another record of the shard has too (equal ids, equal uniforms: 8 bytes a
    # record to find them, where a set of the ids would hold them all as strings).
    meta.update(repeated_ids(table.column("uniform").to_numpy(), cols["id"]))
    atomic_write_bytes(paths.meta, json.dumps(meta, indent=1).encode())
    return meta


# -- decide -----------------------------------------------------------------------------------


@dataclass
class Annotations:
    """Annotations of all records in global order (shard order, then record order)."""

    shard: np.ndarray  # int32
    status: np.ndarray  # int8
    hash_hi: np.ndarray
    hash_lo: np.ndarray
    score: np.ndarray  # float32, NaN = not scored
    provenance: np.ndarray  # int8 codes
    uniform: np.ndarray  # float64 in [0, 1)
    length: np.ndarray  # int32
    bands: np.ndarray | None = None  # (N, b) uint64
    signatures: Any = None  # (N, num_perm) uint32 array-like (memmap)
    language: np.ndarray | None = None  # uint8 codes into synthfilter.language.CODES; None: not identified

    def __len__(self) -> int:
        return len(self.status)


@dataclass
class Decisions:
    reason: np.ndarray  # int8 code per record (REASONS)
    duplicate_of: np.ndarray  # int64 global index of the kept record, -1 where it does not apply
    cluster_sizes: np.ndarray  # sizes of duplicate clusters with >= 2 members
    posterior: np.ndarray  # float32 P(machine) under the corpus prior, for downsampled records
    synthetic: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    languages: dict[str, Any] | None = None  # report.json's "languages" section

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.reason, minlength=len(REASONS))
        return {name: int(c[i]) for i, name in enumerate(REASONS)}


def _exact_labels(ok: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Label = smallest global index with the same normalised-text hash (ok records only)."""
    n = len(ok)
    # Only records whose first 64 bits some other record shares can have a duplicate: one sort of
    # that column finds them, and only they (few, mostly) are sorted by the whole hash below.
    order = np.argsort(hi)
    sorted_hi = hi[order]
    same = sorted_hi[1:] == sorted_hi[:-1]
    del sorted_hi
    shared = np.zeros(n, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    del same
    idx = order[shared]
    del order, shared
    labels = np.arange(n, dtype=np.int64)
    idx = idx[ok[idx]]
    if len(idx) < 2:
        return labels
    order = idx[np.lexsort((idx, lo[idx], hi[idx]))]
    h1, h2 = hi[order], lo[order]
    new_run = np.ones(len(order), dtype=bool)
    new_run[1:] = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
    run_id = np.cumsum(new_run) - 1
    first = order[new_run]
    labels[order] = first[run_id]
    return labels


def merge_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the union of two labelings (label = smallest index of its group).

    ``b`` (int64) becomes the result, changed in place: the groups of ``b`` are taken as a
    forest and every link of ``a`` (a record to its label) merged into it.
    """
    from synthfilter.dedup.clusters import Forest

    forest = Forest.of_labels(b)
    moved = np.flatnonzero(a != np.arange(len(a)))
    forest.union(forest.find(moved), forest.find(a[moved]))
    return forest.labels()


def survivors(labels: np.ndarray, ann: Annotations, rules: Sequence[str],
              split_at: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, survivor)``: one record per group kept by the configured rule, ties to the
    earliest record. With ``split_at`` (an estimated Jaccard), the groups are then split at
    their survivors (``dedup.clusters.split_at_survivors``, ``ann``'s signatures): a record is
    removed only for a survivor it resembles. ``labels`` may be modified in place."""
    from synthfilter.dedup.clusters import VERIFY_CHUNK, choose_survivors, similar_pairs, split_at_survivors

    keys = keep_keys(ann, rules)
    survivor = choose_survivors(labels, keys)
    if split_at is None:
        return labels, survivor

    def similar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        # Copies of the survivor's text have its signature (estimated Jaccard 1): their rows need
        # not be read. Most members of a corpus with many exact copies are such.
        out = (ann.hash_hi[u] == ann.hash_hi[v]) & (ann.hash_lo[u] == ann.hash_lo[v])
        rest = np.flatnonzero(~out)
        if len(rest):
            out[rest] = similar_pairs(ann.signatures, u[rest], v[rest], split_at, VERIFY_CHUNK)
        return out

    return split_at_survivors(labels, survivor, keys, similar)


def keep_keys(ann: Annotations, rules: Sequence[str]) -> list[np.ndarray]:
    """The keep rule's sort keys (``choose_survivors``: lowest first), in the columns' own types."""
    keys = []
    for rule in rules:
        # Keys in the columns' own (narrow) types: the same order as any wider type gives.
        if rule == "provenance":
            # human (1) first, unknown (0) next, machine (2) last
            keys.append(_PROVENANCE_RANK[ann.provenance])
        elif rule == "score":
            keys.append(np.nan_to_num(ann.score, nan=0.5))
        elif rule == "length":
            keys.append(np.negative(ann.length))
        elif rule == "order":
            break
    return keys


_PROVENANCE_RANK = np.array([1, 0, 2], dtype=np.int8)  # by provenance code: human first, machine last


def duplicate_reasons(survivor: np.ndarray, hash_hi: np.ndarray, hash_lo: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Reason of each of ``rows`` as a duplicate of its ``survivor``: exact when it has its
    survivor's normalised-text hash, near otherwise."""
    kept = survivor[rows]
    same_hash = (hash_hi[rows] == hash_hi[kept]) & (hash_lo[rows] == hash_lo[kept])
    return np.where(same_hash, EXACT_DUP, NEAR_DUP).astype(np.int8)


def decide(ann: Annotations, cfg: Config, card: dict[str, Any] | None = None,
           count_languages: bool = True, require_target: bool = True) -> Decisions:
    """Global decisions for every record: malformed, duplicates, then the synthetic target.

    ``count_languages`` False: no ``languages`` section (the Ray engine counts it on the cluster).
    ``require_target`` False: a target nothing can be downsampled by (no score, no label) is
    left unmet instead of raising (the gate's target from ``--max-synthetic``, which its rule
    reports).
    """
    # Arrays of a value per record are made when needed and dropped when done: the peak of this
    # function is what the local engine needs in memory per record (ray_scale.py local-memory).
    n = len(ann)
    reason = np.zeros(n, dtype=np.int8)
    ok = ann.status == STATUS_OK
    reason[~ok] = reason_of_status(ann.status[~ok])

    # Exact duplicates: records with the same normalised text, labelled by the first of them.
    exact = _exact_labels(ok, ann.hash_hi, ann.hash_lo) if cfg.dedup.exact and n else None
    labels = None
    if cfg.dedup.near and ann.bands is not None and n:
        from synthfilter.dedup.clusters import near_duplicate_components

        # Malformed rows carry unique band keys (see score_shard), so they match nothing. The
        # later copies of a text are left out of the clustering (``copy_of``): they share every
        # band key and signature with their first copy and end in its cluster, which the merge
        # with the exact labels below would make so anyway.
        labels = near_duplicate_components(
            ann.bands, signatures=ann.signatures if cfg.dedup.verify else None,
            threshold=cfg.dedup.verify_at, verify=cfg.dedup.verify, copy_of=exact,
        )
        not_ok = np.flatnonzero(~ok)
        labels[not_ok] = not_ok  # a record that is not ok keeps its own label
    if exact is not None:
        labels = exact if labels is None else merge_labels(exact, labels)
        del exact
    if labels is None:
        labels = np.arange(n, dtype=np.int64)

    # A chain of edits is one component; each record is removed only for a survivor it
    # resembles, the rest form clusters of their own.
    split = cfg.dedup.near and cfg.dedup.verify and ann.signatures is not None and n
    labels, survivor = survivors(labels, ann, cfg.dedup.keep_rule, cfg.dedup.verify_at if split else None)
    dup = np.flatnonzero(ok & (survivor != np.arange(n)))
    reason[dup] = duplicate_reasons(survivor, ann.hash_hi, ann.hash_lo, dup)
    dup_of = np.full(n, -1, dtype=np.int64)
    dup_of[dup] = survivor[dup]
    del survivor, dup

    group_sizes = np.bincount(labels[ok], minlength=n) if n else np.zeros(0, np.int64)
    del labels
    cluster_sizes = group_sizes[group_sizes >= 2]
    del group_sizes

    decisions = Decisions(reason=reason, duplicate_of=dup_of, cluster_sizes=cluster_sizes,
                          posterior=np.full(n, np.nan, dtype=np.float32))
    decide_synthetic(ann, cfg, card, decisions, require_target)
    if ann.language is not None and count_languages:
        counts = record_language_counts(ann.language, decisions.reason, ann.score, ann.provenance, cfg)
        apply_language_counts(decisions, counts, cfg)
    return decisions


def repeated_ids(uniforms: np.ndarray, ids: Sequence[Any]) -> dict[str, Any]:
    """``ids_repeated`` (every record of an id that another record has too, the first included)
    and ``id_repeated_example`` (the smallest such id: the same in every engine and API), from
    the records' uniforms (equal ids, equal uniforms: 8 bytes a record to find them, where a set
    of the ids would hold them all as strings); {} when none."""
    values, inverse, counts = np.unique(uniforms, return_inverse=True, return_counts=True)
    if len(values) == len(uniforms):
        return {}
    shared = np.flatnonzero(counts[inverse] > 1)
    return {"ids_repeated": int(len(shared)), "id_repeated_example": min(str(ids[int(i)]) for i in shared)}


def repeated_ids_warning_of(metas: dict[str, dict[str, Any]]) -> str | None:
    """A warning when records share an id with another record of their shard: ``duplicate_of``
    then names more than one record, and the records share every seeded choice."""
    repeated = sum(m.get("ids_repeated", 0) for m in metas.values())
    if not repeated:
        return None
    example = next(m["id_repeated_example"] for m in metas.values() if m.get("ids_repeated"))
    # Where the shards were also checked against each other (ids_across_shards), that has a warning
    # of its own (ids_across_shards_warning_of).
    checked = all("ids_across_shards" in m for m in metas.values())
    across = "" if checked else ". Ids repeated across shards are not checked"
    return (f"{repeated:,} records share their id with another record of the same shard (e.g. {example!r}): "
            "duplicate_of then names more than one record, and they share every seeded choice; give each record "
            "its own id (--id-field; in Python, the id column or ids passed), or none (each is then named "
            f"<shard path>:<line>){across}")


def ids_across_shards(shards: Sequence[Shard], work: Path, ann: Annotations, offsets: Sequence[int]
                      ) -> dict[str, dict[str, Any]]:
    """Ids that records of more than one shard hold (a shard exported twice, ids numbered from 0 in
    every shard), per shard: ``ids_across_shards``, how many of its ids a later shard holds too
    (each id counted once, in the first shard that holds it), and where there are any,
    ``id_across_example``, the smallest of them, and ``id_across_other``, the next shard holding it.

    Found from what the decide stage holds already, the records' uniforms (equal ids, equal
    uniforms) and shard numbers: a sorted copy of the uniforms, then a sort of the records whose
    uniform repeats; only those candidates' ids are read back from the shards' annotation files
    (memory-mapped), a shard and the shards it shares ids with at a time, to tell apart two ids
    that only share a uniform (a 53-bit hash) and to pick the example."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    found: dict[str, dict[str, Any]] = {sh.rel: {"ids_across_shards": 0} for sh in shards}
    uniform = ann.uniform
    if len(shards) < 2 or len(uniform) < 2:
        return found
    # A sorted copy says whether any uniform repeats at all (8 bytes a record, for a moment)...
    ordered = np.sort(uniform)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return found
    repeated = np.unique(ordered[1:][same])
    del ordered, same
    # ... then only the records holding a repeated one are sorted (found a stretch at a time).
    held = []
    for lo in range(0, len(uniform), 1 << 20):
        part = uniform[lo:lo + (1 << 20)]
        at = np.minimum(np.searchsorted(repeated, part), len(repeated) - 1)
        held.append(lo + np.flatnonzero(repeated[at] == part))
    held_rows = np.concatenate(held)
    del held, repeated
    order = held_rows[np.argsort(uniform[held_rows], kind="stable")]  # equal uniforms: in global (shard) order
    ordered = uniform[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1])
    # The first place where a run of equal uniforms passes from one shard to the next.
    cross = same[ann.shard[order[same]] != ann.shard[order[same + 1]]]
    if not len(cross):
        return found
    starts, first = np.unique(np.searchsorted(ordered, ordered[cross], side="left"), return_index=True)
    rows, other_rows = order[starts], order[cross[first] + 1]  # the id's first record, and one of a later shard
    del order, ordered, same, cross, starts, first, held_rows
    home, other = ann.shard[rows], ann.shard[other_rows]

    def ids_at(si: int, global_rows: np.ndarray) -> Any:
        with pa.memory_map(str(WorkPaths.for_shard(work, shards[si]).ann)) as source:
            column = ipc.open_file(source).read_all().column("id")
            return column.take(pa.array(global_rows - offsets[si], type=pa.int64())).combine_chunks()

    for si in np.unique(home).tolist():
        mine = np.flatnonzero(home == si)
        ids = ids_at(si, rows[mine])
        confirmed = np.zeros(len(mine), dtype=bool)
        for sj in np.unique(other[mine]).tolist():
            at = np.flatnonzero(other[mine] == sj)
            theirs = ids_at(sj, other_rows[mine[at]])
            confirmed[at] = pc.equal(ids.take(pa.array(at, type=pa.int64())), theirs).to_numpy(zero_copy_only=False)
        if not confirmed.any():
            continue
        kept = np.flatnonzero(confirmed)
        shared = ids.take(pa.array(kept, type=pa.int64()))
        example = pc.min_max(shared)["min"].as_py()
        k = kept[int(pc.index(shared, example).as_py())]
        found[shards[si].rel] = {"ids_across_shards": int(len(kept)), "id_across_example": example,
                                 "id_across_other": shards[int(other[mine[k]])].rel}
    return found


def ids_across_shards_warning_of(metas: dict[str, dict[str, Any]]) -> str | None:
    """A warning when records of different shards share an id (``ids_across_shards``): the smallest
    such id and two shards that hold it. None when none do, or the shards were not checked."""
    if not all("ids_across_shards" in m for m in metas.values()):
        return None
    n = sum(m["ids_across_shards"] for m in metas.values())
    if not n:
        return None
    example, where, other = min((m["id_across_example"], rel, m["id_across_other"])
                                for rel, m in metas.items() if m["ids_across_shards"])
    return (f"{n:,} id{'s are' if n != 1 else ' is'} repeated across shards (e.g. {example!r}, in {where} and "
            f"in {other}): a shard given twice (exported again under another name)? duplicate_of then names more "
            "than one record, and they share every seeded choice; give each record its own id (--id-field), or "
            "none (each is then named <shard path>:<line>)")


def id_field_warning_of(metas: dict[str, dict[str, Any]], cfg: Config) -> str | None:
    """A plain warning when the id field the user named is missing (or null, or not a scalar) in
    some records: those are named ``<shard>:<line>`` instead, which every seeded choice and
    ``duplicate_of`` then use. None when all is well, or no field was named."""
    if not cfg.id_field or not all("ids_missing" in m for m in metas.values()):
        return None
    missing = sum(m["ids_missing"] for m in metas.values())
    records = sum(m["records"] for m in metas.values())
    if not missing:
        return None
    which = f"in none of the {records:,} records" if missing == records else f"missing in {missing:,} of {records:,} records"
    return (f"id field {cfg.id_field!r} is {which} (or null, a list or an object there), so those records are "
            "named '<shard path>:<line>' instead, which duplicate_of and every seeded choice then use: check its "
            "name (nested fields take a dotted path, e.g. meta.uid)")


def provenance_warning_of(metas: dict[str, dict[str, Any]], cfg: Config, decisions: Any = None) -> str | None:
    """The provenance field's warning (``provenance.provenance_warning``) from the shards' score
    summaries. Where they hold no tally (records annotated elsewhere, e.g. by ``Dataset.map``
    in other processes), from ``decisions`` (anything with ``counts()`` and ``synthetic``):
    whether any record the estimate counts got a label.
    None without a field, or when all is well."""
    from synthfilter.provenance import merge_tallies, provenance_warning

    field = cfg.ratio.provenance_field
    if not field:
        return None
    if all("provenance_tally" in m for m in metas.values()):
        with_text = sum(m["records"] - m.get("malformed", 0) for m in metas.values())
        return provenance_warning(field, with_text, merge_tallies(m["provenance_tally"] for m in metas.values()))
    if decisions is None:
        return None
    known = (decisions.synthetic or {}).get("known_provenance") or {}
    counts = decisions.counts()
    counted = counts[REASONS[KEPT]] + counts[REASONS[DOWNSAMPLED]]
    return provenance_warning(field, counted, {"present": None, "labelled": sum(known.values()), "unmatched": 0})


def refusal_with_provenance(e: Exception, metas: dict[str, dict[str, Any]], cfg: Config) -> Exception:
    """A refusal (``HumanLossError``) that also names a provenance field that gave fewer labels
    than asked: known provenance is what a refused run most often lacks."""
    warning = provenance_warning_of(metas, cfg)
    return e if warning is None else type(e)(f"{str(e).rstrip('.')}. Note: {warning}")


def reason_of_status(status: np.ndarray) -> np.ndarray:
    """The rejection reason of records the score stage already set aside (status not OK)."""
    return _REASON_OF_STATUS[np.asarray(status, dtype=np.int64)]


def set_aside_counts(meta: dict[str, Any]) -> np.ndarray:
    """Records per reason that a shard's score stage set aside (malformed, ``--languages``,
    ``--reject-repetitive``), from its meta; zero for the other reasons."""
    c = np.zeros(len(REASONS), np.int64)
    c[MALFORMED] = int(meta.get("malformed", 0))
    for status, key in SET_ASIDE_COUNTS.items():
        c[_REASON_OF_STATUS[status]] += int(meta.get(key, 0))
    return c


def estimated_mask(reason: np.ndarray, scored_language: np.ndarray, provenance: np.ndarray) -> np.ndarray:
    """The records the synthetic share is estimated over (and the only ones downsampling may
    drop): duplicate-removal survivors in a language the detector is trusted on, and survivors
    of known provenance in any language. Downsampled records were among them (downsampling
    drops only from this set): counted after the plan, they still are."""
    return ((reason == KEPT) | (reason == DOWNSAMPLED)) & (scored_language | (provenance != 0))


def estimated_records(codes: np.ndarray, reason: np.ndarray, provenance: np.ndarray, cfg: Config) -> np.ndarray:
    """``estimated_mask`` under this config's language rules, for records with language ``codes``."""
    return estimated_mask(reason, language_roles_of(codes, cfg).scored, provenance)


def record_language_counts(codes: np.ndarray, reason: np.ndarray, score: np.ndarray, provenance: np.ndarray,
                           cfg: Config) -> np.ndarray:
    """``language_counts`` of these records under this config (any slice of the records: the
    counts of slices sum to those of the whole)."""
    return language_counts(codes, reason, ~np.isnan(score), estimated_records(codes, reason, provenance, cfg))


def apply_language_counts(decisions: Any, counts: np.ndarray, cfg: Config) -> None:
    """report.json's ``languages`` section and the estimate's scope note, from the whole run's
    language count matrix (``decisions``: ``Decisions`` or anything with its ``languages``,
    ``synthetic`` and ``warnings``)."""
    decisions.languages = languages_section(counts, cfg)
    _note_estimate_scope(decisions, counts, cfg)


# Columns of a language count matrix after the reasons: detector-scored, in the estimate.
_SCORED, _ESTIMATED = len(REASONS), len(REASONS) + 1


def language_counts(codes: np.ndarray, reason: np.ndarray, scored: np.ndarray, estimated: np.ndarray) -> np.ndarray:
    """(languages, reasons + 2) counts: records per language and reason, then how many the
    detector scored and how many are in the estimate. Sums over chunks (the Ray engine's way)."""
    from synthfilter.language import CODES

    n_lang, n_reason = len(CODES), len(REASONS)
    codes = np.asarray(codes, dtype=np.int64)
    out = np.zeros((n_lang, n_reason + 2), dtype=np.int64)
    out[:, :n_reason] = np.bincount(codes * n_reason + reason, minlength=n_lang * n_reason).reshape(n_lang, n_reason)
    out[:, _SCORED] = np.bincount(codes[scored], minlength=n_lang)
    out[:, _ESTIMATED] = np.bincount(codes[estimated], minlength=n_lang)
    return out


def languages_section(counts: np.ndarray, cfg: Config) -> dict[str, Any]:
    """report.json's ``languages`` section from a language count matrix (malformed records,
    which have no language, left out)."""
    from synthfilter.language import CODES, LanguageIdentifier

    by_language = {}
    totals = counts[:, :len(REASONS)].sum(axis=1) - counts[:, MALFORMED]
    for i in sorted(np.flatnonzero(totals).tolist(), key=lambda i: (-totals[i], CODES[i])):
        row = counts[i]
        by_language[CODES[i]] = {
            "records": int(totals[i]), "kept": int(row[KEPT]),
            "rejected_by_reason": {REASONS[r]: int(row[r]) for r in range(1, len(REASONS)) if r != MALFORMED and row[r]},
            "detector_scored": int(row[_SCORED]), "in_estimate": int(row[_ESTIMATED]),
        }
    trusted = ["*"] if "*" in cfg.detector.languages else list(cfg.detector.languages)
    # Survivors of duplicate removal (kept, or downsampled: only estimated records are) outside the estimate.
    not_estimated = int(counts[:, KEPT].sum() + counts[:, DOWNSAMPLED].sum() - counts[:, _ESTIMATED].sum())
    return {
        "identifier": {**LanguageIdentifier.settings(), "sample_chars": cfg.language.sample_chars,
                       "min_confidence": cfg.language.min_confidence},
        "detector_languages": trusted if cfg.detector.enabled else [],
        "keep": list(cfg.language.keep) or None,
        "records": int(totals.sum()),
        "not_scored": int(totals.sum() - counts[:, _SCORED].sum()),
        "not_estimated": not_estimated,
        "by_language": by_language,
    }


def _note_estimate_scope(decisions: Any, counts: np.ndarray, cfg: Config) -> None:
    """Say, in the synthetic section and the warnings, that other languages are not estimated."""
    section = decisions.languages or {}
    left_out = section.get("not_estimated", 0)
    decisions.synthetic["scope"] = {
        "detector_languages": section.get("detector_languages"),
        "records_in_estimate": int(counts[:, _ESTIMATED].sum()), "not_estimated": left_out,
    }
    if left_out and cfg.detector.enabled:
        from synthfilter.language import CODES

        other = counts[:, KEPT] + counts[:, DOWNSAMPLED] - counts[:, _ESTIMATED]
        top = [f"{CODES[i]} {int(other[i]):,}" for i in np.argsort(-other, kind="stable")[:5] if other[i]]
        decisions.warnings.append(
            f"the synthetic share is estimated over the records in {', '.join(section['detector_languages'])} "
            f"(and records of known provenance): {left_out:,} kept records in other languages ({', '.join(top)}) "
            "have no detector score, are not in the estimate and are never downsampled "
            "(set [detector] languages, or --languages to drop them)"
        )


@dataclass(frozen=True)
class SurvivorCounts:
    """The deduplicated records the synthetic share is estimated over, counted."""

    survivors: int
    scored: int  # unknown provenance, with a detector score
    human: int  # known provenance
    machine: int
    unscored: int  # unknown provenance, no score


def synthetic_without_estimate(counts: SurvivorCounts, cfg: Config, decisions: Decisions,
                               require_target: bool = True) -> bool:
    """Fill ``decisions.synthetic`` when there is nothing to estimate from (True), or leave it."""
    r = cfg.ratio
    nothing = not counts.scored and not counts.human and not counts.machine
    if require_target and counts.survivors and nothing and r.target_ratio is not None:
        # Without a score or a label there is nothing to downsample by: going on would ignore the target.
        raise ConfigError(f"cannot downsample to a synthetic share of {r.target_ratio:.1%}: none of the "
                          f"{counts.survivors:,} records has a known provenance or a detector score: enable the "
                          "detector or label the records (--provenance-field / --provenance-map)")
    if not counts.survivors or nothing:
        decisions.synthetic = {
            "known_provenance": {"human": 0, "machine": 0}, "detector_scored": 0,
            "target_ratio": r.target_ratio, "downsampled": 0, "method": None,
            "strategy": r.strategy if r.target_ratio is not None else None,
        }
        return True
    if counts.unscored:
        message = (f"{counts.unscored} records have neither a known provenance nor a detector score: "
                   "enable the detector or map their provenance")
        if r.target_ratio is not None:
            raise ConfigError(f"cannot meet --target-ratio: {message}")
        decisions.warnings.append(f"no synthetic-share estimate: {message}")
        decisions.synthetic = {
            "known_provenance": {"human": counts.human, "machine": counts.machine},
            "detector_scored": 0, "unscored": counts.unscored, "target_ratio": None, "downsampled": 0,
            "method": None, "strategy": None,
        }
        return True
    return False


def estimate_section(est: Any) -> dict[str, Any]:
    """report.json's ``synthetic`` section for a run without a target ratio."""
    ci = list(est.ci95) if est.ci95 is not None else None
    d = est.to_dict()
    return {
        "estimated_share_before": est.share, "ci95_before": ci,
        "estimated_share_after": est.share, "ci95_after": ci,
        "target_ratio": None, "known_provenance": {"human": est.known_human, "machine": est.known_machine},
        "detector_scored": est.n_scored, "unscored": est.n_unscored, "downsampled": 0,
        "naive_share_before": est.naive_share, "method": est.method, "strategy": None,
        "detector_share_by_method": d.get("detector_share_by_method"),
        "weak_detector": bool(est.reliability is not None and est.reliability.flagged),
        "reliability": d.get("reliability"),
        "warnings": list(est.warnings),
    }


def decide_synthetic(ann: Annotations, cfg: Config, card: dict[str, Any] | None, decisions: Decisions,
                     require_target: bool = True) -> None:
    """Prevalence estimate over the deduplicated records, then target-ratio downsampling."""
    from synthfilter import ratio as ratio_mod

    if ann.language is not None:
        survivors = np.flatnonzero(estimated_records(ann.language, decisions.reason, ann.provenance, cfg))
    else:
        survivors = np.flatnonzero(decisions.reason == KEPT)
    prov = ann.provenance[survivors]
    # Known provenance is counted as known: the detector's guess never overrides it.
    scores = np.where(prov == 0, ann.score[survivors], np.nan).astype(np.float32)
    r = cfg.ratio
    unscored = int(np.sum(np.isnan(scores) & (prov == 0)))
    counts = SurvivorCounts(len(survivors), int(np.sum(~np.isnan(scores))), int(np.sum(prov == 1)),
                            int(np.sum(prov == 2)), unscored)
    if synthetic_without_estimate(counts, cfg, decisions, require_target):
        return
    # Known-provenance records are scored too: their scores re-measure the detector's rates here.
    known_scores = ann.score[survivors] if r.remeasure_rates else None
    if r.target_ratio is None:
        est = ratio_mod.estimate_prevalence(scores, prov, card, method=r.method, n_boot=r.bootstrap, seed=cfg.seed,
                                            known_scores=known_scores, widen=r.widen)
        decisions.synthetic = estimate_section(est)
        decisions.warnings.extend(est.warnings)
        return
    plan = ratio_mod.plan_downsampling(
        scores, prov, ann.uniform[survivors], r.target_ratio, strategy=r.strategy, card=card,
        method=r.method, n_boot=r.bootstrap, seed=cfg.seed, max_human_loss=r.max_human_loss,
        safety=r.safety, confidence=r.confidence, tolerance=r.tolerance, known_scores=known_scores,
        on_unreliable=r.on_unreliable, widen=r.widen,
    )
    dropped = survivors[~plan.keep]
    decisions.reason[dropped] = DOWNSAMPLED
    decisions.posterior[dropped] = plan.posterior[~plan.keep]
    decisions.synthetic = plan.to_report()
    decisions.warnings.extend(decisions.synthetic.get("warnings", []))


# -- write ------------------------------------------------------------------------------------


@dataclass
class ShardDecisions:
    """What the write stage needs for one shard, row-aligned with its records."""

    reason: np.ndarray
    duplicate_of: list[str | None]
    score: np.ndarray
    posterior: np.ndarray
    provenance: np.ndarray
    error: list[str | None]
    language: np.ndarray | None = None  # uint8 codes; None: not identified
    language_confidence: np.ndarray | None = None

    @classmethod
    def load(cls, paths: WorkPaths) -> "ShardDecisions":
        import pyarrow.ipc as ipc

        with ipc.open_file(str(paths.ann)) as r:
            ann = r.read_all()
        with ipc.open_file(str(paths.decisions)) as r:
            dec = r.read_all()
        has_language = "language" in ann.column_names
        return cls(
            reason=dec.column("reason").to_numpy(), duplicate_of=dec.column("duplicate_of").to_pylist(),
            score=ann.column("score").to_numpy(), posterior=dec.column("posterior").to_numpy(),
            provenance=ann.column("provenance").to_numpy(), error=ann.column("error").to_pylist(),
            language=ann.column("language").to_numpy() if has_language else None,
            language_confidence=ann.column("language_confidence").to_numpy() if has_language else None,
        )

    def fields(self, i: int) -> dict[str, Any]:
        """The ``synthfilter`` object written with record ``i``."""
        r = int(self.reason[i])
        out: dict[str, Any] = {"decision": "kept" if r == KEPT else "rejected"}
        if r != KEPT:
            out["reason"] = REASONS[r]
        if self.duplicate_of[i] is not None:
            out["duplicate_of"] = self.duplicate_of[i]
        out["score"] = None if np.isnan(self.score[i]) else round(float(self.score[i]), 6)
        if not np.isnan(self.posterior[i]):
            out["p_machine"] = round(float(self.posterior[i]), 6)
        out["provenance"] = PROVENANCE_NAMES[int(self.provenance[i])]
        if self.language is not None and self.error[i] is None:
            from synthfilter.language import CODES

            out["language"] = CODES[int(self.language[i])]
            out["language_confidence"] = round(float(self.language_confidence[i]), 4)  # type: ignore[index]
        if self.error[i] is not None:
            out["error"] = self.error[i]
        return out


def write_shard(shard: Shard, cfg: Config, work: Path, out: Path) -> dict[str, int]:
    """Route each record of a shard to kept/ or rejected/ according to its decision."""
    paths = WorkPaths.for_shard(work, shard)
    dec = ShardDecisions.load(paths)
    kept_path = out / "kept" / shard.rel
    rej_path = out / "rejected" / shard.rel
    write = _write_parquet if shard.format == "parquet" else _write_jsonl
    counts = write(shard, cfg, kept_path, rej_path, dec)
    atomic_write_bytes(paths.written, json.dumps(counts).encode())
    return counts


def _write_jsonl(shard: Shard, cfg: Config, kept_path: Path, rej_path: Path, dec: ShardDecisions) -> dict[str, int]:
    """Kept lines are copied as read, unparsed and a batch at a time (unless ``--annotate``);
    only rejected lines are parsed, to add their ``synthfilter`` object. A record written with
    its ``synthfilter`` object keeps its own text (``json_line_with``): numbers and all."""
    from synthfilter.io.shards import json_line_with

    kept = AtomicJsonlWriter(kept_path, shard.compression)
    rejected: AtomicJsonlWriter | None = None
    n = len(dec.reason)
    seen = 0
    annotate = cfg.annotate
    try:
        for batch in _ReaderHolder(shard, cfg, parse=annotate):
            lo, hi = batch.start, batch.start + len(batch)
            if hi > n:
                raise ConservationError(f"{shard.path}: more records on the second read than the first ({hi} > {n})")
            seen += len(batch)
            reasons = dec.reason[lo:hi]
            # kept/ and rejected/ are separate files: each gets its records in order.
            kept_rows = np.flatnonzero(reasons == KEPT).tolist()
            if annotate:
                for j in kept_rows:
                    line: bytes = batch.raw[j]  # type: ignore[assignment]  # read with its lines (raw=True)
                    kept.write_line(json_line_with(line, batch.objs[j], "synthfilter", dec.fields(lo + j)))
            else:
                kept.write_lines([batch.raw[j] for j in kept_rows])  # type: ignore[misc]
            for j in np.flatnonzero(reasons != KEPT).tolist():
                raw, obj = batch.raw[j], batch.objs[j]
                if not annotate and batch.errors[j] is None and raw is not None:
                    obj = parse_json_line(raw)[0]
                if rejected is None:
                    rejected = AtomicJsonlWriter(rej_path, shard.compression)
                fields = dec.fields(lo + j)
                record = dict(obj) if isinstance(obj, dict) else {}
                if not isinstance(obj, dict) or fields.get("reason") == "malformed":
                    # Where a bad record was (an object without usable text too: its id may be the
                    # only other clue).
                    fields["source"] = {"file": shard.rel, "line": batch.lines[j], "byte_offset": batch.offsets[j]}
                if not isinstance(obj, dict):
                    # Not even a JSON object: keep the raw line so nothing is lost.
                    if j in batch.breaks:
                        fields["break"] = batch.breaks[j].to_dict(detail=False)  # the detail is the error
                    if raw is not None:
                        fields["raw"] = raw.decode("utf-8", errors="replace")
                        if fields["raw"].encode("utf-8") != raw:
                            fields["raw_base64"] = base64.b64encode(raw).decode("ascii")
                        if j in batch.oversized:  # the first bytes only: the rest is at byte_offset in the input
                            fields["raw_truncated"] = True
                            fields["raw_bytes"] = batch.oversized[j]
                if isinstance(obj, dict) and raw is not None:
                    rejected.write_line(json_line_with(raw, obj, "synthfilter", fields))
                else:
                    record["synthfilter"] = fields
                    rejected.write_line(dump_json_line(record))
        if seen != n:
            raise ConservationError(f"{shard.path}: {seen} records on the second read, {n} on the first")
        kept.commit()
        if rejected is not None:
            rejected.commit()
    except BaseException:
        kept.abort()
        if rejected is not None:
            rejected.abort()
        raise
    return {"kept": kept.count, "rejected": rejected.count if rejected else 0}


def _synthfilter_struct_type() -> Any:
    import pyarrow as pa

    return pa.struct([
        ("decision", pa.string()), ("reason", pa.string()), ("duplicate_of", pa.string()),
        ("score", pa.float32()), ("p_machine", pa.float32()), ("provenance", pa.string()), ("error", pa.string()),
        ("language", pa.string()), ("language_confidence", pa.float32()),
        # Where a malformed record was (the shard's path, its 1-based row), as a JSONL one's
        # ``source`` says: in rejected/ its row number is lost. Null for every other record.
        ("source", pa.struct([("file", pa.string()), ("row", pa.int64())])),
    ])


def _struct_column(rows: np.ndarray, dec: ShardDecisions, file: str | None = None,
                   file_rows: np.ndarray | None = None) -> Any:
    """The ``synthfilter`` struct of the records ``rows``; a malformed one's ``source`` names
    ``file`` and its row in ``file_rows`` (1-based, parallel to ``rows``; None: not known)."""
    import pyarrow as pa

    names = _synthfilter_struct_type().names
    values = [{k: f.get(k) for k in names} for f in (dec.fields(int(i)) for i in rows)]
    if file is not None:
        for k, v in enumerate(values):
            if v["reason"] == "malformed":
                v["source"] = {"file": file, "row": None if file_rows is None else int(file_rows[k])}
    return pa.array(values, type=_synthfilter_struct_type())


def _write_parquet(shard: Shard, cfg: Config, kept_path: Path, rej_path: Path, dec: ShardDecisions) -> dict[str, int]:
    """Kept and rejected rows are copied from the file as Arrow data: their values, types and
    schema (metadata too) as read. Rejected rows get the ``synthfilter`` struct in place of any
    column of that name, at the end."""
    import pyarrow as pa

    from synthfilter.io.shards import Break, ParquetPieces

    reason = dec.reason
    n = len(reason)
    struct_field = pa.field("synthfilter", _synthfilter_struct_type())
    pieces = ParquetPieces(shard.path, cfg.batch_size)
    it = iter(pieces)
    first = next(it, None)  # opens the file: the schema is known from here on
    schema = pieces.schema
    base_schema = schema.remove(schema.get_field_index("synthfilter")) if "synthfilter" in schema.names else schema
    kept_schema = base_schema.append(struct_field) if cfg.annotate else schema
    kept = AtomicParquetWriter(kept_path, kept_schema)
    rejected: AtomicParquetWriter | None = None
    # The rejected file's schema is the shard's own, whichever rows come first: a writer takes
    # only tables of its schema. An unreadable row group is a row of nulls (but for its
    # ``synthfilter`` struct), which a non-nullable field cannot hold: where the shard has
    # malformed records (the rows that may stand for one), its fields are all nullable in
    # rejected/, and only there.
    relax = bool(np.any(reason == MALFORMED))
    rej_schema = pa.schema([f.with_nullable(True) if relax else f for f in base_schema] + [struct_field],
                           metadata=schema.metadata)
    offset = 0

    def reject(rt: Any) -> None:
        nonlocal rejected
        if rejected is None:
            rejected = AtomicParquetWriter(rej_path, rej_schema)
        rejected.write_table(pa.Table.from_arrays(rt.columns, schema=rej_schema))

    def nulls(rows: np.ndarray, file_rows: np.ndarray | None) -> Any:
        """Rows of nulls with their ``synthfilter`` struct: records of the shard that were not read."""
        struct = _struct_column(rows, dec, shard.rel, file_rows)
        return pa.Table.from_arrays([pa.nulls(len(rows), f.type) for f in base_schema] + [struct], schema=rej_schema)

    try:
        for first_row, piece in _chain_first(first, it):
            if isinstance(piece, Break):
                # An unreadable row group (or file): its one record, rejected as malformed.
                if offset >= n or reason[offset] == KEPT:
                    raise ConservationError(f"{shard.path}: the break at row {first_row + 1} was not read the first time")
                rows = np.arange(offset, offset + 1)
                offset += 1
                reject(nulls(rows, np.array([first_row + 1])))  # the first row it could not read
                continue
            table = pa.Table.from_batches([piece], schema=schema)
            rows = np.arange(offset, offset + table.num_rows)
            offset += table.num_rows
            if offset > n:
                raise ConservationError(f"{shard.path}: more rows on the second read than the first ({offset} > {n})")
            r = reason[rows]
            kept_rows = rows[r == KEPT]
            rej_rows = rows[r != KEPT]
            kt = _take_rows(table, kept_rows - rows[0] if len(rows) else kept_rows)
            if cfg.annotate:
                kt = _replace_struct(kt, _struct_column(kept_rows, dec))
            kept.write_table(kt)
            if len(rej_rows):
                at = rej_rows - rows[0]
                reject(_replace_struct(_take_rows(table, at), _struct_column(rej_rows, dec, shard.rel, first_row + 1 + at)))
        if offset < n:
            # Records past the readable data: the quarantined tail of a file that could not be read.
            rows = np.arange(offset, n)
            if np.any(reason[rows] == KEPT):
                raise ConservationError(f"{shard.path}: rows {offset}..{n} could not be re-read")
            reject(nulls(rows, None))
            offset = n
        if offset != n:
            raise ConservationError(f"{shard.path}: {offset} rows on the second read, {n} on the first")
        kept.commit()
        if rejected is not None:
            rejected.commit()
    except BaseException:
        kept.abort()
        if rejected is not None:
            rejected.abort()
        raise
    return {"kept": kept.count, "rejected": rejected.count if rejected else 0}


def _take_rows(table: Any, positions: np.ndarray) -> Any:
    """The rows of ``table`` at ``positions`` (ascending), its schema unchanged.

    Arrow's ``take`` has no kernel for every type (``string_view`` and ``binary_view``, which
    Polars writes, have none in pyarrow 26), and a column of such a type must pass through as
    it is: then the rows are cut as runs of consecutive positions, slices of the table (no
    copy), joined."""
    import pyarrow as pa

    if len(positions) == table.num_rows:
        return table  # every row, in order (positions are ascending and distinct)
    try:
        return table.take(pa.array(positions, type=pa.int64()))
    except pa.ArrowNotImplementedError:
        pass
    if not len(positions):
        return table.slice(0, 0)
    cuts = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate(([0], cuts))]
    ends = positions[np.concatenate((cuts - 1, [len(positions) - 1]))] + 1
    return pa.concat_tables([table.slice(int(a), int(b - a)) for a, b in zip(starts, ends)])


def _chain_first(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
    yield from rest


def _replace_struct(table: Any, column: Any) -> Any:
    if "synthfilter" in table.column_names:
        table = table.drop_columns(["synthfilter"])
    return table.append_column("synthfilter", column)

