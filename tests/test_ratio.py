"""Prevalence estimation and target-ratio downsampling on simulated, exactly calibrated scores.

Scores come from an equal-variance Gaussian model: a latent z ~ N(+-d/2, 1) per class has the
log-likelihood ratio d*z, so sigmoid(d*z + logit(train_prior)) is P(machine) calibrated at
train_prior. ``d`` sets the detector's strength (AUROC = Phi(d / sqrt 2)).
"""

from __future__ import annotations

import numpy as np
import pytest

from synthfilter.ratio import (
    HUMAN,
    MACHINE,
    HumanLossError,
    _Bins,
    _mle_prior,
    card_operating_point,
    estimate_prevalence,
    plan_downsampling,
    record_uniform,
)

TRAIN_PRIOR = 0.8
CARD = {"train_prior": TRAIN_PRIOR}


def simulate(n: int, share: float, d: float, seed: int, train_prior: float = TRAIN_PRIOR):
    """(scores float32, is_machine bool) for n records with exactly round(share * n) machines."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=bool)
    y[rng.choice(n, int(round(share * n)), replace=False)] = True
    z = rng.standard_normal(n) + np.where(y, d / 2, -d / 2)
    logit = d * z + np.log(train_prior / (1 - train_prior))
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32), y


def unknown(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int8)


# -- record_uniform ----------------------------------------------------------------------------


def test_record_uniform_is_deterministic_and_order_free() -> None:
    ids = [f"doc-{i}" for i in range(500)]
    u = record_uniform(7, ids)
    assert u.dtype == np.float64 and ((u >= 0) & (u < 1)).all()
    perm = np.random.default_rng(0).permutation(500)
    assert np.array_equal(record_uniform(7, [ids[i] for i in perm]), u[perm])
    assert not np.array_equal(record_uniform(8, ids), u)
    assert np.array_equal(record_uniform(7, [3, "3", b"3"]), np.repeat(record_uniform(7, ["3"]), 3))


def test_record_uniform_looks_uniform() -> None:
    u = record_uniform(0, range(20000))
    assert abs(u.mean() - 0.5) < 0.01
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 1800 and counts.max() < 2200


# -- estimation --------------------------------------------------------------------------------


def test_mle_is_the_saerens_em_fixed_point() -> None:
    s, _ = simulate(3000, 0.3, 2.0, seed=1)
    s64 = s.astype(np.float64)
    # Saerens et al. (2002): re-weight posteriors by the prior ratio, average, repeat.
    pi = TRAIN_PRIOR
    for _ in range(5000):
        w1, w0 = pi / TRAIN_PRIOR * s64, (1 - pi) / (1 - TRAIN_PRIOR) * (1 - s64)
        pi = float(np.mean(w1 / (w1 + w0)))
    lr = (s64 / (1 - s64)) * ((1 - TRAIN_PRIOR) / TRAIN_PRIOR)
    assert _mle_prior(lr, np.ones(len(lr)))[0] == pytest.approx(pi, abs=1e-6)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.8])
def test_em_recovers_the_share_and_beats_naive_counting(share: float) -> None:
    s, y = simulate(20000, share, 2.5, seed=int(share * 100))
    em = estimate_prevalence(s, unknown(len(s)), CARD, n_boot=200)
    assert em.method == "em"
    assert abs(em.share - y.mean()) < 0.015
    assert em.ci95[0] <= y.mean() <= em.ci95[1]
    cc = estimate_prevalence(s, unknown(len(s)), CARD, method="cc", n_boot=0)
    assert cc.share == pytest.approx(em.naive_share)
    if share != TRAIN_PRIOR:  # naive counting is biased whenever the corpus prior moves
        assert abs(cc.share - y.mean()) > 3 * abs(em.share - y.mean())


def test_interval_covers_the_truth_in_about_95_percent_of_corpora() -> None:
    hits = 0
    runs = 60
    for seed in range(runs):
        s, y = simulate(1500, 0.2, 2.0, seed=seed)
        s = np.round(s, 3)  # an isotonic calibrator gives few distinct values; it also keeps this fast
        est = estimate_prevalence(s, unknown(len(s)), CARD, n_boot=200, seed=seed)
        hits += est.ci95[0] <= y.mean() <= est.ci95[1]
    assert hits / runs >= 0.88


def test_adjusted_count_uses_the_cards_operating_point() -> None:
    d = 2.5
    # With the equal-variance model, the threshold s = 0.5 at prior 0.8 is z = -logit(0.8)/d.
    from scipy.stats import norm

    zt = -np.log(4) / d
    card = {
        "train_prior": TRAIN_PRIOR,
        "operating_points": [
            {"name": "weak", "threshold": 0.99, "tpr": 0.2, "fpr": 0.01},
            {"name": "default", "threshold": 0.5, "tpr": float(norm.sf(zt - d / 2)), "fpr": float(norm.sf(zt + d / 2))},
        ],
    }
    assert card_operating_point(card).threshold == 0.5  # the widest TPR - FPR gap
    s, y = simulate(20000, 0.3, d, seed=3)
    acc = estimate_prevalence(s, unknown(len(s)), card, method="acc", n_boot=100)
    assert acc.method == "acc"
    assert abs(acc.share - y.mean()) < 0.02
    # Without train_prior, auto falls back to adjusted count.
    assert estimate_prevalence(s, unknown(len(s)), {"operating_points": card["operating_points"]}, n_boot=0).method == "acc"


def test_without_a_card_the_mean_score_is_used_with_a_warning() -> None:
    s, _ = simulate(1000, 0.3, 2.0, seed=4)
    est = estimate_prevalence(s, unknown(len(s)), None, n_boot=0)
    assert est.method == "pcc"
    assert est.share == pytest.approx(float(np.mean(s.astype(np.float64))), abs=1e-6)
    assert est.warnings and "not corrected" in est.warnings[0]
    with pytest.raises(ValueError, match="train_prior"):
        estimate_prevalence(s, unknown(len(s)), None, method="em")


def test_known_provenance_is_counted_exactly_and_never_overridden() -> None:
    s, y = simulate(4000, 0.5, 2.5, seed=5)
    prov = unknown(len(s))
    prov[:1000] = HUMAN
    prov[1000:1500] = MACHINE
    # Scores on known records must not matter, whatever they say.
    s_known_nan = s.copy()
    s_known_nan[:1500] = np.nan
    s_known_wrong = s.copy()
    s_known_wrong[:1000] = 0.999
    s_known_wrong[1000:1500] = 0.001
    a = estimate_prevalence(s_known_nan, prov, CARD, n_boot=200)
    b = estimate_prevalence(s_known_wrong, prov, CARD, n_boot=200)
    assert a == b
    assert (a.known_human, a.known_machine, a.n_scored) == (1000, 500, 2500)
    assert a.share == pytest.approx((500 + a.detector_share * 2500) / 4000)
    assert a.ci95[0] >= 500 / 4000
    truth = (500 + y[1500:].sum()) / 4000
    assert abs(a.share - truth) < 0.02


def test_all_known_provenance_needs_no_detector() -> None:
    prov = np.array([HUMAN] * 30 + [MACHINE] * 10, dtype=np.int8)
    est = estimate_prevalence(np.full(40, np.nan), prov, None)
    assert est.method == "known"
    assert est.share == 0.25 and est.ci95 == (0.25, 0.25)
    empty = estimate_prevalence(np.zeros(0), np.zeros(0, dtype=np.int8), None)
    assert empty.share == 0.0 and empty.n_records == 0


def test_unscored_unknown_records() -> None:
    s, _ = simulate(1000, 0.3, 2.0, seed=6)
    s = s.astype(np.float64)
    s[:100] = np.nan
    est = estimate_prevalence(s, unknown(1000), CARD, n_boot=0)
    assert est.n_unscored == 100 and est.n_scored == 900
    assert est.share == pytest.approx(est.detector_share)
    with pytest.raises(ValueError, match="neither a known provenance nor a detector score"):
        estimate_prevalence(np.full(5, np.nan), unknown(5), CARD)


def test_a_few_records_get_an_interval_as_wide_as_they_leave_open() -> None:
    # Eight records scoring a little under the training prior: every bootstrap resample's EM
    # maximum sits at 0, and the percentile interval was [0, 0] (a gate with --strict passed on
    # it). The likelihood is flat there: with a uniform prior the share's 95 % interval ends where
    # the posterior (1 - (1 - LR) pi)^8 leaves 2.5 % above.
    scores = np.full(8, 0.55, dtype=np.float32)
    est = estimate_prevalence(scores, unknown(8), CARD, n_boot=500, seed=0)
    assert est.method == "em" and est.share == 0.0
    lr = (0.55 / 0.45) * ((1 - TRAIN_PRIOR) / TRAIN_PRIOR)
    grid = np.linspace(0, 1, 100001)
    post = (1 - (1 - lr) * grid) ** 8
    cdf = np.cumsum(post) / post.sum()
    assert est.ci95[0] == 0.0 and est.ci95[1] == pytest.approx(grid[np.searchsorted(cdf, 0.975)], abs=2e-3)
    assert est.ci95[1] > 0.3


def test_estimate_does_not_depend_on_record_order() -> None:
    s, _ = simulate(3000, 0.35, 2.0, seed=7)
    prov = unknown(3000)
    prov[:200] = MACHINE
    perm = np.random.default_rng(1).permutation(3000)
    a = estimate_prevalence(s, prov, CARD, n_boot=200, seed=3)
    assert a == estimate_prevalence(s[perm], prov[perm], CARD, n_boot=200, seed=3)


def test_many_distinct_scores_are_binned_without_losing_accuracy() -> None:
    s, _ = simulate(50000, 0.4, 2.0, seed=8)
    bins = _Bins.build(s)
    assert len(bins.score) <= 4096 and bins.counts.sum() == 50000
    s64 = np.clip(s.astype(np.float64), 1e-6, 1 - 1e-6)
    lr = (s64 / (1 - s64)) * ((1 - TRAIN_PRIOR) / TRAIN_PRIOR)
    exact = _mle_prior(lr, np.ones(len(lr)))[0]
    assert estimate_prevalence(s, unknown(len(s)), CARD, n_boot=0).share == pytest.approx(exact, abs=5e-4)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        estimate_prevalence(np.zeros(3), np.zeros(2, dtype=np.int8), CARD)
    with pytest.raises(ValueError, match="provenance codes"):
        estimate_prevalence(np.zeros(2), np.array([0, 3], dtype=np.int8), CARD)
    with pytest.raises(ValueError, match="probabilities"):
        estimate_prevalence(np.array([0.5, 1.5]), unknown(2), CARD)
    with pytest.raises(ValueError, match="train_prior"):
        estimate_prevalence(np.array([0.5]), unknown(1), {"train_prior": 1.0})
    with pytest.raises(ValueError, match="unknown prevalence method"):
        estimate_prevalence(np.array([0.5]), unknown(1), CARD, method="magic")


# -- downsampling ------------------------------------------------------------------------------


def plan_for(s, prov, target, ids=None, **kw):
    ids = ids if ids is not None else [f"r{i}" for i in range(len(s))]
    kw.setdefault("card", CARD)
    kw.setdefault("n_boot", 300)
    return plan_downsampling(s, prov, record_uniform(0, ids), target, **kw)


def test_nothing_is_dropped_when_already_below_target() -> None:
    s, _ = simulate(2000, 0.05, 3.0, seed=9)
    plan = plan_for(s, unknown(2000), 0.2)
    assert plan.keep.all() and plan.downsampled == 0
    assert plan.share_after == plan.before.share and plan.ci95_after == plan.before.ci95


@pytest.mark.parametrize("safety", ["point", "upper"])
def test_threshold_plan_meets_the_target_with_a_strong_detector(safety: str) -> None:
    s, y = simulate(10000, 0.5, 4.0, seed=10)
    plan = plan_for(s, unknown(len(s)), 0.1, safety=safety)
    assert plan.share_after <= 0.1 + 1e-9
    assert y[plan.keep].mean() <= 0.1 + 0.015
    assert plan.downsampled == int((~plan.keep).sum())
    # Threshold: every dropped record scores at least as high as every kept one.
    assert s[~plan.keep].min() >= s[plan.keep].max()
    assert not plan.weak_detector
    assert plan.ci95_after[0] <= y[plan.keep].mean() <= plan.ci95_after[1]
    # The estimated human loss is close to the real one.
    assert abs(plan.human_loss - (~plan.keep[~y]).mean()) < 0.02


def test_the_report_states_the_bound_the_plan_was_held_to() -> None:
    # The two-sided interval's upper end (97.5 %) may reach past target + tolerance; the one-sided
    # 95 % bound the plan enforces may not, and the report states it.
    s, _ = simulate(600, 0.4, 1.5, seed=11)
    safe = plan_for(s, unknown(len(s)), 0.1, safety="upper").to_report()
    assert safe["upper_bound_confidence"] == 0.95 and safe["upper_bound_limit"] == pytest.approx(0.12)
    assert safe["estimated_share_after"] <= safe["upper_bound_after"] <= safe["upper_bound_limit"] + 1e-9
    assert safe["upper_bound_after"] <= safe["ci95_after"][1] + 1e-9
    point = plan_for(s, unknown(len(s)), 0.1, safety="point").to_report()
    assert point["upper_bound_after"] is None and point["upper_bound_limit"] is None


def test_a_poor_detector_drops_more_for_safety_and_says_so() -> None:
    # A small corpus and a poor (but well-calibrated) detector: the kept share's upper bound
    # exceeds target + 2 pt, so the plan drops more; the detector is not off-distribution, so
    # the reliability verdict (weak_detector) stays quiet.
    s, y = simulate(600, 0.4, 1.5, seed=11)
    point = plan_for(s, unknown(len(s)), 0.1, safety="point")
    safe = plan_for(s, unknown(len(s)), 0.1, safety="upper")
    assert safe.downsampled > point.downsampled
    assert "more than the estimate alone needs" in safe.warning
    assert not safe.weak_detector and safe.before.verdict == "unchecked"  # only EM applies to this card
    assert safe.extra_dropped_for_safety == safe.downsampled - point.downsampled
    assert safe.to_report()["dropped_for_safety"] == safe.extra_dropped_for_safety
    assert y[safe.keep].mean() <= 0.1


def test_known_machine_goes_first_and_known_human_is_never_dropped() -> None:
    s, _ = simulate(3000, 0.5, 2.5, seed=12)
    s = s.astype(np.float64)
    prov = unknown(3000)
    prov[:300] = MACHINE
    prov[300:600] = HUMAN
    s[:600] = np.nan
    plan = plan_for(s, prov, 0.3)
    assert not plan.keep[:300].any()
    assert plan.keep[300:600].all()
    assert plan.downsampled_known_machine == 300
    assert plan.posterior[:300].tolist() == [1.0] * 300 and plan.posterior[300:600].tolist() == [0.0] * 300
    # A target the known machines alone can meet leaves detector-scored records alone.
    s2, _ = simulate(3000, 0.5, 2.5, seed=12)
    prov2 = unknown(3000)
    prov2[:1000] = MACHINE
    s2 = np.where(prov2 == MACHINE, np.nan, s2)
    p2 = plan_for(s2, prov2, 0.6)
    assert p2.keep[1000:].all() and 0 < p2.downsampled < 1000
    assert p2.share_after <= 0.6


def test_target_zero_keeps_only_known_humans() -> None:
    s, _ = simulate(500, 0.3, 3.0, seed=13)
    s = s.astype(np.float64)
    prov = unknown(500)
    prov[:50] = HUMAN
    s[:50] = np.nan
    plan = plan_for(s, prov, 0.0)
    assert plan.keep[:50].all() and not plan.keep[50:].any()
    assert plan.share_after == 0.0


def test_uniform_strategy_drops_predicted_synthetic_at_random() -> None:
    s, y = simulate(10000, 0.6, 3.0, seed=14)
    ids = [f"r{i}" for i in range(len(s))]
    u = record_uniform(0, ids)
    plan = plan_for(s, unknown(len(s)), 0.4, ids=ids, strategy="uniform", safety="point")
    predicted = plan.posterior >= 0.5
    dropped = ~plan.keep
    assert dropped.any() and not (dropped & ~predicted).any()
    # Which predicted-synthetic records go is decided by the per-record uniform alone.
    assert u[dropped].max() < u[predicted & plan.keep].min()
    # So the kept synthetic remainder keeps the score profile of the predicted-synthetic set.
    assert abs(np.median(s[dropped]) - np.median(s[predicted & plan.keep])) < 0.01
    assert plan.share_after <= 0.4 + 1e-9 and abs(y[plan.keep].mean() - 0.4) < 0.03
    # Threshold reaches the same target dropping fewer records (it keeps more data).
    assert plan_for(s, unknown(len(s)), 0.4, safety="point").downsampled < plan.downsampled


def test_decisions_do_not_depend_on_record_order() -> None:
    s, _ = simulate(5000, 0.5, 2.0, seed=15)
    s = np.round(s, 2)  # many ties, broken by the record hash
    prov = unknown(5000)
    prov[::50] = MACHINE
    ids = np.array([f"doc-{i}" for i in range(5000)])
    perm = np.random.default_rng(2).permutation(5000)
    for strategy in ("threshold", "uniform"):
        a = plan_for(s, prov, 0.2, ids=list(ids), strategy=strategy)
        b = plan_for(s[perm], prov[perm], 0.2, ids=list(ids[perm]), strategy=strategy)
        assert np.array_equal(a.keep[perm], b.keep)
        assert a.share_after == b.share_after and a.ci95_after == b.ci95_after


def test_max_human_loss_fails_with_a_clear_message() -> None:
    s, _ = simulate(3000, 0.5, 1.5, seed=16)
    with pytest.raises(HumanLossError, match="max-human-loss 0.05"):
        plan_for(s, unknown(3000), 0.05, max_human_loss=0.05)
    plan = plan_for(s, unknown(3000), 0.05, max_human_loss=1.0)
    assert plan.human_loss > 0.05


def test_report_section_has_the_stable_keys() -> None:
    s, _ = simulate(2000, 0.4, 3.0, seed=17)
    prov = unknown(2000)
    prov[:10] = HUMAN
    rep = plan_for(s, prov, 0.1, strategy="threshold").to_report()
    for key in (
        "estimated_share_before", "ci95_before", "estimated_share_after", "ci95_after", "target_ratio",
        "known_provenance", "downsampled", "method", "strategy",
    ):
        assert key in rep
    assert rep["known_provenance"] == {"human": 10, "machine": 0}
    assert rep["method"] == "em" and rep["strategy"] == "threshold"


def test_plan_argument_errors() -> None:
    s = np.array([0.5, 0.6])
    with pytest.raises(ValueError, match="target_ratio"):
        plan_for(s, unknown(2), 1.0)
    with pytest.raises(ValueError, match="strategy"):
        plan_for(s, unknown(2), 0.1, strategy="random")
    with pytest.raises(ValueError, match="uniform values"):
        plan_downsampling(s, unknown(2), np.array([0.1, 1.0]), 0.1, card=CARD)
    empty = plan_downsampling(np.zeros(0), np.zeros(0, dtype=np.int8), np.zeros(0), 0.1, card=CARD)
    assert empty.keep.shape == (0,) and empty.downsampled == 0


# -- card handling -----------------------------------------------------------------------------


def _held_out_card(d: float, train_prior: float = TRAIN_PRIOR, n_val: int = 4000) -> dict:
    """A card whose operating point was measured on held-out simulated data (with counts)."""
    s, y = simulate(n_val, 0.5, d, seed=99, train_prior=train_prior)
    t = float(np.quantile(s[~y], 0.95))
    flagged = s >= np.float32(t)
    conf = {"tp": int((flagged & y).sum()), "fn": int((~flagged & y).sum()),
            "fp": int((flagged & ~y).sum()), "tn": int((~flagged & ~y).sum())}
    return {
        "train_prior": train_prior,
        "operating_points_measured_on": "validation",
        "operating_points": [{
            "name": "fpr5", "threshold": t, "confusion": conf,
            "tpr": conf["tp"] / (conf["tp"] + conf["fn"]), "fpr": conf["fp"] / (conf["fp"] + conf["tn"]),
        }],
    }


def test_auto_prefers_held_out_rates_and_posteriors_add_up_to_the_estimate() -> None:
    card = _held_out_card(2.5)
    s, y = simulate(6000, 0.3, 2.5, seed=20)
    s = np.round(s, 3)
    est = estimate_prevalence(s, unknown(len(s)), card, n_boot=200)
    assert est.method == "acc"
    assert abs(est.share - y.mean()) < 0.03
    assert dict(est.by_method).keys() == {"acc", "em"}
    # Cross-validated rates describe the fold models, not the shipped one: EM is used instead.
    cv_card = {**card, "operating_points_measured_on": "cross-validation"}
    assert estimate_prevalence(s, unknown(len(s)), cv_card, n_boot=0).method == "em"
    # The plan's posteriors are the scores shifted in logit space so that they sum to the estimate.
    plan = plan_for(s, unknown(len(s)), 0.9, card=card)
    assert plan.keep.all()
    assert float(np.mean(plan.posterior.astype(np.float64))) == pytest.approx(est.share, abs=1e-5)
    order = np.argsort(s, kind="stable")
    assert np.all(np.diff(plan.posterior[order].astype(np.float64)) >= -1e-7)


def test_auto_reads_every_score_when_the_map_is_the_models_own_unless_labels_disagree() -> None:
    card = {**_held_out_card(2.5), "calibrated_on": "held_out_share"}
    s, y = simulate(6000, 0.3, 2.5, seed=21)
    est = estimate_prevalence(s, unknown(len(s)), card, n_boot=300)
    acc = estimate_prevalence(s, unknown(len(s)), card, method="acc", n_boot=300)
    assert (est.method, acc.method) == ("em", "acc")
    assert abs(est.share - y.mean()) < 0.02
    # EM reads every score and carries no sampling error of rates measured on 4,000 texts: a
    # narrower interval than adjusted count's, which still covers the truth.
    assert est.ci95[1] - est.ci95[0] < 0.9 * (acc.ci95[1] - acc.ci95[0])
    assert est.ci95[0] <= y.mean() <= est.ci95[1]
    # A map fitted on fold models' scores (what `adapt` writes) keeps the held-out rates.
    assert estimate_prevalence(s, unknown(len(s)), {**card, "calibrated_on": "out_of_fold"}, n_boot=0).method == "acc"
    # Labelled records of the corpus re-measure the rates. Where they agree with the card's, they
    # vouch for its map and EM stays; where they do not, the corpus's own rates win.
    prov = np.r_[unknown(len(s)), np.full(60, 1, np.int8), np.full(60, 2, np.int8)]

    def with_labels(human: np.ndarray, machine: np.ndarray):
        scores = np.concatenate([s, human, machine])
        return estimate_prevalence(np.where(prov == 0, scores, np.nan), prov, card, n_boot=0, known_scores=scores)

    machine = simulate(400, 1.0, 2.5, seed=23)[0][:60]
    agreeing = with_labels(simulate(400, 0.0, 2.5, seed=22)[0][:60], machine)
    check = agreeing.reliability.to_dict()["checks"]["provenance"]
    assert agreeing.method == "em" and check["level"] == "ok"
    assert check["rates_used"] == "card calibration, confirmed by the labelled records"
    assert max(check["agreement_z"]["fpr_z"], check["agreement_z"]["tpr_z"]) <= 2.0
    # Human text of this corpus that scores like the machine text the detector knows: its FPR here
    # is far from the card's, so adjusted count with the corpus's rates.
    moved = with_labels(simulate(400, 0.5, 2.5, seed=24)[0][:60], machine)
    assert moved.method == "acc"
    assert moved.reliability.to_dict()["checks"]["provenance"]["rates_used"] == "corpus"


def test_float32_thresholds_match_the_scores_they_were_measured_on() -> None:
    score = np.float32(0.97867513)
    # The card stores a float64 a hair above the float32 score that sits exactly at the threshold.
    card = {"operating_points": [{"name": "t", "threshold": 0.9786751361161525, "tpr": 0.6, "fpr": 0.01}]}
    assert float(score) < 0.9786751361161525
    assert float(score) >= card_operating_point(card).threshold


def test_disagreeing_estimators_are_reported() -> None:
    # Scores calibrated at prior 0.5, but the card claims 0.8: em and acc must disagree.
    card = _held_out_card(2.5, train_prior=0.5)
    card["train_prior"] = 0.8
    s, _ = simulate(5000, 0.3, 2.5, seed=21, train_prior=0.5)
    est = estimate_prevalence(s, unknown(len(s)), card, n_boot=0)
    assert est.verdict == "unreliable"
    assert any("two estimates of the synthetic share differ by" in w and "synthfilter adapt" in w for w in est.warnings)
    ok = estimate_prevalence(s, unknown(len(s)), _held_out_card(2.5, train_prior=0.5), n_boot=0)
    assert ok.verdict == "ok" and not any("differ" in w for w in ok.warnings)


def test_tolerance_bounds_the_safety_margin() -> None:
    s, y = simulate(800, 0.4, 1.5, seed=22)
    strict = plan_for(s, unknown(len(s)), 0.1, tolerance=0.0)
    loose = plan_for(s, unknown(len(s)), 0.1, tolerance=0.05)
    point = plan_for(s, unknown(len(s)), 0.1, safety="point")
    assert strict.downsampled >= loose.downsampled >= point.downsampled
    assert strict.downsampled > point.downsampled
    for p in (strict, loose, point):
        assert p.share_after <= 0.1 + 1e-9


def test_record_uniform_is_the_keyed_blake2b_of_each_id():
    # The definition, one record at a time: the batched implementation must give the same bits.
    import hashlib

    from synthfilter.ratio import record_uniform

    class Sub(str):
        pass

    ids = ["a", "é", "", 7, b"\xff", Sub("x"), None, 2.5] + [f"id-{i}" for i in range(100)]
    for seed in (0, 1, -3, 2**63):
        key = int(seed).to_bytes(16, "little", signed=True)
        expect = []
        for rid in ids:
            data = rid if isinstance(rid, bytes) else str(rid).encode("utf-8")
            h = int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "little")
            expect.append((h >> 11) * (1.0 / 9007199254740992.0))
        got = record_uniform(seed, ids)
        assert got.dtype == np.float64 and got.tolist() == expect
    assert record_uniform(0, []).shape == (0,)
