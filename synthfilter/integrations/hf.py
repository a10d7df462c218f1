"""Hugging Face ``datasets`` helpers: filter a Dataset or DatasetDict (two passes, the CLI's
decisions) or a streaming IterableDataset (one pass, running decisions).

Imported only on use: ``import synthfilter`` never needs ``datasets``.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Union

import numpy as np

try:
    import datasets
    from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, Value
except ImportError as e:  # pragma: no cover - exercised in a subprocess without datasets
    raise ImportError(
        'synthfilter.hf needs the Hugging Face `datasets` library: pip install "synthfilter[hf]"'
    ) from e

import pyarrow as pa

from synthfilter import __version__
from synthfilter.api import (
    BANDS_COL,
    DUPLICATE_OF_COL,
    ERROR_COL,
    LANGUAGE_COL,
    LANGUAGE_CONFIDENCE_COL,
    LENGTH_COL,
    MISSING,
    P_MACHINE_COL,
    PROVENANCE_COL,
    REASON_COL,
    REPETITIVE_COL,
    SCORE_COL,
    SIGNATURE_COL,
    TEXT_HASH_COL,
    ColumnTable,
    MalformedRecordError,
    SynthFilter,
    annotations_from_columns,
    field_values,
    provenance_tally,
    record_ids,
)
from synthfilter.config import Config
from synthfilter.pipeline.stages import (
    DOWNSAMPLED,
    EXACT_DUP,
    KEPT,
    MALFORMED,
    NEAR_DUP,
    PROVENANCE_NAMES,
    REASONS,
    STATUS_MALFORMED,
    apply_language_counts,
    languages_section,
    reason_of_status,
    record_language_counts,
)
from synthfilter.records import group_label

__all__ = [
    "FilterResult", "annotate_dataset", "annotation_features", "decision_features", "filter_dataset", "stream_filter",
]

AnyDataset = Union[Dataset, DatasetDict, IterableDataset, IterableDatasetDict]
ConfigLike = Union[Config, SynthFilter, str, os.PathLike, Mapping[str, Any], None]

# What rejected records carry (and kept records too, under ``annotate = true``).
REJECTED_COLUMNS = (REASON_COL, DUPLICATE_OF_COL, SCORE_COL, P_MACHINE_COL, PROVENANCE_COL, ERROR_COL)
KEPT_ANNOTATE_COLUMNS = (SCORE_COL, PROVENANCE_COL)


@dataclass
class FilterResult:
    """What ``filter_dataset`` returns.

    ``kept`` holds the kept records with their columns unchanged (plus ``synth_score`` and
    ``synth_provenance`` under ``annotate = true``); ``rejected`` the rest, plus
    ``synth_reason``, ``synth_duplicate_of``, ``synth_score``, ``synth_p_machine``,
    ``synth_provenance`` and ``synth_error``. Both have the input's type (Dataset,
    DatasetDict, IterableDataset, IterableDatasetDict).

    ``report`` has the keys of ``report.json``; for a DatasetDict filtered per split it maps
    split name -> report; filtered jointly it is one report with a ``splits`` breakdown. For a
    streaming input it is filled in when an iteration over ``kept`` or ``rejected`` finishes.
    Unpacks as ``kept, rejected, report``, as ``synthfilter.ray.filter_dataset``'s result does.
    """

    kept: Any
    rejected: Any
    report: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.kept, self.rejected, self.report))


def _filter(cfg_like: ConfigLike, model: str | None, target_ratio: float | None) -> SynthFilter:
    sf = cfg_like if isinstance(cfg_like, SynthFilter) else SynthFilter(cfg_like, model=model)
    if model is not None and isinstance(cfg_like, SynthFilter):
        sf = sf.with_options({"detector": {"model": str(model), "enabled": True}})
    if target_ratio is not None:
        sf = sf.with_options({"ratio": {"target_ratio": target_ratio}})
    return sf


def filter_dataset(ds: AnyDataset, config: ConfigLike = None, target_ratio: float | None = None,
                   num_proc: int | None = None, *, joint: bool = False, model: str | None = None,
                   batch_size: int | None = None) -> FilterResult:
    """Score, decide and split a Hugging Face dataset into kept and rejected records.

    Args:
        ds: a ``Dataset`` or ``DatasetDict`` (two passes: ``map`` to annotate, then the global
            decide stage, the same decisions as ``synthfilter run``), or an ``IterableDataset``
            / ``IterableDatasetDict`` (one pass, see ``stream_filter``).
        config: a ``Config``, ``SynthFilter``, TOML path or dict of options (as the CLI's).
        target_ratio: keep at most this estimated synthetic share (overrides the config).
        num_proc: processes for ``Dataset.map`` (results do not depend on it); a streaming input
            is one pass in this process (a warning says so when num_proc asks for more).
        joint: for a DatasetDict, decide across all splits at once (split order, then rows),
            so a test record duplicated in train is caught; the earlier split keeps its copy.
        model: detector model directory (overrides the config).
        batch_size: records per ``map`` batch (default: the config's ``batch_size``).

    Raises:
        ValueError: no text column; ``joint`` with a streaming input.
        synthfilter.api.MalformedRecordError: a bad record under ``on_error = "fail"``.
        synthfilter.ratio.HumanLossError: ``max_human_loss`` refused the target.
    """
    sf = _filter(config, model, target_ratio)
    bs = batch_size or sf.config.batch_size
    if isinstance(ds, (IterableDataset, IterableDatasetDict)):
        if joint:
            raise ValueError("joint=True needs a DatasetDict: a single streaming pass decides each split on its own")
        if num_proc is not None and num_proc > 1:
            import warnings

            warnings.warn(f"num_proc={num_proc} is not used on a streaming dataset: a single pass decides its records "
                          "in order, in this process", UserWarning, stacklevel=2)
        if isinstance(ds, IterableDatasetDict):
            parts = {name: stream_filter(split, sf, batch_size=bs, split=name) for name, split in ds.items()}
            return FilterResult(kept=IterableDatasetDict({k: r.kept for k, r in parts.items()}),
                                rejected=IterableDatasetDict({k: r.rejected for k, r in parts.items()}),
                                report={k: r.report for k, r in parts.items()})
        return stream_filter(ds, sf, batch_size=bs)
    if isinstance(ds, DatasetDict):
        if joint:
            return _filter_parts(list(ds.items()), sf, num_proc, bs, as_dict=True)
        parts = {name: _filter_parts([(name, split)], sf, num_proc, bs) for name, split in ds.items()}
        return FilterResult(kept=DatasetDict({k: r.kept for k, r in parts.items()}),
                            rejected=DatasetDict({k: r.rejected for k, r in parts.items()}),
                            report={k: r.report for k, r in parts.items()})
    if isinstance(ds, Dataset):
        return _filter_parts([(_split_name(ds), ds)], sf, num_proc, bs)
    raise TypeError(f"filter_dataset takes a datasets Dataset, DatasetDict or IterableDataset, got {type(ds).__name__}")


def _split_name(ds: Dataset | IterableDataset) -> str:
    """The prefix of fallback ids: the dataset's split name, else ``dataset``."""
    return str(ds.split) if ds.split else "dataset"


# -- features ----------------------------------------------------------------------------------------


def annotation_features(sf: SynthFilter) -> Features:
    """The ``datasets`` features of the columns ``sf.annotate`` adds."""
    feats: dict[str, Any] = {
        SCORE_COL: Value("float32"),
        PROVENANCE_COL: Value("string"),
        TEXT_HASH_COL: Value("string"),
        LENGTH_COL: Value("int32"),
        ERROR_COL: Value("string"),
    }
    cfg = sf.config
    if cfg.dedup.near:
        feats[BANDS_COL] = datasets.Sequence(Value("uint64"), length=sf.scorer.bands[0])
        if cfg.dedup.verify:
            feats[SIGNATURE_COL] = datasets.Sequence(Value("uint32"), length=cfg.dedup.num_perm)
    if cfg.identifies_language:
        feats[LANGUAGE_COL] = Value("string")
        feats[LANGUAGE_CONFIDENCE_COL] = Value("float32")
    if cfg.repetition.reject:
        feats[REPETITIVE_COL] = Value("bool")
    return Features(feats)


def decision_features() -> Features:
    """The ``datasets`` features of the columns rejected records carry."""
    return Features({
        REASON_COL: Value("string"), DUPLICATE_OF_COL: Value("string"), SCORE_COL: Value("float32"),
        P_MACHINE_COL: Value("float32"), PROVENANCE_COL: Value("string"), ERROR_COL: Value("string"),
    })


# -- two passes: Dataset / DatasetDict ---------------------------------------------------------------


def _input_columns(ds: Dataset, cfg: Config) -> list[str]:
    names = ds.column_names
    text_top = cfg.text_field if cfg.text_field in names else cfg.text_field.split(".")[0]
    if text_top not in names:
        raise ValueError(
            f"dataset has no column {cfg.text_field!r} for the text (columns: {', '.join(names[:20])}); "
            "set text_field in the config"
        )
    cols = [text_top]
    p = cfg.ratio.provenance_field
    if p:
        top = p if p in names else p.split(".")[0]
        if top in names and top not in cols:
            cols.append(top)
    return cols


def annotate_dataset(ds: Dataset, sf: SynthFilter, num_proc: int | None = None,
                     batch_size: int | None = None) -> Dataset:
    """Only the ``synth_*`` columns of ``ds``, row-aligned (the score pass of ``filter_dataset``)."""
    cols = _input_columns(ds, sf.config)
    if len(ds) == 0:
        # map() never calls the function on zero rows, so it would add no columns.
        features = annotation_features(sf)
        return Dataset.from_dict({c: [] for c in features}, features=features)
    return ds.select_columns(cols).map(
        sf.annotate, batched=True, batch_size=batch_size or sf.config.batch_size, num_proc=num_proc,
        remove_columns=cols, features=annotation_features(sf), desc="synthfilter: score",
    )


def _id_table(ds: Dataset, cfg: Config) -> ColumnTable:
    table = _field_table(ds, cfg.id_field or "id")
    return table if table is not None else ColumnTable(mapping={"_rows": range(len(ds))})


def _field_table(ds: Dataset, path: str | None) -> ColumnTable | None:
    """The column of ``ds`` that holds ``path`` (a column, or the struct column a dotted path
    starts in); None without a path or such a column."""
    if not path:
        return None
    names = ds.column_names
    top = path if path in names else path.split(".")[0]
    return ColumnTable(table=ds.select_columns([top]).with_format("arrow")[:]) if top in names else None


def _filter_parts(parts: list[tuple[str, Dataset]], sf: SynthFilter, num_proc: int | None, batch_size: int,
                  as_dict: bool = False) -> FilterResult:
    """Annotate every part, decide over all of them in order, split the decisions back."""
    cfg = sf.config
    t0 = time.perf_counter()
    annotated = [annotate_dataset(ds, sf, num_proc, batch_size) for _, ds in parts]
    tables = [a.with_format("arrow")[:] for a in annotated]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    ids: list[str] = []
    for name, ds in parts:
        ids.extend(record_ids(_id_table(ds, cfg), cfg, name))
    sizes = [len(ds) for _, ds in parts]
    shard = np.repeat(np.arange(len(parts), dtype=np.int32), sizes)
    ann, errors = annotations_from_columns(ColumnTable(table=table), cfg, ids, shard=shard)
    # The provenance field's values of each part, tallied as run tallies a shard (the .map that
    # labelled them may have run in other processes): values that match no key are warned of.
    tallies, lo = [], 0
    for size, (_, ds) in zip(sizes, parts):
        usable = ann.status[lo:lo + size] != STATUS_MALFORMED
        tallies.append(provenance_tally(_field_table(ds, cfg.ratio.provenance_field), cfg, usable))
        lo += size
    result = sf._decide(ann, ids, errors, parts=[(name, len(ds)) for name, ds in parts],
                        seconds_before=time.perf_counter() - t0, provenance_tallies=tallies)
    kept: dict[str, Dataset] = {}
    rejected: dict[str, Dataset] = {}
    by_split: dict[str, Any] = {}
    lo = 0
    for (name, ds), ann_table in zip(parts, tables):
        hi = lo + len(ds)
        kept[name], rejected[name] = _split_outputs(ds, ann_table, result, lo, hi, cfg)
        reasons = result.decisions.reason[lo:hi]
        c = np.bincount(reasons, minlength=len(REASONS))
        by_split[name] = {"records": hi - lo, "kept": int(c[KEPT]), "rejected": int(hi - lo - c[KEPT]),
                          "rejected_by_reason": {REASONS[i]: int(c[i]) for i in range(1, len(REASONS))}}
        if ann.language is not None:
            counts = record_language_counts(ann.language[lo:hi], reasons, ann.score[lo:hi], ann.provenance[lo:hi], cfg)
            by_split[name]["by_language"] = languages_section(counts, cfg)["by_language"]
        lo = hi
    report = result.report
    if cfg.report.diversity:
        from synthfilter.diversity import set_diversity

        set_diversity(report, _diversity(parts, ann, result.keep, cfg), cfg.repetition.reject)
    if as_dict:
        report["splits"] = by_split
        return FilterResult(kept=DatasetDict(kept), rejected=DatasetDict(rejected), report=report)
    name = parts[0][0]
    return FilterResult(kept=kept[name], rejected=rejected[name], report=report)


def _diversity(parts: list[tuple[str, Dataset]], ann: Any, keep: np.ndarray, cfg: Config) -> dict[str, Any]:
    """report.json's ``diversity`` as the CLI computes it: on the ``report.sample_size`` usable
    records with the smallest per-record uniform, grouped by split (or ``report.group_by``)."""
    from synthfilter.diversity import diversity_section

    usable = np.flatnonzero(ann.status == 0)
    sample = usable[np.lexsort((usable, ann.uniform[usable]))][: cfg.report.sample_size]
    if not len(sample):
        return diversity_section([], [], [], [], seed=cfg.seed)
    texts: list[str] = []
    groups: list[str] = []
    starts = np.cumsum([0] + [len(ds) for _, ds in parts])
    for i, (name, ds) in enumerate(parts):
        rows = np.sort(sample[(sample >= starts[i]) & (sample < starts[i + 1])]) - starts[i]
        if not len(rows):
            continue
        batch = ds.select(rows)[:]
        texts.extend(field_values(batch, cfg.text_field, len(rows)))
        if cfg.report.group_by:
            groups.extend(map(group_label, field_values(batch, cfg.report.group_by, len(rows))))
        else:
            groups.extend([name] * len(rows))
    # Gathered in global order; the CLI hands them over in sample order (by uniform).
    pos = np.searchsorted(np.sort(sample), sample)
    texts = [texts[i] for i in pos]
    groups = [groups[i] for i in pos]
    kept = keep[sample]
    sigs = np.asarray(ann.signatures[sample]) if ann.signatures is not None else None
    return diversity_section(
        texts, [t for t, k in zip(texts, kept) if k], groups, [g for g, k in zip(groups, kept) if k],
        before_sigs=sigs, after_sigs=None if sigs is None else sigs[kept], seed=cfg.seed,
    )


def _split_outputs(ds: Dataset, ann: pa.Table, result: Any, lo: int, hi: int, cfg: Config) -> tuple[Dataset, Dataset]:
    keep = result.keep[lo:hi]
    kept_rows = np.flatnonzero(keep)
    rej_rows = np.flatnonzero(~keep)
    kept = ds.select(kept_rows) if len(kept_rows) < len(ds) else ds
    if cfg.annotate:
        kept = _with_columns(kept, {
            SCORE_COL: ann.column(SCORE_COL).take(pa.array(kept_rows)).to_pylist(),
            PROVENANCE_COL: ann.column(PROVENANCE_COL).take(pa.array(kept_rows)).to_pylist(),
        }, Features({k: decision_features()[k] for k in KEPT_ANNOTATE_COLUMNS}))
    g = rej_rows + lo
    dup = [result.duplicate_of[i] for i in g.tolist()]
    p_machine = result.p_machine[g]
    take = pa.array(rej_rows)
    columns = {
        REASON_COL: [result.reason[i] for i in g.tolist()],
        DUPLICATE_OF_COL: dup,
        SCORE_COL: ann.column(SCORE_COL).take(take).to_pylist(),
        P_MACHINE_COL: p_machine.tolist(),
        PROVENANCE_COL: ann.column(PROVENANCE_COL).take(take).to_pylist(),
        ERROR_COL: ann.column(ERROR_COL).take(take).to_pylist(),
    }
    rejected = _with_columns(ds.select(rej_rows), columns, decision_features())
    return kept, rejected


def _with_columns(ds: Dataset, columns: dict[str, list[Any]], features: Features) -> Dataset:
    """``ds`` with ``columns`` appended (replacing same-named ones)."""
    clash = [c for c in columns if c in ds.column_names]
    if clash:
        ds = ds.remove_columns(clash)
    if len(ds) == 0:
        # concatenate_datasets skips empty datasets: build the empty table with both schemas.
        both = Features({**ds.features, **features})
        return Dataset.from_dict({c: [] for c in both}, features=both)
    return datasets.concatenate_datasets([ds, Dataset.from_dict(columns, features=features)], axis=1)


# -- one pass: IterableDataset -----------------------------------------------------------------------


def stream_filter(ds: IterableDataset, config: ConfigLike = None, *, batch_size: int | None = None,
                  split: str | None = None) -> FilterResult:
    """Filter a streaming dataset in a single pass, deciding each record as it arrives.

    How this differs from the two-pass result of ``filter_dataset`` on the same records:

    - Duplicates: the first record of a group seen is kept (the two-pass ``keep_rule``
      prefers known-human provenance and a lower detector score across the whole group). A
      record is compared with the records kept so far (``NearDupIndex``, verified), not with
      rejected ones, so near-duplicate chains are not joined transitively.
    - Target ratio: the synthetic share is a running estimate (re-estimated on all records
      kept by dedup so far whenever their number has doubled, and on the first batch); each
      batch drops records in the same order as the two-pass plan (known machine first, then
      by the strategy) until the running share of everything kept so far is at most the
      target, with the point estimate (no confidence margin). Early batches decide with
      less evidence, so the kept share can differ from the two-pass plan.
    - ``max_human_loss`` is not checked (it needs the whole corpus); the report says so.
    - Decisions depend on ``batch_size`` (the unit of a ratio decision), never on timing.
    - Memory grows with the stream: about 3.5 KB per kept record for the near-duplicate
      index (datasketch), plus a few bytes per record for the estimate.

    ``kept`` and ``rejected`` are lazy views: iterating either runs the single pass (both
    see the same deterministic decisions; iterating both costs two passes). The report is
    filled in when an iteration finishes.
    """
    sf = config if isinstance(config, SynthFilter) else SynthFilter(config)
    cfg = sf.config
    bs = batch_size or cfg.batch_size
    report: dict[str, Any] = {}
    out_features = None
    if ds.features is not None:
        out_features = Features({**{k: v for k, v in ds.features.items() if k not in REJECTED_COLUMNS},
                                 **decision_features()})
    name = split or _split_name(ds)
    decided = IterableDataset.from_generator(
        _stream_records, features=out_features,
        gen_kwargs={"source": ds, "sf": sf, "report": report, "batch_size": bs, "prefix": name},
    )
    drop_from_kept = [c for c in REJECTED_COLUMNS if not (cfg.annotate and c in KEPT_ANNOTATE_COLUMNS)]
    kept = decided.filter(_is_kept, batched=True, batch_size=bs).remove_columns(drop_from_kept)
    rejected = decided.filter(_is_rejected, batched=True, batch_size=bs)
    return FilterResult(kept=kept, rejected=rejected, report=report)


def _is_kept(batch: Mapping[str, list[Any]]) -> list[bool]:
    return [r == "kept" for r in batch[REASON_COL]]


def _is_rejected(batch: Mapping[str, list[Any]]) -> list[bool]:
    return [r != "kept" for r in batch[REASON_COL]]


def _stream_records(source: IterableDataset, sf: SynthFilter, report: dict[str, Any], batch_size: int,
                    prefix: str) -> Iterator[dict[str, Any]]:
    report.clear()
    state = _StreamState(sf, prefix)
    for batch in source.iter(batch_size=batch_size):
        cols = state.decide_batch(batch)
        names = [c for c in batch if c not in cols]
        n = len(cols[REASON_COL])
        for i in range(n):
            row = {c: batch[c][i] for c in names}
            row.update({c: v[i] for c, v in cols.items()})
            yield row
    report.update(state.report())


class _StreamState:
    """Everything a single pass remembers: seen hashes, the near-dup index, the running estimate."""

    def __init__(self, sf: SynthFilter, prefix: str) -> None:
        from synthfilter.dedup.index import NearDupIndex

        self.sf = sf
        self.cfg = cfg = sf.config
        self.prefix = prefix
        self.t0 = time.perf_counter()
        self.rows = 0
        self.reasons = array("b")
        self.exact: dict[tuple[int, int], str] = {}
        d = cfg.dedup
        self.index = NearDupIndex(d.threshold, d.num_perm, seed=d.seed, verify=d.verify,
                                  verify_threshold=d.verify_threshold) if d.near else None
        self.index_ids: list[str] = []
        self.dup_counts: dict[str, int] = {}
        self.card = sf.scorer.detector.card if sf.scorer.uses_detector else None
        # Survivors of dedup (for the estimate) and the kept mass / count (for the target).
        self.surv_scores = array("f")
        self.surv_prov = array("b")
        self.surv_raw_scores = array("f")  # every survivor's score, known provenance included
        self.kept_scores = array("f")
        self.kept_prov = array("b")
        self.kept_mass = 0.0
        self.kept_count = 0
        self.pi: float | None = None
        self.next_estimate = 0
        self.downsampled = 0
        self.decided_on: list[tuple[float, int]] = []  # (running share used, records it decided) per batch
        self.warnings: list[str] = []
        # The provenance field's values as run tallies them (None until a batch has its column).
        self.provenance_tally: dict[str, Any] | None = None
        # Records per language and decision as run's decide counts them, summed over the batches.
        self.language_counts = record_language_counts(
            np.zeros(0, np.uint8), np.zeros(0, np.int8), np.zeros(0, np.float32), np.zeros(0, np.int8), cfg,
        ) if cfg.identifies_language else None

    # -- per batch ---------------------------------------------------------------------------

    def decide_batch(self, batch: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
        cfg = self.cfg
        n = len(next(iter(batch.values()))) if batch else 0
        values = field_values(batch, cfg.text_field, n, required=True)
        prov = None
        if cfg.ratio.provenance_field:
            prov = [None if v is MISSING else v for v in field_values(batch, cfg.ratio.provenance_field, n)]
        ids = record_ids(ColumnTable(mapping=dict(batch)), cfg, self.prefix, start=self.rows)
        field = cfg.ratio.provenance_field
        mapper = self.sf.scorer.provenance if field else None
        if mapper is not None:
            mapper.take_tally()  # this batch's values only
        scored = self.sf._score_values(values, prov)
        if mapper is not None and (field in batch or field.split(".")[0] in batch):
            from synthfilter.provenance import merge_tallies

            self.provenance_tally = merge_tallies([self.provenance_tally, mapper.take_tally()])
        reason = np.zeros(n, dtype=np.int8)
        dup_of: list[str | None] = [None] * n
        errors = scored["error"]
        trusted = np.ones(n, dtype=bool)
        if "language" in scored:
            from synthfilter.pipeline.stages import language_roles_of

            trusted = language_roles_of(scored["language"], cfg).scored
        aside = reason_of_status(scored["set_aside"])  # --languages, --reject-repetitive
        for i in range(n):
            if scored["status"][i]:
                if cfg.on_error == "fail":
                    raise MalformedRecordError(
                        f"{self.prefix} row {self.rows + i} (id {ids[i]!r}): {errors[i]} "
                        "(set on_error = \"quarantine\" in the config to set bad records aside)"
                    )
                reason[i] = MALFORMED
                continue
            if aside[i] != KEPT:
                reason[i] = aside[i]
                continue
            key = (int(scored["hash_hi"][i]), int(scored["hash_lo"][i]))
            if cfg.dedup.exact and key in self.exact:
                reason[i], dup_of[i] = EXACT_DUP, self.exact[key]
            elif self.index is not None and (found := self.index.query(scored["signatures"][i])):
                reason[i], dup_of[i] = NEAR_DUP, self.index_ids[found[0]]
            else:
                self.exact.setdefault(key, ids[i])
                if self.index is not None:
                    self.index.add(len(self.index_ids), scored["signatures"][i])
                    self.index_ids.append(ids[i])
                continue
            self.dup_counts[dup_of[i]] = self.dup_counts.get(dup_of[i], 0) + 1  # type: ignore[index]
        p_machine = np.full(n, np.nan, dtype=np.float32)
        self._downsample(scored, ids, reason, p_machine, trusted)
        if self.language_counts is not None:
            self.language_counts += record_language_counts(scored["language"], reason, scored["score"],
                                                           scored["provenance"], cfg)
        self.rows += n
        self.reasons.extend(reason.tolist())
        kept = reason == KEPT
        self.kept_scores.extend(scored["score"][kept].tolist())
        self.kept_prov.extend(scored["provenance"][kept].tolist())
        return {
            REASON_COL: [REASONS[r] for r in reason.tolist()],
            DUPLICATE_OF_COL: dup_of,
            SCORE_COL: scored["score"].tolist(),
            P_MACHINE_COL: p_machine.tolist(),
            PROVENANCE_COL: [PROVENANCE_NAMES[c] for c in scored["provenance"].tolist()],
            ERROR_COL: ["" if e is None else e for e in errors.tolist()],
        }

    def _downsample(self, scored: dict[str, np.ndarray], ids: list[str], reason: np.ndarray,
                    p_machine: np.ndarray, trusted: np.ndarray) -> None:
        from synthfilter.ratio import HUMAN, MACHINE, UNKNOWN, adjust_to_prior, card_train_prior, drop_order
        from synthfilter.pipeline.stages import record_uniforms

        from synthfilter.pipeline.stages import estimated_mask

        r = self.cfg.ratio
        surv = np.flatnonzero(estimated_mask(reason, trusted, scored["provenance"]))
        prov = scored["provenance"][surv]
        score = np.where(prov == UNKNOWN, scored["score"][surv], np.nan).astype(np.float32)
        self.surv_scores.extend(score.tolist())
        self.surv_prov.extend(prov.tolist())
        self.surv_raw_scores.extend(scored["score"][surv].tolist())
        if r.target_ratio is None or not len(surv):
            return
        self._update_estimate()
        if self.pi is None:
            return  # nothing to estimate from (no detector, no known provenance): as decide()
        self.decided_on.append((self.pi, len(surv)))
        post = np.where(prov == MACHINE, 1.0, 0.0)
        unknown = prov == UNKNOWN
        scored_mask = unknown & np.isfinite(score)
        if scored_mask.any():
            s = np.clip(score[scored_mask].astype(np.float64), 1e-6, 1 - 1e-6)
            post[scored_mask] = adjust_to_prior(s, card_train_prior(self.card), self.pi)
        post[unknown & ~np.isfinite(score)] = self.pi
        uniform = record_uniforms(self.cfg.seed, [ids[i] for i in surv.tolist()])
        order = drop_order(post, prov, uniform, r.strategy)
        total = post.sum()
        m = len(surv)
        dropped_mass = np.concatenate(([0.0], np.cumsum(post[order])))
        remaining = self.kept_count + m - np.arange(m + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(remaining > 0, (self.kept_mass + total - dropped_mass) / np.maximum(remaining, 1), 0.0)
        fits = np.flatnonzero(share <= r.target_ratio + 1e-12)
        drop = np.zeros(m, dtype=bool)
        if len(fits):
            drop[order[: int(fits[0])]] = True
        else:
            # Earlier batches already overshot: drop whatever would raise the share further.
            drop = (post > r.target_ratio) & (prov != HUMAN)
        rows = surv[drop]
        reason[rows] = DOWNSAMPLED
        p_machine[rows] = post[drop]
        self.downsampled += int(drop.sum())
        self.kept_mass += float(post[~drop].sum())
        self.kept_count += int((~drop).sum())

    def _update_estimate(self) -> None:
        from synthfilter.ratio import estimate_prevalence

        n = len(self.surv_scores)
        if n < self.next_estimate and self.pi is not None:
            return
        scores = np.frombuffer(self.surv_scores, dtype=np.float32)
        prov = np.frombuffer(self.surv_prov, dtype=np.int8)
        self.next_estimate = max(2 * n, 1)
        if np.isnan(scores).all() and not (prov != 0).any():
            self.pi = None
            return
        # As the final report: the labelled records re-measure the detector's rates (without them
        # the running share read 51 % on a corpus at 2 %, and the stream dropped a quarter of it).
        known = np.frombuffer(self.surv_raw_scores, dtype=np.float32) if self.cfg.ratio.remeasure_rates else None
        est = estimate_prevalence(scores, prov, self.card, method=self.cfg.ratio.method, n_boot=0, seed=self.cfg.seed,
                                  known_scores=known)
        self.pi = est.detector_share if est.detector_share is not None else est.share

    def _running_drift(self, before: Any, target: float | None) -> str | None:
        """A warning when the running estimates the batches were decided on stood far from the
        whole stream's (they read the first records only), or when the stream dropped records from
        a corpus the whole-stream estimate puts under the target already."""
        if target is None or not self.downsampled or not self.decided_on or before.detector_share is None:
            return None
        used = np.array([p for p, _ in self.decided_on])
        weights = np.array([n for _, n in self.decided_on], dtype=np.float64)
        mean_used = float(used @ weights / weights.sum())
        final = float(before.detector_share)
        if abs(mean_used - final) <= 0.05 and before.share > target:
            return None
        why = (f"the whole stream's estimate ({before.share:.1%}) is already at or under the target ({target:.1%})"
               if before.share <= target else
               f"the running estimates they were decided on (from {used.min():.0%} to {used.max():.0%}, "
               f"{mean_used:.0%} on average) stood far from the whole stream's ({final:.1%})")
        return (f"{self.downsampled:,} records were downsampled batch by batch, but {why}: a stream decides "
                "each batch on the records seen so far. For a plan over the whole corpus, with its safety margin, "
                "use filter_dataset on a Dataset (two passes)")

    # -- end of the stream ------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        from synthfilter.ratio import estimate_prevalence

        cfg = self.cfg
        reasons = np.frombuffer(self.reasons, dtype=np.int8)
        c = np.bincount(reasons, minlength=len(REASONS))
        records = int(len(reasons))
        sizes = np.array(sorted(self.dup_counts.values()), dtype=np.int64) + 1
        dedup = self.sf.scorer.dedup_settings()
        r = cfg.ratio
        synthetic: dict[str, Any] = {
            "known_provenance": {"human": 0, "machine": 0}, "detector_scored": 0,
            "target_ratio": r.target_ratio, "downsampled": self.downsampled, "method": None,
            "strategy": r.strategy if r.target_ratio is not None else None, "streaming": True,
        }
        surv_scores = np.frombuffer(self.surv_scores, dtype=np.float32)
        surv_prov = np.frombuffer(self.surv_prov, dtype=np.int8)
        warnings = list(self.warnings)
        if len(surv_scores) and not (np.isnan(surv_scores).all() and not (surv_prov != 0).any()):
            known = np.frombuffer(self.surv_raw_scores, dtype=np.float32) if r.remeasure_rates else None
            before = estimate_prevalence(surv_scores, surv_prov, self.card, method=r.method, n_boot=r.bootstrap,
                                         seed=cfg.seed, known_scores=known, widen=r.widen)
            kept_scores = np.frombuffer(self.kept_scores, dtype=np.float32)
            kept_prov = np.frombuffer(self.kept_prov, dtype=np.int8)
            kept_scores = np.where(kept_prov == 0, kept_scores, np.nan).astype(np.float32)
            after = estimate_prevalence(kept_scores, kept_prov, self.card, method=r.method, n_boot=r.bootstrap,
                                        seed=cfg.seed) if len(kept_prov) else before
            # A streaming pass decides batch by batch and cannot refuse up front; when the detector
            # turns out unreliable it says so, and that the kept share is unknown.
            known_after = not (before.verdict == "unreliable" and self.downsampled > 0)
            synthetic.update({
                "estimated_share_before": before.share,
                "ci95_before": list(before.ci95) if before.ci95 is not None else None,
                "estimated_share_after": after.share if known_after else None,
                "ci95_after": list(after.ci95) if after.ci95 is not None and known_after else None,
                "kept_share_known": known_after,
                "known_provenance": {"human": before.known_human, "machine": before.known_machine},
                "detector_scored": before.n_scored, "unscored": before.n_unscored,
                "naive_share_before": before.naive_share, "method": before.method,
                "weak_detector": bool(before.reliability is not None and before.reliability.flagged),
                "reliability": before.reliability.to_dict() if before.reliability is not None else None,
                "warnings": list(before.warnings),
            })
            warnings.extend(before.warnings)
            drift = self._running_drift(before, r.target_ratio)
            if drift:
                warnings.append(drift)
            if not known_after:
                warnings.append("the stream was downsampled although the detector looks unreliable on it (a streaming "
                                "pass cannot refuse up front): the synthetic share of the kept records is unknown")
        if cfg.ratio.provenance_field:
            from synthfilter.provenance import provenance_warning

            # As filter_dataset on a Dataset: without the field's column, whether any record got a label.
            tally = self.provenance_tally or {"present": None, "labelled": int((surv_prov != 0).sum()), "unmatched": 0}
            why = provenance_warning(cfg.ratio.provenance_field, records - int(c[MALFORMED]), tally)
            if why:
                warnings.append(why)
        if r.max_human_loss is not None:
            warnings.append("max_human_loss is not checked on a streaming pass (it needs the whole corpus)")
        languages = SimpleNamespace(languages=None, synthetic=synthetic, warnings=warnings)
        if self.language_counts is not None:
            apply_language_counts(languages, self.language_counts, cfg)
        seconds = time.perf_counter() - self.t0
        return {
            "version": __version__,
            "input": {"records": records, "bytes": None, "shards": 1, "malformed": int(c[MALFORMED])},
            "output": {"kept": int(c[KEPT]), "rejected": records - int(c[KEPT]),
                       "rejected_by_reason": {REASONS[i]: int(c[i]) for i in range(1, len(REASONS))},
                       "dry_run": False},
            "duplicates": {
                "exact": int(c[EXACT_DUP]), "near": int(c[NEAR_DUP]), "clusters": int(len(sizes)),
                "largest_cluster": int(sizes.max()) if len(sizes) else 0,
                "bands": dedup["bands"] if dedup else None, "rows": dedup["rows"] if dedup else None,
                "threshold": cfg.dedup.threshold if cfg.dedup.near else None,
                "verify_threshold": cfg.dedup.verify_at if cfg.dedup.near and cfg.dedup.verify else None,
            },
            "synthetic": synthetic,
            "languages": languages.languages,
            "warnings": warnings,
            "timing": {"seconds": round(seconds, 3), "records_per_s": round(records / seconds, 1) if seconds > 0 else None},
        }

