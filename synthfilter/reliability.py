"""Is the detector as reliable on this corpus as where its card was measured? Checks and a verdict.

``synthfilter.ratio`` runs these on every synthetic-share estimate (numpy only, no I/O):

- ``provenance``: the detector's TPR / FPR re-measured on records whose provenance is known (they
  are scored like every other record), side by side with the card's rates;
- ``mixture_fit``: under pure prior shift the corpus's score histogram is a mixture of the card's
  held-out human and machine histograms; a misfit beyond what sampling alone gives means the
  classes themselves look different here;
- ``agreement``: estimators that prior shift says must agree (adjusted count at each operating
  point, EM on the calibrated scores, the mixture fit) do not, beyond bootstrap noise.

``combine`` turns them into one verdict (``ok`` / ``doubtful`` / ``unreliable``, ``unchecked`` when
no check could run) with reasons in plain words. ``rate_moves`` bounds how far the rates may
have moved on a source the detector never saw, from the card's ``source_shift``, for the widened
interval. See docs/ratio.md, "Is the detector reliable on this corpus?".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_LABELLED = 30  # labelled records of a class, with a score, needed to re-measure its rate
SIGNIFICANT_Z = 3.0  # a difference counts when it is this many bootstrap standard deviations
SIGNIFICANT_P = 0.01  # ... or, for the mixture fit, when sampling alone gives it this rarely
AGREEMENT_DOUBTFUL, AGREEMENT_UNRELIABLE = 0.05, 0.10  # estimates this far apart (share points)
# The mixture misfit beyond sampling noise, in points of synthetic share: a misplaced share of the
# histogram as large as moving the share this much (the same scale as the agreement check).
FIT_DOUBTFUL, FIT_UNRELIABLE = 0.05, 0.10
RATE_SHIFT_DOUBTFUL = 0.05  # the share moves this much when one re-measured rate replaces the card's
# A re-measured rate agrees with the card's while within this many standard errors of it (about
# 95 %): then the card's calibration, which those records vouch for, may give the estimate.
RATE_AGREE_Z = 2.0
# Labelled records whose scores are distributed unlike the card's held-out texts of their class
# (a two-sample Kolmogorov-Smirnov test this unlikely under one distribution) describe this corpus
# and the card does not: a plan's kept-share bound then reads the labelled records alone.
LABELLED_SHIFT_P = 0.05
FIT_REPLICATES = 400  # parametric-bootstrap replicates of the mixture fit's misfit
CHECK_REPLICATES = 400  # bootstrap replicates for the checks when the estimate has fewer than 200
_CLIP = 1e-6  # scores are clipped to [1e-6, 1 - 1e-6], as ratio.SCORE_CLIP
_NEWTON_STEPS = 60

LEVELS = ("ok", "doubtful", "unreliable")
VERDICTS = (*LEVELS, "unchecked")
NOT_RUN = "not_run"

ADVICE = ("label ~300 records of this corpus and run `synthfilter adapt LABELLED.jsonl --out DIR`, "
          "or give part of the corpus provenance metadata (--provenance-field)")


def advice(card: Mapping[str, Any] | None) -> str:
    """What to do about a flagged detector: ``ADVICE``, or, for a model made by ``synthfilter
    adapt`` (its card has ``adapted_from``; it cannot be adapted again), adapting the model it
    was adapted from again with more labels."""
    base = card.get("adapted_from") if isinstance(card, Mapping) else None
    if not isinstance(base, Mapping):
        return ADVICE
    import shlex

    path = base.get("path")
    name = str(base.get("model_id") or path or "the original model")
    model = f" --model {shlex.quote(str(path))}" if path else ""
    return (f"label more records of this corpus (~300 or more, with the ones this model was adapted on) and adapt "
            f"the model it was adapted from, {name}, again: `synthfilter adapt LABELLED.jsonl{model} --out DIR` "
            "(an adapted model cannot be adapted again), or give part of the corpus provenance metadata "
            "(--provenance-field)")


# -- the card's held-out figures ---------------------------------------------------------------


@dataclass(frozen=True)
class ScoreDistribution:
    """Held-out score histograms per class (the card's ``score_distribution``)."""

    edges: np.ndarray  # ascending bin edges on the probability scale, B + 1
    human: np.ndarray  # int64 counts, B
    machine: np.ndarray

    @property
    def bins(self) -> int:
        return len(self.human)

    def bin_of(self, scores: np.ndarray) -> np.ndarray:
        """Bin index per score: [edge_b, edge_b+1), the last bin closed; outside values clamp."""
        return np.clip(np.searchsorted(self.edges, scores, side="right") - 1, 0, self.bins - 1)


def card_score_distribution(card: Mapping[str, Any] | None) -> tuple[ScoreDistribution | None, str | None]:
    """The card's held-out score histograms, or (None, why not)."""
    d = (card or {}).get("score_distribution")
    if d is None:
        return None, "the model card has no score_distribution (held-out score histograms)"
    try:
        edges = np.asarray(d["edges"], dtype=np.float64)
        human = np.asarray(d["human"], dtype=np.float64)
        machine = np.asarray(d["machine"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None, "the model card's score_distribution lacks edges, human or machine"
    b = len(human)
    if (edges.ndim != 1 or human.ndim != 1 or machine.shape != human.shape or len(edges) != b + 1 or b < 2
            or not np.all(np.diff(edges) > 0) or not np.all(np.isfinite(edges))
            or (human < 0).any() or (machine < 0).any() or human.sum() < 1 or machine.sum() < 1
            or not np.array_equal(human, np.round(human)) or not np.array_equal(machine, np.round(machine))):
        return None, "the model card's score_distribution is malformed (edges: B + 1 ascending; human, machine: B counts)"
    return ScoreDistribution(edges, human.astype(np.int64), machine.astype(np.int64)), None


@dataclass(frozen=True)
class RateShift:
    """One held-out source of the card's ``source_shift``: rates on training-like data vs on it."""

    held_out: str
    train_tpr: float
    train_fpr: float
    tpr: float
    fpr: float


def card_source_shift(card: Mapping[str, Any] | None) -> dict[str, tuple[RateShift, ...]]:
    """Held-out-source rates per operating-point name (empty when the card has none)."""
    points = ((card or {}).get("source_shift") or {}).get("points") if isinstance((card or {}).get("source_shift"), Mapping) else None
    out: dict[str, tuple[RateShift, ...]] = {}
    if not isinstance(points, Mapping):
        return out
    for name, rows in points.items():
        shifts = []
        for row in rows if isinstance(rows, Sequence) else ():
            try:
                s = RateShift(str(row.get("held_out", "")), float(row["train_tpr"]), float(row["train_fpr"]),
                              float(row["tpr"]), float(row["fpr"]))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if all(0.0 <= v <= 1.0 for v in (s.train_tpr, s.train_fpr, s.tpr, s.fpr)):
                shifts.append(s)
        if shifts:
            out[str(name)] = tuple(shifts)
    return out


def rate_moves(shifts: Sequence[RateShift]) -> tuple[tuple[float, float], tuple[float, float]]:
    """How far TPR and FPR may move on an unseen source: ((lowest, highest) TPR move, (lowest,
    highest) FPR move), the range the card's held-out sources span, no move included."""
    dt = [s.tpr - s.train_tpr for s in shifts]
    df = [s.fpr - s.train_fpr for s in shifts]
    return (min(0.0, min(dt)), max(0.0, max(dt))), (min(0.0, min(df)), max(0.0, max(df)))


# -- scores of labelled records ----------------------------------------------------------------


def score_cuts(thresholds: Sequence[float], dist: ScoreDistribution | None) -> np.ndarray:
    """The cut points labelled scores are counted at: every operating threshold and histogram edge."""
    parts = [np.asarray(thresholds, dtype=np.float64)]
    if dist is not None:
        parts.append(dist.edges)
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0)


def cut_counts(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """int64 counts, len(cuts) + 1: records whose (clipped) score has exactly j cut points <= it.
    Sums of these over chunks are exact, so any engine can count a chunk at a time."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.clip(s[np.isfinite(s)], _CLIP, 1.0 - _CLIP)
    return np.bincount(np.searchsorted(cuts, s, side="right"), minlength=len(cuts) + 1).astype(np.int64)


@dataclass(frozen=True)
class LabelledScores:
    """Detector scores of known-human and known-machine records, as counts between cut points."""

    cuts: np.ndarray
    human: np.ndarray
    machine: np.ndarray

    @classmethod
    def from_scores(cls, human: np.ndarray, machine: np.ndarray, cuts: np.ndarray) -> "LabelledScores":
        return cls(cuts, cut_counts(human, cuts), cut_counts(machine, cuts))

    @property
    def n_human(self) -> int:
        return int(self.human.sum())

    @property
    def n_machine(self) -> int:
        return int(self.machine.sum())

    def at_or_above(self, counts: np.ndarray, threshold: float) -> int:
        j = int(np.searchsorted(self.cuts, threshold))
        if j >= len(self.cuts) or self.cuts[j] != threshold:
            raise ValueError(f"threshold {threshold!r} is not one of the cut points the labelled scores were counted at")
        return int(counts[j + 1:].sum())

    def histogram(self, counts: np.ndarray, dist: ScoreDistribution) -> np.ndarray:
        """Counts per bin of ``dist`` (its edges must be among the cut points)."""
        if not np.isin(dist.edges, self.cuts).all():
            raise ValueError("the labelled scores were not counted at the score distribution's edges")
        first = np.concatenate(([-1], np.searchsorted(dist.edges, self.cuts, side="right") - 1))
        return np.bincount(np.clip(first, 0, dist.bins - 1), weights=counts, minlength=dist.bins).astype(np.int64)


@dataclass(frozen=True)
class MeasuredRates:
    """An operating point's rates from the card and, with enough labelled records, from this corpus."""

    name: str
    threshold: float
    card_tpr: float
    card_fpr: float
    tp: int  # labelled machine records at or above the threshold, of n_machine
    n_machine: int
    fp: int  # labelled human records at or above the threshold, of n_human
    n_human: int

    @property
    def tpr(self) -> float | None:
        return (self.tp / self.n_machine) if self.n_machine >= MIN_LABELLED else None

    @property
    def fpr(self) -> float | None:
        return (self.fp / self.n_human) if self.n_human >= MIN_LABELLED else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "card_tpr": self.card_tpr, "card_fpr": self.card_fpr,
                "measured_tpr": self.tpr, "measured_fpr": self.fpr, "labelled_machine": self.n_machine,
                "labelled_human": self.n_human}


def histogram_shift(labelled: np.ndarray, card: np.ndarray) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance between two histograms of one class over the same bins (the
    labelled records' and the card's) and its asymptotic p-value. On bins the distance can only
    be smaller than on the scores, so the test errs towards "no shift"."""
    from scipy.stats import kstwobign

    a, b = np.asarray(labelled, dtype=np.float64), np.asarray(card, dtype=np.float64)
    n_a, n_b = float(a.sum()), float(b.sum())
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    d = float(np.max(np.abs(np.cumsum(a) / n_a - np.cumsum(b) / n_b)))
    return d, float(kstwobign.sf(d * math.sqrt(n_a * n_b / (n_a + n_b))))


def rate_z(k: int, n: int, card: float) -> float:
    """How many standard errors the rate k / n measured on labelled records lies from the card's."""
    p = (k + 0.5) / (n + 1.0)
    return abs(k / n - card) / math.sqrt(p * (1 - p) / n)


def rates_agree(measured: MeasuredRates) -> dict[str, float] | None:
    """The z of every re-measured rate against the card's when all are within ``RATE_AGREE_Z``
    (None when one is not, or none was re-measured)."""
    zs = {}
    if measured.fpr is not None:
        zs["fpr_z"] = rate_z(measured.fp, measured.n_human, measured.card_fpr)
    if measured.tpr is not None:
        zs["tpr_z"] = rate_z(measured.tp, measured.n_machine, measured.card_tpr)
    return zs if zs and all(z <= RATE_AGREE_Z for z in zs.values()) else None


def measure_rates(name: str, threshold: float, card_tpr: float, card_fpr: float,
                  labelled: LabelledScores) -> MeasuredRates:
    return MeasuredRates(name, threshold, card_tpr, card_fpr, labelled.at_or_above(labelled.machine, threshold),
                         labelled.n_machine, labelled.at_or_above(labelled.human, threshold), labelled.n_human)


# -- estimation helpers ------------------------------------------------------------------------


def mixture_mle(lr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Maximum-likelihood mixture weight pi, one per row of ``weights``.

    Maximises sum_k w_k log(1 + pi (lr_k - 1)) over pi in [0, 1], where lr_k is the likelihood
    ratio p(x|machine)/p(x|human) of bin k (one vector, or one row per row of ``weights``).
    With lr read off a calibrated score this is the class prior under label shift: the fixed
    point the EM of Saerens et al. (2002) converges to; solving it directly (safeguarded Newton
    on a concave function) is exact and vectorises over rows.
    """
    w = np.atleast_2d(weights).astype(np.float64)
    two_d = np.ndim(lr) == 2
    lr = np.asarray(lr, dtype=np.float64)
    d = lr - 1.0
    if two_d:
        g0 = (w * d).sum(axis=1)
        g1 = (w * (d / lr)).sum(axis=1)
    else:
        g0 = w @ d
        g1 = w @ (d / lr)
    pi = np.full(w.shape[0], 0.5)
    lo, hi = np.zeros_like(pi), np.ones_like(pi)
    interior = (g0 > 0) & (g1 < 0)
    pi[g0 <= 0] = 0.0
    pi[g1 >= 0] = 1.0
    active = interior.copy()
    for _ in range(_NEWTON_STEPS):
        if not active.any():
            break
        p = pi[active][:, None]
        da = d[active] if two_d else d
        denom = 1.0 + p * da
        g = (w[active] * (da / denom)).sum(axis=1)
        h = -(w[active] * (da * da / (denom * denom))).sum(axis=1)
        p = p[:, 0]
        lo_a = np.where(g > 0, p, lo[active])
        hi_a = np.where(g > 0, hi[active], p)
        step = np.where(h < 0, -g / h, 0.0)
        new = p + step
        bad = (new <= lo_a) | (new >= hi_a) | ~np.isfinite(new)
        new = np.where(bad, 0.5 * (lo_a + hi_a), new)
        idx = np.flatnonzero(active)
        lo[idx], hi[idx], pi[idx] = lo_a, hi_a, new
        done = (np.abs(new - p) < 1e-12) | (hi_a - lo_a < 1e-12)
        active[idx[done]] = False
    return pi


def smoothed(counts: np.ndarray) -> np.ndarray:
    """Bin probabilities with half a count added to every bin (no empty bin has probability 0)."""
    c = np.asarray(counts, dtype=np.float64) + 0.5
    return c / c.sum(axis=-1, keepdims=True)


def mixture_share(observed: np.ndarray, human: np.ndarray, machine: np.ndarray) -> np.ndarray:
    """Mixture weight of ``machine`` that best explains ``observed`` (counts per bin, rows allowed)."""
    return mixture_mle(smoothed(machine) / smoothed(human), observed)


# -- the checks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check: its level (``ok`` / ``doubtful`` / ``unreliable``, or ``not_run``), why, and figures."""

    name: str
    level: str
    reason: str | None
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "reason": self.reason, **self.figures}


def _level(significant: bool, size: float, doubtful: float, unreliable: float) -> str:
    if not significant or size < doubtful:
        return "ok"
    return "unreliable" if size >= unreliable else "doubtful"


def _points(x: float) -> str:
    return f"{100 * x:.0f} points" if round(100 * x) != 1 else "1 point"


def provenance_check(rates: Sequence[MeasuredRates], primary: MeasuredRates | None, labelled: LabelledScores | None,
                     share_card: float | None, share_measured: float | None, method: str,
                     agreed: tuple[MeasuredRates, Mapping[str, float]] | None = None) -> Check:
    """The card's rates against the rates re-measured on labelled records of this corpus.

    ``primary`` is the re-measured operating point the estimate uses (None when it uses none).
    ``agreed``: the estimate reads the card's calibration instead, because the rates re-measured
    at this point agree with the card's (their z scores).
    """
    n_h = labelled.n_human if labelled is not None else 0
    n_m = labelled.n_machine if labelled is not None else 0
    figures: dict[str, Any] = {"min_labelled": MIN_LABELLED, "labelled": {"human": n_h, "machine": n_m},
                               "points": [r.to_dict() for r in rates], "rates_used": "card"}
    if n_h + n_m == 0:
        return Check("provenance", NOT_RUN, "no record of known provenance carries a detector score", figures)
    if not rates:
        return Check("provenance", NOT_RUN, "the model card has no operating points to re-measure", figures)
    if agreed is not None:
        point, zs = agreed
        figures["rates_used"] = "card calibration, confirmed by the labelled records"
        figures["agreement_z"] = {"point": point.name, **zs}
        return Check("provenance", "ok", None, figures)
    if primary is None or (primary.tpr is None and primary.fpr is None):
        why = (f"fewer than {MIN_LABELLED} records of known provenance of each class carry a detector score "
               f"({n_h} human, {n_m} machine)" if all(r.tpr is None and r.fpr is None for r in rates)
               else f"the estimate ({method}) does not use an operating point's rates")
        return Check("provenance", NOT_RUN, why, figures)
    figures["rates_used"] = ("corpus" if primary.tpr is not None and primary.fpr is not None
                             else "corpus FPR, card TPR" if primary.fpr is not None else "corpus TPR, card FPR")
    figures["share_with_card_rates"] = share_card
    figures["share_with_measured_rates"] = share_measured
    if primary.tpr is not None and primary.fpr is not None:
        return Check("provenance", "ok", None, figures)
    # One class measured: a rate that moved says the detector behaves differently here, and the
    # other class's rate (still the card's) has probably moved too.
    if primary.fpr is not None:
        k, n, card = primary.fp, primary.n_human, primary.card_fpr
        what = "flags human text"
    else:
        k, n, card = primary.tp, primary.n_machine, primary.card_tpr
        what = "finds machine text"
    z = rate_z(k, n, card)
    impact = abs((share_measured or 0.0) - (share_card or 0.0))
    figures["z"] = z
    level = "doubtful" if z > SIGNIFICANT_Z and impact >= RATE_SHIFT_DOUBTFUL else "ok"
    reason = None
    if level != "ok":
        reason = (f"on the {n:,} records of known provenance the detector {what} at {k / n:.1%}, not the "
                  f"{card:.1%} its card says, which moves the estimate by {_points(impact)}")
    return Check("provenance", level, reason, figures)


@dataclass(frozen=True)
class MixtureFit:
    share: float
    tv: float
    tv_null_median: float
    p_value: float
    classes: str
    separation: float  # total variation between the two class histograms

    @property
    def excess(self) -> float:
        return self.tv - self.tv_null_median

    @property
    def share_points(self) -> float:
        """The excess misfit as a move of the synthetic share: moving pi by d changes the fitted
        histogram by d x ``separation`` in total variation, so a misfit of ``excess`` is as large
        as a move of ``excess / separation``. The same misfit matters more for a detector whose
        classes overlap more (its estimate moves further for it)."""
        return self.excess / self.separation if self.separation > 0 else math.inf


def fit_mixture(observed: np.ndarray, human: np.ndarray, machine: np.ndarray, seed: int,
                replicates: int = FIT_REPLICATES) -> MixtureFit:
    """Fit pi; measure the misfit (total variation of observed vs fitted histogram) against a
    parametric bootstrap that redraws the corpus and both class histograms from the fit."""
    o = np.asarray(observed, dtype=np.float64)
    n = float(o.sum())
    fh, fm = smoothed(human), smoothed(machine)
    pi = float(mixture_share(o, human, machine)[0])
    fitted = (1.0 - pi) * fh + pi * fm
    tv = 0.5 * float(np.abs(o / n - fitted).sum())
    rng = np.random.default_rng([seed, 17])
    h_star = rng.multinomial(int(np.sum(human)), fh, size=replicates)
    m_star = rng.multinomial(int(np.sum(machine)), fm, size=replicates)
    o_star = rng.multinomial(int(n), fitted, size=replicates).astype(np.float64)
    pi_star = mixture_share(o_star, h_star, m_star)
    fitted_star = (1.0 - pi_star)[:, None] * smoothed(h_star) + pi_star[:, None] * smoothed(m_star)
    tv_star = 0.5 * np.abs(o_star / n - fitted_star).sum(axis=1)
    p = (1.0 + float((tv_star >= tv).sum())) / (replicates + 1.0)
    return MixtureFit(pi, tv, float(np.median(tv_star)), p, "", separation=0.5 * float(np.abs(fm - fh).sum()))


def mixture_check(fit: MixtureFit | None, why_not: str | None, n_bins: int | None = None,
                  classes: str = "card") -> Check:
    if fit is None:
        return Check("mixture_fit", NOT_RUN, why_not)
    significant = fit.p_value < SIGNIFICANT_P
    level = _level(significant, fit.share_points, FIT_DOUBTFUL, FIT_UNRELIABLE)
    figures = {"share": fit.share, "tv": fit.tv, "tv_null_median": fit.tv_null_median, "tv_excess": fit.excess,
               "separation": fit.separation, "share_points": fit.share_points if math.isfinite(fit.share_points) else None,
               "p_value": fit.p_value, "bins": n_bins, "class_histograms": classes}
    reason = None
    if level != "ok":
        reason = (f"the corpus's detector scores do not look like a mix of human and machine text as the detector "
                  f"knows them: {fit.excess:.0%} of the score histogram sits where no mix puts it, as much as "
                  f"moving the synthetic share by {_points(min(fit.share_points, 1.0))} "
                  f"({'p < 0.001' if fit.p_value < 0.0005 else f'p = {fit.p_value:.3f}'})")
    return Check("mixture_fit", level, reason, figures)


_LABELS = {"em": "the calibrated scores", "mixture": "the score histogram"}


def _label(name: str) -> str:
    """An estimator in the words of a warning: ``acc@fpr1`` is the count above the 1 %-false-alarm
    threshold (the operating point at which 1 % of the card's held-out human texts score above)."""
    if name.startswith("acc@"):
        point = name.split("@", 1)[1]
        rate = point[3:] if point.startswith("fpr") else None
        return f"the count above the {rate} %-false-alarm threshold" if rate else f"the count above the {point} threshold"
    return _LABELS.get(name, name)


def agreement_check(primary: str, estimates: Mapping[str, tuple[float, np.ndarray]]) -> Check:
    """Every estimator against the primary one: the difference and its bootstrap spread (paired
    replicates), flagged when both significant and large."""
    if primary not in estimates or len(estimates) < 2:
        return Check("agreement", NOT_RUN, "only one estimator applies with this model card", {"primary": primary})
    p, p_reps = estimates[primary]
    pairs, worst = [], None
    for name in sorted(estimates):
        if name == primary:
            continue
        v, reps = estimates[name]
        d = v - p
        sd = float(np.std(reps - p_reps, ddof=1)) if len(reps) > 1 else 0.0
        z = abs(d) / sd if sd > 0 else (math.inf if abs(d) > 1e-9 else 0.0)
        level = _level(z > SIGNIFICANT_Z, abs(d), AGREEMENT_DOUBTFUL, AGREEMENT_UNRELIABLE)
        pairs.append({"estimator": name, "share": v, "difference": d, "sd": sd,
                      "z": z if math.isfinite(z) else None, "level": level})
        if level != "ok" and (worst is None or abs(d) > abs(worst[1])):
            worst = (name, d, v, level)
    figures = {"primary": primary, "primary_share": p, "pairs": pairs}
    if worst is None:
        return Check("agreement", "ok", None, figures)
    name, d, v, level = worst
    reason = (f"two estimates of the synthetic share differ by {_points(abs(d))} ({p:.0%} from {_label(primary)}, "
              f"{v:.0%} from {_label(name)})")
    return Check("agreement", level, reason, figures)


def estimates_apart(estimates: Mapping[str, tuple[float, np.ndarray]]) -> bool:
    """Whether any two estimates of the share differ by more than their sampling noise
    (``SIGNIFICANT_Z`` standard deviations of their paired replicates' difference), however
    little: too little to flag the detector, enough that the truth may lie nearer either of them
    than the bootstrap of one admits. Every pair, not only each against the estimate used: two
    estimators on either side of it can be far apart while each is near it."""
    items = list(estimates.values())
    for i, (va, ra) in enumerate(items):
        for vb, rb in items[i + 1:]:
            if len(ra) != len(rb) or len(ra) < 2:
                continue
            sd = float(np.std(ra - rb, ddof=1))
            if sd > 0 and abs(va - vb) > SIGNIFICANT_Z * sd:
                return True
    return False


# -- the verdict -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reliability:
    """The checks, their verdict and how the interval was made (``sampling``: bootstrap only;
    ``source_shift``: widened over the rates an unseen source plausibly has; ``estimator_range``:
    widened over every estimator's interval, when the card has no source_shift, or when the
    verdict is ``ok`` but two estimates differ beyond their sampling noise).
    ``ci95_unseen_source`` is the ``source_shift`` interval whether or not it was used."""

    verdict: str
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    interval: str = "sampling"
    ci95_sampling: tuple[float, float] | None = None
    ci95_unseen_source: tuple[float, float] | None = None  # widened over source_shift, used or not
    # The widened interval's low end was set to 0: flagged, and no labelled human records measured
    # the false-positive rate here, so the share may be 0 for all the scores can tell.
    low_end_zero: bool = False
    advice: str = ADVICE  # what to do when flagged (``advice(card)``)

    @property
    def flagged(self) -> bool:
        return self.verdict in ("doubtful", "unreliable")

    def message(self, widened_ci: tuple[float, float] | None = None) -> str | None:
        """The one warning in plain words: what is wrong, how big, what to do."""
        if not self.flagged:
            return None
        head = ("the detector looks unreliable on this corpus" if self.verdict == "unreliable"
                else "the detector looks less reliable on this corpus than on its training data")
        text = f"{head}: {'; '.join(self.reasons)}"
        if widened_ci is not None and self.interval != "sampling":
            text += f". The 95 % interval of the synthetic share is widened to [{widened_ci[0]:.1%}, {widened_ci[1]:.1%}]"
            if self.low_end_zero:
                text += (" (down to none: what the detector flags here may all be human text it misreads, "
                         "which labelled human records would rule in or out)")
        return f"{text}. To fix it, {self.advice}"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "interval": self.interval,
                "ci95_sampling": list(self.ci95_sampling) if self.ci95_sampling is not None else None,
                "ci95_unseen_source": list(self.ci95_unseen_source) if self.ci95_unseen_source is not None else None,
                "low_end_zero": self.low_end_zero,
                "checks": {c.name: c.to_dict() for c in self.checks}}


def combine(checks: Sequence[Check]) -> tuple[str, tuple[str, ...]]:
    """The worst level among the checks that ran (``unchecked`` when none ran) and their reasons."""
    ran = [c for c in checks if c.level != NOT_RUN]
    if not ran:
        return "unchecked", ()
    verdict = max((c.level for c in ran), key=LEVELS.index)
    reasons = tuple(c.reason for c in ran if c.level != "ok" and c.reason)
    return verdict, reasons
