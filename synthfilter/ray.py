"""``synthfilter.ray``: filter a Ray Data ``Dataset`` with the pipeline's own stages.

Needs ``pip install "synthfilter[ray]"``. ``synthfilter run --engine ray`` is the same engine for
files; this module is for users whose data already lives in Ray Data.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from synthfilter.pipeline.ray.annotations import positions_in
from synthfilter.pipeline.ray_engine import (
    CountedDecisions,
    CountedReasons,
    RayDecisions,
    collect,
    data_context,
    decide_on_ray,
    import_ray,
    resolve,
)

__all__ = ["FilterResult", "filter_dataset"]

INDEX_COL = "_synthfilter_index"  # global row number, added for the decide stage, removed after
ID_COL = "_synthfilter_id"  # the record id the decisions use (id field, or "<prefix>:<row>")


class FilterResult(NamedTuple):
    """``kept`` and ``rejected`` Ray Datasets (lazy) and the report: report.json's ``input``,
    ``output``, ``duplicates``, ``synthetic``, ``languages`` and ``diversity`` sections (the
    diversity sample grouped by ``report.group_by``, else all in one group named ``id_prefix``).

    ``kept`` has the input's columns (plus ``synth_score`` and ``synth_provenance`` under
    ``annotate = true``); ``rejected`` adds ``synth_reason``, ``synth_duplicate_of``,
    ``synth_score``, ``synth_p_machine``, ``synth_provenance`` and ``synth_error``, the columns
    of ``synthfilter.hf.filter_dataset``. Unpacks as ``kept, rejected, report``.
    """

    kept: Any
    rejected: Any
    report: dict[str, Any]


def filter_dataset(ds: Any, config: Any = None, *, target_ratio: float | None = None, model: str | None = None,
                   id_prefix: str = "dataset") -> FilterResult:
    """Score, decide and split a Ray Data ``Dataset`` into kept and rejected records.

    The same decisions as ``synthfilter run`` on the same records in the same order (ids from
    ``id_field``, default ``id``, else ``"<id_prefix>:<row>"`` with rows counted from 0), run
    after run: rows are numbered in the dataset's own order, with Ray Data's ``preserve_order``
    on while they are (a folder read in another order would keep other copies). Scoring
    runs on an actor pool (the detector loads once per worker); the decide stage groups hashes
    and band keys with Ray shuffles and contracts the duplicate graph there; the rejected
    records' decisions are then brought to the driver (one row each) to split the rows. The scored
    dataset is materialized in the object store; ``kept`` and ``rejected`` are lazy views of it.

    Args:
        ds: a ``ray.data.Dataset`` with a text column (``text_field``; dotted paths reach into
            struct columns).
        config: a ``Config``, ``SynthFilter``, TOML path, dict of options, or None.
        target_ratio: keep at most this estimated synthetic share (overrides the config).
        model: detector model directory (overrides the config).
        id_prefix: prefix of the fallback ids.

    Raises:
        synthfilter.api.MalformedRecordError: a bad record under ``on_error = "fail"``.
        synthfilter.ratio.HumanLossError: ``max_human_loss`` refused the target.

    Example:
        >>> kept, rejected, report = filter_dataset(ray.data.read_parquet("s3://bucket/docs/"), {"dedup": {"threshold": 0.85}})
        >>> kept.write_parquet("s3://bucket/filtered/")
    """
    ray = import_ray()
    from synthfilter.api import SynthFilter

    t0 = time.perf_counter()
    sf = config if isinstance(config, SynthFilter) else SynthFilter(config, model=model)
    if model is not None and isinstance(config, SynthFilter):
        sf = sf.with_options({"detector": {"model": str(model), "enabled": True}})
    if target_ratio is not None:
        sf = sf.with_options({"ratio": {"target_ratio": target_ratio}})
    cfg = sf.config
    columns = ds.columns() or []
    head = cfg.text_field.split(".")[0]
    if columns and head not in columns:
        # Said here, with the dataset's columns: inside the actor pool it came wrapped in a
        # RayTaskError that listed none of them.
        raise ValueError(f"no column {cfg.text_field!r} for the text (columns: {', '.join(columns[:20])}); "
                         "set text_field in the config")
    with data_context():
        indexed = _with_row_index(ds)
        scored = indexed.map_batches(
            _AnnotateRows, batch_format="pyarrow", batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=_cpus()),
            fn_constructor_kwargs={"sf": sf, "id_prefix": id_prefix},
        ).materialize()
        total = scored.count()
        set_aside = _set_aside(scored, sf, id_prefix)
        # Ids given to more than one record, warned of as run warns (only ids the dataset gives:
        # the fallback ids, <prefix>:<row>, are unique).
        repeated = _repeated_ids(scored) if columns and (cfg.id_field or "id").split(".")[0] in columns else {}
        # The provenance field's values tallied as run tallies its shards (one row a block), for
        # run's warning of values that match no key.
        provenance = _provenance_tally(scored, cfg)
        n_bands = sf.scorer.bands[0] if cfg.dedup.near else 0
        card = sf.scorer.detector.card if sf.scorer.uses_detector else None
        decisions = decide_on_ray(_DatasetAnnotations(scored, sf), total, cfg, card, set_aside, n_bands,
                                  cfg.dedup.num_perm)
    lookup = _lookup_table(decisions)
    ref = ray.put(lookup)
    if cfg.identifies_language:
        # report.json's languages section, counted as run counts it (stages.record_language_counts).
        from synthfilter.pipeline.ray.decide import summed_language_counts
        from synthfilter.pipeline.stages import apply_language_counts

        with data_context():
            got = collect(scored.map_batches(_language_counts, batch_format="pyarrow", batch_size=None,
                                             fn_kwargs={"ref": ref, "cfg": cfg}))
        apply_language_counts(decisions, summed_language_counts(got), cfg)
    summary = dict(repeated)
    if provenance is not None:
        from synthfilter.pipeline.stages import MALFORMED

        summary.update(provenance_tally=provenance, malformed=int(set_aside[MALFORMED]))
    report = _report(decisions, sf, total, id_prefix, time.perf_counter() - t0, summary)
    if cfg.report.diversity:
        from synthfilter.diversity import set_diversity

        with data_context():
            set_diversity(report, _diversity(scored, sf, lookup, total - int(set_aside.sum()), id_prefix),
                          cfg.repetition.reject)
    input_cols = [c for c in columns if c not in (INDEX_COL, ID_COL)] if columns else None
    kept = scored.map_batches(_split_rows, batch_format="pyarrow", fn_kwargs={
        "ref": ref, "want_kept": True, "input_cols": input_cols, "cfg": cfg})
    rejected = scored.map_batches(_split_rows, batch_format="pyarrow", fn_kwargs={
        "ref": ref, "want_kept": False, "input_cols": input_cols, "cfg": cfg})
    return FilterResult(kept=kept, rejected=rejected, report=report)


def _cpus() -> int:
    from synthfilter.pipeline.ray_engine import cluster_cpus

    return cluster_cpus()


# -- score ---------------------------------------------------------------------------------------


def _with_row_index(ds: Any) -> Any:
    """``ds`` with its global row number: one Ray task per block, offsets from block sizes.

    The rows are numbered in the dataset's own order: Ray Data hands blocks out as they finish
    unless ``preserve_order`` is on (a ``read_parquet`` of a folder gave its files in a new order
    on every run), and the keep rule (earliest copy first) and the fallback ids read that
    number, so the kept set changed from run to run. It is on while the blocks are listed."""
    import ray

    # The dataset's own context (a copy of the global one, taken when it was made), restored after.
    options = ds.context.execution_options
    saved = options.preserve_order
    options.preserve_order = True
    try:
        refs = ds.to_arrow_refs()
    finally:
        options.preserve_order = saved
    count = ray.remote(_num_rows)
    sizes = ray.get([count.remote(r) for r in refs])
    add = ray.remote(_add_index)
    offsets = np.cumsum([0] + sizes[:-1]).tolist() if sizes else []
    return ray.data.from_arrow_refs([add.remote(r, off) for r, off in zip(refs, offsets)])


def _num_rows(table: Any) -> int:
    return int(table.num_rows)


def _add_index(table: Any, offset: int) -> Any:
    import pyarrow as pa

    return table.append_column(INDEX_COL, pa.array(np.arange(offset, offset + table.num_rows, dtype=np.int64)))


class _AnnotateRows:
    """Ray Data actor: ``SynthFilter.annotate`` per batch, plus the record ids."""

    def __init__(self, sf: Any, id_prefix: str):
        self.sf = sf
        self.prefix = id_prefix
        if sf.scorer.uses_detector:
            _ = sf.scorer.detector

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        from synthfilter.api import BANDS_COL, SIGNATURE_COL, record_ids

        cfg = self.sf.config
        index = table.column(INDEX_COL).to_numpy()
        fields = {f.split(".")[0] for f in (cfg.text_field, cfg.ratio.provenance_field, cfg.id_field or "id") if f}
        batch = {name: table.column(name).to_pylist() for name in table.column_names if name in fields}
        ann = self.sf.annotate(batch)
        id_cols = {k: v for k, v in batch.items() if k == (cfg.id_field or "id").split(".")[0]} or \
            {"_rows": list(range(table.num_rows))}
        if len(index) and index[-1] - index[0] == len(index) - 1:
            ids = record_ids(id_cols, cfg, self.prefix, start=int(index[0]))
        else:
            ids = [record_ids({k: [v[i]] for k, v in id_cols.items()}, cfg, self.prefix, start=int(g))[0]
                   for i, g in enumerate(index.tolist())]
        for name, values in ann.items():
            if name in (BANDS_COL, SIGNATURE_COL):
                m = np.asarray(values)
                col = pa.FixedSizeListArray.from_arrays(pa.array(m.ravel()), m.shape[1])
            else:
                col = pa.array(values)
            table = table.append_column(name, col)
        return table.append_column(ID_COL, pa.array(ids, type=pa.string()))


def _set_aside(scored: Any, sf: Any, id_prefix: str) -> np.ndarray:
    """Records per reason that the score stage set aside (malformed, ``--languages``,
    ``--reject-repetitive``; zero for the other reasons); under ``on_error = "fail"`` the first
    malformed record is an error."""
    from synthfilter.api import ERROR_COL, LANGUAGE_COL, REPETITIVE_COL, MalformedRecordError
    from synthfilter.pipeline.stages import KEPT, MALFORMED, REASONS

    cfg = sf.config
    status_cols = [c for c in (ERROR_COL, LANGUAGE_COL, REPETITIVE_COL) if c in sf.annotation_columns]
    got = collect(scored.select_columns([INDEX_COL, ID_COL, *status_cols]).map_batches(
        _status_counts, batch_format="pyarrow", batch_size=None, fn_kwargs={"cfg": cfg}))
    if not got:
        return np.zeros(len(REASONS), np.int64)
    counts = got["counts"].reshape(-1, len(REASONS)).sum(axis=0)
    counts[KEPT] = 0  # usable records: decide's
    if counts[MALFORMED] and cfg.on_error == "fail":
        first = int(np.argmin(got["index"]))
        raise MalformedRecordError(
            f"{id_prefix} row {int(got['index'][first])} (id {got['id'][first]!r}): {got['error'][first]} "
            "(set on_error = \"quarantine\" in the config to set bad records aside)"
        )
    return counts


def _status_counts(table: Any, cfg: Any) -> dict[str, np.ndarray]:
    """Records per reason the score stage decided (malformed, set aside, else kept), and the first
    malformed record of the batch."""
    from synthfilter.api import ERROR_COL, ColumnTable, record_statuses
    from synthfilter.pipeline.stages import REASONS, STATUS_MALFORMED, reason_of_status

    errors = table.column(ERROR_COL).to_pylist()
    status, _ = record_statuses(ColumnTable(table=table), cfg, errors)
    counts = np.bincount(reason_of_status(status).astype(np.int64), minlength=len(REASONS))[None]
    bad = np.flatnonzero(status == STATUS_MALFORMED)
    if not len(bad):
        return {"counts": counts, "index": np.array([np.iinfo(np.int64).max]), "id": np.array([""], object),
                "error": np.array([""], object)}
    i = int(bad[0])
    return {"counts": counts, "index": table.column(INDEX_COL).to_numpy()[i:i + 1],
            "id": np.array([table.column(ID_COL)[i].as_py()], object), "error": np.array([errors[i]], object)}


# -- decide --------------------------------------------------------------------------------------


class _DatasetAnnotations:
    """The decide stage's input on a scored, materialized Ray Dataset."""

    def __init__(self, scored: Any, sf: Any):
        self.scored = scored
        self.sf = sf

    def map_chunks(self, fn: Any, columns: Any, **fn_kwargs: Any) -> Any:
        names = [INDEX_COL, ID_COL] + list(self.sf.annotation_columns)
        return self.scored.select_columns(names).map_batches(
            _map_dataset_chunks, batch_format="pyarrow", batch_size=None,
            fn_kwargs={"sf": self.sf, "fn": fn, "fn_kwargs": fn_kwargs},
        )

    def lookup(self, requests: Any, columns: Any) -> Any:
        """``requests`` (rows with ``gidx``) with the asked-for columns of each record. The
        requests are broadcast (they are the duplicate graph's nodes or bucket members): this
        entry point holds its decisions on the driver anyway."""
        import ray

        rows = collect(requests)
        if not rows:
            return requests
        order = np.argsort(rows["gidx"], kind="stable")
        ref = ray.put({k: v[order] for k, v in rows.items()})
        return self.map_chunks(_attach_requests, columns, ref=ref, wanted=tuple(columns))


def _attach_requests(chunk: dict[str, np.ndarray], ref: Any, wanted: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    from synthfilter.pipeline.ray.annotations import attach

    return attach(resolve(ref), chunk, wanted)


def _map_dataset_chunks(table: Any, sf: Any, fn: Any, fn_kwargs: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    from synthfilter.api import ColumnTable, annotations_from_columns

    if table.num_rows == 0:
        return
    ids = table.column(ID_COL).to_pylist()
    ann, _errors = annotations_from_columns(ColumnTable(table=table), sf.config, ids)
    chunk = {
        "gidx": table.column(INDEX_COL).to_numpy(), "id": np.asarray(ids, dtype=object), "status": ann.status,
        "hash_hi": ann.hash_hi, "hash_lo": ann.hash_lo, "score": ann.score, "provenance": ann.provenance,
        "uniform": ann.uniform, "length": ann.length,
    }
    if ann.language is not None:
        chunk["language"] = ann.language
    if ann.bands is not None:
        chunk["bands"] = ann.bands
    if ann.signatures is not None:
        chunk["sigs"] = np.asarray(ann.signatures)
    out = fn(chunk, **fn_kwargs)
    if out is not None and len(next(iter(out.values()))):
        yield out


def _repeated_ids(scored: Any) -> dict[str, Any]:
    """``stages.repeated_ids`` on the cluster: the id column grouped (a shuffle), one row a batch
    back to the driver; the example is the smallest repeated id, whatever the batches' order."""
    got = collect(scored.select_columns([ID_COL]).groupby(ID_COL).count().map_batches(
        _repeated_in_batch, batch_format="pyarrow", batch_size=None))
    if not got or not int(got["records"].sum()):
        return {}
    examples = [e for e, n in zip(got["example"].tolist(), got["records"].tolist()) if n]
    return {"ids_repeated": int(got["records"].sum()), "id_repeated_example": min(examples)}


def _repeated_in_batch(table: Any) -> dict[str, np.ndarray]:
    counts = table.column(table.column_names[-1]).to_numpy()  # the count column
    repeated = counts > 1
    ids = [v for v, r in zip(table.column(ID_COL).to_pylist(), repeated.tolist()) if r]
    return {"records": np.array([int(counts[repeated].sum())]), "example": np.array([min(ids) if ids else ""], object)}


def _provenance_tally(scored: Any, cfg: Any) -> dict[str, Any] | None:
    """``api.provenance_tally`` summed over the blocks of the scored dataset (one row a block back
    to the driver); None without a provenance field or its column."""
    from synthfilter.api import ERROR_COL
    from synthfilter.provenance import merge_tallies

    field = cfg.ratio.provenance_field
    if not field:
        return None
    columns = scored.columns() or []
    top = field if field in columns else field.split(".")[0]
    if top not in columns:
        return None
    got = collect(scored.select_columns([ERROR_COL, top]).map_batches(
        _provenance_tally_in_batch, batch_format="pyarrow", batch_size=None, fn_kwargs={"cfg": cfg}))
    if not got:
        return merge_tallies([])
    return merge_tallies({"present": p, "labelled": lab, "unmatched": u, "examples": json.loads(e)} for p, lab, u, e in
                         zip(got["present"].tolist(), got["labelled"].tolist(), got["unmatched"].tolist(),
                             got["examples"].tolist()))


def _provenance_tally_in_batch(table: Any, cfg: Any) -> dict[str, np.ndarray]:
    from synthfilter.api import ERROR_COL, ColumnTable, provenance_tally

    usable = np.fromiter((not e for e in table.column(ERROR_COL).to_pylist()), dtype=bool, count=table.num_rows)
    tally = provenance_tally(ColumnTable(table=table), cfg, usable) or {}
    return {k: np.array([int(tally.get(k, 0))]) for k in ("present", "labelled", "unmatched")} | {
        "examples": np.array([json.dumps(tally.get("examples", []))], object)}


def _report(decisions: RayDecisions, sf: Any, total: int, id_prefix: str, seconds: float,
            summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """report.json's sections; ``summary``: what run's score stage says of a shard, for the
    dataset (one "shard"): its ids given twice, its provenance tally."""
    from synthfilter.pipeline.run import build_report

    totals = decisions.counts()
    counted = CountedDecisions(
        reason=CountedReasons([0, total], np.array([[totals[r] for r in totals]])),
        cluster_sizes=decisions.cluster_sizes, synthetic=decisions.synthetic, warnings=decisions.warnings,
        totals=totals, languages=getattr(decisions, "languages", None),
    )
    report = build_report([id_prefix], {id_prefix: {"records": total, "size": 0, **(summary or {})}},
                          counted,  # type: ignore[arg-type]
                          sf.config, seconds, sf.scorer)
    report["input"]["bytes"] = None
    return report


# -- diversity -----------------------------------------------------------------------------------


def _diversity(scored: Any, sf: Any, lookup: Mapping[str, np.ndarray], usable: int, group: str) -> dict[str, Any]:
    """report.json's ``diversity`` as the CLI computes it: on the ``report.sample_size`` usable
    records with the smallest uniform (ties: the lower row), taken in that order.

    The sample is found without bringing more than a few times its size to the driver: the
    records below a cut-off uniform (first ``2 k / usable``, the uniforms being uniform), the
    cut-off raised fourfold until at least ``k`` are below it; then only their texts, groups and
    signatures are fetched."""
    import ray

    from synthfilter.diversity import diversity_section

    cfg = sf.config
    k = cfg.report.sample_size
    cut = min(1.0, 2.0 * k / max(usable, 1))
    while True:
        got = collect(_DatasetAnnotations(scored, sf).map_chunks(_below, ["uniform"], cut=cut))
        found = len(got["gidx"]) if got else 0
        if found >= k or cut >= 1.0:
            break
        cut = min(1.0, cut * 4)
    if not found:
        return diversity_section([], [], [], [], seed=cfg.seed)
    order = np.lexsort((got["gidx"], got["uniform"]))[:k]
    sample = got["gidx"][order]  # in sample order
    wanted = ray.put(np.sort(sample))
    rows = collect(scored.map_batches(_sample_rows, batch_format="pyarrow", batch_size=None,
                                      fn_kwargs={"ref": wanted, "cfg": cfg, "group": group}))
    by_row = np.argsort(rows["gidx"], kind="stable")
    at = by_row[np.searchsorted(rows["gidx"][by_row], sample)]
    texts = [rows["text"][i] for i in at.tolist()]
    groups = [rows["group"][i] for i in at.tolist()]
    # Every sampled record is usable: it was kept unless a decision row says otherwise.
    keep = positions_in(lookup["gidx"], sample) < 0
    sigs = rows["sigs"][at] if "sigs" in rows else None
    return diversity_section(
        texts, [t for t, kk in zip(texts, keep) if kk], groups, [g for g, kk in zip(groups, keep) if kk],
        before_sigs=sigs, after_sigs=None if sigs is None else sigs[keep], seed=cfg.seed,
    )


def _below(chunk: dict[str, np.ndarray], cut: float) -> dict[str, np.ndarray]:
    """The usable records of a chunk whose uniform is below ``cut``: row number and uniform."""
    at = np.flatnonzero((chunk["status"] == 0) & (chunk["uniform"] < cut))
    return {"gidx": chunk["gidx"][at], "uniform": chunk["uniform"][at]}


def _sample_rows(table: Any, ref: Any, cfg: Any, group: str) -> dict[str, np.ndarray]:
    """The sampled rows of a scored batch: row number, text, group label and, with near dedup,
    MinHash signature."""
    from synthfilter.api import SIGNATURE_COL, ColumnTable, field_values
    from synthfilter.records import group_label

    wanted: np.ndarray = resolve(ref)
    g = table.column(INDEX_COL).to_numpy()
    rows = np.flatnonzero(positions_in(wanted, g) >= 0)
    part = ColumnTable(table=table.take(rows))
    n = len(rows)
    out: dict[str, Any] = {"gidx": g[rows], "text": np.asarray(field_values(part, cfg.text_field, n), dtype=object)}
    if cfg.report.group_by:
        out["group"] = np.asarray([group_label(v) for v in field_values(part, cfg.report.group_by, n)], dtype=object)
    else:
        out["group"] = np.asarray([group] * n, dtype=object)
    if SIGNATURE_COL in table.column_names:
        col = table.column(SIGNATURE_COL).take(rows).combine_chunks()
        out["sigs"] = col.values.to_numpy().reshape(n, -1) if n else np.zeros((0, col.type.list_size), np.uint32)
    return out


# -- split ---------------------------------------------------------------------------------------


def _lookup_table(decisions: RayDecisions) -> dict[str, np.ndarray]:
    got = collect(decisions.rows.select_columns(["gidx", "reason", "duplicate_of", "posterior"]))
    if not got:
        return {"gidx": np.zeros(0, np.int64), "reason": np.zeros(0, np.int8), "duplicate_of": np.zeros(0, object),
                "posterior": np.zeros(0, np.float32)}
    order = np.argsort(got["gidx"])
    return {k: v[order] for k, v in got.items()}


def _reasons(table: Any, lookup: Mapping[str, np.ndarray], cfg: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Per row of a scored batch: its reason (the score stage's status, else its decision row),
    its language code (None when languages are not identified), and where its decision row is."""
    from synthfilter.api import ColumnTable, record_statuses
    from synthfilter.pipeline.stages import reason_of_status

    g = table.column(INDEX_COL).to_numpy()
    status, language = record_statuses(ColumnTable(table=table), cfg)
    reason = reason_of_status(status)  # KEPT for usable records, until their decision row says
    at = positions_in(lookup["gidx"], g)
    hit = np.flatnonzero(at >= 0)
    reason[hit] = lookup["reason"][at[hit]]
    return reason, language, at


def _language_counts(table: Any, ref: Any, cfg: Any) -> dict[str, np.ndarray]:
    from synthfilter.api import PROVENANCE_COL, SCORE_COL, provenance_codes
    from synthfilter.pipeline.stages import record_language_counts

    reason, language, _ = _reasons(table, resolve(ref), cfg)
    if language is None:
        language = np.zeros(len(reason), np.uint8)
    provenance = provenance_codes(table.column(PROVENANCE_COL).to_pylist())
    score = table.column(SCORE_COL).to_numpy(zero_copy_only=False).astype(np.float32)
    counts = record_language_counts(language, reason, score, provenance, cfg)
    return {"counts": counts.ravel()[None]}


def _split_rows(table: Any, ref: Any, want_kept: bool, input_cols: list[str] | None, cfg: Any) -> Any:
    """The kept (or rejected) rows of a scored batch, with the columns ``FilterResult`` names."""
    import pyarrow as pa

    from synthfilter.api import DUPLICATE_OF_COL, ERROR_COL, P_MACHINE_COL, PROVENANCE_COL, REASON_COL, SCORE_COL
    from synthfilter.pipeline.stages import KEPT, REASONS

    lookup: Mapping[str, np.ndarray] = resolve(ref)
    annotate = cfg.annotate
    # Malformed records and those the score stage set aside have no decision row: their status says.
    reason, _, at = _reasons(table, lookup, cfg)
    hit = np.flatnonzero(at >= 0)
    dup: list[str | None] = [None] * len(reason)
    posterior = np.full(len(reason), np.nan, dtype=np.float32)
    posterior[hit] = lookup["posterior"][at[hit]]
    for i, j in zip(hit.tolist(), at[hit].tolist()):
        dup[i] = lookup["duplicate_of"][j]
    rows = np.flatnonzero((reason == KEPT) == want_kept)
    take = pa.array(rows, type=pa.int64())
    base = table.select(input_cols) if input_cols is not None else table.drop_columns(
        [c for c in table.column_names if c.startswith("synth_") or c in (INDEX_COL, ID_COL)])
    out = base.take(take)
    if want_kept:
        if annotate:
            out = out.append_column(SCORE_COL, table.column(SCORE_COL).take(take))
            out = out.append_column(PROVENANCE_COL, table.column(PROVENANCE_COL).take(take))
        return out
    columns = {
        REASON_COL: pa.array([REASONS[r] for r in reason[rows].tolist()], type=pa.string()),
        DUPLICATE_OF_COL: pa.array([dup[i] for i in rows.tolist()], type=pa.string()),
        SCORE_COL: table.column(SCORE_COL).take(take),
        P_MACHINE_COL: pa.array(posterior[rows], type=pa.float32()),
        PROVENANCE_COL: table.column(PROVENANCE_COL).take(take),
        ERROR_COL: table.column(ERROR_COL).take(take),
    }
    for name, col in columns.items():
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, col)
    return out
