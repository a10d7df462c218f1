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

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "detector"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Target ratio accuracy (issue 5)"
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


def oracle_human_kept(scores: np.ndarray, y: np.ndarray, target: float) -> float:
    """Human share kept by the best threshold on the same scores, chosen with the true labels."""
    if y.mean() <= target:
        return 1.0
    order = np.argsort(-scores, kind="stable")
    ys = y[order]
    # After dropping the first k by score: machines left / records left.
    m_left = ys.sum() - np.concatenate(([0], np.cumsum(ys)))
    n_left = len(ys) - np.arange(len(ys) + 1)
    ok = m_left <= target * n_left
    k = int(np.argmax(ok))
    # Records with the same score cannot be split by a threshold: extend the cut to the tie's end.
    if 0 < k < len(ys):
        s_cut = scores[order][k - 1]
        while k < len(ys) and scores[order][k] == s_cut:
            k += 1
    h_left = (~ys[k:]).sum()
    return float(h_left / (~y).sum())


def run(args: argparse.Namespace) -> dict:
    texts, y_all = load_jsonl(DATA / "validation.jsonl")
    t0 = time.perf_counter()
    cache = args.scores_cache
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            scores_all, card, model_name = z["scores"], json.loads(str(z["card"])), str(z["model"])
    elif args.model == "shipped":
        scores_all, card, model_name = score_shipped(texts)
    else:
        scores_all, card, model_name = score_quick(texts, args.seed)
    if cache is not None and not cache.exists():
        np.savez(cache, scores=scores_all, card=json.dumps(card), model=model_name)
    card = card_with_validation_points(card, scores_all, y_all)
    score_s = time.perf_counter() - t0
    ids_all = np.array([f"validation-{i}" for i in range(len(texts))])
    rng = np.random.default_rng(args.seed)
    cells: dict[tuple[float, float], list[dict]] = {(s, t): [] for s in SHARES for t in TARGETS}
    method_err: dict[tuple[float, str], list[float]] = {}
    t1 = time.perf_counter()
    for rep in range(args.reps):
        for share in SHARES:
            rows = build_mixture(y_all, share, args.fill, rng)
            s, y = scores_all[rows], y_all[rows]
            prov = np.zeros(len(rows), dtype=np.int8)
            truth = float(y.mean())
            for m in METHODS:
                e = estimate_prevalence(s, prov, card, method=m, n_boot=0)
                method_err.setdefault((share, m), []).append(abs(e.share - truth))
            u = record_uniform(args.seed, ids_all[rows])
            for target in TARGETS:
                for strategy in ("threshold", "uniform"):
                    plan = plan_downsampling(
                        s, prov, u, target, strategy=strategy, card=card, n_boot=args.boot, seed=rep, safety=args.safety
                    )
                    est = plan.before
                    kept = plan.keep
                    cells[(share, target)].append(
                        {
                            "strategy": strategy,
                            "truth": truth,
                            "n": len(rows),
                            "err": abs(est.share - truth),
                            "naive_err": abs(est.naive_share - truth),
                            "covered": est.ci95[0] <= truth <= est.ci95[1],
                            "kept_share": float(y[kept].mean()) if kept.any() else 0.0,
                            "est_after": plan.share_after,
                            "after_covered": plan.ci95_after[0] <= (float(y[kept].mean()) if kept.any() else 0.0)
                            <= plan.ci95_after[1],
                            "human_kept": float(kept[~y].mean()),
                            "oracle_human_kept": oracle_human_kept(s, y, target),
                            "weak": plan.weak_detector,
                            "method": est.method,
                        }
                    )
    return {
        "model": model_name,
        "card": {k: card.get(k) for k in ("train_prior", "operating_points")},
        "score_seconds": score_s,
        "run_seconds": time.perf_counter() - t1,
        "cells": cells,
        "method_err": method_err,
    }


def summarise(res: dict, args: argparse.Namespace) -> tuple[str, bool]:
    lines = []
    cells = res["cells"]
    lines.append(
        f"Detector: {res['model']}; card train_prior {res['card']['train_prior']}. "
        f"{args.reps} random mixtures per cell ({args.fill:.0%} of the largest mixture the split allows), "
        f"{args.boot} bootstrap replicates, safety `{args.safety}`, seed {args.seed}. "
        "Figures are means over the mixtures; `max` columns are the worst mixture."
    )
    lines.append("")
    lines.append(
        "| true share | target | n | est. abs err (method) | naive CC abs err | CI covers | kept true share (mean / max) "
        "| human kept | oracle human kept | gap (worst) | weak-detector flag |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    ok_err = ok_share = ok_human = True
    coverage_hits = coverage_total = 0
    for (share, target), rows in cells.items():
        rs = [r for r in rows if r["strategy"] == "threshold"]
        err = np.mean([r["err"] for r in rs])
        naive = np.mean([r["naive_err"] for r in rs])
        cov = np.mean([r["covered"] for r in rs])
        coverage_hits += sum(r["covered"] for r in rs)
        coverage_total += len(rs)
        ks = [r["kept_share"] for r in rs]
        hk = np.mean([r["human_kept"] for r in rs])
        ohk = np.mean([r["oracle_human_kept"] for r in rs])
        gap = max(r["oracle_human_kept"] - r["human_kept"] for r in rs)
        weak = np.mean([r["weak"] for r in rs])
        ok_err &= err <= 0.02
        ok_share &= max(ks) <= target + 0.02
        ok_human &= gap <= 0.05
        lines.append(
            f"| {share:.0%} | {target:.0%} | {rs[0]['n']} | {err * 100:.2f} pt ({rs[0]['method']}) | {naive * 100:.2f} pt "
            f"| {cov:.0%} | {np.mean(ks):.1%} / {max(ks):.1%} | {hk:.1%} | {ohk:.1%} | {gap * 100:.1f} pt | {weak:.0%} |"
        )
    coverage = coverage_hits / max(coverage_total, 1)
    lines.append("")
    lines.append("Strategy `uniform` on the same mixtures (kept true share mean / max, human kept):")
    lines.append("")
    lines.append("| true share | target | kept true share (mean / max) | human kept | oracle human kept |")
    lines.append("|---|---|---|---|---|")
    for (share, target), rows in cells.items():
        rs = [r for r in rows if r["strategy"] == "uniform"]
        ks = [r["kept_share"] for r in rs]
        lines.append(
            f"| {share:.0%} | {target:.0%} | {np.mean(ks):.1%} / {max(ks):.1%} | {np.mean([r['human_kept'] for r in rs]):.1%} "
            f"| {np.mean([r['oracle_human_kept'] for r in rs]):.1%} |"
        )
    lines.append("")
    lines.append("Estimator comparison, mean absolute error in points (no known provenance):")
    lines.append("")
    lines.append("| true share | " + " | ".join(METHODS) + " |")
    lines.append("|---|" + "---|" * len(METHODS))
    for share in SHARES:
        errs = [np.mean(res["method_err"][(share, m)]) * 100 for m in METHODS]
        lines.append(f"| {share:.0%} | " + " | ".join(f"{e:.2f}" for e in errs) + " |")
    lines.append("")
    lines.append(
        f"Goals: estimate within 2 pt in every cell: {'yes' if ok_err else 'NO'}; interval covers the truth in "
        f"{coverage:.0%} of mixtures (goal >= 90 %): {'yes' if coverage >= 0.9 else 'NO'}; kept share <= target + 2 pt "
        f"in every mixture: {'yes' if ok_share else 'NO'}; human kept within 5 pt of the oracle in every mixture: "
        f"{'yes' if ok_human else 'NO'}."
    )
    lines.append(f"Scoring took {res['score_seconds']:.0f} s, the estimates and plans {res['run_seconds']:.0f} s.")
    return "\n".join(lines), ok_err and coverage >= 0.9 and ok_share and ok_human


def write_results(body: str) -> None:
    """Replace this benchmark's section of RESULTS.md (or append it), leaving the others alone."""
    stamp = dt.date.today().isoformat()
    section = f"{SECTION}\n\n_Run {stamp} with `python benchmarks/ratio_accuracy.py`._\n\n{body}\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start >= 0:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("shipped", "quick"), default="shipped")
    ap.add_argument("--reps", type=int, default=20, help="random mixtures per cell")
    ap.add_argument("--fill", type=float, default=0.9, help="mixture size as a share of the largest possible")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--safety", choices=("upper", "point"), default="upper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    ap.add_argument("--scores-cache", type=Path, help="reuse/save the validation scores and card here (.npz)")
    args = ap.parse_args(argv)
    res = run(args)
    body, ok = summarise(res, args)
    print(body)
    if not args.no_write and args.model == "shipped":
        write_results(body)
        print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
