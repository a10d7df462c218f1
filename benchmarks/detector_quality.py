"""Detector quality and speed (issue 4): validation metrics, per-domain fairness, per-generator
and per-length breakdowns, one-core throughput on ~3 KB documents, and (``--holdout``) models
retrained with a whole source left out and scored on it.

    python benchmarks/detector_quality.py                 # shipped model, quality + speed
    python benchmarks/detector_quality.py --holdout       # + leave-one-source-out retraining (~25 min)
    python benchmarks/detector_quality.py --write-results # replace the section in RESULTS.md
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from synthfilter.detect.evaluate import load_labelled, summarise, threshold_at_fpr, tpr_at_fpr  # noqa: E402
from synthfilter.detect.model import Detector, default_model_path  # noqa: E402
from _results import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data" / "detector"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
TITLE = "Detector quality (issue 4)"
SECTION = f"## {TITLE}"
GROUPS = ["domain", "generator", "source"]


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    if n == 0:
        return float("nan")
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + half) / (1 + z * z / n)


def fairness_table(data, proba: np.ndarray, threshold: float, min_humans: int = 0) -> tuple[float, list[tuple]]:
    """Overall human FPR and (domain, humans, FP, FPR, ratio, 95 % upper bound) per domain."""
    human = data.y == 0
    flagged = proba >= threshold
    overall = float(flagged[human].mean())
    rows = []
    for dom in sorted(set(data.groups["domain"][human].tolist())):
        m = human & (data.groups["domain"] == dom)
        n, k = int(m.sum()), int(flagged[m].sum())
        if n < min_humans:
            continue
        rows.append((dom, n, k, k / n, (k / n) / overall if overall else float("nan"), wilson_upper(k, n)))
    return overall, rows


def excess_test(rows: list[tuple], overall: float, factor: float = 3.0) -> list[tuple]:
    """Domains whose human FPR is significantly above ``factor`` x the overall rate.

    One-sided exact binomial test per domain of H0: FPR <= factor * overall, Holm-corrected
    over the domains tested: (domain, flagged, humans, p, Holm-adjusted p). With a few hundred
    human texts per split and an FPR near 1 %, one flagged text moves a small domain's ratio by
    several units, so the point ratio alone cannot tell a biased model from noise.
    """
    from scipy.stats import binomtest

    bound = min(factor * overall, 1.0)
    tests = sorted(((dom, k, n, binomtest(k, n, bound, alternative="greater").pvalue) for dom, n, k, *_ in rows),
                   key=lambda r: r[3])
    out, running = [], 0.0
    for i, (dom, k, n, pv) in enumerate(tests):
        running = max(running, min(1.0, pv * (len(tests) - i)))
        out.append((dom, k, n, pv, running))
    return out


def cv_fairness(card: dict, min_humans: int = 20) -> dict | None:
    """The same ratio on the card's out-of-fold training scores (about 6x more human texts)."""
    m = card.get("metrics", {})
    cv = m.get("calibration_share") or m.get("cross_validation") or {}
    table = cv.get("groups", {}).get("domain")
    if not table or not cv.get("fpr"):
        return None
    overall = cv["fpr"]
    rows = [(dom, r["n_human"], round(r["fpr"] * r["n_human"]), r["fpr"], r["fpr"] / overall)
            for dom, r in table.items() if r.get("fpr") is not None and r["n_human"] >= min_humans]
    worst = max(rows, key=lambda r: r[4])
    return {"overall": overall, "n_human": cv["n_human"], "worst_domain": worst[0], "max_ratio": worst[4],
            "rows": rows, "excess": excess_test([(d, n, k) for d, n, k, *_ in rows], overall)}


def length_buckets(data, proba: np.ndarray) -> list[tuple]:
    lengths = np.array([len(" ".join(t.split())) for t in data.texts])
    out = []
    for lo, hi in ((0, 500), (500, 1000), (1000, 2000), (2000, 10**9)):
        m = (lengths >= lo) & (lengths < hi)
        s = summarise(data.y[m], proba[m], 0.5)
        out.append((f"{lo}-{hi if hi < 10**9 else 'inf'}", int(m.sum()), s["n_human"], s["auroc"],
                    tpr_at_fpr(data.y[m], proba[m], 0.05)))
    return out


def realistic_documents(texts: list[str], n: int, target_bytes: int = 3000) -> list[str]:
    """Consecutive validation texts joined until ~target_bytes, cut at a word boundary."""
    docs, parts, size, i = [], [], 0, 0
    while len(docs) < n:
        t = texts[i % len(texts)]
        i += 1
        parts.append(t)
        size += len(t.encode("utf-8")) + 1
        if size >= target_bytes:
            doc = " ".join(parts).encode("utf-8")[:target_bytes].decode("utf-8", "ignore")
            docs.append(doc[: doc.rfind(" ")])
            parts, size = [], 0
    return docs


def throughput(det: Detector, docs: list[str], runs: int = 3) -> dict:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    det.predict_proba(docs[:256])  # warm caches
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for start in range(0, len(docs), 512):
            det.predict_proba(docs[start : start + 512])
        best = min(best, time.perf_counter() - t0)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    # Where the time goes, per 1,000 documents: text views (normalise, tokenise, style vector),
    # the components (LMs, expected surprisal, TF-IDF heads), the experts and the calibration map.
    stages = {"views": 0.0, "components": 0.0, "experts + calibration": 0.0}
    for start in range(0, len(docs), 512):
        batch = docs[start : start + 512]
        t0 = time.perf_counter()
        views = det.components.views(batch)
        t1 = time.perf_counter()
        x = det.components.features_from_views(views)
        t2 = time.perf_counter()
        det.calibrator(det.raw_from_features(x))
        t3 = time.perf_counter()
        for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
            stages[name] += dt
    return {"docs": len(docs), "mean_bytes": n_bytes / len(docs), "seconds": best,
            "docs_per_s": len(docs) / best, "mb_per_s": n_bytes / best / 1e6,
            "ms_per_1000_docs": {k: round(v / len(docs) * 1e6, 1) for k, v in stages.items()}}


def holdout(train_path: Path, val_path: Path, field: str, values: list[str], seed: int, light: bool = False,
            save: Path | None = None) -> list[dict]:
    """Retrain without each value of ``field``; score every row (train + validation) that has it.

    ``light``: 2 folds of cross-fitting instead of 3 (same features, experts and calibration).
    Fuller protocols (generator families, adaptation): benchmarks/detector_generalisation.py.
    """
    from synthfilter.detect.train import TrainParams, fit_detector, write_model

    train = load_labelled([train_path], group_fields=[field, "source", "generator"])
    val = load_labelled([val_path], group_fields=[field])
    out = []
    for value in values:
        keep = train.groups[field] != value
        idx = np.flatnonzero(keep)
        params = TrainParams()
        if light:
            params.folds = 2
        result = fit_detector([train.texts[i] for i in idx], train.y[idx], params, seed,
                              cells=train.groups["source"][idx], generators=train.groups["generator"][idx])
        with tempfile.TemporaryDirectory() as tmp:
            write_model(Path(tmp), result, params, {"model_id": f"holdout-{value}@0", "operating_points": []})
            det = Detector.load(tmp)
            texts = [t for t, g in zip(train.texts, train.groups[field]) if g == value]
            texts += [t for t, g in zip(val.texts, val.groups[field]) if g == value]
            y = np.concatenate([train.y[~keep], val.y[val.groups[field] == value]])
            p = det.predict_proba(texts)
        thr = threshold_at_fpr(result.cal_proba[train.y[idx][result.cal_idx] == 0], 0.01)
        s = summarise(y, p, thr)
        out.append({"field": field, "value": value, "recipe": "light" if light else "full", "n": s["n"], "n_human": s["n_human"], "auroc": s["auroc"],
                    "tpr_at_fpr1": s["tpr_at_fpr1"], "tpr_at_fpr5": s["tpr_at_fpr5"], "ece": s["ece"],
                    "fpr_at_train_1pct_threshold": s["fpr"], "tpr_at_train_1pct_threshold": s["tpr"]})
        print(json.dumps(out[-1]), flush=True)
        if save is not None:
            save.write_text(json.dumps(out, indent=2) + "\n")
    return out


def fmt(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render(report: dict) -> str:
    v = report["validation"]
    lines = [SECTION, "", "_`python benchmarks/detector_quality.py`_"
             f" — model `{report['model_id']}` (sha256 `{report['model_sha256'][:16]}…`), "
             f"{report['date']}, {report['machine']}", ""]
    lines += ["Validation split (`validation.jsonl`, never used for fitting or for choosing hyper-parameters "
              "or thresholds):", "",
              "| metric | measured | goal | met |", "|---|---:|---:|---|",
              f"| AUROC | {fmt(v['auroc'], '.4f')} | ≥ 0.95 | {'yes' if v['auroc'] >= 0.95 else 'no'} |",
              f"| TPR at 1 % FPR | {fmt(v['tpr_at_fpr1'])} | ≥ 0.50 | {'yes' if v['tpr_at_fpr1'] >= 0.5 else 'no'} |",
              f"| ECE (15 bins) | {fmt(v['ece'], '.4f')} | ≤ 0.03 | {'yes' if v['ece'] <= 0.03 else 'no'} |",
              f"| TPR at 5 % FPR | {fmt(v['tpr_at_fpr5'])} | | |"]
    for name, f in report["fairness"].items():
        lines.append(f"| worst domain human FPR / overall, `{name}` point (all domains) | "
                     f"{fmt(f['max_ratio_all'], '.2f')} | ≤ 3 | {'yes' if f['max_ratio_all'] <= 3 else 'no'} |")
        lines.append(f"| same, domains with ≥ 20 human texts | {fmt(f['max_ratio_20'], '.2f')} | ≤ 3 | "
                     f"{'yes' if f['max_ratio_20'] <= 3 else 'no'} |")
        sig = [r[0] for r in f["excess"] if r[4] < 0.05]
        lines.append(f"| domains significantly above 3 × overall, `{name}` point (exact binomial, Holm, α = 0.05) | "
                     f"{', '.join(sig) if sig else 'none'} (smallest adjusted p {f['excess'][0][4]:.2f}) | | |")
    cvf = report.get("cv_fairness")
    if cvf:
        sig = [r[0] for r in cvf["excess"] if r[4] < 0.05]
        lines.append(f"| worst domain human FPR / overall, `default` point, out-of-fold training scores "
                     f"({cvf['n_human']:,} human texts) | {cvf['max_ratio']:.2f} ({cvf['worst_domain']}) | ≤ 3 | "
                     f"{'yes' if cvf['max_ratio'] <= 3 else 'no'} |")
        lines.append(f"| same, domains significantly above 3 × overall (Holm, α = 0.05) | "
                     f"{', '.join(sig) if sig else 'none'} (smallest adjusted p {cvf['excess'][0][4]:.2f}) | | |")
    t = report["throughput"]
    lines.append(f"| throughput, one core, {t['mean_bytes']:.0f}-byte docs | {t['docs_per_s']:,.0f} docs/s, "
                 f"{t['mb_per_s']:.2f} MB/s | ≥ 2,000 docs/s | {'yes' if t['docs_per_s'] >= 2000 else 'no'} |")
    lines += ["", "Scoring time per 1,000 documents of ~3 KB, one core: " + ", ".join(
        f"{k} {v:.0f} ms" for k, v in t["ms_per_1000_docs"].items()) + "."]
    lines += ["", "Operating points (thresholds chosen on out-of-fold training scores, measured on validation):", "",
              "| name | threshold | TPR | FPR |", "|---|---:|---:|---:|"]
    for p in report["operating_points"]:
        lines.append(f"| {p['name']} | {p['threshold']:.4f} | {p['tpr']:.3f} | {p['fpr']:.4f} |")
    for name, f in report["fairness"].items():
        lines += ["", f"Human false positives per domain at the `{name}` point (overall human FPR "
                      f"{f['overall']:.4f}; 95 % Wilson upper bound in the last column):", "",
                  "| domain | human texts | flagged | FPR | × overall | FPR 95 % upper |", "|---|---:|---:|---:|---:|---:|"]
        for dom, n, k, fpr, ratio, up in f["rows"]:
            lines.append(f"| {dom} | {n} | {k} | {fpr:.3f} | {fmt(ratio, '.2f')} | {up:.3f} |")
    if cvf:
        lines += ["", f"Human false positives per domain at the `default` point on the out-of-fold training scores "
                      f"(overall human FPR {cvf['overall']:.4f}; p: one-sided exact binomial test of FPR ≤ 3 × overall, "
                      "Holm-adjusted):", "",
                  "| domain | human texts | flagged | FPR | × overall | adjusted p |", "|---|---:|---:|---:|---:|---:|"]
        adj = {r[0]: r[4] for r in cvf["excess"]}
        for dom, n, k, fpr, ratio in cvf["rows"]:
            lines.append(f"| {dom} | {n} | {k} | {fpr:.3f} | {ratio:.2f} | {adj[dom]:.2f} |")
    lines += ["", "Per generator (machine texts only; TPR at the `default` and `fpr5` thresholds) and per source:", "",
              "| group | n | AUROC | TPR default | TPR fpr5 |", "|---|---:|---:|---:|---:|"]
    for g in ("generator", "source"):
        for value, r in v["groups"][g].items():
            if value == "human":
                continue
            lines.append(f"| {g}: {value} | {r['n']} | {fmt(r['auroc'])} | {fmt(r['tpr'])} | "
                         f"{fmt(report['tpr_fpr5_by_group'][g].get(value))} |")
    lines += ["", "Per length (characters after whitespace collapsing):", "",
              "| length | n | human | AUROC | TPR at 5 % FPR |", "|---|---:|---:|---:|---:|"]
    for b, n, nh, au, tpr in report["length"]:
        lines.append(f"| {b} | {n} | {nh} | {fmt(au)} | {fmt(tpr)} |")
    if report.get("holdout"):
        lines += ["", "Generalisation: retrained with one whole source left out (same recipe and seed), scored on "
                      "every row of that source (train + validation). The threshold is the 1 % FPR point of the "
                      "held-out model's own training data, so its FPR column shows how the operating point drifts "
                      "on unseen data:", "",
                  "| held out | recipe | n | human | AUROC | TPR@1%FPR | TPR@5%FPR | ECE | FPR at train 1 % threshold |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in report["holdout"]:
            lines.append(f"| {r['field']}: {r['value']} | {r.get('recipe', 'full')} | {r['n']} | {r['n_human']} | "
                         f"{fmt(r['auroc'])} | "
                         f"{fmt(r['tpr_at_fpr1'])} | {fmt(r['tpr_at_fpr5'])} | {fmt(r['ece'])} | "
                         f"{fmt(r['fpr_at_train_1pct_threshold'])} |")
    return "\n".join(lines) + "\n"


def _holdout_sources(args) -> list[str]:  # noqa: ANN001
    if args.holdout_values:
        return [v.strip() for v in args.holdout_values.split(",") if v.strip()]
    data = load_labelled([args.data_dir / "train.jsonl"], group_fields=["source"])
    return sorted(set(data.groups["source"].tolist()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--docs", type=int, default=2000, help="documents for the throughput run")
    ap.add_argument("--holdout", action="store_true", help="retrain leaving each source out (slow)")
    ap.add_argument("--holdout-json", type=Path, default=None, help="reuse held-out results from this file")
    ap.add_argument("--holdout-light", action="store_true", help="2 folds of cross-fitting instead of 3")
    ap.add_argument("--holdout-values", default=None, help="comma-separated sources to hold out [default: all]")
    ap.add_argument("--holdout-only", action="store_true", help="skip the validation and speed runs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)

    if args.holdout_only:
        sources = _holdout_sources(args)
        holdout(args.data_dir / "train.jsonl", args.data_dir / "validation.jsonl", "source", sources, seed=0,
                light=args.holdout_light, save=args.holdout_json)
        return 0
    det = Detector.load(args.model or default_model_path())
    val = load_labelled([args.data_dir / "validation.jsonl"], group_fields=GROUPS)
    proba = det.predict_proba(val.texts)
    points = {p["name"]: p for p in det.card["operating_points"]}
    thr = points["default"]["threshold"]
    summary = summarise(val.y, proba, thr, val.groups, GROUPS)
    fpr5_thr = points["fpr5"]["threshold"]
    tpr_fpr5 = {g: {value: r["tpr"] for value, r in summarise(val.y, proba, fpr5_thr, val.groups, [g])["groups"][g].items()}
                for g in ("generator", "source")}
    fairness = {}
    for name in ("default", "fpr5"):
        overall, rows = fairness_table(val, proba, points[name]["threshold"])
        ratios_all = [r[4] for r in rows]
        ratios_20 = [r[4] for r in rows if r[1] >= 20]
        fairness[name] = {"overall": overall, "rows": rows, "max_ratio_all": max(ratios_all),
                          "max_ratio_20": max(ratios_20), "excess": excess_test(rows, overall)}
    report = {
        "model_id": det.model_id, "model_sha256": det.sha256, "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores",
        "validation": summary, "operating_points": det.card["operating_points"], "fairness": fairness,
        "tpr_fpr5_by_group": tpr_fpr5, "length": length_buckets(val, proba),
        "cv_fairness": cv_fairness(det.card),
    }
    report["throughput"] = throughput(det, realistic_documents(val.texts, args.docs))
    print(f"validation: AUROC {summary['auroc']:.4f}  TPR@1%FPR {summary['tpr_at_fpr1']:.3f}  "
          f"TPR@5%FPR {summary['tpr_at_fpr5']:.3f}  ECE {summary['ece']:.4f}")
    for name, f in fairness.items():
        sig = [r[0] for r in f["excess"] if r[4] < 0.05]
        print(f"fairness @{name}: overall human FPR {f['overall']:.4f}, worst domain ratio {f['max_ratio_all']:.2f} "
              f"(domains with >= 20 humans: {f['max_ratio_20']:.2f}); significantly above 3x: {sig or 'none'}")
    cvf = report["cv_fairness"]
    if cvf:
        print(f"fairness @default, out-of-fold training scores ({cvf['n_human']} humans): overall FPR "
              f"{cvf['overall']:.4f}, worst domain {cvf['worst_domain']} {cvf['max_ratio']:.2f}x; significantly "
              f"above 3x: {[r[0] for r in cvf['excess'] if r[4] < 0.05] or 'none'}")
    t = report["throughput"]
    print(f"throughput (1 core): {t['docs_per_s']:,.0f} docs/s, {t['mb_per_s']:.2f} MB/s on {t['mean_bytes']:.0f}-byte docs")
    if args.holdout_json and args.holdout_json.exists():
        report["holdout"] = json.loads(args.holdout_json.read_text())
    elif args.holdout:
        report["holdout"] = holdout(args.data_dir / "train.jsonl", args.data_dir / "validation.jsonl", "source",
                                    _holdout_sources(args), seed=0, light=args.holdout_light,
                                    save=args.holdout_json)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.write_results:
        replace_section(TITLE, render(report))
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
