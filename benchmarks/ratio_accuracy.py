"""Target-ratio accuracy (issue 5): prevalence estimate, its interval and downsampling, on mixtures.

Mixtures of ``shared/data/detector/validation.jsonl`` at true synthetic shares 5/20/50/80 %, each
filtered to targets 10 % and 5 %. Per cell: absolute error of the chosen estimator and of naive
classify-and-count, interval coverage, true synthetic share of the kept output, share of human
records kept beside the oracle threshold (true labels, same scores) that just meets the target.
The default plan is measured on the card as shipped (``full``: its rows are the mixtures') and
with the card re-measured on one half of the split, mixtures from the other (``halves``, the
headline); the ``halves`` mixtures once more with 10 % of their records given their provenance.

    python benchmarks/ratio_accuracy.py                  # the shipped detector (recorded figures)
    python benchmarks/ratio_accuracy.py --model quick    # a TF-IDF model trained here, for development
    python benchmarks/ratio_accuracy.py --no-write       # print only

The reliability checks (issue 14, section "Reliability of the synthetic-share estimate"): the
estimate's interval, its coverage and width, the verdict and, for a 10 % target, the true kept
share (or "refused"), on mixtures at 5/20/50/80 % of text the detector has never seen, and the
verdict's false-alarm rate on in-distribution mixtures:

    python benchmarks/ratio_accuracy.py --reliability --model DIR --heldout HELDOUT.jsonl [--indist IN.jsonl]
    python benchmarks/ratio_accuracy.py --reliability --loso-root /work/lab/loso_models   # <source>/ model dirs
    python benchmarks/ratio_accuracy.py --reliability --model quick-loso                  # stand-in, trained here
    python benchmarks/ratio_accuracy.py --reliability                                     # shipped model, in-distribution

With ``--loso-root`` the models' cards were measured on the very rows the in-distribution mixtures
come from, so every replicate re-measures the card on a random half of them and draws its mixtures
from the other half (``rel_evaluate(resplit=True)``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

from synthfilter.ratio import (HUMAN, MACHINE, UnreliableDetectorError, estimate_prevalence, plan_downsampling,
                               record_uniform)
from _results import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "detector"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
TITLE = "Target ratio accuracy (issue 5)"
SECTION = f"## {TITLE}"
SHARES = (0.05, 0.20, 0.50, 0.80)
LABELLED = 0.10  # share of a mixture given provenance in the "halves+labels" plans
TARGETS = (0.10, 0.05)
METHODS = ("em", "acc", "pcc", "cc")


def load_jsonl(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["label"] == "machine")
    return texts, np.array(labels, dtype=bool)


def score_shipped(texts: list[str]) -> tuple[np.ndarray, dict, str]:
    from synthfilter.detect.model import get_detector

    det = get_detector(None)
    return det.predict_proba(texts), det.card, f"shipped default ({det.model_id})"


def score_quick(texts: list[str], seed: int) -> tuple[np.ndarray, dict, str]:
    """A development stand-in calibrated the way the shipped detector is.

    TF-IDF + logistic regression; isotonic calibration fitted on 5-fold out-of-fold scores of
    the whole training split, so ``train_prior`` is the training machine share. Operating
    points are added on the validation split by ``card_with_validation_points``.
    """
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    train_texts, train_y = load_jsonl(DATA / "train.jsonl")
    norm = [" ".join(t.split()) for t in train_texts]

    def fit_predict(fit_texts: list[str], fit_y: np.ndarray, score_texts: list[str]) -> np.ndarray:
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=3, max_features=150_000,
                                sublinear_tf=True)
        words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=150_000, sublinear_tf=True)
        x = hstack([chars.fit_transform(fit_texts), words.fit_transform(fit_texts)]).tocsr()
        clf = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced").fit(x, fit_y)
        return clf.decision_function(hstack([chars.transform(score_texts), words.transform(score_texts)]).tocsr())

    oof = np.zeros(len(norm))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(norm)), train_y):
        oof[te] = fit_predict([norm[i] for i in tr], train_y[tr], [norm[i] for i in te])
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof, train_y)
    raw = fit_predict(norm, train_y, [" ".join(t.split()) for t in texts])
    card = {"train_prior": float(train_y.mean())}
    return iso.predict(raw).astype(np.float32), card, "quick TF-IDF + LR, out-of-fold isotonic (development stand-in)"


def card_with_validation_points(card: dict, scores: np.ndarray, y: np.ndarray) -> dict:
    """Add operating points if the card has none (the quick model's card is built here)."""
    if card.get("operating_points"):
        return card
    points = []
    for t in (0.5,):
        pred = scores >= t
        points.append({"name": f"p>={t}", "threshold": t, "tpr": float(pred[y].mean()), "fpr": float(pred[~y].mean())})
    return {**card, "operating_points": points}


def build_mixture(y: np.ndarray, share: float, fill: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a mixture with exactly round(share * n) machine rows, ``fill`` of the largest possible."""
    humans, machines = np.flatnonzero(~y), np.flatnonzero(y)
    n_max = min(len(humans) / (1.0 - share), len(machines) / share)
    n = int(n_max * fill)
    n_m = int(round(share * n))
    n_h = n - n_m
    return np.concatenate([rng.choice(humans, n_h, replace=False), rng.choice(machines, n_m, replace=False)])


def oracle_human_kept(scores: np.ndarray, y: np.ndarray, uniform: np.ndarray, target: float) -> float:
    """Human share kept by the best cut on the same scores, chosen with the true labels.

    Records are ranked by score, ties broken by the same per-record hash the plan uses (a rule
    that sees only scores can split a tie only at random), and the oracle drops the shortest
    prefix after which the true synthetic share is <= target.
    """
    if y.mean() <= target:
        return 1.0
    ys = y[np.lexsort((uniform, -scores.astype(np.float64)))]
    m_left = ys.sum() - np.concatenate(([0], np.cumsum(ys)))
    n_left = len(ys) - np.arange(len(ys) + 1)
    k = int(np.argmax(m_left <= target * n_left))
    return float((~ys[k:]).sum() / (~y).sum())


def measured_card(card: dict, scores: np.ndarray, y: np.ndarray) -> dict:
    """The card with its operating points' rates re-measured on (scores, y), thresholds kept."""
    points = []
    for op in card.get("operating_points") or []:
        flagged = scores >= np.float32(op["threshold"])
        tp, fn = int((flagged & y).sum()), int((~flagged & y).sum())
        fp, tn = int((flagged & ~y).sum()), int((~flagged & ~y).sum())
        points.append({**op, "tpr": tp / max(tp + fn, 1), "fpr": fp / max(fp + tn, 1),
                       "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn}})
    return {**card, "operating_points": points, "operating_points_measured_on": "validation"}


def load_scores(args: argparse.Namespace, texts: list[str]) -> tuple[np.ndarray, dict, str]:
    cache = args.scores_cache
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return z["scores"], json.loads(str(z["card"])), str(z["model"])
    if args.model == "shipped":
        scores, card, name = score_shipped(texts)
    else:
        scores, card, name = score_quick(texts, args.seed)
    if cache is not None:
        np.savez(cache, scores=scores, card=json.dumps(card), model=name)
    return scores, card, name


def give_provenance(y: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random ``share`` of a mixture's records labelled with their true class: (which records,
    their provenance codes, 0 for the rest)."""
    labelled = np.zeros(len(y), bool)
    labelled[rng.choice(len(y), int(round(share * len(y))), replace=False)] = True
    return labelled, np.where(labelled, np.where(y, MACHINE, HUMAN), 0).astype(np.int8)


def plan_row(plan, protocol: str, share: float, y: np.ndarray, oracle: float) -> dict:
    est, kept = plan.before, plan.keep
    truth = float(y.mean())
    return {
        "protocol": protocol, "share": share, "target": plan.target_ratio, "strategy": plan.strategy,
        "safety": plan.safety, "truth": truth, "n": len(y), "method": est.method,
        "err": abs(est.share - truth), "naive_err": abs(est.naive_share - truth),
        "covered": est.ci95[0] <= truth <= est.ci95[1],
        "kept_share": float(y[kept].mean()) if kept.any() else 0.0, "est_after": plan.share_after,
        "ci_after": plan.ci95_after, "kept_any": bool(kept.any()),
        "human_kept": float(kept[~y].mean()), "oracle_human_kept": oracle, "weak": plan.weak_detector,
    }


def run(args: argparse.Namespace) -> dict:
    texts, y_all = load_jsonl(DATA / "validation.jsonl")
    t0 = time.perf_counter()
    scores_all, card, model_name = load_scores(args, texts)
    card = card_with_validation_points(card, scores_all, y_all)
    score_s = time.perf_counter() - t0
    ids_all = np.array([f"validation-{i}" for i in range(len(texts))])
    rng = np.random.default_rng(args.seed)
    label_rng = np.random.default_rng([args.seed, 11])  # its own draws: the other mixtures stay as they were
    plans: list[dict] = []
    estimates: list[dict] = []
    t1 = time.perf_counter()
    for rep in range(args.reps):
        for share in SHARES:
            rows = build_mixture(y_all, share, args.fill, rng)
            s, y = scores_all[rows], y_all[rows]
            prov = np.zeros(len(rows), dtype=np.int8)
            truth = float(y.mean())
            for m in METHODS:
                e = estimate_prevalence(s, prov, card, method=m, n_boot=args.boot, seed=rep)
                estimates.append({"protocol": "full", "share": share, "method": m, "err": e.share - truth,
                                  "covered": e.ci95[0] <= truth <= e.ci95[1]})
            u = record_uniform(args.seed, ids_all[rows])
            for target in TARGETS:
                oracle = oracle_human_kept(s, y, u, target)
                for strategy, safety in (("threshold", "upper"), ("threshold", "point"), ("uniform", "upper")):
                    plan = plan_downsampling(
                        s, prov, u, target, strategy=strategy, card=card, n_boot=args.boot, seed=rep, safety=safety
                    )
                    plans.append(plan_row(plan, "full", share, y, oracle))
        # Honest check of the card's role: re-measure the operating points and the score histograms
        # on one half of the split and build the mixtures from the other half only (then swap the
        # halves); the default plan is measured so too.
        half = rng.uniform(size=len(y_all)) < 0.5
        for a, b in ((half, ~half), (~half, half)):
            card_a = split_card(card, scores_all[a], y_all[a], "one half of validation (mixtures from the other)")
            idx = np.flatnonzero(b)
            for share in SHARES:
                rows = idx[build_mixture(y_all[b], share, args.fill, rng)]
                s, y = scores_all[rows], y_all[rows]
                prov = np.zeros(len(rows), np.int8)
                truth = float(y.mean())
                for m in METHODS:
                    e = estimate_prevalence(s, prov, card_a, method=m, n_boot=args.boot, seed=rep)
                    estimates.append({"protocol": "halves", "share": share, "method": m, "err": e.share - truth,
                                      "covered": e.ci95[0] <= truth <= e.ci95[1]})
                u = record_uniform(args.seed, ids_all[rows])
                # The same mixture with LABELLED of its records given their provenance (their scores
                # re-measure the rates and join the bound's histograms); human kept is counted over
                # the unlabelled human records.
                labelled, prov_l = give_provenance(y, LABELLED, label_rng)
                for target in TARGETS:
                    plan = plan_downsampling(s, prov, u, target, card=card_a, n_boot=args.boot, seed=rep)
                    plans.append(plan_row(plan, "halves", share, y, oracle_human_kept(s, y, u, target)))
                    try:
                        plan = plan_downsampling(s, prov_l, u, target, card=card_a, n_boot=args.boot, seed=rep,
                                                 known_scores=s)
                    except UnreliableDetectorError:  # the labels showed the detector off here: refused
                        plans.append({"protocol": "halves+labels", "share": share, "target": target, "refused": True})
                        continue
                    row = plan_row(plan, "halves+labels", share, y, float("nan"))
                    row["human_kept"] = float(plan.keep[~y & ~labelled].mean())
                    row["refused"] = False
                    plans.append(row)
    cv = (card.get("metrics") or {}).get("cross_validation") or {}
    default = next((o for o in card.get("operating_points") or [] if o.get("name") == "default"), None)
    calibration = {
        "mean_score": float(np.mean(scores_all.astype(np.float64))),
        "true_share": float(y_all.mean()),
        "tpr_validation": default["tpr"] if default else None,
        "tpr_cross_validation": cv.get("tpr") if default and cv.get("threshold") == default["threshold"] else None,
    }
    return {
        "calibration": calibration,
        "model": model_name,
        "card": {k: card.get(k) for k in ("train_prior", "operating_points")},
        "score_seconds": score_s,
        "run_seconds": time.perf_counter() - t1,
        "plans": plans,
        "estimates": estimates,
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _select(rows: list[dict], **kw: object) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def summarise(res: dict, args: argparse.Namespace) -> tuple[str, bool]:
    plans, estimates = res["plans"], res["estimates"]
    ops = res["card"]["operating_points"] or []
    op_text = ", ".join(f"{o['name']} t={o['threshold']:.4f} TPR {o['tpr']:.3f} FPR {o['fpr']:.3f}" for o in ops)
    lines = [
        f"Detector: {res['model']}; card train_prior {res['card']['train_prior']:.3f}; operating points "
        f"(measured on validation): {op_text}.",
        f"{args.reps} random mixtures per cell, each {args.fill:.0%} of the largest mixture the split allows "
        f"(n below), {args.boot} bootstrap replicates, seed {args.seed}. Figures are means over the mixtures; "
        "`max`/`worst` are the worst mixture. Oracle: the best cut on the same scores chosen with the true "
        "labels (ties split by the same record hash).",
        "",
        "Default plan (`threshold`, `safety = upper`: point estimate <= target and one-sided 95 % bound <= "
        "target + 2 pt). `halves` (the headline): the card's operating points and score histograms re-measured "
        "on a random half of validation, the mixtures drawn from the other half (so smaller); `full`: the card as "
        "shipped, measured on validation, whose rows the mixtures are (in-sample for the card).",
        "",
        "| protocol | true share | target | n | est. abs err (method) | naive CC abs err | CI covers | kept true share "
        "(mean / max) | over target + 2 pt | human kept | oracle human kept | gap mean (worst) | weak-detector flag |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    goals = {}
    for protocol in ("halves", "full"):
        ok_err = ok_share = ok_human = True
        cover_hits = cover_total = over_total = n_total = 0
        for share in SHARES:
            for target in TARGETS:
                rs = _select(plans, protocol=protocol, share=share, target=target, strategy="threshold",
                             safety="upper")
                err = np.mean([r["err"] for r in rs])
                cov = np.mean([r["covered"] for r in rs])
                if target == TARGETS[0]:  # the estimate is the same for both targets: count it once
                    cover_hits += sum(r["covered"] for r in rs)
                    cover_total += len(rs)
                ks = [r["kept_share"] for r in rs]
                over = sum(k > target + 0.02 + 1e-9 for k in ks)
                over_total += over
                n_total += len(rs)
                gaps = [r["oracle_human_kept"] - r["human_kept"] for r in rs]
                ok_err &= bool(err <= 0.02)
                ok_share &= over == 0
                ok_human &= bool(np.mean(gaps) <= 0.05)
                lines.append(
                    f"| {protocol} | {share:.0%} | {target:.0%} | {rs[0]['n']} | {err * 100:.2f} pt ({rs[0]['method']}) "
                    f"| {np.mean([r['naive_err'] for r in rs]) * 100:.2f} pt | {cov:.0%} "
                    f"| {np.mean(ks):.1%} / {max(ks):.1%} | {over} of {len(rs)} "
                    f"| {np.mean([r['human_kept'] for r in rs]):.1%} "
                    f"| {np.mean([r['oracle_human_kept'] for r in rs]):.1%} | {np.mean(gaps) * 100:.1f} pt "
                    f"({max(gaps) * 100:.1f}) | {np.mean([r['weak'] for r in rs]):.0%} |"
                )
        goals[protocol] = (ok_err, cover_hits / max(cover_total, 1), ok_share, ok_human, over_total, n_total)
    lines += [
        "",
        f"The `halves` mixtures again, {LABELLED:.0%} of each mixture's records given their provenance (their "
        "scores re-measure the detector's rates and join the bound's histograms; human kept counts the unlabelled "
        "human records), beside the same mixtures without labels:",
        "",
        "| true share | target | refused (unreliable) | kept true share (mean / max) | over target + 2 pt "
        "| human kept (unlabelled) | without labels: human kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for share in SHARES:
        for target in TARGETS:
            every = _select(plans, protocol="halves+labels", share=share, target=target)
            rs = [r for r in every if not r["refused"]]
            plain = _select(plans, protocol="halves", share=share, target=target)
            ks = [r["kept_share"] for r in rs]
            kept = (f"{np.mean(ks):.1%} / {max(ks):.1%} | {sum(k > target + 0.02 + 1e-9 for k in ks)} of {len(rs)} "
                    f"| {np.mean([r['human_kept'] for r in rs]):.1%}" if rs else "— | — | —")
            lines.append(
                f"| {share:.0%} | {target:.0%} | {len(every) - len(rs)} of {len(every)} | {kept} "
                f"| {np.mean([r['human_kept'] for r in plain]):.1%} |"
            )
    lines += [
        "",
        "The kept share the report states (`estimated_share_after`, its point estimate, and `ci95_after`) against "
        "the true share of the records kept, default plan, mixtures whose plan kept at least one record: mean "
        "signed error (stated minus true) and mean absolute error in points, how many stated a share more than 2 "
        "points under the truth, and how many kept a true share above the stated interval:",
        "",
        "| protocol | true share | target | plans | signed error | abs error | stated > 2 pt under | truth above "
        "interval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for protocol in ("halves", "full", "halves+labels"):
        for share in SHARES:
            for target in TARGETS:
                rs = [r for r in _select(plans, protocol=protocol, share=share, target=target)
                      if not r.get("refused") and r.get("strategy", "threshold") == "threshold"
                      and r.get("safety", "upper") == "upper" and r["kept_any"] and r["est_after"] is not None]
                if not rs:
                    lines.append(f"| {protocol} | {share:.0%} | {target:.0%} | 0 | — | — | — | — |")
                    continue
                d = np.array([r["est_after"] - r["kept_share"] for r in rs])
                above = sum(r["ci_after"] is not None and r["kept_share"] > r["ci_after"][1] + 1e-9 for r in rs)
                lines.append(f"| {protocol} | {share:.0%} | {target:.0%} | {len(rs)} | {d.mean() * 100:+.2f} pt "
                             f"| {np.abs(d).mean() * 100:.2f} pt | {int((d < -0.02).sum())} | {above} |")
    lines += [
        "",
        "Same `full` mixtures, other plans: `safety = point` (point estimate only) and strategy `uniform`:",
        "",
        "| true share | target | point: kept true share (mean / max) | point: human kept | point: gap mean (worst) "
        "| uniform: kept true share (mean / max) | uniform: human kept | oracle human kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for share in SHARES:
        for target in TARGETS:
            pt = _select(plans, protocol="full", share=share, target=target, strategy="threshold", safety="point")
            un = _select(plans, protocol="full", share=share, target=target, strategy="uniform")
            gaps = [r["oracle_human_kept"] - r["human_kept"] for r in pt]
            lines.append(
                f"| {share:.0%} | {target:.0%} | {np.mean([r['kept_share'] for r in pt]):.1%} / "
                f"{max(r['kept_share'] for r in pt):.1%} | {np.mean([r['human_kept'] for r in pt]):.1%} "
                f"| {np.mean(gaps) * 100:.1f} pt ({max(gaps) * 100:.1f}) "
                f"| {np.mean([r['kept_share'] for r in un]):.1%} / {max(r['kept_share'] for r in un):.1%} "
                f"| {np.mean([r['human_kept'] for r in un]):.1%} | {np.mean([r['oracle_human_kept'] for r in pt]):.1%} |"
            )
    lines += [
        "",
        "Estimators compared: mean signed error / mean absolute error in points, and interval coverage. `full`: "
        "the card as shipped (operating-point rates measured on the whole validation split, so on the mixtures' "
        "own rows); `halves`: rates re-measured on a random half of the split, mixtures drawn from the other half "
        "(smaller mixtures, honest for `acc`).",
        "",
        "| protocol | true share | " + " | ".join(METHODS) + " |",
        "|---|---|" + "---|" * len(METHODS),
    ]
    for protocol in ("full", "halves"):
        for share in SHARES:
            cells = []
            for m in METHODS:
                es = _select(estimates, protocol=protocol, share=share, method=m)
                cells.append(
                    f"{np.mean([e['err'] for e in es]) * 100:+.2f} / {np.mean([abs(e['err']) for e in es]) * 100:.2f}"
                    f" ({np.mean([e['covered'] for e in es]):.0%})"
                )
            lines.append(f"| {protocol} | {share:.0%} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *(f"Goals (default plan, `{protocol}`): estimate within 2 pt in every cell: {'yes' if e else 'NO'}; interval "
          f"covers the truth in {c:.0%} of mixtures (goal >= 90 %): {'yes' if c >= 0.9 else 'NO'}; kept true share "
          f"<= target + 2 pt in every mixture: {'yes' if k else f'NO ({o} of {n} over; a 95 % bound allows about 5 %)'}; "
          f"human kept within 5 pt of the oracle (mean per cell): {'yes' if h else 'NO'}."
          for protocol, (e, c, k, h, o, n) in goals.items()),
        f"Calibration check on the whole validation split: mean score {res['calibration']['mean_score']:.3f} at a "
        f"true machine share of {res['calibration']['true_share']:.3f}; TPR at the card's default threshold "
        f"{_fmt(res['calibration']['tpr_validation'])} on validation (the shipped model) vs "
        f"{_fmt(res['calibration']['tpr_cross_validation'])} in cross-validation (the fold models the calibration map "
        "was fitted on).",
        f"Scoring took {res['score_seconds']:.0f} s, the estimates and plans {res['run_seconds']:.0f} s.",
    ]
    e, c, k, h, _, _ = goals["halves"]
    return "\n".join(lines), e and c >= 0.9 and k and h


# -- reliability of the estimate (issue 14) -----------------------------------------------------------

REL_TITLE = "Reliability of the synthetic-share estimate (issue 14)"
REL_TARGET = 0.10
# Histogram edges for the cards this script measures (logit-spaced: calibrated scores crowd at 0 and 1).
EDGES = np.concatenate(([0.0], 1.0 / (1.0 + np.exp(-np.linspace(-7.0, 7.0, 29))), [1.0]))


def load_labelled(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    texts, labels, sources = [], [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["text"])
            labels.append(row["label"] == "machine")
            sources.append(str(row.get("source", "")))
    return texts, np.array(labels, dtype=bool), np.array(sources)


def measure_points(scores: np.ndarray, y: np.ndarray, quantiles: tuple[tuple[str, float], ...],
                   thresholds: dict[str, float] | None = None) -> list[dict]:
    """Operating points on a labelled split: at the human-score quantiles, or at given thresholds."""
    h = scores[~y]
    points = []
    for name, q in quantiles:
        t = float(np.float32(thresholds[name] if thresholds else np.quantile(h, q)))
        flagged = scores >= np.float32(t)
        tp, fn = int((flagged & y).sum()), int((~flagged & y).sum())
        fp, tn = int((flagged & ~y).sum()), int((~flagged & ~y).sum())
        points.append({"name": name, "threshold": t, "tpr": tp / max(tp + fn, 1), "fpr": fp / max(fp + tn, 1),
                       "confusion": {"tp": tp, "fn": fn, "fp": fp, "tn": tn}})
    return points


def score_distribution(scores: np.ndarray, y: np.ndarray, measured_on: str) -> dict:
    return {"measured_on": measured_on, "edges": EDGES.tolist(),
            "human": np.histogram(scores[~y], EDGES)[0].tolist(), "machine": np.histogram(scores[y], EDGES)[0].tolist()}


def split_card(card: dict, scores: np.ndarray, y: np.ndarray, what: str) -> dict:
    """The card with its operating points re-measured (thresholds kept) and score histograms, on a split."""
    out = measured_card(card, scores, y)
    out["operating_points_measured_on"] = what
    out["score_distribution"] = score_distribution(scores, y, what)
    return out


def rel_mixture(y: np.ndarray, share: float, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    humans, machines = np.flatnonzero(~y), np.flatnonzero(y)
    n_max = min(len(humans) / (1.0 - share), len(machines) / share)
    n = min(int(n_max * args.fill), args.max_n)
    n_m = int(round(share * n))
    return np.concatenate([rng.choice(humans, n - n_m, replace=False), rng.choice(machines, n_m, replace=False)])


def rel_evaluate(scores: np.ndarray, y: np.ndarray, card: dict, args: argparse.Namespace, protocol: str,
                 resplit: bool = False) -> list[dict]:
    """``resplit``: ``scores`` are the rows the card was measured on; each replicate draws a new
    half of them, re-measures the card on it and draws its mixtures from the other half (a
    mixture of the card's own rows fits the card better than any new corpus would, and one fixed
    split would repeat one draw of the card's own sampling error in every replicate)."""
    from synthfilter.ratio import UnreliableDetectorError

    rng = np.random.default_rng(args.seed)
    split_rng = np.random.default_rng([args.seed, 7])
    label_rng = np.random.default_rng([args.seed, 11])  # its own draws: the mixtures stay as they were
    rows: list[dict] = []
    base_card = card
    for rep in range(args.reps):
        pool = np.arange(len(y))
        if resplit:
            half = split_rng.uniform(size=len(y)) < 0.5
            card = split_card(base_card, scores[half], y[half], "one half of the rows (mixtures from the other)")
            pool = np.flatnonzero(~half)
        for share in SHARES:
            idx = pool[rel_mixture(y[pool], share, args, rng)]
            s, yy = scores[idx], y[idx]
            truth = float(yy.mean())
            # With --labelled, provenance on a random share of the records; their scores re-measure the card.
            labelled, prov = give_provenance(yy, args.labelled, label_rng)
            known = {"known_scores": s} if args.labelled > 0 else {}
            est = estimate_prevalence(s, prov, card, n_boot=args.boot, seed=rep, **known)
            r = est.reliability
            row = {"protocol": protocol, "share": share, "n": len(idx), "truth": truth, "est": est.share,
                   "method": est.method,
                   "ci": est.ci95, "sampling_ci": r.ci95_sampling if r else est.ci95,
                   "unseen_ci": (r.ci95_unseen_source if r and r.ci95_unseen_source else None),
                   "verdict": r.verdict if r else "n/a", "basis": r.interval if r else "sampling"}
            u = record_uniform(args.seed, [f"{protocol}-{i}" for i in idx])
            for mode, kw in (("refuse", {}), ("proceed", {"on_unreliable": "proceed"}),
                             ("unseen", {"on_unreliable": "proceed", "widen": "unseen_source"})):
                if mode == "unseen" and row["unseen_ci"] is None:
                    continue
                try:
                    plan = plan_downsampling(s, prov, u, REL_TARGET, card=card, n_boot=args.boot, seed=rep, **kw,
                                             **known)
                except UnreliableDetectorError:
                    row[f"kept_{mode}"] = None
                    continue
                row[f"kept_{mode}"] = float(yy[plan.keep].mean()) if plan.keep.any() else 0.0
                row[f"human_kept_{mode}"] = float(plan.keep[~yy & ~labelled].mean())
            rows.append(row)
    return rows


def rel_table(rows: list[dict]) -> list[str]:
    lines = [
        "| true share | n | est. (mean abs err) | verdict ok / doubtful / unreliable | covers: sampling / reported "
        "/ unseen-source | width: sampling / reported / unseen-source | 10 % target, default: refused, kept true "
        "share mean / max, human kept | --allow-unreliable-detector: kept max | --unseen-source: kept mean / max, "
        "human kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cover(key: str, rs: list[dict]) -> str:
        got = [r[key] for r in rs if r.get(key) is not None]
        return f"{np.mean([c[0] <= r['truth'] <= c[1] for r, c in zip(rs, got)]):.0%}" if len(got) == len(rs) else "—"

    def width(key: str, rs: list[dict]) -> str:
        got = [r[key] for r in rs if r.get(key) is not None]
        return f"{np.mean([c[1] - c[0] for c in got]) * 100:.1f}" if got else "—"

    for share in SHARES:
        rs = [r for r in rows if r["share"] == share]
        if not rs:
            continue
        verdicts = [sum(r["verdict"] == v for r in rs) for v in ("ok", "doubtful", "unreliable")]
        kept = [r["kept_refuse"] for r in rs if r["kept_refuse"] is not None]
        human = [r["human_kept_refuse"] for r in rs if r["kept_refuse"] is not None]
        proceed = [r["kept_proceed"] for r in rs if r.get("kept_proceed") is not None]
        unseen = [r["kept_unseen"] for r in rs if r.get("kept_unseen") is not None]
        unseen_h = [r["human_kept_unseen"] for r in rs if r.get("kept_unseen") is not None]
        default = (f"{len(rs) - len(kept)} of {len(rs)}, " + (f"{np.mean(kept):.1%} / {max(kept):.1%}, {np.mean(human):.0%}"
                                                               if kept else "—"))
        lines.append(
            f"| {share:.0%} | {int(np.mean([r['n'] for r in rs]))} | {np.mean([r['est'] for r in rs]):.1%} "
            f"({np.mean([abs(r['est'] - r['truth']) for r in rs]) * 100:.1f} pt) "
            f"| {verdicts[0]} / {verdicts[1]} / {verdicts[2]} "
            f"| {cover('sampling_ci', rs)} / {cover('ci', rs)} / {cover('unseen_ci', rs)} "
            f"| {width('sampling_ci', rs)} / {width('ci', rs)} / {width('unseen_ci', rs)} pt "
            f"| {default} | {(f'{max(proceed):.1%}') if proceed else '—'} "
            f"| {(f'{np.mean(unseen):.1%} / {max(unseen):.1%}, {np.mean(unseen_h):.0%}') if unseen else '—'} |"
        )
    return lines


RELIABILITY_JSON = REPO / "benchmarks" / "reliability.json"  # goal figures per run kind, for detector_quality.py


def rel_summary(off: list[dict], ind: list[dict]) -> dict:
    """The goal figures of items 3-4 (issue 14) over the mixtures given (either list may be empty)."""
    out: dict = {}
    if off:
        core = [r for r in off if r["share"] in (0.05, 0.20, 0.50)]
        at50 = [r for r in off if r["share"] == 0.50]
        unseen = [r for r in core if r.get("unseen_ci")]
        out["off"] = {
            "mixtures": len(off),
            "flagged": float(np.mean([r["verdict"] in ("doubtful", "unreliable") for r in off])),
            "coverage": float(np.mean([r["ci"][0] <= r["truth"] <= r["ci"][1] for r in core])),
            "at50": len(at50),
            "over12_not_refused": sum(r["kept_refuse"] is not None and r["kept_refuse"] > 0.12 for r in at50),
            "refused_at50": sum(r["kept_refuse"] is None for r in at50),
            "coverage_unseen": (float(np.mean([r["unseen_ci"][0] <= r["truth"] <= r["unseen_ci"][1] for r in unseen]))
                                if unseen else None),
            "over12_unseen": sum(r.get("kept_unseen") is not None and r["kept_unseen"] > 0.12 for r in at50),
        }
    if ind:
        unseen = [r for r in ind if r.get("unseen_ci")]
        out["in"] = {
            "mixtures": len(ind),
            "false_alarms": float(np.mean([r["verdict"] in ("doubtful", "unreliable") for r in ind])),
            "widened": float(np.mean([r["basis"] != "sampling" for r in ind])),
            "coverage": float(np.mean([r["ci"][0] <= r["truth"] <= r["ci"][1] for r in ind])),
            "width_unseen": float(np.mean([r["unseen_ci"][1] - r["unseen_ci"][0] for r in unseen])) if unseen else None,
            "width_sampling": (float(np.mean([r["sampling_ci"][1] - r["sampling_ci"][0] for r in unseen]))
                               if unseen else None),
        }
    return out


def rel_goals(off: list[dict], ind: list[dict]) -> list[str]:
    s = rel_summary(off, ind)
    rows = off + ind
    counts = {m: sum(r["method"] == m for r in rows) for m in sorted({r["method"] for r in rows})}
    out = ([f"Estimate by {', '.join(f'{m} in {c}' for m, c in counts.items())} of {len(rows)} mixtures."]
           if rows else [])
    if "off" in s:
        o = s["off"]
        out.append(f"Off distribution: the verdict flags {o['flagged']:.0%} of the mixtures (doubtful or unreliable); the "
                   f"reported interval covers the truth in {o['coverage']:.0%} of the 5/20/50 % mixtures (goal >= 90 %: "
                   f"{'met' if o['coverage'] >= 0.9 else 'NOT met'}); at 50 % with a 10 % target {o['over12_not_refused']} "
                   f"of {o['at50']} mixtures kept more than 12 % synthetic without being refused (goal 0: "
                   f"{'met' if not o['over12_not_refused'] else 'NOT met'})."
                   + (f" With --unseen-source: coverage {o['coverage_unseen']:.0%}, {o['over12_unseen']} of {o['at50']} "
                      "over 12 % at 50 %." if o["coverage_unseen"] is not None else ""))
    if "in" in s:
        i = s["in"]
        extra = ""
        if i["width_unseen"] is not None:
            extra = (f" The unseen-source interval is {i['width_unseen'] * 100:.1f} points wide on average against "
                     f"{i['width_sampling'] * 100:.1f} from sampling.")
        out.append(f"In distribution: false alarms (doubtful or unreliable) in {i['false_alarms']:.0%} of the mixtures, "
                   f"interval widened in {i['widened']:.0%}, coverage {i['coverage']:.0%}.{extra}")
    return out


# The stand-in for leave-one-source-out models: TF-IDF + logistic regression, calibrated
# (isotonic) on a held-out 20 % split of its own training sources, its card measured there, its
# source_shift from stand-ins that also leave out each other source. Development only: the
# recorded figures come from the real models (--loso-root).


def _quick_fit(texts: list[str], y: np.ndarray, seed: int):  # noqa: ANN202
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    cal = rng.uniform(size=len(texts)) < 0.2
    fit_texts = [" ".join(t.split()) for t, c in zip(texts, cal) if not c]
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=3, max_features=50_000, sublinear_tf=True)
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=50_000, sublinear_tf=True)
    x = hstack([chars.fit_transform(fit_texts), words.fit_transform(fit_texts)]).tocsr()
    clf = LogisticRegression(C=4.0, max_iter=500, class_weight="balanced").fit(x, y[~cal])

    def raw(ts: list[str]) -> np.ndarray:
        ts = [" ".join(t.split()) for t in ts]
        return clf.decision_function(hstack([chars.transform(ts), words.transform(ts)]).tocsr())

    cal_texts = [t for t, c in zip(texts, cal) if c]
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw(cal_texts), y[cal])

    def predict(ts: list[str]) -> np.ndarray:
        return iso.predict(raw(ts)).astype(np.float32)

    return predict, predict(cal_texts), y[cal]


STAND_IN_POINTS = (("fpr1", 0.99), ("fpr5", 0.95), ("fpr30", 0.70), ("fpr60", 0.40))


def quick_loso_cases(args: argparse.Namespace) -> list[tuple[str, dict, tuple, tuple]]:
    train_t, train_y, train_src = load_labelled(DATA / "train.jsonl")
    val_t, val_y, val_src = load_labelled(DATA / "validation.jsonl")
    all_t, all_y, all_src = train_t + val_t, np.r_[train_y, val_y], np.r_[train_src, val_src]
    sources = sorted(set(train_src))
    args.cache.mkdir(parents=True, exist_ok=True)
    cases = []
    for held in sources:
        # Scores only are cached (not models): the cards are rebuilt from them.
        path = args.cache / f"quick-loso2-{held.replace('/', '_')}-seed{args.seed}.npz"
        if not path.exists():
            keep = train_src != held
            predict, cal_s, cal_y = _quick_fit([t for t, k in zip(train_t, keep) if k], train_y[keep], args.seed)
            arrays = {"cal_s": cal_s, "cal_y": cal_y,
                      "off": predict([t for t, s in zip(all_t, all_src) if s == held]), "off_y": all_y[all_src == held],
                      "ind": predict([t for t, s in zip(val_t, val_src) if s != held]), "ind_y": val_y[val_src != held]}
            for j, other in enumerate(o for o in sources if o != held):
                k2 = keep & (train_src != other)
                p2, cs2, cy2 = _quick_fit([t for t, k in zip(train_t, k2) if k], train_y[k2], args.seed)
                arrays.update({f"nested{j}_cal_s": cs2, f"nested{j}_cal_y": cy2,
                               f"nested{j}_there": p2([t for t, s in zip(all_t, all_src) if s == other]),
                               f"nested{j}_there_y": all_y[all_src == other]})
            np.savez(path, **arrays)
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        card = {"train_prior": float(a["cal_y"].mean()), "operating_points_measured_on": "held-out calibration split",
                "operating_points": measure_points(a["cal_s"], a["cal_y"], STAND_IN_POINTS),
                "score_distribution": score_distribution(a["cal_s"], a["cal_y"], "held-out calibration split")}
        shifts: dict[str, list[dict]] = {name: [] for name, _ in STAND_IN_POINTS}
        for j, other in enumerate(o for o in sources if o != held):
            own = {p["name"]: p for p in measure_points(a[f"nested{j}_cal_s"], a[f"nested{j}_cal_y"], STAND_IN_POINTS)}
            there_y = a[f"nested{j}_there_y"].astype(bool)
            there = {p["name"]: p for p in measure_points(a[f"nested{j}_there"], there_y, STAND_IN_POINTS,
                                                          thresholds={k: v["threshold"] for k, v in own.items()})}
            for name in shifts:
                shifts[name].append({"held_out": other, "train_tpr": own[name]["tpr"], "train_fpr": own[name]["fpr"],
                                     "tpr": there[name]["tpr"], "fpr": there[name]["fpr"],
                                     "n_human": int((~there_y).sum()), "n_machine": int(there_y.sum())})
        card["source_shift"] = {"measured_on": "stand-ins retrained with one more source left out", "points": shifts}
        cases.append((f"quick stand-in without {held}", card, (a["off"], a["off_y"].astype(bool)),
                      (a["ind"], a["ind_y"].astype(bool))))
    return cases


def score_with(model: Path, texts: list[str], args: argparse.Namespace, what: str) -> tuple[np.ndarray, dict]:
    from synthfilter.detect.model import Detector

    det = Detector.load(model)
    args.cache.mkdir(parents=True, exist_ok=True)
    key = f"{det.sha256[:16]}-{what}-{len(texts)}"
    path = args.cache / f"scores-{key}.npy"
    if path.exists():
        return np.load(path), det.card
    scores = np.asarray(det.predict_proba(texts), dtype=np.float32)
    np.save(path, scores)
    return scores, det.card


def model_dir_case(model: Path, heldout: Path, indist: Path | None, args: argparse.Namespace) -> tuple:
    off_t, off_y, off_src = load_labelled(heldout)
    off, card = score_with(model, off_t, args, f"heldout-{heldout.stat().st_size}")
    if indist is not None:
        in_t, in_y, _ = load_labelled(indist)
    else:
        val_t, val_y, val_src = load_labelled(DATA / "validation.jsonl")
        held = set(off_src) - {""}
        mask = ~np.isin(val_src, list(held)) if held else np.ones(len(val_y), bool)
        in_t, in_y = [t for t, m in zip(val_t, mask) if m], val_y[mask]
    ind, _ = score_with(model, in_t, args, f"indist-{len(in_t)}")
    return (f"{model.name} ({card.get('model_id', 'unversioned')}), held out: {heldout.name}", card,
            (off, off_y), (ind, in_y))


def shipped_cases(args: argparse.Namespace) -> list[tuple]:
    """In distribution only: the shipped card as it is on all of validation ("full", in-sample
    rates, no score histograms in a v2 card), and with rates and histograms measured on one half
    and mixtures from the other ("halves")."""
    texts, y, _ = load_labelled(DATA / "validation.jsonl")
    scores, card, name = load_scores(args, texts)
    half = np.random.default_rng(args.seed + 1).uniform(size=len(y)) < 0.5
    card_a = split_card(card, scores[half], y[half], "one half of the validation split")
    return [(f"{name}, card as shipped (validation, in-sample)", card, None, (scores, y)),
            (f"{name}, rates and histograms from one validation half, mixtures from the other", card_a, None,
             (scores[~half], y[~half]))]


# Said under every leave-one-source-out table: these mixtures helped choose the rule they test.
NOT_INDEPENDENT = ("Since 2026-12-07 the mixture fit's level reads its misfit in points of synthetic share (misfit "
                   "over the separation of the card's class histograms), a rule adopted after seeing 8 of the L2R "
                   "mixtures below reported `ok` under the old one (a fixed 3 points of probability mass; "
                   "docs/ratio.md): these tables are not an independent test of it.")
LOSO_CARDS = ("The models' cards carry `train_prior` and `calibrated_on` since 2026-12-07, as `synthfilter train` "
              "writes them (before, `detector_generalisation.py` left both out, so the estimate was the adjusted "
              "count and EM was not among the estimators the checks compare; the runs before this one measured "
              "that). With them the estimate is EM (docs/ratio.md, \"Estimators\").")

# Measured once, with this script's --loso-root DIR --labelled 0.1 and reliability.LABELLED_SHIFT_P = 0.
LABELLED_BEFORE = ("Before the bound read the labelled records alone when they score unlike the card's held-out texts "
                   "(the same command with `reliability.LABELLED_SHIFT_P = 0`, same mixtures, 2026-12-07): off "
                   "distribution at 50 % synthetic 26 of 60 mixtures kept more than 12 % synthetic unrefused "
                   "(fast-detect-gpt 15 of 20, kept mean / max 17.0 % / 25.7 %; L2R 10 of 20, 12.7 % / 22.1 %; "
                   "SeqXGPT 1 of 20, 22.4 %), at 80 % the worst kept 16.7 % / 28.3 % / 57.0 %; in distribution every "
                   "figure was the same as below.")


def reliability_main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.loso_root is not None:
        cases = [model_dir_case(d, d / "heldout.jsonl", None, args) for d in sorted(args.loso_root.iterdir())
                 if (d / "heldout.jsonl").is_file()]
        if not cases:
            print(f"no <source>/heldout.jsonl under {args.loso_root}", file=sys.stderr)
            return 2
    elif args.model == "quick-loso":
        cases = quick_loso_cases(args)
    elif args.model == "shipped":
        cases = shipped_cases(args)
    else:
        if args.heldout is None:
            print("--model DIR needs --heldout HELDOUT.jsonl", file=sys.stderr)
            return 2
        cases = [model_dir_case(Path(args.model), args.heldout, args.indist, args)]
    lines = [f"{args.reps} random mixtures per cell (each {args.fill:.0%} of the largest the data allows, at most "
             f"{args.max_n} records), {args.boot} bootstrap replicates, seed {args.seed}, default settings "
             f"(target {REL_TARGET:.0%}: refused when the verdict is unreliable). \"covers\": share of mixtures "
             "whose 95 % interval holds the true share; \"sampling\" is the interval before any widening.", ""]
    if args.labelled > 0:
        lines += [f"{args.labelled:.0%} of each mixture's records carry their provenance: their scores re-measure "
                  "the detector's rates and, where they score like the card's held-out texts, join the bound's "
                  "histograms (docs/ratio.md, \"Provenance\"); \"human kept\" counts the unlabelled human "
                  "records.", ""]
    if args.loso_root is not None:
        lines += [NOT_INDEPENDENT, "", LOSO_CARDS, ""]
        if args.labelled == 0.1:
            lines += [LABELLED_BEFORE, ""]
    all_off: list[dict] = []
    all_in: list[dict] = []
    per_case: dict[str, dict] = {}
    # LOSO models' cards were measured on the in-distribution rows themselves: split them anew for
    # every replicate (see ``rel_evaluate``).
    resplit_in = args.loso_root is not None
    for name, card, off, ind in cases:
        lines += [f"### {name}", ""]
        points = ", ".join(f"{p['name']} TPR {p['tpr']:.3f} FPR {p['fpr']:.3f}" for p in card.get("operating_points") or [])
        shift = (card.get("source_shift") or {}).get("points") or {}
        moves = "; ".join(f"{k}: " + ", ".join(f"{r['held_out']} TPR {r['train_tpr']:.2f}->{r['tpr']:.2f} FPR "
                                               f"{r['train_fpr']:.3f}->{r['fpr']:.3f}" for r in v) for k, v in shift.items())
        prior = card.get("train_prior")
        lines += [f"Card: train_prior {'none' if prior is None else f'{prior:.3f}'}, calibrated_on "
                  f"{card.get('calibrated_on') or 'not given'}; {points}; "
                  f"score_distribution {'yes' if card.get('score_distribution') else 'no'}; "
                  f"source_shift {moves or 'none'}.", ""]
        in_label = ("In distribution (each replicate: the card's rates and histograms re-measured on a random half "
                    "of the validation rows of the model's own sources, mixtures drawn from the other half)"
                    if resplit_in else "In distribution")
        for label, data, bucket in (("Off distribution (text of a source the model never saw)", off, all_off),
                                    (in_label, ind, all_in)):
            if data is None:
                continue
            rows = rel_evaluate(np.asarray(data[0]), np.asarray(data[1], dtype=bool), card, args, label[:3],
                                resplit=resplit_in and bucket is all_in)
            bucket.extend(rows)
            per_case.setdefault(name, {}).update(rel_summary(rows if bucket is all_off else [],
                                                             rows if bucket is all_in else []))
            lines += [f"{label}:", "", *rel_table(rows), "", *rel_goals(rows if bucket is all_off else [],
                                                                          rows if bucket is all_in else []), ""]
    lines += ["All cases together: " + " ".join(rel_goals(all_off, all_in)),
              f"Run time {time.perf_counter() - t0:.0f} s."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        key = ("loso_models" if args.loso_root else "stand_ins" if args.model == "quick-loso"
               else "shipped" if args.model == "shipped" else f"model:{Path(args.model).name}")
        key += f"+labelled{args.labelled:g}" if args.labelled > 0 else ""
        summary = json.loads(RELIABILITY_JSON.read_text()) if RELIABILITY_JSON.exists() else {}
        summary[key] = {"date": dt.date.today().isoformat(), "reps": args.reps, "seed": args.seed,
                        "cases": per_case, "all": rel_summary(all_off, all_in)}
        RELIABILITY_JSON.write_text(json.dumps(summary, indent=2) + "\n")
        what = ("--loso-root " + str(args.loso_root)) if args.loso_root else f"--model {args.model}" + (
            f" --heldout {args.heldout}" if args.heldout else "")
        what += f" --labelled {args.labelled:g}" if args.labelled > 0 else ""
        kind = ("leave-one-source-out models" if args.loso_root else "stand-in models" if args.model == "quick-loso"
                else "shipped model, in distribution" if args.model == "shipped" else f"model {Path(args.model).name}")
        title = f"{REL_TITLE}: {kind}" + (f", {args.labelled:.0%} of each mixture labelled" if args.labelled > 0 else "")
        section = (f"## {title}, {dt.date.today().isoformat()}\n\n`python benchmarks/ratio_accuracy.py "
                   f"--reliability {what}` (checks and verdict: docs/ratio.md)\n\n{body}")
        replace_section(title, section)
        print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shipped",
                    help="shipped, quick (TF-IDF stand-in), quick-loso (leave-one-source-out stand-ins) or a model DIR")
    ap.add_argument("--reliability", action="store_true", help="the reliability benchmark (issue 14)")
    ap.add_argument("--heldout", type=Path, help="with --model DIR: labelled text the model never saw (JSONL)")
    ap.add_argument("--indist", type=Path, help="with --model DIR: labelled in-distribution text [default: "
                    "the validation rows of sources not in --heldout]")
    ap.add_argument("--loso-root", type=Path, help="directories <source>/ each with a model and heldout.jsonl")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "synthfilter-bench" / "ratio_reliability",
                    help="scores and stand-in models are kept here between runs")
    ap.add_argument("--max-n", type=int, default=3000, help="largest mixture (reliability benchmark)")
    ap.add_argument("--labelled", type=float, default=0.0,
                    help="reliability benchmark: give this share of each mixture's records their provenance")
    ap.add_argument("--reps", type=int, default=20, help="random mixtures per cell")
    ap.add_argument("--fill", type=float, default=0.9, help="mixture size as a share of the largest possible")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    ap.add_argument("--scores-cache", type=Path, help="reuse/save the validation scores and card here (.npz)")
    args = ap.parse_args(argv)
    if args.reliability:
        return reliability_main(args)
    if args.model not in ("shipped", "quick"):
        ap.error("--model DIR and quick-loso are for --reliability")
    res = run(args)
    body, ok = summarise(res, args)
    print(body)
    if not args.no_write and args.model == "shipped":
        section = (f"{SECTION}, {dt.date.today().isoformat()}\n\n`python benchmarks/ratio_accuracy.py` "
                   f"(method and defaults: docs/ratio.md)\n\n{body}")
        replace_section(TITLE, section)
        print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
