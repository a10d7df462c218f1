"""Target-ratio accuracy (issue 5): prevalence estimate, its interval and downsampling, on mixtures.

Mixtures of ``shared/data/detector/validation.jsonl`` at true synthetic shares 5/20/50/80 %, each
filtered to targets 10 % and 5 %. Per cell: absolute error of the chosen estimator and of naive
classify-and-count, interval coverage, true synthetic share of the kept output, share of human
records kept beside the oracle threshold (true labels, same scores) that just meets the target.

    python benchmarks/ratio_accuracy.py                  # the shipped detector (recorded figures)
    python benchmarks/ratio_accuracy.py --model quick    # a TF-IDF model trained here, for development
    python benchmarks/ratio_accuracy.py --no-write       # print only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

from synthfilter.ratio import estimate_prevalence, plan_downsampling, record_uniform
from _results import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "detector"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
TITLE = "Target ratio accuracy (issue 5)"
SECTION = f"## {TITLE}"
SHARES = (0.05, 0.20, 0.50, 0.80)
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


def run(args: argparse.Namespace) -> dict:
    texts, y_all = load_jsonl(DATA / "validation.jsonl")
    t0 = time.perf_counter()
    scores_all, card, model_name = load_scores(args, texts)
    card = card_with_validation_points(card, scores_all, y_all)
    score_s = time.perf_counter() - t0
    ids_all = np.array([f"validation-{i}" for i in range(len(texts))])
    rng = np.random.default_rng(args.seed)
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
                    est, kept = plan.before, plan.keep
                    kept_share = float(y[kept].mean()) if kept.any() else 0.0
                    plans.append({
                        "share": share, "target": target, "strategy": strategy, "safety": safety,
                        "truth": truth, "n": len(rows), "method": est.method,
                        "err": abs(est.share - truth), "naive_err": abs(est.naive_share - truth),
                        "covered": est.ci95[0] <= truth <= est.ci95[1],
                        "kept_share": kept_share, "est_after": plan.share_after,
                        "human_kept": float(kept[~y].mean()), "oracle_human_kept": oracle,
                        "weak": plan.weak_detector,
                    })
        # Honest check of the card's role: re-measure the operating points on one half of the
        # split and build the mixtures from the other half only (then swap the halves).
        half = rng.uniform(size=len(y_all)) < 0.5
        for a, b in ((half, ~half), (~half, half)):
            card_a = measured_card(card, scores_all[a], y_all[a])
            idx = np.flatnonzero(b)
            for share in SHARES:
                rows = idx[build_mixture(y_all[b], share, args.fill, rng)]
                truth = float(y_all[rows].mean())
                for m in METHODS:
                    e = estimate_prevalence(scores_all[rows], np.zeros(len(rows), np.int8), card_a, method=m,
                                            n_boot=args.boot, seed=rep)
                    estimates.append({"protocol": "halves", "share": share, "method": m, "err": e.share - truth,
                                      "covered": e.ci95[0] <= truth <= e.ci95[1]})
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
        "target + 2 pt):",
        "",
        "| true share | target | n | est. abs err (method) | naive CC abs err | CI covers | kept true share "
        "(mean / max) | human kept | oracle human kept | gap mean (worst) | weak-detector flag |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok_err = ok_share = ok_human = True
    cover_hits = cover_total = 0
    for share in SHARES:
        for target in TARGETS:
            rs = _select(plans, share=share, target=target, strategy="threshold", safety="upper")
            err = np.mean([r["err"] for r in rs])
            cov = np.mean([r["covered"] for r in rs])
            if target == TARGETS[0]:  # the estimate is the same for both targets: count it once
                cover_hits += sum(r["covered"] for r in rs)
                cover_total += len(rs)
            ks = [r["kept_share"] for r in rs]
            gaps = [r["oracle_human_kept"] - r["human_kept"] for r in rs]
            ok_err &= bool(err <= 0.02)
            ok_share &= bool(max(ks) <= target + 0.02)
            ok_human &= bool(np.mean(gaps) <= 0.05)
            lines.append(
                f"| {share:.0%} | {target:.0%} | {rs[0]['n']} | {err * 100:.2f} pt ({rs[0]['method']}) "
                f"| {np.mean([r['naive_err'] for r in rs]) * 100:.2f} pt | {cov:.0%} "
                f"| {np.mean(ks):.1%} / {max(ks):.1%} | {np.mean([r['human_kept'] for r in rs]):.1%} "
                f"| {np.mean([r['oracle_human_kept'] for r in rs]):.1%} | {np.mean(gaps) * 100:.1f} pt "
                f"({max(gaps) * 100:.1f}) | {np.mean([r['weak'] for r in rs]):.0%} |"
            )
    coverage = cover_hits / max(cover_total, 1)
    lines += [
        "",
        "Same mixtures, other plans: `safety = point` (point estimate only) and strategy `uniform`:",
        "",
        "| true share | target | point: kept true share (mean / max) | point: human kept | point: gap mean (worst) "
        "| uniform: kept true share (mean / max) | uniform: human kept | oracle human kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for share in SHARES:
        for target in TARGETS:
            pt = _select(plans, share=share, target=target, strategy="threshold", safety="point")
            un = _select(plans, share=share, target=target, strategy="uniform")
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
        f"Goals (default plan): estimate within 2 pt in every cell: {'yes' if ok_err else 'NO'}; interval covers "
        f"the truth in {coverage:.0%} of mixtures (goal >= 90 %): {'yes' if coverage >= 0.9 else 'NO'}; kept true "
        f"share <= target + 2 pt in every mixture: {'yes' if ok_share else 'NO'}; human kept within 5 pt of the "
        f"oracle (mean per cell): {'yes' if ok_human else 'NO'}.",
        f"Calibration check on the whole validation split: mean score {res['calibration']['mean_score']:.3f} at a "
        f"true machine share of {res['calibration']['true_share']:.3f}; TPR at the card's default threshold "
        f"{_fmt(res['calibration']['tpr_validation'])} on validation (the shipped model) vs "
        f"{_fmt(res['calibration']['tpr_cross_validation'])} in cross-validation (the fold models the calibration map "
        "was fitted on).",
        f"Scoring took {res['score_seconds']:.0f} s, the estimates and plans {res['run_seconds']:.0f} s.",
    ]
    return "\n".join(lines), ok_err and coverage >= 0.9 and ok_share and ok_human


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("shipped", "quick"), default="shipped")
    ap.add_argument("--reps", type=int, default=20, help="random mixtures per cell")
    ap.add_argument("--fill", type=float, default=0.9, help="mixture size as a share of the largest possible")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    ap.add_argument("--scores-cache", type=Path, help="reuse/save the validation scores and card here (.npz)")
    args = ap.parse_args(argv)
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
