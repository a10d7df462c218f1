"""Synthetic-share estimation with a 95 % interval, and deterministic target-ratio keep decisions.

Pure numpy: the decide stage passes detector scores, provenance codes and per-record uniforms.
Every estimate also says whether the detector looks reliable on the corpus
(``synthfilter.reliability``), widens its interval when it does not, and a target ratio is
refused when it is unreliable.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthfilter import reliability as rel
from synthfilter.reliability import mixture_mle as _mle_prior  # Saerens' EM fixed point, see there

# Provenance codes; the same values as ``synthfilter.provenance`` (kept here so this module
# depends on numpy alone).
UNKNOWN, HUMAN, MACHINE = 0, 1, 2

METHODS = ("em", "acc", "pcc", "cc")
STRATEGIES = ("threshold", "uniform")
SAFETIES = ("upper", "point")

MAX_BINS = 4096  # distinct score values the estimator works with; finer differences do not matter
SCORE_CLIP = 1e-6  # a calibrated probability of exactly 0 or 1 is never trustworthy
_NEWTON_STEPS = 60
ON_UNRELIABLE = ("refuse", "proceed")
_SAFETY_WARNING = 0.05  # warn when the safety margin alone drops this share of the human records


class HumanLossError(ValueError):
    """A policy refused the target ratio (exit code 1, nothing written); the base class is
    meeting it would drop more human records than ``max_human_loss`` allows."""


class UnreliableDetectorError(HumanLossError):
    """The reliability checks found the detector unreliable on this corpus, so downsampling by
    it is refused (``on_unreliable = "refuse"``). A ``HumanLossError`` so that every engine and
    entry point that refuses a policy (exit 1, nothing written) refuses this one alike."""


# -- public results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrevalenceEstimate:
    """Estimated synthetic share of a set of records.

    ``share`` and ``ci95`` cover every record passed in: known-machine records count 1,
    known-human records 0, the rest the estimated share among detector-scored records
    (``detector_share``). ``ci95`` is a bootstrap percentile interval (None if ``n_boot == 0``).
    ``naive_share`` is plain classify-and-count (score >= 0.5) over the same records, kept
    for comparison: it is biased whenever the corpus prior differs from the training prior.
    """

    share: float
    ci95: tuple[float, float] | None
    method: str
    n_records: int
    n_scored: int
    n_unscored: int
    known_human: int
    known_machine: int
    detector_share: float | None
    detector_ci95: tuple[float, float] | None
    naive_share: float | None
    train_prior: float | None
    warnings: tuple[str, ...] = ()
    by_method: tuple[tuple[str, float], ...] = ()  # detector-scored share by every usable method
    reliability: rel.Reliability | None = None  # the checks and their verdict (None: nothing scored)

    @property
    def verdict(self) -> str | None:
        return self.reliability.verdict if self.reliability is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated_share": self.share,
            "ci95": list(self.ci95) if self.ci95 is not None else None,
            "method": self.method,
            "records": self.n_records,
            "detector_scored": self.n_scored,
            "unscored": self.n_unscored,
            "known_provenance": {"human": self.known_human, "machine": self.known_machine},
            "detector_share": self.detector_share,
            "detector_ci95": list(self.detector_ci95) if self.detector_ci95 is not None else None,
            "naive_share": self.naive_share,
            "detector_share_by_method": dict(self.by_method),
            "reliability": self.reliability.to_dict() if self.reliability is not None else None,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class DownsamplingPlan:
    """Which records to keep so that the estimated synthetic share is at most ``target_ratio``.

    ``keep`` is in the order the records were passed in. ``posterior`` is each record's
    P(machine) under the estimated corpus prior (1 for known machine, 0 for known human);
    it is the probability to write next to a ``synthetic_downsampled`` rejection.
    ``est_human_dropped`` / ``est_human_total`` is the estimated human loss that
    ``--max-human-loss`` checks. ``weak_detector`` says the reliability checks found the
    detector doubtful or unreliable on this corpus (``before.reliability``);
    ``extra_dropped_for_safety`` is how many more records the confidence bound dropped than the
    point estimate needed. ``kept_share_known`` is False when the plan went on although the
    detector is unreliable (``on_unreliable = "proceed"``): the kept share is then unknown.
    """

    keep: np.ndarray
    posterior: np.ndarray
    before: PrevalenceEstimate
    share_after: float
    ci95_after: tuple[float, float] | None
    target_ratio: float
    strategy: str
    safety: str
    downsampled: int
    downsampled_known_machine: int
    est_human_dropped: float
    est_human_total: float
    weak_detector: bool
    warning: str | None = None
    extra_dropped_for_safety: int = 0
    kept_share_known: bool = True
    # The one-sided bound the plan enforced on the kept share (``safety = "upper"``): its value,
    # its confidence and the most it could be (target + tolerance). None with ``point``.
    upper_bound_after: float | None = None
    upper_bound_confidence: float | None = None
    upper_bound_limit: float | None = None

    @property
    def human_loss(self) -> float:
        """Estimated fraction of the human records that the plan drops."""
        return self.est_human_dropped / self.est_human_total if self.est_human_total > 0 else 0.0

    def to_report(self) -> dict[str, Any]:
        """The ``synthetic`` section of report.json."""
        b = self.before
        known = self.kept_share_known
        return {
            "estimated_share_before": b.share,
            "ci95_before": list(b.ci95) if b.ci95 is not None else None,
            "estimated_share_after": self.share_after if known else None,
            "ci95_after": list(self.ci95_after) if self.ci95_after is not None and known else None,
            "upper_bound_after": self.upper_bound_after if known else None,
            "upper_bound_confidence": self.upper_bound_confidence,
            "upper_bound_limit": self.upper_bound_limit,
            "kept_share_known": known,
            "target_ratio": self.target_ratio,
            "known_provenance": {"human": b.known_human, "machine": b.known_machine},
            "detector_scored": b.n_scored,
            "unscored": b.n_unscored,
            "downsampled": self.downsampled,
            "downsampled_known_machine": self.downsampled_known_machine,
            "estimated_human_dropped": self.est_human_dropped,
            "estimated_human_loss": self.human_loss,
            "naive_share_before": b.naive_share,
            "detector_share_by_method": dict(b.by_method),
            "method": b.method,
            "strategy": self.strategy,
            "safety": self.safety,
            "weak_detector": self.weak_detector,
            "dropped_for_safety": self.extra_dropped_for_safety,
            "reliability": b.reliability.to_dict() if b.reliability is not None else None,
            "warnings": list(b.warnings) + ([self.warning] if self.warning else []),
        }


# -- deterministic per-record randomness ----------------------------------------------------------


def record_uniform(seed: int, ids: Sequence[Any]) -> np.ndarray:
    """A float64 in [0, 1) per record from a keyed hash of (seed, id); independent of order.

    The same id gets the same number in any shard, worker or engine. Ids are hashed as
    their ``str()`` (bytes as they are), so ``7`` and ``"7"`` are the same record.
    """
    # One keyed hasher copied per id (cheaper than keying a new one); the 8-byte digests are
    # read as little-endian integers all at once.
    copy = hashlib.blake2b(digest_size=8, key=int(seed).to_bytes(16, "little", signed=True)).copy
    digests = []
    for rid in ids:
        h = copy()
        h.update(rid.encode("utf-8") if type(rid) is str else rid if isinstance(rid, bytes) else str(rid).encode("utf-8"))
        digests.append(h.digest())
    h64 = np.frombuffer(b"".join(digests), dtype="<u8")
    return (h64 >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)  # top 53 bits -> [0, 1)


# -- the model card -------------------------------------------------------------------------------


def card_train_prior(card: Mapping[str, Any] | None) -> float | None:
    """The machine share at which the detector's probabilities are calibrated, if the card says."""
    if not card or card.get("train_prior") is None:
        return None
    prior = float(card["train_prior"])
    if not 0.0 < prior < 1.0:
        raise ValueError(f"model card: train_prior must be in (0, 1), got {prior}")
    return prior


@dataclass(frozen=True)
class OperatingPoint:
    """A detector threshold with its measured rates; counts (when the card has its confusion
    matrix) let the interval carry the uncertainty of the rates themselves."""

    threshold: float
    tpr: float
    fpr: float
    tp: int | None = None
    fn: int | None = None
    fp: int | None = None
    tn: int | None = None
    held_out: bool = False  # rates measured on held-out data with the shipped model itself
    name: str = ""

    def draws(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(tpr, fpr) per bootstrap replicate: Beta posteriors (Jeffreys) where counts are known."""
        if None in (self.tp, self.fn, self.fp, self.tn):
            tpr = rng.beta(self.tp + 0.5, self.fn + 0.5, size) if None not in (self.tp, self.fn) else np.full(size, self.tpr)  # type: ignore[operator]
            fpr = rng.beta(self.fp + 0.5, self.tn + 0.5, size) if None not in (self.fp, self.tn) else np.full(size, self.fpr)  # type: ignore[operator]
            return tpr, fpr
        tpr = rng.beta(self.tp + 0.5, self.fn + 0.5, size)  # type: ignore[operator]
        fpr = rng.beta(self.fp + 0.5, self.tn + 0.5, size)  # type: ignore[operator]
        return tpr, fpr


def card_operating_points(card: Mapping[str, Any] | None) -> list[OperatingPoint]:
    """The card's usable operating points (TPR - FPR > 0.05), in the card's order, one per
    threshold (a point named ``default`` gives way to another name for the same threshold).

    ``held_out`` is set when the card gives the confusion counts and does not say the rates
    come from cross-validation (rates of the fold models, not of the model that scores).
    """
    points: list[OperatingPoint] = []
    measured_on = str((card or {}).get("operating_points_measured_on", "")).casefold()
    held_out = measured_on not in ("cross-validation", "cross_validation", "cv", "train", "training")
    for op in (card or {}).get("operating_points") or []:
        try:
            # Scores are float32; a threshold measured on them is only meaningful at that precision
            # (a float64 threshold can sit a hair above the float32 score it was measured at).
            threshold = float(np.float32(float(op["threshold"])))
            point = OperatingPoint(threshold, float(op["tpr"]), float(op["fpr"]), name=str(op.get("name", "")))
        except (KeyError, TypeError, ValueError):
            continue
        conf = op.get("confusion")
        if isinstance(conf, Mapping) and all(isinstance(conf.get(k), int) for k in ("tp", "fn", "fp", "tn")):
            point = OperatingPoint(
                point.threshold, point.tpr, point.fpr, conf["tp"], conf["fn"], conf["fp"], conf["tn"], held_out,
                point.name,
            )
        if point.tpr - point.fpr <= 0.05:
            continue
        same = next((i for i, p in enumerate(points) if p.threshold == point.threshold), None)
        if same is None:
            points.append(point)
        elif points[same].name == "default":  # one threshold, several names: keep the telling one
            points[same] = point
    return points


def _widest(points: Sequence[OperatingPoint]) -> OperatingPoint | None:
    best: OperatingPoint | None = None
    for point in points:
        if best is None or point.tpr - point.fpr > best.tpr - best.fpr:
            best = point
    return best


def card_operating_point(card: Mapping[str, Any] | None) -> OperatingPoint | None:
    """The card's operating point with the largest TPR - FPR.

    Adjusted count divides by TPR - FPR, so the widest gap gives the steadiest estimate.
    """
    return _widest(card_operating_points(card))


def _with_measured(point: OperatingPoint, measured: rel.MeasuredRates) -> OperatingPoint:
    """The point with the rates re-measured on labelled records of the corpus where there are
    enough of them (their counts then drive the bootstrap's Beta draws), the card's elsewhere."""
    tpr, fpr = measured.tpr, measured.fpr
    if tpr is None and fpr is None:
        return point
    tp, fn = (measured.tp, measured.n_machine - measured.tp) if tpr is not None else (point.tp, point.fn)
    fp, tn = (measured.fp, measured.n_human - measured.fp) if fpr is not None else (point.fp, point.tn)
    return OperatingPoint(point.threshold, point.tpr if tpr is None else tpr, point.fpr if fpr is None else fpr,
                          tp, fn, fp, tn, point.held_out or (tpr is not None and fpr is not None), point.name)


# -- estimation -----------------------------------------------------------------------------------


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), elementwise."""
    return np.log(p) - np.log1p(-p)


@dataclass
class _Bins:
    """Detector scores reduced to at most ``MAX_BINS`` distinct values (sorted, so order-free)."""

    score: np.ndarray  # representative calibrated probability per bin
    counts: np.ndarray  # records per bin (int64)
    index: np.ndarray  # bin of each scored record, in the order the records came

    @classmethod
    def build(cls, scores: np.ndarray) -> "_Bins":
        s = np.clip(scores.astype(np.float64), SCORE_CLIP, 1.0 - SCORE_CLIP)
        uniq, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        if len(uniq) <= MAX_BINS:
            return cls(uniq, counts.astype(np.int64), inverse.astype(np.int64))
        # Too many distinct values: equal-width bins on the logit scale, each represented by
        # the mean logit of its records (computed over sorted unique values: order-free).
        edges = logit_bin_edges(float(uniq[0]), float(uniq[-1]))
        used, n, total = logit_bin_sums(uniq, counts, edges)
        score, bin_counts = bins_from_sums(used, n, total)
        ub, _ = logit_bin_of(uniq, edges)
        return cls(score, bin_counts, np.searchsorted(used, ub)[inverse].astype(np.int64))


# The binning in pieces, so that an engine holding the distinct values in partitions (Ray)
# builds the same bins: each partition sums whole bins, the pieces are then put in order.


def logit_bin_edges(vmin: float, vmax: float) -> np.ndarray:
    """Equal-width logit-scale bin edges over [vmin, vmax] (clipped scores)."""
    lu = logit(np.array([vmin, vmax], dtype=np.float64))
    return np.linspace(lu[0], lu[-1], MAX_BINS + 1)


def logit_bin_of(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin, logit) of each clipped score."""
    lu = logit(values)
    return np.clip(np.searchsorted(edges, lu, side="right") - 1, 0, MAX_BINS - 1), lu


def logit_bin_sums(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin, records, sum of logit x count) of the bins the distinct ``values`` fall in, each
    bin whole. The sums run over ascending values, one addition at a time (``np.bincount``),
    so any split of the bins gives the same floats."""
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    b, lu = logit_bin_of(values, edges)
    used, local = np.unique(b, return_inverse=True)
    n = np.bincount(local, weights=counts.astype(np.float64), minlength=len(used))
    total = np.bincount(local, weights=lu * counts, minlength=len(used))
    return used, n, total


def bins_from_sums(bins: np.ndarray, n: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(representative probability, records) per bin, in bin order, from ``logit_bin_sums``."""
    order = np.argsort(bins)
    n, total = n[order], total[order]
    return 1.0 / (1.0 + np.exp(-(total / n))), n.astype(np.int64)


def _prior_from_counts(
    method: str,
    bins: _Bins,
    weights: np.ndarray,
    train_prior: float | None,
    op: OperatingPoint | None,
    rates: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The detector-scored share for each row of bin ``weights`` (counts), by ``method``."""
    w = np.atleast_2d(weights).astype(np.float64)
    n = w.sum(axis=1)
    if method == "em":
        assert train_prior is not None
        lr = (bins.score / (1.0 - bins.score)) * ((1.0 - train_prior) / train_prior)
        return _mle_prior(lr, w)
    if method == "pcc":
        return (w @ bins.score) / n
    if method == "cc":
        return (w @ (bins.score >= 0.5).astype(np.float64)) / n
    if method == "acc":
        assert op is not None
        tpr, fpr = rates if rates is not None else (op.tpr, op.fpr)
        rate = (w @ (bins.score >= op.threshold).astype(np.float64)) / n
        return np.clip((rate - fpr) / np.maximum(tpr - fpr, 1e-3), 0.0, 1.0)
    raise ValueError(f"unknown prevalence method {method!r}; choose from auto, {', '.join(METHODS)}")


SMALL_SAMPLE = 200  # fewer detector-scored records than this: the EM interval also reads the likelihood


def _likelihood_interval(bins: _Bins, train_prior: float, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of the detector-scored share under a uniform prior, from the
    mixture likelihood of the scores (each record's likelihood ratio through the calibration map).

    A bootstrap of EM on a few dozen records can collapse to a point: when every record scores
    on one side of the training prior, every resample's maximum sits at 0 (or 1), and the
    percentile interval is [0, 0] though five records cannot rule out a third of them being
    synthetic. The likelihood itself is flat there, and says so."""
    lr = (bins.score / (1.0 - bins.score)) * ((1.0 - train_prior) / train_prior)
    grid = np.linspace(0.0, 1.0, 1001)
    loglik = np.log(grid[:, None] * lr[None, :] + (1.0 - grid[:, None])) @ bins.counts.astype(np.float64)
    post = np.exp(loglik - loglik.max())
    cdf = np.cumsum(post)
    cdf /= cdf[-1]
    tail = (1.0 - level) / 2.0
    return float(grid[np.searchsorted(cdf, tail)]), float(grid[min(np.searchsorted(cdf, 1.0 - tail), len(grid) - 1)])


def card_calibration_held_out(card: Mapping[str, Any] | None) -> bool:
    """Whether the card's calibration map was fitted on held-out text scored by the model itself
    (``calibrated_on: held_out_share``, what ``synthfilter train`` writes), not on fold models'
    out-of-fold scores (a sharper refitted model then reads the map a little off)."""
    return str((card or {}).get("calibrated_on", "")).casefold() == "held_out_share"


def _resolve_method(method: str, train_prior: float | None, op: OperatingPoint | None,
                    calibration_held_out: bool = False, corpus_rates: bool = False) -> str:
    if method == "auto":
        # Measured in benchmarks/ratio_accuracy.py (docs/ratio.md, "Estimators"). Rates re-measured
        # on this corpus's labelled records are its own evidence: adjusted count with them. Else EM
        # when the calibration map was fitted on held-out text scored by the model itself: it
        # reads every score, not one threshold's count, and does not carry the sampling error of
        # rates measured on a few hundred human texts. Adjusted count with held-out rates when the
        # map is the fold models' (EM inherits its error then). Without a card: mean score (biased).
        if op is not None and corpus_rates:
            return "acc"
        if train_prior is not None and calibration_held_out:
            return "em"
        if op is not None and op.held_out:
            return "acc"
        if train_prior is not None:
            return "em"
        return "acc" if op is not None else "pcc"
    if method not in METHODS:
        raise ValueError(f"unknown prevalence method {method!r}; choose from auto, {', '.join(METHODS)}")
    if method == "em" and train_prior is None:
        raise ValueError("method 'em' needs the model card's train_prior (the prior the scores are calibrated at)")
    if method == "acc" and op is None:
        raise ValueError("method 'acc' needs operating points (threshold, tpr, fpr) in the model card")
    return method


@dataclass
class _Analysis:
    """Everything estimate_prevalence computes, kept for plan_downsampling to reuse."""

    estimate: PrevalenceEstimate
    bins: _Bins | None
    scored: np.ndarray  # bool per record: unknown provenance with a finite score
    unscored: np.ndarray  # bool per record: unknown provenance and no score
    pi: float  # estimated share among unknown-provenance records
    pi_boot: np.ndarray  # bootstrap replicates of pi
    train_prior: float | None
    shift: float = 0.0  # logit shift that turns scores into posteriors averaging pi
    shift_boot: np.ndarray | None = None  # the same for each replicate
    # The widened interval's low and high replicates (None: the interval is sampling alone).
    corners: tuple[np.ndarray, np.ndarray] | None = None
    corner_shifts: tuple[np.ndarray, np.ndarray] | None = None
    below: list[tuple[float, np.ndarray]] = field(default_factory=list)  # see _widened
    labelled: rel.LabelledScores | None = None  # the known-provenance records' scores, counted


def _check_inputs(scores: np.ndarray, provenance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    p = np.asarray(provenance).ravel()
    if s.shape != p.shape:
        raise ValueError(f"scores and provenance differ in length ({len(s)} vs {len(p)})")
    if p.size and not np.isin(p, (UNKNOWN, HUMAN, MACHINE)).all():
        raise ValueError("provenance codes must be 0 (unknown), 1 (human) or 2 (machine)")
    finite = np.isfinite(s)
    if ((s[finite] < 0) | (s[finite] > 1)).any():
        raise ValueError("detector scores must be probabilities in [0, 1] (NaN where not scored)")
    return s, p.astype(np.int8)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def labelled_scores(
    known_scores: np.ndarray | None, provenance: np.ndarray, card: Mapping[str, Any] | None
) -> rel.LabelledScores | None:
    """The detector scores of known-provenance records, counted at the card's thresholds and
    histogram edges (what the reliability checks need); None without scores or a card."""
    if known_scores is None:
        return None
    s = np.asarray(known_scores, dtype=np.float64).ravel()
    prov = np.asarray(provenance).ravel()
    if s.shape != prov.shape:
        raise ValueError(f"known_scores and provenance differ in length ({len(s)} vs {len(prov)})")
    cuts = card_score_cuts(card)
    if cuts is None:
        return None
    return rel.LabelledScores.from_scores(s[prov == HUMAN], s[prov == MACHINE], cuts)


def card_score_cuts(card: Mapping[str, Any] | None) -> np.ndarray | None:
    """Where labelled scores are counted for this card (None: the card has nothing to count at)."""
    points = card_operating_points(card)
    dist, _ = rel.card_score_distribution(card)
    if not points and dist is None:
        return None
    return rel.score_cuts([p.threshold for p in points], dist)


def _analyse(
    scores: np.ndarray,
    provenance: np.ndarray,
    card: Mapping[str, Any] | None,
    method: str,
    n_boot: int,
    seed: int,
    known_scores: np.ndarray | None = None,
    posteriors: bool = False,
    widen: str = "auto",
) -> _Analysis:
    """The estimate; with ``posteriors`` also the logit shifts a plan turns scores into
    posteriors with (the costly part, which an estimate alone does not need)."""
    s, prov = _check_inputs(scores, provenance)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    unknown = prov == UNKNOWN
    scored = unknown & np.isfinite(s)
    unscored = unknown & ~np.isfinite(s)
    bins = _Bins.build(s[scored]) if scored.any() else None
    labelled = labelled_scores(known_scores, prov, card)
    got = _estimate_from_bins(
        bins, len(s), int(unscored.sum()), int((prov == HUMAN).sum()), int((prov == MACHINE).sum()),
        card, method, n_boot, seed, labelled, widen,
    )
    est = got.estimate
    an = _Analysis(est, bins, scored, unscored, got.pi, got.pi_boot, est.train_prior, corners=got.corners,
                   below=got.below, labelled=labelled)
    if bins is not None and posteriors:
        an.shift = float(_logit_shift(bins, np.array([got.pi]), est.train_prior, est.method)[0])
        an.shift_boot = _logit_shift(bins, got.pi_boot, est.train_prior, est.method)
        if got.corners is not None:
            an.corner_shifts = (_logit_shift(bins, got.corners[0], est.train_prior, est.method),
                                _logit_shift(bins, got.corners[1], est.train_prior, est.method))
    return an


def _logit_shift(bins: _Bins, shares: np.ndarray, train_prior: float | None, method: str) -> np.ndarray:
    """The shift c per share such that the posteriors sigmoid(logit(s) + c) average that share.

    Moving a calibrated score from prior pi0 to prior pi is exactly such a shift (Bayes' rule:
    c = logit(pi) - logit(pi0)), and for ``em`` that is the solution. For the other methods the
    shift makes the per-record posteriors agree with the estimate, so that the expected
    synthetic count of any kept set adds up to the estimated total.
    """
    p = np.clip(np.asarray(shares, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    if method == "em" and train_prior is not None:
        return np.log(p) - np.log1p(-p) - math.log(train_prior / (1.0 - train_prior))
    ls = logit(bins.score)
    w = bins.counts / bins.counts.sum()
    c = np.log(p) - np.log1p(-p) - logit(np.array([float(w @ bins.score)]))[0]
    lo, hi = np.full_like(p, -60.0), np.full_like(p, 60.0)
    for _ in range(_NEWTON_STEPS):
        q = _sigmoid(ls[None, :] + c[:, None])
        gap = q @ w - p
        slope = (q * (1.0 - q)) @ w
        lo = np.where(gap < 0, c, lo)
        hi = np.where(gap < 0, hi, c)
        step = np.where(slope > 0, -gap / np.maximum(slope, 1e-300), 0.0)
        new = c + step
        bad = (new <= lo) | (new >= hi) | ~np.isfinite(new)
        new = np.where(bad, 0.5 * (lo + hi), new)
        if np.all(np.abs(new - c) < 1e-10):
            return new
        c = new
    return c


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _Estimated:
    estimate: PrevalenceEstimate
    pi: float  # the detector-scored share
    pi_boot: np.ndarray  # its bootstrap replicates
    corners: tuple[np.ndarray, np.ndarray] | None = None  # low / high replicates of a widened interval
    below: list[tuple[float, np.ndarray]] = field(default_factory=list)  # see _widened


def _estimate_from_bins(
    bins: _Bins | None,
    n: int,
    n_unscored: int,
    known_h: int,
    known_m: int,
    card: Mapping[str, Any] | None,
    method: str,
    n_boot: int,
    seed: int,
    labelled: rel.LabelledScores | None = None,
    widen: str = "auto",
) -> _Estimated:
    """The estimate, the detector-scored share and its bootstrap replicates, from score bins
    (the estimator's sufficient statistics), the record counts and the labelled records' scores."""
    n_scored = int(bins.counts.sum()) if bins is not None else 0
    train_prior = card_train_prior(card)
    card_points = card_operating_points(card)
    warnings: list[str] = []

    if n_scored == 0:
        if n_unscored:
            raise ValueError(
                f"{n_unscored} records have neither a known provenance nor a detector score: "
                "enable the detector or map their provenance"
            )
        share = known_m / n if n else 0.0
        est = PrevalenceEstimate(
            share, (share, share), "known", n, 0, 0, known_h, known_m, None, None, None, train_prior
        )
        return _Estimated(est, 0.0, np.zeros(max(n_boot, 1)))

    # The card's rates, re-measured on labelled records of this corpus where there are enough.
    measured = [rel.measure_rates(p.name, p.threshold, p.tpr, p.fpr, labelled) for p in card_points] if labelled else []
    points = [_with_measured(p, m) for p, m in zip(card_points, measured)] if measured else card_points
    op = _widest(points)
    op_measured = measured[points.index(op)] if measured and op is not None else None
    corpus_rates = op_measured is not None and (op_measured.tpr is not None or op_measured.fpr is not None)
    # Re-measured rates that agree with the card's vouch for its calibration: with a map fitted on
    # held-out text, EM then reads every score instead of one threshold's count over rates that a
    # few dozen labelled records measure loosely (docs/ratio.md, "Estimators", rule 1).
    map_held_out = card_calibration_held_out(card)
    agreed = None
    if corpus_rates and method == "auto" and train_prior is not None and map_held_out:
        assert op_measured is not None
        zs = rel.rates_agree(op_measured)
        agreed = (op_measured, zs) if zs is not None else None  # then _resolve_method gives em (rule 2)
    used = _resolve_method(method, train_prior, op, map_held_out, corpus_rates and agreed is None)
    if used == "pcc" and method == "auto":
        warnings.append(
            "model card has neither train_prior nor operating points: the synthetic share is the mean "
            "score, not corrected for the corpus prior"
        )
    assert bins is not None
    pi = float(_prior_from_counts(used, bins, bins.counts, train_prior, op)[0])
    naive = float(_prior_from_counts("cc", bins, bins.counts, train_prior, op)[0])
    by_method = {used: pi}
    for other in ("em", "acc"):
        if other not in by_method and (train_prior is not None if other == "em" else op is not None):
            by_method[other] = float(_prior_from_counts(other, bins, bins.counts, train_prior, op)[0])
    rng = np.random.default_rng(seed)
    if n_boot > 0:
        draws = rng.multinomial(n_scored, bins.counts / n_scored, size=n_boot)
        rates = op.draws(rng, n_boot) if used == "acc" and op is not None else None
        pi_boot = _prior_from_counts(used, bins, draws, train_prior, op, rates)
        det_ci: tuple[float, float] | None = _percentile_ci(pi_boot)
        if used == "em" and n_scored < SMALL_SAMPLE:
            assert train_prior is not None
            lo, hi = _likelihood_interval(bins, train_prior)
            det_ci = (min(det_ci[0], lo), max(det_ci[1], hi))
    else:
        draws = rates = None
        pi_boot = np.array([pi])
        det_ci = None
    if n_unscored:
        warnings.append(
            f"{n_unscored} records without a detector score are assumed to share the detector-scored share"
        )

    n_unknown = n_scored + n_unscored

    def overall(x: float) -> float:
        return (known_m + x * n_unknown) / n

    checks, estimators = _checks(bins, used, pi, pi_boot if n_boot > 0 else None, draws, op, op_measured, points,
                                 card_points, measured, train_prior, card, labelled, seed, agreed)
    verdict, reasons = rel.combine(checks)
    sampling_ci = None if det_ci is None else (overall(det_ci[0]), overall(det_ci[1]))
    corners, basis, unseen_ci, below_used, zero_low = None, "sampling", None, [], False
    if draws is not None:
        # The interval over the rates of sources the detector never saw: reported always (the
        # checks cannot see every shift: machine text of a new source that scores like human text
        # looks like a more human corpus), used when the checks flag the corpus or when asked to.
        wide, wide_basis, below = _widened(bins, draws, pi_boot, points, measured, card, estimators, seed)
        if wide_basis == "source_shift":
            unseen_ci = (overall(float(np.quantile(wide[0], 0.025))), overall(float(np.quantile(wide[1], 0.975))))
        if verdict in ("doubtful", "unreliable") or (widen == "unseen_source" and wide_basis == "source_shift"):
            corners, basis, below_used = wide, wide_basis, below
            if verdict in ("doubtful", "unreliable") and not any(m.fpr is not None for m in measured):
                # The checks see this corpus's scores differ from the card's, and no labelled human
                # records re-measured the false-positive rate: the excess may all be human text the
                # detector misreads (a held-out source raised the human FPR 8-fold, beyond every
                # other held-out source's move), so nothing rules out a share of 0.
                corners, zero_low = (np.zeros_like(corners[0]), corners[1]), True
        elif rel.estimates_apart(estimators):
            # Not flagged, but two estimators differ by more than sampling explains (a detector
            # whose rates have drifted a little from its card's: a generator that moved on, a
            # card measured on few rows). Which one is nearer the truth the scores cannot say,
            # so the interval spans every estimator's replicates, and a plan's bound with it.
            corners, basis = _estimator_range(estimators, pi_boot), "estimator_range"
        if corners is not None:
            det_ci = (min(det_ci[0], float(np.quantile(corners[0], 0.025))),  # type: ignore[index]
                      max(det_ci[1], float(np.quantile(corners[1], 0.975))))  # type: ignore[index]
    reliability = rel.Reliability(verdict, reasons, tuple(checks), basis, sampling_ci, unseen_ci, zero_low,
                                  rel.advice(card))
    ci = None if det_ci is None else (overall(det_ci[0]), overall(det_ci[1]))
    message = reliability.message(ci)
    if message:
        warnings.insert(0, message)
    est = PrevalenceEstimate(
        overall(pi), ci, used, n, n_scored, n_unscored, known_h, known_m, pi, det_ci, overall(naive), train_prior,
        tuple(warnings), tuple(sorted(by_method.items())), reliability,
    )
    return _Estimated(est, pi, pi_boot, corners, below_used)


def _acc_name(point: OperatingPoint) -> str:
    return f"acc@{point.name or f'{point.threshold:.4g}'}"


def _checks(
    bins: _Bins,
    used: str,
    pi: float,
    pi_boot: np.ndarray | None,
    boot_draws: np.ndarray | None,
    op: OperatingPoint | None,
    op_measured: rel.MeasuredRates | None,
    points: Sequence[OperatingPoint],
    card_points: Sequence[OperatingPoint],
    measured: Sequence[rel.MeasuredRates],
    train_prior: float | None,
    card: Mapping[str, Any] | None,
    labelled: rel.LabelledScores | None,
    seed: int,
    agreed: tuple[rel.MeasuredRates, Mapping[str, float]] | None = None,
) -> tuple[list[rel.Check], dict[str, tuple[float, np.ndarray]]]:
    """The three reliability checks, and every estimator's share with its replicates.

    The replicates are the estimate's own bootstrap draws (so differences are paired) or, when
    the estimate has none, ``CHECK_REPLICATES`` fresh ones; other operating points draw their
    rates from a generator of their own, so the estimate's numbers do not move.
    """
    n_scored = int(bins.counts.sum())
    rng = np.random.default_rng([seed, 5])
    if pi_boot is not None and boot_draws is not None:
        draws, primary_reps = boot_draws, pi_boot
    else:
        draws = rng.multinomial(n_scored, bins.counts / n_scored, size=rel.CHECK_REPLICATES)
        rates = op.draws(rng, len(draws)) if used == "acc" and op is not None else None
        primary_reps = _prior_from_counts(used, bins, draws, train_prior, op, rates)
    reps = len(draws)
    primary = _acc_name(op) if used == "acc" and op is not None else used
    estimators: dict[str, tuple[float, np.ndarray]] = {primary: (pi, primary_reps)}
    seen = {op.threshold} if used == "acc" and op is not None else set()
    for point in points:
        # Rates from cross-validation describe the fold models, not the model that scores: an
        # adjusted count with them is known to be off, so it is no evidence either way.
        if point.threshold in seen or not point.held_out:
            continue
        seen.add(point.threshold)
        value = float(_prior_from_counts("acc", bins, bins.counts, train_prior, point)[0])
        estimators[_acc_name(point)] = (value, _prior_from_counts("acc", bins, draws, train_prior, point,
                                                                   point.draws(rng, reps)))
    both_measured = op_measured is not None and op_measured.tpr is not None and op_measured.fpr is not None
    if train_prior is not None and used != "em" and not both_measured:
        # EM reads the card's calibration; once both rates are this corpus's it is not comparable.
        value = float(_prior_from_counts("em", bins, bins.counts, train_prior, op)[0])
        estimators["em"] = (value, _prior_from_counts("em", bins, draws, train_prior, op))

    # Provenance: the share with the card's rates against the share with the re-measured ones.
    share_card = share_measured = None
    uses = op_measured if used == "acc" and op is not None else None
    if uses is not None and op is not None:
        card_op = card_points[points.index(op)]
        share_card = float(_prior_from_counts("acc", bins, bins.counts, train_prior, card_op)[0])
        share_measured = pi
    provenance = rel.provenance_check(measured, uses, labelled, share_card, share_measured, used, agreed)

    # Mixture fit against the card's held-out histograms (the labelled records' own, per class,
    # where there are enough of them: they are this corpus's classes).
    dist, why_not = rel.card_score_distribution(card)
    fit = None
    classes = "card"
    if dist is not None:
        use_h = labelled is not None and labelled.n_human >= rel.MIN_LABELLED
        use_m = labelled is not None and labelled.n_machine >= rel.MIN_LABELLED
        human = labelled.histogram(labelled.human, dist) if use_h else dist.human  # type: ignore[union-attr]
        machine = labelled.histogram(labelled.machine, dist) if use_m else dist.machine  # type: ignore[union-attr]
        classes = {(False, False): "card", (True, False): "labelled human, card machine",
                   (False, True): "card human, labelled machine", (True, True): "labelled"}[(use_h, use_m)]
        onehot = np.zeros((len(bins.score), dist.bins))
        onehot[np.arange(len(bins.score)), dist.bin_of(bins.score)] = 1.0
        observed = bins.counts.astype(np.float64) @ onehot
        fit = rel.fit_mixture(observed, human, machine, seed)
        h_star = rng.multinomial(int(human.sum()), rel.smoothed(human), size=reps)
        m_star = rng.multinomial(int(machine.sum()), rel.smoothed(machine), size=reps)
        estimators["mixture"] = (fit.share, rel.mixture_share(draws @ onehot, h_star, m_star))
    mixture = rel.mixture_check(fit, why_not, dist.bins if dist is not None else None, classes)
    agreement = rel.agreement_check(primary, estimators)
    return [provenance, mixture, agreement], estimators


def _widened(
    bins: _Bins,
    draws: np.ndarray,
    pi_boot: np.ndarray,
    points: Sequence[OperatingPoint],
    measured: Sequence[rel.MeasuredRates],
    card: Mapping[str, Any] | None,
    estimators: Mapping[str, tuple[float, np.ndarray]],
    seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], str, list[tuple[float, np.ndarray]]]:
    """Low and high replicates of the widened interval, its basis, and per operating point the
    replicates of the most machine text the records under its threshold can hold.

    ``source_shift``: at each operating point the card has held-out-source rates for, adjusted
    count with TPR and FPR free to move over the range those sources span (a rate re-measured on
    labelled records stays as measured), on the same bootstrap draws: per replicate the lowest
    and highest share over the corners of that box. The share has to lie in every point's range,
    so the interval is their intersection (their union where noise leaves them disjoint).
    Without ``source_shift`` in the card: the lowest and highest replicate of every estimator
    (``estimator_range``).

    Under a threshold t the records hold pi (1 - TPR) of the machine text and 1 - CC_t of all
    records, so their machine share is at most pi_high (1 - TPR_low) / (1 - CC_t): a bound on a
    kept set cut below t that does not lean on the calibration's shape, which an unseen source
    changes (a lower cut holds less machine text as long as lower scores stay less machine-like).
    """
    shifts = rel.card_source_shift(card)
    n = draws.sum(axis=1).astype(np.float64)
    rng = np.random.default_rng([seed, 7])
    lows, highs, under = [], [], []
    for i, point in enumerate(points):
        if point.name not in shifts:
            continue
        (t_lo, t_hi), (f_lo, f_hi) = rel.rate_moves(shifts[point.name])
        m = measured[i] if measured else None
        if m is not None and m.tpr is not None:
            t_lo = t_hi = 0.0
        if m is not None and m.fpr is not None:
            f_lo = f_hi = 0.0
        tpr, fpr = point.draws(rng, len(draws))
        rate = (draws @ (bins.score >= point.threshold).astype(np.float64)) / n
        shares = [np.clip((rate - f) / np.maximum(t - f, 1e-3), 0.0, 1.0)
                  for t in (np.clip(tpr + t_lo, 0.0, 1.0), np.clip(tpr + t_hi, 0.0, 1.0))
                  for f in (np.clip(fpr + f_lo, 0.0, 1.0), np.clip(fpr + f_hi, 0.0, 1.0))]
        lows.append(np.min(shares, axis=0))
        highs.append(np.max(shares, axis=0))
        under.append((point.threshold, np.clip(tpr + t_lo, 0.0, 1.0), rate))
    if lows:
        low, high = np.max(lows, axis=0), np.min(highs, axis=0)
        disjoint = low > high
        low = np.where(disjoint, np.min(lows, axis=0), low)
        high = np.where(disjoint, np.max(highs, axis=0), high)
        high = np.maximum(high, pi_boot)
        below = [(t, np.clip(high * (1.0 - t_low) / np.maximum(1.0 - rate, 1e-9), 0.0, 1.0))
                 for t, t_low, rate in under]
        return (np.minimum(low, pi_boot), high), "source_shift", sorted(below, key=lambda b: b[0])
    return _estimator_range(estimators, pi_boot), "estimator_range", []


def _estimator_range(estimators: Mapping[str, tuple[float, np.ndarray]],
                     pi_boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate, the lowest and highest share of every estimator (the estimate's own included)."""
    stacked = np.stack([r for _, r in estimators.values()] + [pi_boot])
    return stacked.min(axis=0), stacked.max(axis=0)


def estimate_prevalence(
    scores: np.ndarray,
    provenance: np.ndarray,
    card: Mapping[str, Any] | None = None,
    method: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    *,
    known_scores: np.ndarray | None = None,
    widen: str = "auto",
) -> PrevalenceEstimate:
    """Estimate the synthetic share of the records, with a 95 % bootstrap interval.

    Args:
        scores: calibrated P(machine) per record; NaN where provenance is known or no score.
        provenance: int8 codes per record (0 unknown, 1 human, 2 machine). Known records are
            counted exactly; the detector's score never overrides them.
        card: the detector's model card; ``train_prior`` (the machine share the scores are
            calibrated at) enables ``em``, ``operating_points`` enable ``acc``;
            ``score_distribution`` and ``source_shift`` feed the reliability checks.
        method: ``auto`` (``acc`` with held-out rates, else ``em`` when the card allows), ``em``
            (maximum likelihood under prior shift, Saerens et al. 2002), ``acc`` (adjusted
            classify-and-count at the widest TPR-FPR point), ``pcc`` (mean score), ``cc``
            (naive count at 0.5).
        n_boot: bootstrap replicates for the interval (0: no interval).
        seed: bootstrap seed; the same inputs and seed give the same numbers in any order.
        known_scores: detector scores aligned with ``provenance``; those of known-provenance
            records re-measure the detector's rates on this corpus (``reliability``: 30 or more
            of a class) and the estimate then uses them. None: the card's rates only.
        widen: ``auto`` widens the interval over the card's held-out-source rates when the
            checks find the detector doubtful or unreliable here; ``unseen_source`` always (for
            corpora from sources unlike the training data; the checks cannot see every shift).

    The result's ``reliability`` holds the checks and their verdict, and ``ci95_unseen_source``
    (the widened interval, whether used or not) when the card has ``source_shift``.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> s = rng.uniform(size=1000).astype(np.float32)
        >>> prov = np.zeros(1000, dtype=np.int8)
        >>> est = estimate_prevalence(s, prov, {"train_prior": 0.5})
        >>> est.method, round(est.share, 2)
        ('em', 0.5)
    """
    _check_widen(widen)
    return _analyse(scores, provenance, card, method, n_boot, seed, known_scores, widen=widen).estimate


WIDEN = ("auto", "unseen_source")


def _check_widen(widen: str) -> None:
    if widen not in WIDEN:
        raise ValueError(f"widen must be one of {', '.join(WIDEN)}, got {widen!r}")


def estimate_prevalence_from_bins(
    bin_scores: np.ndarray,
    bin_counts: np.ndarray,
    *,
    n_unscored: int = 0,
    known_human: int = 0,
    known_machine: int = 0,
    card: Mapping[str, Any] | None = None,
    method: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    labelled: rel.LabelledScores | None = None,
    widen: str = "auto",
) -> PrevalenceEstimate:
    """``estimate_prevalence`` from score bins instead of per-record scores.

    For engines that cannot hold one score per record: the bins are the estimator's sufficient
    statistics. ``bin_scores`` (sorted, clipped to [1e-6, 1 - 1e-6]) and ``bin_counts`` must be
    what ``estimate_prevalence`` makes of the detector-scored records: their distinct values
    and counts when there are at most 4096, else the logit-scale bins of ``_Bins.build``.
    ``labelled`` carries the known-provenance records' scores as counts between the card's cut
    points (``card_score_cuts``; ``reliability.cut_counts`` per chunk, summed). With those the
    result is identical, bootstrap interval and reliability checks included.
    """
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    _check_widen(widen)
    counts = np.asarray(bin_counts, dtype=np.int64)
    bins = None
    if counts.sum() > 0:
        bins = _Bins(np.asarray(bin_scores, dtype=np.float64), counts, np.zeros(0, dtype=np.int64))
    n = int(counts.sum()) + n_unscored + known_human + known_machine
    return _estimate_from_bins(bins, n, n_unscored, known_human, known_machine, card, method, n_boot, seed,
                               labelled, widen).estimate


# -- downsampling ---------------------------------------------------------------------------------


class _KeptShare:
    """Estimated synthetic share of a kept subset, with bootstrap replicates for its interval.

    A replicate moves every detector posterior to that replicate's prior and adds the
    record-level Bernoulli spread of the kept set (which labels the posteriors leave open).
    When the estimate's interval was widened there are two sets of replicates, its low and its
    high ends: the upper bound is the high set's, the interval spans both.

    With the card's held-out score histograms (``score_distribution``) there is one set more:
    the kept records' share read from those histograms instead of the calibration map, each
    replicate drawing the histograms' cumulative counts from their posterior (Beta, Jeffreys
    prior). The map is fitted on few texts where scores are lowest, and a kept set cut deep into
    that tail (a 10 % target on an 80 % corpus) is where it is least sure: on the shipped model
    it said about 5 % synthetic where held-out texts showed 12 %, and kept sets broke their 95 %
    bound in a fifth to a quarter of held-out mixtures there. The held-out view carries the
    uncertainty of its counts, which the map's does not, so it sets the upper bound (with the
    widened sets, when the interval is widened); the interval spans every view.
    """

    def __init__(self, an: _Analysis, provenance: np.ndarray, posterior: np.ndarray, n_boot: int, seed: int,
                 dist: rel.ScoreDistribution | None = None):
        self.an = an
        self.widened = an.corners is not None or bool(an.below)
        self.prov = provenance
        self.posterior = posterior
        self.bin_of = np.full(len(provenance), -1, dtype=np.int64)
        if an.corners is not None and an.corner_shifts is not None:
            sets = list(zip(an.corners, an.corner_shifts))
        else:
            sets = [(an.pi_boot, an.shift_boot)]
        self.pi_sets = [pi for pi, _ in sets]
        if an.bins is not None:
            self.bin_of[an.scored] = an.bins.index
            ls = logit(an.bins.score)[None, :]
            self.q_sets = [_sigmoid(ls + shift[:, None]) for _, shift in sets]  # (B, K) each
        else:
            self.q_sets = [np.zeros((len(an.pi_boot), 0)) for _ in sets]
        self.z = np.random.default_rng([seed, 1]).standard_normal(len(an.pi_boot)) if n_boot > 0 else None
        self.scores = np.full(len(provenance), -np.inf)
        if an.bins is not None:
            self.scores[an.scored] = an.bins.score[an.bins.index]
        # The held-out histograms' view: the card bin of each score bin (by its representative
        # score; a score bin is far narrower than a card bin), and the fixed uniforms that turn
        # the held-out counts into each replicate's draw (the same for every kept set, so the
        # bound moves smoothly as the plan drops more).
        self.dist = dist
        self.card_of_bin: np.ndarray | None = None
        if dist is not None and self.z is not None and an.bins is not None:
            self.card_of_bin = dist.bin_of(an.bins.score)
            self.in_card_bin = np.bincount(self.card_of_bin, weights=an.bins.counts, minlength=dist.bins)
            self.u_held = np.random.default_rng([seed, 2]).uniform(size=(2, len(self.z)))

    def replicates(self, kept: np.ndarray) -> list[np.ndarray] | None:
        if self.z is None:
            return None
        m = int(kept.sum())
        if m == 0:
            return [np.zeros_like(self.z)]
        machines = float((self.prov[kept] == MACHINE).sum())
        k_bins = self.bin_of[kept]
        k_bins = k_bins[k_bins >= 0]
        per_bin = np.bincount(k_bins, minlength=self.q_sets[0].shape[1]).astype(np.float64)
        n_unscored = float((kept & self.an.unscored).sum())
        q = np.sort(self.posterior[kept])  # sorted: the sum does not depend on record order
        var = float(np.sum(q * (1.0 - q)))
        counts = np.r_[per_bin, n_unscored]
        sets = [np.clip((machines + self._count(np.c_[q_boot, pi], counts, var)) / m, 0.0, 1.0)
                for q_boot, pi in zip(self.q_sets, self.pi_sets)]
        # Widened: the calibration's shape is what an unseen source changes, so a kept set cut under
        # an operating threshold takes its high end from the rates alone (the lowest such threshold).
        top = float(self.scores[kept].max())
        for threshold, share in self.an.below:
            if top < threshold:
                below = self._count(np.c_[share, self.pi_sets[-1]], np.r_[float(len(k_bins)), n_unscored], var)
                sets[-1] = np.clip((machines + below) / m, 0.0, 1.0)
                break
        if self.card_of_bin is not None:
            held_out = self._held_out(per_bin, n_unscored)
            sets.append(np.clip((machines + held_out) / m, 0.0, 1.0))
        return sets

    def _held_out(self, per_bin: np.ndarray, n_unscored: float) -> np.ndarray:
        """Per replicate, the synthetic records among the kept ones (``per_bin``: kept records
        per score bin) as the card's held-out histograms see them. The kept records count as
        every record scored below the highest card bin any of them is in, plus the same fraction
        of that bin's held-out texts as of its records here: exact for a threshold cut but for
        the bin's shape (its lower part, which a cut keeps, is the more human), an upper bound for
        the uniform strategy's (a higher bin is at least as synthetic as a lower one). Each
        class's count there is drawn from its posterior (Beta, Jeffreys prior: none of 2,000
        held-out texts scoring this low still leaves room for one in a thousand) and turned into
        a share at the replicate's prior."""
        from scipy.special import betaincinv

        assert self.card_of_bin is not None and self.dist is not None
        per_card = np.bincount(self.card_of_bin, weights=per_bin, minlength=self.dist.bins)
        n_scored = float(per_bin.sum())
        pi = self.pi_sets[-1]
        if n_scored > 0:
            top = int(np.flatnonzero(per_card)[-1])
            part = float(per_card[top]) / float(self.in_card_bin[top])
            shares = []
            for counts, u in zip((self.dist.machine, self.dist.human), self.u_held):
                below = float(counts[:top].sum()) + part * float(counts[top])
                shares.append(betaincinv(below + 0.5, float(counts.sum()) - below + 0.5, u))
            f_m, f_h = shares
            q = pi * f_m / np.maximum(pi * f_m + (1.0 - pi) * f_h, 1e-300)
        else:
            q = np.zeros_like(pi)
        var = n_scored * float(np.mean(q * (1 - q))) + n_unscored * float(np.mean(pi * (1 - pi)))
        return self._count(np.c_[q, pi], np.r_[n_scored, n_unscored], var)

    def _count(self, q: np.ndarray, counts: np.ndarray, var: float) -> np.ndarray:
        """Per replicate, how many kept records are synthetic: ``counts`` records per bin, each
        synthetic with its replicate's probability ``q`` (B, bins), plus the record-level spread
        (variance ``var``)."""
        return q @ counts + self.z * math.sqrt(var)

    def upper(self, kept: np.ndarray, confidence: float) -> float:
        reps = self.replicates(kept)
        if reps is None:
            return float(np.sort(self.posterior[kept]).sum() / max(int(kept.sum()), 1))
        if self.card_of_bin is not None and not self.widened:
            reps = reps[-1:]  # the held-out view carries the calibration's uncertainty, the map's none
        return max(float(np.quantile(r, confidence)) for r in reps)

    def interval(self, kept: np.ndarray) -> tuple[float, float] | None:
        reps = self.replicates(kept)
        if reps is None:
            return None
        return min(_percentile_ci(r)[0] for r in reps), max(_percentile_ci(r)[1] for r in reps)


def adjust_to_prior(scores: np.ndarray, train_prior: float | None, prior: float) -> np.ndarray:
    """Bayes-rule prior shift of calibrated P(machine) from the training prior to ``prior``
    (Saerens et al. 2002); scores are returned unchanged when the training prior is unknown."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
    if train_prior is None or not 0.0 < train_prior < 1.0:
        return p
    q = float(np.clip(prior, 1e-6, 1 - 1e-6))
    a = (q / train_prior) * p
    b = ((1 - q) / (1 - train_prior)) * (1 - p)
    return a / (a + b)


def drop_order(posterior: np.ndarray, provenance: np.ndarray, uniform: np.ndarray, strategy: str) -> np.ndarray:
    """Record indices in the order they are dropped (known machine, then by strategy, known human
    last); see ``plan_downsampling``."""
    unknown = provenance == UNKNOWN
    group = np.where(provenance == MACHINE, 0, np.where(unknown, 2, 4))
    key = -posterior
    if strategy == "uniform":
        # Predicted-synthetic records (posterior >= 0.5) go at random; only if dropping all of
        # them is not enough does the rest go most-likely-synthetic first.
        predicted = unknown & (posterior >= 0.5)
        group = np.where(predicted, 1, group)
        key = np.where(predicted, 0.0, key)
    elif strategy != "threshold":
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return np.lexsort((uniform, key, group))


_WIDENED_OVER = {"source_shift": "over the rates of sources the detector never saw",
                 "estimator_range": "over the range of the share's estimators"}


def plan_downsampling(
    scores: np.ndarray,
    provenance: np.ndarray,
    uniform: np.ndarray,
    target_ratio: float,
    strategy: str = "threshold",
    card: Mapping[str, Any] | None = None,
    method: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    max_human_loss: float | None = None,
    safety: str = "upper",
    confidence: float = 0.95,
    tolerance: float = 0.02,
    *,
    known_scores: np.ndarray | None = None,
    on_unreliable: str = "refuse",
    widen: str = "auto",
) -> DownsamplingPlan:
    """Keep the largest set whose synthetic share is at most ``target_ratio``.

    Args:
        scores, provenance, card, method, n_boot, seed, known_scores, widen: as for
            ``estimate_prevalence`` (a widened interval widens the kept share's bound too).
        uniform: float64 in [0, 1) per record from ``record_uniform(seed, ids)``: it breaks
            ties and drives the ``uniform`` strategy, so decisions do not depend on order.
        target_ratio: the most synthetic share allowed in the kept set, 0 <= R < 1.
        strategy: ``threshold`` drops the most-likely-synthetic records first (keeps the most
            data; the default); ``uniform`` drops predicted-synthetic records at random (keeps
            the synthetic remainder representative). Known-machine records go first in both.
        max_human_loss: raise ``HumanLossError`` when the plan would drop more than this
            fraction of the records estimated human.
        safety: the kept set's point estimate is always <= R. With ``upper`` (default) its
            one-sided ``confidence`` upper bound must also be <= R + ``tolerance``: where
            the detector cannot pin the kept share down, more is dropped and the plan says so
            (``weak_detector``). ``point`` uses the point estimate alone.
        tolerance: how far above R the true share may plausibly lie (default 2 points).
        on_unreliable: when the reliability checks find the detector ``unreliable`` here,
            ``refuse`` raises ``UnreliableDetectorError`` (unless even the widened interval
            shows the target met); ``proceed`` plans with the widened interval and marks the
            kept share unknown (``kept_share_known``).

    If the estimated share before is already <= R, nothing is dropped, unless (``safety =
    "upper"``) the whole corpus's upper bound exceeds R + ``tolerance``: an estimate under the
    target with a wide interval (a small corpus, rates re-measured on few labelled records, a
    widened interval) is cut to its bound like any other.
    """
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target_ratio must be in [0, 1), got {target_ratio}")
    if safety not in SAFETIES:
        raise ValueError(f"safety must be one of {', '.join(SAFETIES)}, got {safety!r}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if max_human_loss is not None and not 0.0 <= max_human_loss <= 1.0:
        raise ValueError(f"max_human_loss must be in [0, 1], got {max_human_loss}")
    if on_unreliable not in ON_UNRELIABLE:
        raise ValueError(f"on_unreliable must be one of {', '.join(ON_UNRELIABLE)}, got {on_unreliable!r}")
    _check_widen(widen)
    an = _analyse(scores, provenance, card, method, n_boot, seed, known_scores, posteriors=True, widen=widen)
    reliability = an.estimate.reliability
    flagged = reliability is not None and reliability.flagged
    widened = reliability is not None and reliability.interval != "sampling"
    unreliable = reliability is not None and reliability.verdict == "unreliable"
    upper_before = an.estimate.ci95[1] if an.estimate.ci95 is not None else an.estimate.share
    if unreliable and on_unreliable == "refuse" and upper_before > target_ratio + 1e-12:
        assert reliability is not None
        raise UnreliableDetectorError(
            f"refusing to downsample to target ratio {target_ratio:g}: the detector looks unreliable on this corpus "
            f"({'; '.join(reliability.reasons)}), so the synthetic share of what it keeps would not be known. "
            f"To fix it, {reliability.advice}; or pass --allow-unreliable-detector (ratio.on_unreliable = \"proceed\") to "
            "downsample anyway, with the kept share reported as unknown. (`synthfilter report INPUT... --out DIR` "
            "shows the estimate and these checks without a target.)"
        )
    prov = np.asarray(provenance).ravel().astype(np.int8)
    u = np.asarray(uniform, dtype=np.float64).ravel()
    n = len(prov)
    if u.shape != prov.shape:
        raise ValueError(f"uniform and provenance differ in length ({len(u)} vs {n})")
    if n and ((u < 0) | (u >= 1) | ~np.isfinite(u)).any():
        raise ValueError("uniform values must be in [0, 1): use record_uniform(seed, ids)")

    posterior = np.where(prov == MACHINE, 1.0, 0.0)
    if an.bins is not None:
        posterior[an.scored] = _sigmoid(logit(an.bins.score) + an.shift)[an.bins.index]
    posterior[an.unscored] = an.pi
    bound_dist, bound_view = _bound_histograms(card, an)
    kept_share = _KeptShare(an, prov, posterior, n_boot, seed, bound_dist)

    order = drop_order(posterior, prov, u, strategy)
    q_ordered = posterior[order]
    # Point estimate of the kept share after dropping the first k records, for every k.
    remaining_mass = np.concatenate(([0.0], np.cumsum(q_ordered[::-1])))[::-1]
    remaining = np.arange(n, -1, -1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(remaining > 0, remaining_mass / np.maximum(remaining, 1), 0.0)
    tol = 1e-12
    bound = min(target_ratio + tolerance, 1.0)
    if an.estimate.share <= target_ratio + tol and not (
        safety == "upper" and n_boot > 0 and kept_share.upper(np.ones(n, dtype=bool), confidence) > bound
    ):
        k = 0
        k_point = 0
    else:
        k_point = int(np.argmax(point <= target_ratio + tol))
        k = k_point
        if safety == "upper" and n_boot > 0:
            k = _first_safe(order, k_point, n, kept_share, bound, confidence)

    keep = np.ones(n, dtype=bool)
    keep[order[:k]] = False
    dropped = ~keep
    human_total = float(np.sort(1.0 - posterior).sum())
    human_dropped = float(np.sort(1.0 - posterior[dropped]).sum())
    if k == 0:
        share_after, ci_after = an.estimate.share, an.estimate.ci95
    else:
        share_after = float(point[k])
        ci_after = kept_share.interval(keep)

    # The bound the plan was held to, as it stands for the records kept (the two-sided interval
    # above can reach past it: its upper end is a 97.5 % bound, this one 95 %).
    upper_after = (float(kept_share.upper(keep, confidence)) if safety == "upper" and n_boot > 0 and keep.any()
                   else None)
    extra = k - k_point
    extra_human = float(np.sort(1.0 - posterior[order[k_point:k]]).sum())
    warnings = []
    if unreliable and k > 0:
        warnings.append(
            "the records were downsampled although the detector looks unreliable on this corpus: the "
            "synthetic share of the kept records is unknown"
        )
    droppable = int((prov != HUMAN).sum())
    if k > k_point and k >= droppable and droppable > int((prov == MACHINE).sum()):
        warnings.append(
            f"to be sure of the target the plan had to drop every record without provenance ({k:,}): within the "
            "bound the detector cannot tell the human records apart from the synthetic ones here"
            + (f" (the bound is widened {_WIDENED_OVER[reliability.interval]})" if widened else
               " (the records of known provenance, which score unlike the model card's held-out texts, are too "
               "few to vouch for a cut this deep)" if bound_view == "labelled" else
               " (the model card's held-out texts are too few to vouch for a cut this deep)"
               if kept_share.card_of_bin is not None else "")
            + ". To keep more, give part of the corpus provenance metadata (--provenance-field), raise the target, "
            "or set ratio.safety = \"point\" to cut by the estimate alone (the kept share may then be over the "
            "target)"
        )
    elif bound_view == "labelled" and k > k_point:
        warnings.append(
            "the records of known provenance score unlike the model card's held-out texts of their class, so the "
            "bound on the kept records' synthetic share reads them alone, not the card: "
            f"{extra:,} records more than the estimate alone needs were dropped (about "
            f"{extra_human / max(human_total, 1e-12):.0%} of the human text); more labelled records narrow it"
        )
    elif human_total > 0 and extra_human / human_total >= _SAFETY_WARNING:
        warnings.append(
            f"to keep the synthetic share of the kept records at or under {bound:g} with {confidence:.0%} "
            f"confidence, {extra:,} records more than the estimate alone needs were dropped (about "
            f"{extra_human / human_total:.0%} of the human text)"
            + (f"; the bound is widened {_WIDENED_OVER[reliability.interval]}" if widened else "")  # type: ignore[union-attr]
        )
    plan = DownsamplingPlan(
        keep=keep,
        posterior=posterior.astype(np.float32),
        before=an.estimate,
        share_after=share_after,
        ci95_after=ci_after,
        target_ratio=float(target_ratio),
        strategy=strategy,
        safety=safety,
        downsampled=int(k),
        downsampled_known_machine=int((dropped & (prov == MACHINE)).sum()),
        est_human_dropped=human_dropped,
        est_human_total=human_total,
        weak_detector=flagged,
        warning="; ".join(warnings) or None,
        extra_dropped_for_safety=int(extra),
        kept_share_known=not (unreliable and k > 0),
        upper_bound_after=upper_after,
        upper_bound_confidence=float(confidence) if upper_after is not None else None,
        upper_bound_limit=float(bound) if upper_after is not None else None,
    )
    if max_human_loss is not None and plan.human_loss > max_human_loss + tol:
        raise HumanLossError(
            f"{human_loss_excess(target_ratio, human_dropped, human_total, max_human_loss)}. Raise the target ratio "
            "or the allowed loss, or use a stronger detector / provenance metadata."
        )
    return plan


def human_loss_excess(target_ratio: float, human_dropped: float, human_total: float, limit: float,
                      option: str = "--max-human-loss") -> str:
    """What a plan that drops more human records than ``limit`` allows does, in one clause."""
    loss = human_dropped / human_total if human_total > 0 else 0.0
    return (f"meeting target ratio {target_ratio:g} would drop {loss:.1%} of the records estimated human (about "
            f"{human_dropped:.0f} of {human_total:.0f}), more than {option} {limit:g}")


def _bound_histograms(card: Mapping[str, Any] | None, an: _Analysis) -> tuple[rel.ScoreDistribution | None, str]:
    """The held-out histograms the kept share's bound reads, and which they are (``card``,
    ``card+labelled`` or ``labelled``).

    The card's, plus this corpus's records of known provenance when the reliability checks
    re-measured the detector's rates on them, or found them agreeing with the card's (both
    classes, ``MIN_LABELLED`` or more each): the corpus's own evidence, so the more there are, the
    deeper a cut the bound can vouch for. When the labelled records of either class score unlike
    the card's held-out texts of that class (``LABELLED_SHIFT_P``), the card's histograms do not
    describe this corpus (a source the detector never saw, whose machine text scores low), and
    the bound reads the labelled records alone: wider, since they are fewer, but this corpus's."""
    dist, _ = rel.card_score_distribution(card)
    reliability = an.estimate.reliability
    if dist is None or reliability is None or an.labelled is None:
        return dist, "card"
    check = next((c for c in reliability.checks if c.name == "provenance"), None)
    if check is None or check.level == rel.NOT_RUN or an.labelled.n_human < rel.MIN_LABELLED \
            or an.labelled.n_machine < rel.MIN_LABELLED:
        return dist, "card"
    lab = an.labelled
    human, machine = lab.histogram(lab.human, dist), lab.histogram(lab.machine, dist)
    if min(rel.histogram_shift(human, dist.human)[1], rel.histogram_shift(machine, dist.machine)[1]) \
            < rel.LABELLED_SHIFT_P:
        return rel.ScoreDistribution(dist.edges, human, machine), "labelled"
    return rel.ScoreDistribution(dist.edges, dist.human + human, dist.machine + machine), "card+labelled"


def _first_safe(
    order: np.ndarray, k_point: int, n: int, kept_share: _KeptShare, target: float, confidence: float
) -> int:
    """Smallest k >= k_point whose kept set has its upper bound <= target (bisection over k)."""

    def safe(k: int) -> bool:
        if k >= n:
            return True
        kept = np.ones(n, dtype=bool)
        kept[order[:k]] = False
        return kept_share.upper(kept, confidence) <= target

    if safe(k_point):
        return k_point
    lo, hi = k_point, n  # safe(lo) is False, safe(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if safe(mid):
            hi = mid
        else:
            lo = mid
    return hi
