"""The Python API: ``SynthFilter`` scores batches, annotates ``datasets.map`` batches and decides.

It wraps the pipeline's own stages (``Scorer.score_texts`` and ``decide``), so the same records
and config give the same decisions as ``synthfilter run``. Nothing here imports ``datasets``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from synthfilter import __version__
from synthfilter.config import Config, load_config
from synthfilter.pipeline.stages import (
    KEPT,
    PROVENANCE_NAMES,
    REASONS,
    STATUS_LANGUAGE,
    STATUS_MALFORMED,
    STATUS_OK,
    STATUS_REPETITIVE,
    Annotations,
    Decisions,
    Scorer,
    decide,
    record_uniforms,
    repeated_ids,
)
from synthfilter.records import FieldSpec, get_path, is_missing

__all__ = [
    "ANNOTATION_COLUMNS",
    "DECISION_COLUMNS",
    "DecideResult",
    "MalformedRecordError",
    "SynthFilter",
]

# Columns ``SynthFilter.annotate`` adds (bands / signature only with near-duplicate detection).
SCORE_COL = "synth_score"  # float32 calibrated P(machine); NaN where not scored
PROVENANCE_COL = "synth_provenance"  # "human" | "machine" | "unknown" (from the provenance field)
TEXT_HASH_COL = "synth_text_hash"  # 32 hex digits: xxh3-128 of the normalised text; "" if malformed
LENGTH_COL = "synth_length"  # int32 characters of the text
ERROR_COL = "synth_error"  # "" for a usable record, else why it is malformed
BANDS_COL = "synth_bands"  # uint64[b] MinHash LSH band keys
SIGNATURE_COL = "synth_signature"  # uint32[num_perm] MinHash signature (for verified near-dup clusters)
LANGUAGE_COL = "synth_language"  # ISO 639-1 code ("und": not identified; "" if malformed), when identified
LANGUAGE_CONFIDENCE_COL = "synth_language_confidence"  # float32 confidence of synth_language
REPETITIVE_COL = "synth_repetitive"  # bool: the text repeats itself (with repetition.reject on)
ANNOTATION_COLUMNS = (SCORE_COL, PROVENANCE_COL, TEXT_HASH_COL, LENGTH_COL, ERROR_COL, BANDS_COL, SIGNATURE_COL,
                      LANGUAGE_COL, LANGUAGE_CONFIDENCE_COL, REPETITIVE_COL)

# Columns the decide step adds to rejected records.
REASON_COL = "synth_reason"  # a rejection reason of REASONS: "malformed", "exact_duplicate", ..., "repetitive"
DUPLICATE_OF_COL = "synth_duplicate_of"  # id of the copy its cluster kept (duplicates only)
P_MACHINE_COL = "synth_p_machine"  # P(machine) under the corpus prior (downsampled records only)
DECISION_COLUMNS = (REASON_COL, DUPLICATE_OF_COL, P_MACHINE_COL)

_PROVENANCE_CODES = {name: code for code, name in enumerate(PROVENANCE_NAMES)}
_ZERO_HASH = "0" * 32
_NO_TEXT_SALT = np.uint64(xxhash.xxh3_64_intdigest(b"no-text:synthfilter.api"))
MISSING = get_path({}, "absent")  # the marker records.get_path returns for an absent field


class MalformedRecordError(ValueError):
    """A record has no usable text and ``on_error`` is ``"fail"``; the message names the row."""


@dataclass
class DecideResult:
    """Decisions for every record, in the order the annotations were given.

    Attributes:
        keep: bool per record.
        reason: per record, ``"kept"`` or the rejection reason (``REASONS``).
        duplicate_of: per record, the id of the copy its duplicate cluster kept (duplicates), else None;
            a target ratio may still downsample that copy (its own reason says so).
        p_machine: float32 P(machine) under the corpus prior for downsampled records, else NaN.
        ids: the record ids the decisions used (they drive every random choice).
        report: the same keys as ``report.json`` of ``synthfilter run``.
        decisions: the pipeline's raw ``Decisions`` (codes, global indices).
    """

    keep: np.ndarray
    reason: list[str]
    duplicate_of: list[str | None]
    p_machine: np.ndarray
    ids: list[str]
    report: dict[str, Any]
    decisions: Decisions


def _resolve_config(config: Config | str | os.PathLike[str] | Mapping[str, Any] | None,
                    source: str = "SynthFilter(config=...)") -> Config:
    if config is None:
        return load_config()
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
        cfg.validate()
        return cfg
    if isinstance(config, Mapping):
        return Config.from_dict(config, source=source)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(f"config must be a Config, a TOML path, a dict of options or None, got {type(config).__name__}")


class SynthFilter:
    """Score, annotate and decide from Python, with the options of ``synthfilter run``.

    Args:
        config: a ``Config``, the path of a TOML config file, a dict laid out like that file
            (``{"dedup": {"threshold": 0.9}}``), or None for the defaults.
        model: detector model directory (overrides ``detector.model`` and enables the detector).

    Picklable: only the config (and the LSH bands chosen for it) travels; the MinHasher and the
    detector are built lazily, once per process, so ``Dataset.map(sf.annotate, batched=True,
    num_proc=N)`` loads the model once in each worker, not once per batch.

    Example:
        >>> sf = SynthFilter("synthfilter.toml")
        >>> ds = ds.map(sf.annotate, batched=True, num_proc=4)   # adds the synth_* columns
        >>> result = sf.decide(ds, target_ratio=0.1)             # global: duplicates, ratio
        >>> kept = ds.select(np.flatnonzero(result.keep))
    """

    def __init__(self, config: Config | str | os.PathLike[str] | Mapping[str, Any] | None = None,
                 model: str | os.PathLike[str] | None = None) -> None:
        cfg = _resolve_config(config)
        if model is not None:
            cfg.detector.model = str(model)
            cfg.detector.enabled = True
        self._config = cfg
        self._scorer: Scorer | None = None
        self._bands: tuple[int, int] | None = None

    # Only the config is pickled (and hashed by ``datasets`` for its cache fingerprint), plus
    # the LSH bands x rows: choosing them is a grid search of about a second, which each
    # ``map`` worker would otherwise redo.
    def __getstate__(self) -> dict[str, Any]:
        # Also what ``datasets`` hashes for a ``.map`` cache key: the model's files (name, size,
        # time) are part of it, so a model replaced in place (``adapt --out DIR --overwrite``)
        # scores again instead of serving the old model's cached scores.
        bands = self.scorer.bands if self._config.dedup.near else None
        return {"config": self._config, "version": __version__, "bands": bands, "model_files": self._model_stamp()}

    def _model_stamp(self) -> list[tuple[str, int, int]] | None:
        if not self._config.detector.enabled:
            return None
        from pathlib import Path

        from synthfilter.detect.model import default_model_path, model_files_stamp

        model = self._config.detector.model
        return list(model_files_stamp(Path(model) if model else default_model_path())) or None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = state["config"]
        self._scorer = None
        self._bands = state.get("bands")

    def __repr__(self) -> str:
        d = self._config
        return (f"SynthFilter(text_field={d.text_field!r}, detector={d.detector.enabled}, "
                f"near_dedup={d.dedup.near}, target_ratio={d.ratio.target_ratio})")

    @property
    def config(self) -> Config:
        """The resolved config (a private copy: changing the caller's object later has no effect)."""
        return self._config

    @property
    def scorer(self) -> Scorer:
        """The pipeline's per-batch scorer, built on first use in each process."""
        if self._scorer is None:
            self._scorer = Scorer(self._config)
            if self._bands is not None:
                self._scorer._bands = self._bands  # the parent's choice (same config, same result)
        return self._scorer

    def with_options(self, overrides: Mapping[str, Any]) -> "SynthFilter":
        """A new SynthFilter with ``overrides`` applied (same layout as the TOML file)."""
        cfg = copy.deepcopy(self._config)
        cfg.apply(overrides, source="overrides")
        return SynthFilter(cfg)

    @property
    def annotation_columns(self) -> tuple[str, ...]:
        """The columns ``annotate`` adds with this config."""
        cols = [SCORE_COL, PROVENANCE_COL, TEXT_HASH_COL, LENGTH_COL, ERROR_COL]
        if self._config.dedup.near:
            cols.append(BANDS_COL)
            if self._config.dedup.verify:
                cols.append(SIGNATURE_COL)
        if self._config.identifies_language:
            cols += [LANGUAGE_COL, LANGUAGE_CONFIDENCE_COL]
        if self._config.repetition.reject:
            cols.append(REPETITIVE_COL)
        return tuple(cols)

    # -- score --------------------------------------------------------------------------------

    def score_batch(self, texts: Sequence[Any], provenance: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
        """Score a batch of texts; one row per input, in order.

        Args:
            texts: the texts. A value that is not a non-empty string is malformed: ``status`` 1,
                its ``error`` says why, and it gets neutral values (hash 0, score NaN).
            provenance: raw provenance field values (mapped by ``ratio.provenance_map``);
                used only when ``ratio.provenance_field`` is set, as in the CLI.

        Returns:
            ``status`` int8 (0 usable, 1 malformed), ``error`` (object: None or a message),
            ``hash_hi`` / ``hash_lo`` uint64 (xxh3-128 of the normalised text), ``length``
            int32, ``score`` float32 (NaN: not scored), ``provenance`` int8 (0 unknown,
            1 human, 2 machine), ``set_aside`` int8 (why a usable record is rejected before
            deduplication: 2 for a language ``--languages`` drops, 3 for a text that repeats
            itself under ``repetition.reject``; else 0), and with near-duplicate detection
            ``bands`` uint64 (n, b) and ``signatures`` uint32 (n, num_perm).
        """
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
            raise TypeError(f"score_batch takes a sequence of texts, got {type(texts).__name__} (for one text: "
                            "score_batch([text]))")
        texts = list(texts)
        if provenance is not None:
            if isinstance(provenance, (str, bytes)) or not isinstance(provenance, Iterable):
                raise TypeError(f"provenance must be a sequence of values, one per text, got {type(provenance).__name__}")
            provenance = list(provenance)
            if len(provenance) != len(texts):
                raise ValueError(f"provenance has {len(provenance)} values for {len(texts)} texts: give one per text "
                                 "(None where unknown)")
        return self._score_values(texts, provenance)

    def _score_values(self, values: list[Any], prov_values: list[Any] | None) -> dict[str, np.ndarray]:
        cfg = self._config
        n = len(values)
        text_field = cfg.text_field
        prov_field = cfg.ratio.provenance_field or "provenance"
        # The CLI's own record checks (missing, not a string, empty), on one-field records.
        spec = FieldSpec(text_field=text_field, provenance_field=prov_field if prov_values is not None else None)
        texts: list[str] = []
        provs: list[Any] = []
        pos: list[int] = []
        errors: list[str | None] = [None] * n
        for i, value in enumerate(values):
            obj: dict[str, Any] = {} if is_missing(value) else {text_field: value}
            if prov_values is not None:
                obj[prov_field] = prov_values[i]
            _, text, prov, error = spec.extract(obj, "", 0)
            if error is None:
                texts.append(text)  # type: ignore[arg-type]
                provs.append(prov)
                pos.append(i)
            else:
                errors[i] = error
        ann = self.scorer.score_texts(texts, provs if prov_values is not None else None)
        at = np.asarray(pos, dtype=np.int64)
        out: dict[str, np.ndarray] = {
            "status": np.fromiter((STATUS_OK if e is None else STATUS_MALFORMED for e in errors), np.int8, count=n),
            "error": np.array(errors, dtype=object),
            # Why the score stage sets a usable record aside (STATUS_LANGUAGE, STATUS_REPETITIVE), else 0.
            "set_aside": np.full(n, STATUS_OK, dtype=np.int8),
        }
        out["set_aside"][at] = ann["status"]
        for name, dtype, fill in (("hash_hi", np.uint64, 0), ("hash_lo", np.uint64, 0), ("length", np.int32, 0),
                                  ("score", np.float32, np.nan), ("provenance", np.int8, 0)):
            a = np.full(n, fill, dtype=dtype)
            a[at] = ann[name]
            out[name] = a
        if "language" in ann:
            for name, dtype, fill in (("language", np.uint8, 0), ("language_confidence", np.float32, np.nan)):
                a = np.full(n, fill, dtype=dtype)
                a[at] = ann[name]
                out[name] = a
        if "bands" in ann:
            bands = np.zeros((n, ann["bands"].shape[1]), dtype=np.uint64)
            bands[at] = ann["bands"]
            sigs = np.full((n, ann["signatures"].shape[1]), np.iinfo(np.uint32).max, dtype=np.uint32)
            sigs[at] = ann["signatures"]
            out["bands"], out["signatures"] = bands, sigs
        return out

    # -- annotate -----------------------------------------------------------------------------

    def annotate(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        """The function for ``Dataset.map(sf.annotate, batched=True)``: returns the new columns.

        Reads ``text_field`` (a column, or a dotted path into a struct column) and, when set,
        ``ratio.provenance_field``. Adds ``synth_score``, ``synth_provenance``,
        ``synth_text_hash``, ``synth_length``, ``synth_error`` and, with near-duplicate
        detection, ``synth_bands`` and ``synth_signature`` (see ``ANNOTATION_COLUMNS``).
        Never raises for a bad record: it is marked in ``synth_error``, and ``decide``
        applies ``on_error``.
        """
        cfg = self._config
        top = cfg.text_field.split(".")[0]
        if not isinstance(batch, Mapping) or isinstance(batch.get(top), (str, bytes, Mapping)):
            # One record (``Dataset.map`` without batched=True): its string would be read as a
            # batch of one-character texts.
            raise TypeError("SynthFilter.annotate takes a batch of records (a dict of columns), got one record: "
                            "use ds.map(sf.annotate, batched=True)")
        n = _batch_length(batch)
        values = field_values(batch, cfg.text_field, n, required=True)
        prov = field_values(batch, cfg.ratio.provenance_field, n) if cfg.ratio.provenance_field else None
        if prov is not None:
            prov = [None if is_missing(v) else v for v in prov]
        scored = self._score_values(values, prov)
        ok = scored["status"] == STATUS_OK
        out: dict[str, Any] = {
            SCORE_COL: scored["score"],
            PROVENANCE_COL: [PROVENANCE_NAMES[c] for c in scored["provenance"].tolist()],
            TEXT_HASH_COL: _hex_hashes(scored["hash_hi"], scored["hash_lo"], ok),
            LENGTH_COL: scored["length"],
            ERROR_COL: ["" if e is None else e for e in scored["error"].tolist()],
        }
        if "bands" in scored:
            out[BANDS_COL] = scored["bands"]
            if cfg.dedup.verify:
                out[SIGNATURE_COL] = scored["signatures"]
        if "language" in scored:
            from synthfilter.language import CODES

            out[LANGUAGE_COL] = [CODES[c] if good else "" for c, good in zip(scored["language"].tolist(), ok.tolist())]
            out[LANGUAGE_CONFIDENCE_COL] = scored["language_confidence"]
        if cfg.repetition.reject:
            out[REPETITIVE_COL] = scored["set_aside"] == STATUS_REPETITIVE
        return out

    # -- decide -------------------------------------------------------------------------------

    def decide(self, annotations: Any, target_ratio: float | None = None, *, ids: Sequence[str] | None = None,
               strategy: str | None = None, max_human_loss: float | None = None,
               id_prefix: str = "dataset") -> DecideResult:
        """Global decisions (malformed, exact and near duplicates, target ratio) for every record.

        Args:
            annotations: the annotated records in global order: a ``datasets.Dataset`` or a
                ``pyarrow.Table`` with the ``synth_*`` columns, or a dict of such columns
                (lists or arrays), e.g. concatenated ``annotate`` outputs of your own loop.
            target_ratio, strategy, max_human_loss: override the config's ``[ratio]`` values.
            ids: record ids. Default: the ``id_field`` (or ``id``) column when present, as the
                CLI; otherwise ``"<id_prefix>:<row>"`` (row counted from 0). Ids drive every
                random choice, so the CLI's decisions are matched exactly when the records
                carry the same ids.
            id_prefix: prefix of the fallback ids.

        Raises:
            MalformedRecordError: a record has no usable text and ``on_error`` is ``"fail"``.
            synthfilter.ratio.HumanLossError: the target would drop more human records than
                ``max_human_loss`` allows.
        """
        t0 = time.perf_counter()
        sf = self
        overrides = {"target_ratio": target_ratio, "strategy": strategy, "max_human_loss": max_human_loss}
        if any(v is not None for v in overrides.values()):
            sf = self.with_options({"ratio": overrides})
        cols = _as_columns(annotations, sf.annotation_columns + _id_columns(sf._config) +
                           _provenance_columns(sf._config))
        n = cols.num_rows
        if ids is None:
            ids = record_ids(cols, sf._config, id_prefix)
        ids = list(ids)
        if len(ids) != n:
            raise ValueError(f"ids has {len(ids)} entries for {n} records")
        ann, errors = annotations_from_columns(cols, sf._config, ids)
        # The provenance field's values, where the annotations still hold the records' own column
        # (``ds.map(sf.annotate)`` keeps it), counted as run counts them: values that match no key.
        tally = provenance_tally(cols, sf._config, ann.status != STATUS_MALFORMED)
        return sf._decide(ann, ids, errors, parts=[(id_prefix, n)], seconds_before=time.perf_counter() - t0,
                          provenance_tallies=[tally])

    def _decide(self, ann: Annotations, ids: list[str], errors: list[str], parts: Sequence[tuple[str, int]],
                seconds_before: float = 0.0, input_bytes: int | None = None,
                provenance_tallies: Sequence[Mapping[str, Any] | None] | None = None) -> DecideResult:
        """``decide`` on built annotations; ``provenance_tallies``: one ``provenance_tally`` a part
        (None where its provenance values are not known: then only whether any record got a label
        is checked)."""
        cfg = self._config
        t0 = time.perf_counter()
        bad = np.flatnonzero(ann.status == STATUS_MALFORMED)
        if len(bad) and cfg.on_error == "fail":
            i = int(bad[0])
            raise MalformedRecordError(
                f"{_where(parts, i)} (id {ids[i]!r}): {errors[i]} "
                "(set on_error = \"quarantine\" in the config to set bad records aside)"
            )
        card = self.scorer.detector.card if self.scorer.uses_detector else None
        decisions = decide(ann, cfg, card)
        seconds = seconds_before + time.perf_counter() - t0
        from synthfilter.pipeline.run import build_report

        metas: dict[str, dict[str, Any]] = {name: {"records": size, "size": 0} for name, size in parts}
        # Ids given twice make duplicate_of ambiguous: warned of as the CLI warns (the whole
        # dataset is one "shard" here).
        if len(ids):
            metas[parts[0][0]].update(repeated_ids(ann.uniform, ids))
        lo = 0
        for (name, size), tally in zip(parts, provenance_tallies or ()):
            if tally is not None:  # the run's per-shard summary: read by stages.provenance_warning_of
                malformed = int(np.count_nonzero(ann.status[lo:lo + size] == STATUS_MALFORMED))
                metas[name].update(provenance_tally=tally, malformed=malformed)
            lo += size
        report = build_report([name for name, _ in parts], metas, decisions, cfg, seconds, self.scorer)
        report["input"]["bytes"] = input_bytes
        reason_names = [REASONS[r] for r in decisions.reason.tolist()]
        dup = decisions.duplicate_of
        duplicate_of = [ids[j] if j >= 0 else None for j in dup.tolist()]
        return DecideResult(keep=decisions.reason == KEPT, reason=reason_names, duplicate_of=duplicate_of,
                            p_machine=decisions.posterior, ids=ids, report=report, decisions=decisions)


# -- columns <-> annotations ------------------------------------------------------------------------


class ColumnTable:
    """Uniform access to columns of a pyarrow Table or a dict of lists / arrays."""

    def __init__(self, table: Any = None, mapping: Mapping[str, Any] | None = None) -> None:
        self.table = table
        self.mapping = mapping
        if table is not None:
            self.names = list(table.column_names)
            self.num_rows = int(table.num_rows)
        else:
            assert mapping is not None
            self.names = list(mapping)
            self.num_rows = len(next(iter(mapping.values()))) if mapping else 0
            for k, v in mapping.items():
                if len(v) != self.num_rows:
                    raise ValueError(f"column {k!r} has {len(v)} rows, expected {self.num_rows}")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def pylist(self, name: str) -> list[Any]:
        if self.table is not None:
            return self.table.column(name).to_pylist()
        v = self.mapping[name]  # type: ignore[index]
        return v.tolist() if isinstance(v, np.ndarray) else list(v)

    def vector(self, name: str, dtype: Any) -> np.ndarray:
        if self.table is not None:
            return self.table.column(name).to_numpy().astype(dtype, copy=False)
        return np.asarray(self.mapping[name], dtype=dtype)  # type: ignore[index]

    def matrix(self, name: str, dtype: Any) -> Any:
        """A (rows, width) array; from Arrow, the chunks stay where they are (no big copy)."""
        if self.table is None:
            m = np.asarray(self.mapping[name], dtype=dtype)  # type: ignore[index]
            return m.reshape(self.num_rows, -1) if m.ndim != 2 else m
        parts = []
        for chunk in self.table.column(name).chunks:
            if len(chunk) == 0:
                continue
            if chunk.null_count:
                raise ValueError(f"column {name!r} has null rows; annotate every row with SynthFilter.annotate")
            flat = chunk.flatten().to_numpy(zero_copy_only=False)
            parts.append(flat.astype(dtype, copy=False).reshape(len(chunk), -1))
        return _RowBlocks(parts, self.num_rows)


class _RowBlocks:
    """Row blocks seen as one (rows, width) matrix for the reads the decide stage does."""

    def __init__(self, blocks: list[np.ndarray], num_rows: int) -> None:
        widths = {b.shape[1] for b in blocks}
        if len(widths) > 1:
            raise ValueError(f"rows of different widths {sorted(widths)}: were the batches annotated with one config?")
        self.blocks = blocks
        self.starts = np.cumsum([0] + [len(b) for b in blocks])
        width = widths.pop() if widths else 0
        self.shape = (num_rows, width)
        self.ndim = 2
        self.dtype = blocks[0].dtype if blocks else np.dtype(np.uint32)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.concatenate(self.blocks) if self.blocks else np.zeros(self.shape, self.dtype)
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, rows: Any) -> np.ndarray:
        if len(self.blocks) == 1:
            return self.blocks[0][rows]
        idx = np.arange(self.shape[0])[rows] if not isinstance(rows, np.ndarray) else rows
        block = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        for b in np.unique(block):
            sel = block == b
            out[sel] = self.blocks[int(b)][idx[sel] - self.starts[b]]
        return out


def _as_columns(annotations: Any, wanted: Sequence[str]) -> ColumnTable:
    import pyarrow as pa

    # Before the Mapping test: a DatasetDict is a dict.
    if type(annotations).__name__ in ("IterableDataset", "IterableDatasetDict", "DatasetDict"):
        raise TypeError(f"decide needs the whole corpus at once (a datasets.Dataset, a pyarrow.Table or a dict of "
                        f"columns), got {type(annotations).__name__}: for a stream use "
                        "synthfilter.hf.filter_dataset (one pass), for a DatasetDict decide each split or use "
                        "filter_dataset(..., joint=True)")
    if isinstance(annotations, Mapping):
        return ColumnTable(mapping=annotations)
    if isinstance(annotations, pa.Table):
        return ColumnTable(table=annotations)
    if hasattr(annotations, "with_format") and hasattr(annotations, "column_names"):
        # A datasets.Dataset (not imported here): its Arrow table, with only the needed columns.
        keep = [c for c in annotations.column_names if c in wanted or c.split(".")[0] in
                {w.split(".")[0] for w in wanted}]
        return ColumnTable(table=annotations.select_columns(keep).with_format("arrow")[:])
    raise TypeError(
        "annotations must be a datasets.Dataset, a pyarrow.Table or a dict of columns, "
        f"got {type(annotations).__name__}"
    )


def _id_columns(cfg: Config) -> tuple[str, ...]:
    return (cfg.id_field or "id",)


def _provenance_columns(cfg: Config) -> tuple[str, ...]:
    return (cfg.ratio.provenance_field,) if cfg.ratio.provenance_field else ()


def provenance_tally(cols: ColumnTable | None, cfg: Config, usable: np.ndarray) -> dict[str, Any] | None:
    """``ProvenanceMapper.take_tally`` over the provenance field's values of the ``usable`` records
    (those with text: the ones ``annotate`` labels), as ``synthfilter run`` tallies each shard: for
    ``provenance.provenance_warning``. None without a field, or where ``cols`` lacks its column
    (only the ``synth_provenance`` labels are known then)."""
    field = cfg.ratio.provenance_field
    if not field or cols is None or (field not in cols and field.split(".")[0] not in cols):
        return None
    from synthfilter.provenance import ProvenanceMapper

    mapper = ProvenanceMapper(cfg.ratio.provenance_map)
    label = mapper.label
    for value, ok in zip(field_values(cols, field, cols.num_rows), usable.tolist()):
        if ok:
            label(None if is_missing(value) else value)
    return mapper.take_tally()


def record_ids(cols: ColumnTable | Mapping[str, Any] | Any, cfg: Config, prefix: str, start: int = 0) -> list[str]:
    """Record ids as the CLI makes them: the ``id_field`` (default ``id``) value when present and
    scalar, else ``"<prefix>:<row>"`` (rows counted from ``start``)."""
    if not isinstance(cols, ColumnTable):
        cols = _as_columns(cols, _id_columns(cfg))
    spec = FieldSpec(text_field=cfg.text_field, id_field=cfg.id_field)
    field = cfg.id_field or "id"
    values = field_values(cols, field, cols.num_rows)
    if all(type(v) is str for v in values):
        return values
    return [spec.record_id({} if is_missing(v) else {field: v}, prefix, row) for row, v in enumerate(values, start)]


def record_statuses(cols: ColumnTable, cfg: Config, errors: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each annotated record's status (``STATUS_OK``, malformed, or set aside by ``--languages``
    or ``--reject-repetitive``) from its ``synth_*`` columns, and its language codes (None when
    not identified)."""
    n = cols.num_rows
    if errors is None:
        errors = cols.pylist(ERROR_COL)
    status = np.fromiter((STATUS_OK if not e else STATUS_MALFORMED for e in errors), dtype=np.int8, count=n)
    language = None
    # Without the column (annotations made by a caller that keeps only some columns) no language
    # rule applies: records the detector did not score count as unscored.
    if cfg.identifies_language and LANGUAGE_COL in cols:
        from synthfilter.language import code_of
        from synthfilter.pipeline.stages import language_roles_of

        language = np.fromiter((code_of(c or "und") for c in cols.pylist(LANGUAGE_COL)), dtype=np.uint8, count=n)
        status[(status == STATUS_OK) & ~language_roles_of(language, cfg).allowed] = STATUS_LANGUAGE
    if cfg.repetition.reject:
        loops = np.fromiter((bool(v) for v in cols.pylist(REPETITIVE_COL)), dtype=bool, count=n)
        status[(status == STATUS_OK) & loops] = STATUS_REPETITIVE
    return status, language


def annotations_from_columns(cols: ColumnTable, cfg: Config, ids: Sequence[str],
                             shard: np.ndarray | None = None) -> tuple[Annotations, list[str]]:
    """Build the decide stage's ``Annotations`` from ``synth_*`` columns, as the CLI builds them
    from its work files; also returns the error messages ("" for usable records)."""
    n = cols.num_rows
    needed = [SCORE_COL, PROVENANCE_COL, TEXT_HASH_COL, LENGTH_COL, ERROR_COL]
    if cfg.dedup.near:
        needed.append(BANDS_COL)
        if cfg.dedup.verify:
            needed.append(SIGNATURE_COL)
    if cfg.repetition.reject:
        needed.append(REPETITIVE_COL)
    missing = [c for c in needed if c not in cols]
    if missing and n == 0:
        # ``Dataset.map`` never calls its function on no rows: an empty dataset has no synth_* columns.
        empty = np.zeros(0, dtype=np.uint64)
        return Annotations(shard=np.zeros(0, dtype=np.int32), status=np.zeros(0, dtype=np.int8), hash_hi=empty,
                           hash_lo=empty, score=np.zeros(0, dtype=np.float32), provenance=np.zeros(0, dtype=np.int8),
                           uniform=np.zeros(0, dtype=np.float64), length=np.zeros(0, dtype=np.int32),
                           bands=None, signatures=None, language=None), []
    if missing:
        raise ValueError(
            f"annotations lack column(s) {', '.join(missing)}: annotate with SynthFilter.annotate under the same "
            "config (near-duplicate detection needs synth_bands, and synth_signature when dedup.verify is on; "
            "repetition.reject needs synth_repetitive)"
        )
    errors = cols.pylist(ERROR_COL)
    status, language = record_statuses(cols, cfg, errors)
    hashes = cols.pylist(TEXT_HASH_COL)
    raw = bytes.fromhex("".join(h if h else _ZERO_HASH for h in hashes))
    hl = np.frombuffer(raw, dtype=">u8").reshape(n, 2).astype(np.uint64)
    provenance = provenance_codes(cols.pylist(PROVENANCE_COL))
    bands = signatures = None
    if cfg.dedup.near:
        bands = np.array(cols.matrix(BANDS_COL, np.uint64), dtype=np.uint64)
        signatures = cols.matrix(SIGNATURE_COL, np.uint32) if cfg.dedup.verify else None
        _check_dedup_columns(bands, signatures, cfg)
        bad = np.flatnonzero(status != STATUS_OK)
        if len(bad):
            # Rows without text (or set aside: --languages, --reject-repetitive) get band keys of their own
            # so that they never match anything.
            nb = bands.shape[1]
            own = bad.astype(np.uint64)[:, None] * np.uint64(nb) + np.arange(nb, dtype=np.uint64)
            bands[bad] = own ^ _NO_TEXT_SALT
    ann = Annotations(
        shard=shard if shard is not None else np.zeros(n, dtype=np.int32),
        status=status,
        hash_hi=np.ascontiguousarray(hl[:, 0]),
        hash_lo=np.ascontiguousarray(hl[:, 1]),
        score=cols.vector(SCORE_COL, np.float32),
        provenance=provenance,
        uniform=record_uniforms(cfg.seed, list(ids)) if n else np.zeros(0, np.float64),
        length=cols.vector(LENGTH_COL, np.int32),
        bands=bands,
        signatures=signatures,
        language=language,
    )
    return ann, errors


def provenance_codes(names: Sequence[str]) -> np.ndarray:
    """int8 provenance codes of ``synth_provenance`` values."""
    try:
        return np.fromiter((_PROVENANCE_CODES[p] for p in names), dtype=np.int8, count=len(names))
    except KeyError as e:
        raise ValueError(f"{PROVENANCE_COL} must be one of {PROVENANCE_NAMES}, found {e.args[0]!r}") from None


def _check_dedup_columns(bands: np.ndarray, signatures: np.ndarray | None, cfg: Config) -> None:
    """ValueError when the band keys or signatures were made under other dedup settings: decided
    under these, the band keys of another threshold were used while the report named this one's,
    and signatures of another width were compared as they were."""
    from synthfilter.dedup.lsh import optimal_bands

    d = cfg.dedup
    if len(bands) == 0:
        return
    want_bands = optimal_bands(d.threshold, d.num_perm, verify=d.verify)[0]
    made = []
    if bands.shape[1] != want_bands:
        made.append(f"{bands.shape[1]} LSH bands where dedup.threshold {d.threshold:g} with {d.num_perm} permutations "
                    f"uses {want_bands}")
    if signatures is not None and len(signatures) and signatures.shape[1] != d.num_perm:
        made.append(f"signatures of {signatures.shape[1]} permutations where dedup.num_perm is {d.num_perm}")
    if made:
        raise ValueError(f"the annotations were made under other dedup settings ({'; '.join(made)}): annotate again "
                         "with this config (SynthFilter(config).annotate), or decide with the config that annotated")


# -- helpers ---------------------------------------------------------------------------------------


def _where(parts: Sequence[tuple[str, int]], i: int) -> str:
    for name, size in parts:
        if i < size:
            return f"{name} row {i}"
        i -= size
    return f"row {i}"


def _batch_length(batch: Mapping[str, Sequence[Any]]) -> int:
    for v in batch.values():
        return len(v)
    return 0


def field_values(source: Any, path: str | None, n: int, required: bool = False) -> list[Any]:
    """Values of a column or dotted path (into struct columns); the MISSING marker where absent."""
    names = source.names if isinstance(source, ColumnTable) else list(source)
    get = source.pylist if isinstance(source, ColumnTable) else (lambda k: list(source[k]))
    if path is None:
        return [MISSING for _ in range(n)]
    if path in names:
        return get(path)
    top = path.split(".")[0]
    if top in names:
        return [get_path({top: v}, path) for v in get(top)]
    if required:
        raise ValueError(
            f"no column {path!r} for the text (columns: {', '.join(names[:20])}); set text_field in the config"
        )
    return [MISSING for _ in range(n)]


def _hex_hashes(hi: np.ndarray, lo: np.ndarray, ok: np.ndarray) -> list[str]:
    joined = np.stack([hi, lo], axis=1).astype(">u8").tobytes().hex()
    return [joined[32 * i: 32 * i + 32] if good else "" for i, good in enumerate(ok.tolist())]

