"""The synthetic-share estimate and the target-ratio plan on Ray, from the survivors' scores.

Survivors are every usable record less the duplicates: their score counts are the counts over
all records (read in chunks) minus those of the duplicates' decision rows, merged by value on
the cluster, then binned as ``ratio._Bins.build`` bins them (its pieces: ``logit_bin_*``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfilter import ratio as ratio_mod
from synthfilter.config import Config
from synthfilter.pipeline.ray.session import collect, grouped, partitions_for
from synthfilter.pipeline.stages import (
    DOWNSAMPLED, KEPT, STATUS_OK, Annotations, Decisions, SurvivorCounts, decide_synthetic, estimate_section,
    estimated_records, reason_of_status, synthetic_without_estimate,
)
from synthfilter.ratio import MAX_BINS, SCORE_CLIP, bins_from_sums, logit_bin_edges, logit_bin_of, logit_bin_sums
from synthfilter.reliability import LabelledScores, cut_counts

# Kinds of rows in the survivor statistics; the labelled kinds carry the known-provenance
# records' scores as counts between the card's cut points (``value`` is the interval's index).
_STAT_VALUE, _STAT_HUMAN, _STAT_MACHINE, _STAT_UNSCORED, _STAT_LABELLED_HUMAN, _STAT_LABELLED_MACHINE = range(6)


def score_count_rows(chunk: dict[str, np.ndarray], parts: int, cuts: np.ndarray | None = None,
                     sign: int = 1, cfg: Config | None = None) -> dict[str, np.ndarray]:
    """Per chunk of usable records (``sign`` -1: of duplicates, to take away): distinct clipped
    scores with counts, provenance counts and (with ``cuts``) the labelled records' score counts.
    With a ``language`` column (and ``cfg``), only the records the local engine's
    ``estimated_records`` puts in the estimate (duplicates taken away by the same rule)."""
    if "status" in chunk:
        status = chunk["status"]
        reason = np.where(status == STATUS_OK, KEPT, reason_of_status(status)).astype(np.int8)
    else:
        reason = np.full(len(chunk["score"]), KEPT, np.int8)
    if "language" in chunk and cfg is not None:
        keep = estimated_records(chunk["language"], reason, chunk["provenance"], cfg)
    else:
        keep = reason == KEPT
    prov = chunk["provenance"][keep]
    score = chunk["score"][keep].astype(np.float64)
    unknown = prov == 0
    scored = unknown & np.isfinite(score)
    values, counts = np.unique(np.clip(score[scored], SCORE_CLIP, 1.0 - SCORE_CLIP), return_counts=True)
    extra = np.array([(prov == 1).sum(), (prov == 2).sum(), (unknown & ~np.isfinite(score)).sum()], np.int64)
    kinds, idx, labelled = [np.array([1, 2, 3], np.int8)], [np.full(3, np.nan)], [extra]
    if cuts is not None:
        for kind, code in ((_STAT_LABELLED_HUMAN, 1), (_STAT_LABELLED_MACHINE, 2)):
            c = cut_counts(score[prov == code], cuts)
            kinds.append(np.full(len(c), kind, np.int8))
            idx.append(np.arange(len(c), dtype=np.float64))
            labelled.append(c)
    kinds_, idx_, counts_ = np.concatenate(kinds), np.concatenate(idx), np.concatenate(labelled)
    return {
        "part": np.r_[(values.view(np.uint64) % np.uint64(parts)).astype(np.int64), np.zeros(len(kinds_), np.int64)],
        "kind": np.r_[np.full(len(values), _STAT_VALUE, np.int8), kinds_],
        "value": np.r_[values, idx_],
        "count": sign * np.r_[counts.astype(np.int64), counts_],
    }


def merge_score_counts(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One partition's rows summed; values whose count cancels (only duplicates had them) go."""
    kind, value, count = batch["kind"], batch["value"], batch["count"]
    is_value = kind == _STAT_VALUE
    uniq, inverse = np.unique(value[is_value], return_inverse=True)
    summed = np.bincount(inverse, weights=count[is_value], minlength=len(uniq)).round().astype(np.int64)
    uniq, summed = uniq[summed != 0], summed[summed != 0]
    other = np.array([count[kind == k].sum() for k in (_STAT_HUMAN, _STAT_MACHINE, _STAT_UNSCORED)], np.int64)
    kinds, values, counts = [np.zeros(len(uniq), np.int8), np.array([1, 2, 3], np.int8)], [uniq, np.full(3, np.nan)], [summed, other]
    for k in (_STAT_LABELLED_HUMAN, _STAT_LABELLED_MACHINE):
        rows = kind == k
        if rows.any():
            at = value[rows].astype(np.int64)
            c = np.bincount(at, weights=count[rows], minlength=int(at.max()) + 1).round().astype(np.int64)
            kinds.append(np.full(len(c), k, np.int8))
            values.append(np.arange(len(c), dtype=np.float64))
            counts.append(c)
    return {"kind": np.concatenate(kinds), "value": np.concatenate(values), "count": np.concatenate(counts)}


def labelled_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = batch["kind"] >= _STAT_LABELLED_HUMAN
    return {k: batch[k][rows] for k in ("kind", "value", "count")}


def labelled_from_rows(rows: dict[str, np.ndarray], cuts: np.ndarray | None) -> LabelledScores | None:
    if cuts is None:
        return None
    counts = []
    for k in (_STAT_LABELLED_HUMAN, _STAT_LABELLED_MACHINE):
        sel = rows["kind"] == k if rows else np.zeros(0, bool)
        at = rows["value"][sel].astype(np.int64) if rows else np.zeros(0, np.int64)
        weights = rows["count"][sel] if rows else np.zeros(0)
        counts.append(np.bincount(at, weights=weights, minlength=len(cuts) + 1).round().astype(np.int64))
    return LabelledScores(cuts, counts[0], counts[1])


def _summarise_values(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    is_value = batch["kind"] == _STAT_VALUE
    v = batch["value"][is_value]
    counts = [int((batch["count"][batch["kind"] == k]).sum()) for k in (1, 2, 3)]
    return {"distinct": np.array([len(v)]), "vmin": np.array([v.min() if len(v) else np.inf]),
            "vmax": np.array([v.max() if len(v) else -np.inf]), "human": np.array([counts[0]]),
            "machine": np.array([counts[1]]), "unscored": np.array([counts[2]])}


def _value_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    is_value = batch["kind"] == _STAT_VALUE
    return {"value": batch["value"][is_value], "count": batch["count"][is_value]}


def _assign_logit_bins(batch: dict[str, np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    rows = _value_rows(batch)
    b, _ = logit_bin_of(rows["value"], edges)
    return {"part": b.astype(np.int64), **rows}


def _sum_logit_bins(batch: dict[str, np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    used, n, total = logit_bin_sums(batch["value"], batch["count"], edges)
    return {"bin": used.astype(np.int64), "n": n, "total": total}


def _duplicate_score_rows(batch: dict[str, np.ndarray], parts: int, cuts: np.ndarray | None,
                          cfg: Config | None = None) -> dict[str, np.ndarray]:
    return score_count_rows(batch, parts, cuts, sign=-1, cfg=cfg)


def _with_language(source: Any, rows: Any, columns: list[str], cfg: Config) -> Any:
    """``rows`` (with ``gidx``) cut to ``columns``, with each record's ``language`` when the run
    identifies languages."""
    rows = rows.select_columns(columns)
    if not cfg.identifies_language or not rows.count():
        return rows
    return source.lookup(rows, ["language"]).select_columns(columns + ["language"])


def decide_estimate(source: Any, decisions: Any, total: int, cfg: Config, card: dict[str, Any] | None) -> None:
    """The prevalence estimate from score histograms (no per-record array anywhere)."""
    parts = partitions_for(total)
    cuts = ratio_mod.card_score_cuts(card) if cfg.ratio.remeasure_rates and card is not None else None
    lang = ["language"] if cfg.identifies_language else []
    everyone = source.map_chunks(score_count_rows, ["status", "score", "provenance"] + lang, parts=parts, cuts=cuts,
                                 cfg=cfg)
    duplicates = _with_language(source, decisions.rows, ["gidx", "score", "provenance"], cfg).map_batches(
        _duplicate_score_rows, batch_format="numpy", batch_size=None,
        fn_kwargs={"parts": parts, "cuts": cuts, "cfg": cfg})
    merged = grouped(everyone.union(duplicates), merge_score_counts, rows=total).materialize()
    summary = collect(merged.map_batches(_summarise_values, batch_size=None, batch_format="numpy"))
    # An empty dataset summarises to no column at all.
    distinct, human, machine, unscored = (int(summary[k].sum()) if k in summary else 0
                                          for k in ("distinct", "human", "machine", "unscored"))
    if distinct == 0:
        bin_scores, bin_counts = np.zeros(0), np.zeros(0, np.int64)
    elif distinct <= MAX_BINS:
        rows = collect(merged.map_batches(_value_rows, batch_size=None, batch_format="numpy"))
        order = np.argsort(rows["value"])
        bin_scores, bin_counts = rows["value"][order], rows["count"][order].astype(np.int64)
    else:
        edges = logit_bin_edges(float(summary["vmin"].min()), float(summary["vmax"].max()))
        sums = collect(grouped(merged.map_batches(_assign_logit_bins, batch_size=None, batch_format="numpy",
                                                  fn_kwargs={"edges": edges}), _sum_logit_bins, edges=edges))
        bin_scores, bin_counts = bins_from_sums(sums["bin"], sums["n"], sums["total"])
    n_scored = int(bin_counts.sum())
    counts = SurvivorCounts(n_scored + human + machine + unscored, n_scored, human, machine, unscored)
    if synthetic_without_estimate(counts, cfg, decisions):
        return
    r = cfg.ratio
    labelled = labelled_from_rows(
        collect(merged.map_batches(labelled_rows, batch_size=None, batch_format="numpy")), cuts)
    est = ratio_mod.estimate_prevalence_from_bins(
        bin_scores, bin_counts, n_unscored=unscored, known_human=human, known_machine=machine,
        card=card, method=r.method, n_boot=r.bootstrap, seed=cfg.seed, labelled=labelled, widen=r.widen,
    )
    decisions.synthetic = estimate_section(est)
    decisions.warnings.extend(est.warnings)


def _usable_scores(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    ok = chunk["status"] == STATUS_OK
    return {k: chunk[k][ok] for k in ("gidx", "score", "provenance", "uniform", "language") if k in chunk}


def decide_target_ratio(source: Any, decisions: Any, cfg: Config, card: dict[str, Any] | None) -> None:
    """Target-ratio downsampling: the one step that needs every survivor's score.

    The plan ranks all survivors by posterior (a global order, with a bisection over kept
    sets for the confidence bound), so the driver holds a score (4 bytes), a provenance code
    (1), a uniform (8) and an index (8) per survivor, and the duplicates' indices (8 each), and
    runs the local engine's own ``decide_synthetic`` on them; a run without a target needs
    none of this.
    """
    import pyarrow as pa
    import ray

    lang = cfg.identifies_language
    got = collect(source.map_chunks(_usable_scores, ["status", "score", "provenance", "uniform"]
                                    + (["language"] if lang else [])))
    dup = collect(decisions.rows.select_columns(["gidx"]))
    if got:
        keep = ~np.isin(got["gidx"], dup["gidx"]) if dup else np.ones(len(got["gidx"]), bool)
        order = np.argsort(got["gidx"][keep])
        gidx = got["gidx"][keep][order]
        score, prov, uniform = (got[k][keep][order] for k in ("score", "provenance", "uniform"))
        language = got["language"][keep][order] if lang else None
        del got, dup
    else:
        gidx = np.zeros(0, np.int64)
        score, prov, uniform = np.zeros(0, np.float32), np.zeros(0, np.int8), np.zeros(0)
        language = np.zeros(0, np.uint8) if lang else None
    n = len(gidx)
    compact = Annotations(shard=np.zeros(n, np.int32), status=np.zeros(n, np.int8), hash_hi=np.zeros(n, np.uint64),
                          hash_lo=np.zeros(n, np.uint64), score=score.astype(np.float32), provenance=prov.astype(np.int8),
                          uniform=uniform.astype(np.float64), length=np.zeros(n, np.int32),
                          language=language.astype(np.uint8) if language is not None else None)
    local = Decisions(reason=np.zeros(n, np.int8), duplicate_of=np.full(n, -1, np.int64),
                      cluster_sizes=np.zeros(0, np.int64), posterior=np.full(n, np.nan, np.float32))
    decide_synthetic(compact, cfg, card, local)
    decisions.synthetic = local.synthetic
    decisions.warnings.extend(local.warnings)
    dropped = np.flatnonzero(local.reason == DOWNSAMPLED)
    if len(dropped):
        table = pa.table({
            "kind": pa.array(np.zeros(len(dropped), np.int8)), "gidx": pa.array(gidx[dropped]),
            "reason": pa.array(np.full(len(dropped), DOWNSAMPLED, np.int8)),
            "duplicate_of": pa.array([None] * len(dropped), pa.string()),
            "posterior": pa.array(local.posterior[dropped].astype(np.float32)),
            "score": pa.array(score[dropped].astype(np.float32)), "provenance": pa.array(prov[dropped].astype(np.int8)),
        })
        decisions.rows = decisions.rows.union(ray.data.from_arrow(table))
