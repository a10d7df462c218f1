"""Recursive-training benchmark (issue 10): does synthfilter prevent model collapse?

A Kneser–Ney trigram model (``ngram.py``) is trained for 10 generations under four regimes and
sampled with LLM-style decoding (temperature 0.8, then top-p 0.9):

  human-only            every generation trains on a fresh draw of human text (the reference)
  replace               every generation trains only on the previous generation's output
  pool-50               fresh human text + as much text written by the previous generation's model
  pool-50+synthfilter   that pool through ``synthfilter run --target-ratio 0.1`` (near-dedup on),
                        with a detector from ``synthfilter train`` on the generation-0 model's
                        output vs human text (the company knows its own generator)

With ``--retrain-detector`` a fifth regime, ``pool-50+synthfilter, retrained detector``, trains a
new detector every generation on the output of its current generator.

Every regime gets the same human draw in a given generation (draws are independent across
generations, from a pool disjoint from the test set and from the detector's human rows). Measured
per generation: perplexity on held-out human text, distinct-1/2/3 of generated text, tail
coverage, unigram KL from human text; for each filtered pool synthfilter's estimated synthetic
share against the truth (records carry a ``truth`` field that synthfilter never reads) and the
detector's AUROC on it. Human and generated text are written the same way (tokenised, then
``detokenize``), so layout cannot tell them apart.

    python benchmarks/collapse/run.py --quick        # < 10 min on 2 cores (the recorded figures)
    python benchmarks/collapse/run.py                # the full size
    python benchmarks/collapse/run.py --quick --retrain-detector
    python benchmarks/collapse/run.py --quick --no-record   # print only

Writes ``OUT/results.json``; unless ``--no-record``, this command's subsection of the section
"Model collapse (issue 10)" of benchmarks/RESULTS.md and the plot (``--plot``, by default
benchmarks/collapse/collapse.png). Same seed and synthfilter build: identical figures.
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ngram import EOS, KneserNeyTrigram, Sampler, Vocab, detokenize, tokenize  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = str(REPO.parent / "shared" / "data" / "detector" / "*.jsonl")
RESULTS = REPO / "benchmarks" / "RESULTS.md"
PLOT = REPO / "benchmarks" / "collapse" / "collapse.png"
SECTION = "## Model collapse (issue 10)"
REGIMES = ("human-only", "replace", "pool-50", "pool-50+synthfilter")
FILTERED = "pool-50+synthfilter"
RETRAINED = "pool-50+synthfilter, retrained detector"  # only with --retrain-detector
WORK_DIRS = {FILTERED: "filter", RETRAINED: "filter-retrained"}
KL_UNIFORM_WEIGHT = 0.01
_MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")  # the generated unigram distribution is mixed with 1 % uniform for KL


@dataclass(frozen=True)
class Settings:
    generations: int = 10
    human_per_generation: int = 1500  # human documents a generation trains on (half of a pool)
    test_docs: int = 470  # held-out human documents for perplexity and coverage
    detector_docs: int = 1200  # per class, for `synthfilter train` (20 % of them held out as --val)
    metric_tokens: int = 100_000  # generated tokens that distinct-n and KL are measured on
    temperature: float = 0.8
    top_p: float = 0.9
    target_ratio: float = 0.1
    min_tokens: int = 20
    max_tokens: int = 400
    seed: int = 0
    workers: int = 1  # synthfilter worker processes
    retrain_detector: bool = False  # a new detector each generation, on the current generator's output
    reject_repetitive: bool = False  # the filtered regimes run with --reject-repetitive


QUICK = Settings(human_per_generation=500, detector_docs=500, metric_tokens=40_000)


# -- data -------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    vocab: Vocab
    test: list[np.ndarray]
    detector_human: list[np.ndarray]
    pool: list[np.ndarray]  # the human documents generations draw from


def strip_markup(text: str) -> str:
    """Posts as prose: HTML tags removed, entities decoded. About 4 % of the human rows carry
    markup (mostly ``<br />``); a trigram model turns it into endless ``< br / >`` loops."""
    return " ".join(_MARKUP.sub(" ", html.unescape(text)).split())


def load_human_texts(patterns: list[str], text_field: str, label_field: str, human_label: str) -> list[str]:
    paths = sorted({p for pat in patterns for p in (glob.glob(pat) or [pat])})
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f"error: no such file: {', '.join(missing)}; pass --data with JSONL files of text with "
                         f"{label_field!r} = {human_label!r} rows (the default is the detector's training data, "
                         "../shared/data/detector/*.jsonl, beside the checkout)")
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if str(row.get(label_field)) == human_label:
                        texts.append(strip_markup(row[text_field]))
    if not texts:
        raise SystemExit(f"error: no rows with {label_field} == {human_label!r} in {', '.join(paths) or patterns}")
    return texts


def split_corpus(texts: list[str], s: Settings) -> Corpus:
    """Tokenise, shuffle (seeded) and split: held-out test, detector human side, generation pool."""
    vocab = Vocab()
    docs = [vocab.encode(tokenize(t), grow=True) for t in texts]
    docs = [d for d in docs if len(d) > 0]
    order = np.random.default_rng([s.seed, 1]).permutation(len(docs))
    docs = [docs[i] for i in order]
    n_test, n_det = s.test_docs, s.detector_docs
    if n_test + n_det + s.human_per_generation > len(docs):
        raise SystemExit(f"error: {len(docs)} human documents; need more than test ({n_test}) + detector "
                         f"({n_det}) + one generation ({s.human_per_generation}); lower the sizes")
    return Corpus(vocab, docs[:n_test], docs[n_test:n_test + n_det], docs[n_test + n_det:])


def human_draw(corpus: Corpus, s: Settings, generation: int) -> list[np.ndarray]:
    """A fresh draw of human documents for ``generation`` (without replacement within it)."""
    idx = np.random.default_rng([s.seed, 2, generation]).choice(len(corpus.pool), s.human_per_generation,
                                                               replace=False)
    return [corpus.pool[i] for i in sorted(idx)]


# -- metrics ----------------------------------------------------------------------------------------


def first_tokens(docs: list[np.ndarray], n: int) -> list[np.ndarray]:
    out, total = [], 0
    for d in docs:
        if total >= n:
            break
        out.append(d[: n - total])
        total += len(out[-1])
    return out


def distinct_n(docs: list[np.ndarray], n: int, vocab_size: int) -> float:
    """Unique n-grams / n-grams (within documents), the usual diversity measure."""
    keys = []
    for d in docs:
        if len(d) >= n:
            k = d[: len(d) - n + 1].copy()
            for i in range(1, n):
                k = k * vocab_size + d[i: len(d) - n + 1 + i]
            keys.append(k)
    if not keys:
        return 0.0
    all_keys = np.concatenate(keys)
    return float(len(np.unique(all_keys)) / len(all_keys))


def unigram_kl(reference: np.ndarray, generated: list[np.ndarray], vocab_size: int) -> float:
    """KL(human || model) in bits over word unigrams; the model side is its generated text's
    frequencies mixed with ``KL_UNIFORM_WEIGHT`` uniform so a word it never writes costs a
    finite amount."""
    g = np.bincount(np.concatenate(generated), minlength=vocab_size).astype(float)
    q = (1 - KL_UNIFORM_WEIGHT) * g / g.sum() + KL_UNIFORM_WEIGHT / vocab_size
    nz = reference > 0
    p = reference[nz] / reference.sum()
    return float((p * np.log2(p / q[nz])).sum())


def measure(model: KneserNeyTrigram, generated: list[np.ndarray], corpus: Corpus, s: Settings,
            test_unigrams: np.ndarray) -> dict:
    V = len(corpus.vocab)
    sample = first_tokens(generated, s.metric_tokens)
    test_types = np.flatnonzero(test_unigrams)
    return {
        "perplexity": model.perplexity(corpus.test),
        "distinct_1": distinct_n(sample, 1, V),
        "distinct_2": distinct_n(sample, 2, V),
        "distinct_3": distinct_n(sample, 3, V),
        # Share of the held-out human word types the model gives more than the uniform smoothing
        # floor, i.e. that it learned: rare words are most of the types, so this is the tail.
        "tail_coverage": float(model.seen[test_types].mean()),
        "unigram_kl_bits": unigram_kl(test_unigrams, sample, V),
        "train_tokens": model.n_tokens,
        "model_vocab": int(model.seen.sum()),
        "generated_doc_tokens": float(np.mean([len(d) for d in generated])),
    }


def human_reference(corpus: Corpus, s: Settings, test_unigrams: np.ndarray) -> dict:
    """The metrics of human text itself (a fresh draw stands in for 'generated' text)."""
    V = len(corpus.vocab)
    sample = first_tokens(human_draw(corpus, s, 10_000), s.metric_tokens)
    return {f"distinct_{n}": distinct_n(sample, n, V) for n in (1, 2, 3)} | {
        "unigram_kl_bits": unigram_kl(test_unigrams, sample, V)}


def _share(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.3f}"


def _gap(est: float | None, true: float) -> str:
    return "-" if est is None else f"{(est - true) * 100:+.1f} pt"


# -- synthfilter through its CLI --------------------------------------------------------------------


def _synthfilter(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "synthfilter", *args]
    # One thread per process: the benchmark is meant for a small shared CPU, and tree boosting
    # on a few hundred rows gains nothing from more.
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    with open(log, "ab") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"error: synthfilter {args[0]} exited {done.returncode}:\n{tail}")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def train_detector(work: Path, corpus: Corpus, machine: list[np.ndarray], s: Settings, name: str = "detector") -> dict:
    """``synthfilter train`` on a generator's output vs human text; 20 % held out as ``--val``."""
    v = corpus.vocab
    rows = [{"text": detokenize(v.decode(d)), "label": "human"} for d in corpus.detector_human]
    rows += [{"text": detokenize(v.decode(d)), "label": "machine"} for d in machine]
    order = np.random.default_rng([s.seed, 3]).permutation(len(rows))
    rows = [rows[i] for i in order]
    n_val = len(rows) // 5
    write_jsonl(work / f"{name}_val.jsonl", rows[:n_val])
    write_jsonl(work / f"{name}_train.jsonl", rows[n_val:])
    model_dir = work / name
    shutil.rmtree(model_dir, ignore_errors=True)
    _synthfilter(["train", str(work / f"{name}_train.jsonl"), "--val", str(work / f"{name}_val.jsonl"),
                  "--out", str(model_dir), "--seed", str(s.seed), "--quiet"], work / "synthfilter.log")
    card = json.loads((model_dir / "card.json").read_text())
    val = card.get("metrics", {}).get("validation", {})
    return {"path": str(model_dir), "train_rows": len(rows) - n_val, "val_rows": n_val,
            "val_auroc": val.get("auroc"), "val_tpr_at_fpr1": val.get("tpr_at_fpr1"),
            "train_prior": card.get("train_prior")}


def filter_pool(work: Path, name: str, generation: int, human: list[np.ndarray], synthetic: list[np.ndarray],
                corpus: Corpus, detector: Path, s: Settings) -> tuple[list[np.ndarray], dict]:
    """Write the pool, run ``synthfilter run --target-ratio``, read kept/ and report.json back."""
    v = corpus.vocab
    rows = [{"id": f"h{i}", "text": detokenize(v.decode(d)), "truth": "human"} for i, d in enumerate(human)]
    rows += [{"id": f"s{i}", "text": detokenize(v.decode(d)), "truth": "synthetic"} for i, d in enumerate(synthetic)]
    order = np.random.default_rng([s.seed, 4, generation]).permutation(len(rows))
    gdir = work / f"{name}_g{generation:02d}"
    shutil.rmtree(gdir, ignore_errors=True)
    (gdir / "in").mkdir(parents=True)
    write_jsonl(gdir / "in" / "pool.jsonl", [rows[i] for i in order])
    out = gdir / "out"
    _synthfilter(["run", str(gdir / "in"), "--out", str(out), "--target-ratio", str(s.target_ratio),
                  "--model", str(detector), "--seed", str(s.seed), "--workers", str(s.workers), "--quiet",
                  "--overwrite", "--annotate", *(["--reject-repetitive"] if s.reject_repetitive else []),
                  # The filter is the regime under test: it downsamples even when its reliability
                  # checks flag the detector (the report then says the kept share is unknown,
                  # and the verdict is recorded below), rather than ending the benchmark.
                  "--allow-unreliable-detector"], work / "synthfilter.log")
    kept = [json.loads(line) for p in sorted(out.glob("kept/**/*.jsonl")) for line in open(p, encoding="utf-8")]
    rejected = [json.loads(line) for p in sorted(out.glob("rejected/**/*.jsonl")) for line in open(p, encoding="utf-8")]
    report = json.loads((out / "report.json").read_text())
    syn = report["synthetic"]
    downsampled = [r for r in rejected if r["synthfilter"]["reason"] == "synthetic_downsampled"]
    deduplicated = kept + downsampled  # what the estimate is made on: the pool after deduplication
    true_before = sum(r["truth"] == "synthetic" for r in deduplicated) / max(len(deduplicated), 1)
    true_after = sum(r["truth"] == "synthetic" for r in kept) / max(len(kept), 1)
    reasons = Counter(r["synthfilter"]["reason"] for r in rejected)
    n_human = sum(r["truth"] == "human" for r in rows)
    from sklearn.metrics import roc_auc_score

    # The detector scores only the languages it was trained on: a record identified as another
    # language (a list of dates can read as one) carries no score, and is left out of the AUROC.
    scored = [r for r in deduplicated if r["synthfilter"]["score"] is not None]
    truth = [r["truth"] == "synthetic" for r in scored]
    auroc = roc_auc_score(truth, [r["synthfilter"]["score"] for r in scored]) if 0 < sum(truth) < len(truth) else None
    stats = {
        "detector": detector.name, "detector_auroc": auroc, "unscored": len(deduplicated) - len(scored),
        "pool": len(rows), "kept": len(kept), "rejected_by_reason": dict(sorted(reasons.items())),
        "estimated_share_before": syn["estimated_share_before"], "ci95_before": syn["ci95_before"],
        "true_share_before": true_before,
        "estimated_share_after": syn["estimated_share_after"], "ci95_after": syn["ci95_after"],
        "true_share_after": true_after,
        "reliability": (syn.get("reliability") or {}).get("verdict"),
        "human_kept": sum(r["truth"] == "human" for r in kept) / n_human,
        "synthetic_kept": sum(r["truth"] == "synthetic" for r in kept) / max(len(rows) - n_human, 1),
        # The report's share of records that loop (diversity.self_repeating_share), pool and kept.
        "looping_before": ((report.get("diversity") or {}).get("before") or {}).get("self_repeating_share"),
        "looping_after": ((report.get("diversity") or {}).get("after") or {}).get("self_repeating_share"),
    }
    docs = [v.encode(tokenize(r["text"])) for r in kept]
    return docs, stats


# -- the experiment ---------------------------------------------------------------------------------


def generate(model: KneserNeyTrigram, s: Settings, rng_key: list[int], n_docs: int) -> list[np.ndarray]:
    """At least ``n_docs`` documents and ``metric_tokens`` tokens from ``model``."""
    sampler = Sampler(model, temperature=s.temperature, top_p=s.top_p)
    rng = np.random.default_rng([s.seed, *rng_key])
    docs = sampler.sample_docs(n_docs, rng, s.min_tokens, s.max_tokens)
    while sum(len(d) for d in docs) < s.metric_tokens:
        docs += sampler.sample_docs(max(n_docs // 4, 1), rng, s.min_tokens, s.max_tokens)
    return docs


def regimes(s: Settings) -> tuple[str, ...]:
    return REGIMES + ((RETRAINED,) if s.retrain_detector else ())


def run(s: Settings, data: list[str], work: Path, text_field: str = "text", label_field: str = "label",
        human_label: str = "human", log=print) -> dict:
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    (work / "synthfilter.log").write_text("")
    corpus = split_corpus(load_human_texts(data, text_field, label_field, human_label), s)
    V = len(corpus.vocab)
    test_unigrams = np.bincount(np.concatenate(corpus.test), minlength=V)
    test_unigrams[EOS] = 0
    log(f"human documents: {len(corpus.test)} test, {len(corpus.detector_human)} detector, "
        f"{len(corpus.pool)} pool; vocabulary {V:,}")
    H = s.human_per_generation
    names = regimes(s)
    filtered_names = [r for r in names if r in (FILTERED, RETRAINED)]
    results: dict = {"settings": asdict(s), "data": data, "vocab": V, "regimes": list(names),
                     "human_reference": human_reference(corpus, s, test_unigrams),
                     "metrics": {r: [] for r in names}, "filter": {r: [] for r in filtered_names},
                     "retrained_detectors": []}

    gen0 = KneserNeyTrigram(human_draw(corpus, s, 0), V)
    out0 = generate(gen0, s, [0, 0], H)
    m0 = measure(gen0, out0, corpus, s, test_unigrams)
    models = {r: gen0 for r in names}
    outputs = {r: out0 for r in names}
    for r in names:
        results["metrics"][r].append(m0)
    log(f"g00 all regimes: ppl {m0['perplexity']:.1f}  distinct-2 {m0['distinct_2']:.3f}  "
        f"({time.perf_counter() - t0:.0f}s)")

    t = time.perf_counter()
    det_machine = generate(gen0, replace(s, metric_tokens=0), [9, 0], s.detector_docs)
    results["detector"] = train_detector(work, corpus, det_machine, s)
    log(f"detector: validation AUROC {results['detector']['val_auroc']:.4f} ({time.perf_counter() - t:.0f}s)")
    detectors = {r: Path(results["detector"]["path"]) for r in filtered_names}

    for g in range(1, s.generations + 1):
        if RETRAINED in names and g > 1:  # the company knows its current generator, too
            machine = generate(models[RETRAINED], replace(s, metric_tokens=0), [9, g], s.detector_docs)
            info = train_detector(work, corpus, machine, s, name=f"detector_g{g:02d}")
            results["retrained_detectors"].append({"generation": g, **info})
            detectors[RETRAINED] = Path(info["path"])
        human = human_draw(corpus, s, g)
        train = {"human-only": human, "replace": outputs["replace"][:H], "pool-50": human + outputs["pool-50"][:H]}
        notes = []
        for r in filtered_names:
            train[r], stats = filter_pool(work, WORK_DIRS[r], g, human, outputs[r][:H], corpus, detectors[r], s)
            results["filter"][r].append({"generation": g, **stats})
            notes.append(f"{r}: est {stats['estimated_share_before']:.3f} vs true {stats['true_share_before']:.3f}, "
                         f"kept {_share(stats['estimated_share_after'])} vs {stats['true_share_after']:.3f}, "
                         f"AUROC {stats['detector_auroc']:.4f}")
        for i, r in enumerate(names):
            if train[r]:
                models[r] = KneserNeyTrigram(train[r], V)
            else:  # the filter kept nothing it could vouch for: nothing to retrain on, the model stays
                notes.append(f"{r}: filter kept no record, model not retrained")
            outputs[r] = generate(models[r], s, [i + 1, g], H)
            results["metrics"][r].append(measure(models[r], outputs[r], corpus, s, test_unigrams))
        line = "  ".join(f"{r} {results['metrics'][r][-1]['perplexity']:.0f}/{results['metrics'][r][-1]['distinct_2']:.3f}"
                         for r in names)
        log(f"g{g:02d} ppl/distinct-2: {line}  | {' | '.join(notes)}  ({time.perf_counter() - t0:.0f}s)")
    results["seconds"] = time.perf_counter() - t0
    results["cpu_seconds"] = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                                 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    results["goals"] = goals(results)
    return results


def goals(res: dict) -> dict:
    m = res["metrics"]
    first = m["human-only"][0]
    out = {}
    for r in ("replace", "pool-50"):
        ppl_up = m[r][-1]["perplexity"] / first["perplexity"] - 1
        d2_down = 1 - m[r][-1]["distinct_2"] / first["distinct_2"]
        out[r] = {"perplexity_up": ppl_up, "distinct_2_down": d2_down, "met": ppl_up >= 0.2 and d2_down >= 0.2}
    ref = m["human-only"][-1]
    for r, series in res["filter"].items():
        f = m[r][-1]
        ppl_gap = f["perplexity"] / ref["perplexity"] - 1
        coverage = f["tail_coverage"] / ref["tail_coverage"]
        errs_before = [abs(x["estimated_share_before"] - x["true_share_before"]) for x in series]
        errs_after = [abs(x["estimated_share_after"] - x["true_share_after"]) for x in series
                      if x["estimated_share_after"] is not None]  # None: unknown (unreliable detector)
        out[r] = {"perplexity_vs_human_only": ppl_gap, "tail_coverage_vs_human_only": coverage,
                  "distinct_2_vs_human_only": f["distinct_2"] / ref["distinct_2"] - 1,
                  "met": abs(ppl_gap) <= 0.03 and coverage >= 0.95,
                  "estimate": {"max_error_before": max(errs_before, default=0.0),
                               "max_error_after": max(errs_after, default=0.0),
                               "met": max(errs_before + errs_after, default=0.0) <= 0.02}}
    return out


# -- recording --------------------------------------------------------------------------------------


STYLES = {"human-only": ("black", "-"), "replace": ("tab:red", "-"), "pool-50": ("tab:orange", "-"),
          FILTERED: ("tab:blue", "--"), RETRAINED: ("tab:green", ":")}


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = res["regimes"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=80)
    panels = ((axes[0], "perplexity", names), (axes[1], "perplexity", [r for r in names if r != "replace"]),
              (axes[2], "distinct_2", names))
    for ax, key, shown in panels:
        for r in shown:
            color, ls = STYLES[r]
            ax.plot(range(len(res["metrics"][r])), [x[key] for x in res["metrics"][r]], color=color, linestyle=ls,
                    marker="o", markersize=3, label=r)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
    axes[0].set_title("perplexity on held-out human text")
    axes[0].set_yscale("log")
    axes[1].set_title("the same, without replace")
    axes[2].set_title("distinct-2 of generated text")
    axes[2].axhline(res["human_reference"]["distinct_2"], color="grey", linewidth=0.8, linestyle=":")
    axes[2].text(0, res["human_reference"]["distinct_2"], "human text", color="grey", fontsize=7, va="bottom")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _share_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def markdown(res: dict) -> str:
    s, m, gl, names = res["settings"], res["metrics"], res["goals"], res["regimes"]
    G = s["generations"]
    first = m["human-only"][0]
    retrained = (" A second filtered regime gets a new detector every generation, trained the same way on the "
                 "output of its current generator." if RETRAINED in names else "")
    if s.get("reject_repetitive"):
        retrained += (" The filtered regimes run `synthfilter run --reject-repetitive`: records that repeat "
                      "themselves are rejected whatever their score.")
    lines = [
        f"### `{res['command']}`", "",
        f"{dt_now()}, {res['seconds'] / 60:.1f} min wall ({res.get('cpu_seconds', 0) / 60:.1f} CPU-min with "
        f"subprocesses) on a shared 2-core machine. Kneser–Ney trigram, temperature "
        f"{s['temperature']}, top-p {s['top_p']}; {s['human_per_generation']} human documents per generation "
        f"(a pool is those + as many synthetic), {s['test_docs']} held-out test documents, metrics of generated "
        f"text on its first {s['metric_tokens']:,} tokens; seed {s['seed']}. Detector: `synthfilter train` on "
        f"{res['detector']['train_rows']} rows of generation-0 output vs human text, validation AUROC "
        f"{res['detector']['val_auroc']:.4f} on {res['detector']['val_rows']} rows.{retrained}", "",
        f"Generation {G} (generation 0, shared by all regimes: perplexity {first['perplexity']:.1f}, "
        f"distinct-2 {first['distinct_2']:.3f}, tail coverage {first['tail_coverage']:.3f}):", "",
        "| regime | perplexity | vs gen 0 | vs human-only | distinct-1 | distinct-2 | distinct-3 | d-2 vs gen 0 "
        "| tail coverage | unigram KL (bits) | train tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = m["human-only"][-1]
    for r in names:
        x = m[r][-1]
        lines.append(
            f"| {r} | {x['perplexity']:.1f} | {_pct(x['perplexity'] / first['perplexity'] - 1)} | "
            f"{_pct(x['perplexity'] / ref['perplexity'] - 1)} | {x['distinct_1']:.3f} | {x['distinct_2']:.3f} | "
            f"{x['distinct_3']:.3f} | {_pct(x['distinct_2'] / first['distinct_2'] - 1)} | {x['tail_coverage']:.3f} | "
            f"{x['unigram_kl_bits']:.3f} | {x['train_tokens']:,} |")
    h = res["human_reference"]
    lines.append(f"| *human text* | | | | {h['distinct_1']:.3f} | {h['distinct_2']:.3f} | {h['distinct_3']:.3f} | "
                 f"| | {h['unigram_kl_bits']:.3f} | |")
    for key, title, fmt in (("perplexity", "Perplexity", "{:.0f}"), ("distinct_2", "Distinct-2", "{:.3f}")):
        lines += ["", f"{title} by generation:", "",
                  "| regime | " + " | ".join(str(g) for g in range(G + 1)) + " |", "|---|" + "---:|" * (G + 1)]
        for r in names:
            lines.append(f"| {r} | " + " | ".join(fmt.format(x[key]) for x in m[r]) + " |")
    for r, series in res["filter"].items():
        lines += ["", f"`{r}`: synthfilter on each pool (`--target-ratio {s['target_ratio']}`), estimated vs true "
                  "synthetic share of the deduplicated pool and of the kept output:", "",
                  "| gen | detector AUROC on the pool | estimate (95 % CI) | true | error | kept: estimate | kept: true "
                  "| error | human kept | synthetic kept | dropped as duplicates | looping records: pool / kept |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for x in series:
            lo, hi = x["ci95_before"] or (float("nan"), float("nan"))
            dups = x["rejected_by_reason"].get("exact_duplicate", 0) + x["rejected_by_reason"].get("near_duplicate", 0)
            loops = f" (+{x['rejected_by_reason']['repetitive']} loops)" if x["rejected_by_reason"].get("repetitive") else ""
            lines.append(
                f"| {x['generation']} | {x['detector_auroc']:.4f} | {x['estimated_share_before']:.3f} "
                f"({lo:.3f}–{hi:.3f}) | {x['true_share_before']:.3f} | "
                f"{(x['estimated_share_before'] - x['true_share_before']) * 100:+.1f} pt | "
                f"{_share(x['estimated_share_after'])} | {x['true_share_after']:.3f} | "
                f"{_gap(x['estimated_share_after'], x['true_share_after'])} | "
                f"{x['human_kept']:.1%} | {x['synthetic_kept']:.1%} | {dups}{loops} | "
                f"{_share_pct(x.get('looping_before'))} / {_share_pct(x.get('looping_after'))} |")
    lines += ["", "Goals:", ""]
    for r in ("replace", "pool-50"):
        lines.append(f"- {r}: perplexity {_pct(gl[r]['perplexity_up'])}, distinct-2 {_pct(-gl[r]['distinct_2_down'])} "
                     f"after {G} generations (goal +20 % / −20 %): {_met(gl[r]['met'])}")
    for r in res["filter"]:
        f, e = gl[r], gl[r]["estimate"]
        lines.append(f"- {r}: perplexity {_pct(f['perplexity_vs_human_only'])} vs human-only (goal within 3 %), "
                     f"tail coverage {f['tail_coverage_vs_human_only']:.1%} of human-only's (goal ≥ 95 %): "
                     f"{_met(f['met'])}; distinct-2 {_pct(f['distinct_2_vs_human_only'])} vs human-only")
        lines.append(f"- {r}, estimated synthetic share: largest error {e['max_error_before'] * 100:.1f} pt on the "
                     f"pools, {e['max_error_after'] * 100:.1f} pt on the kept output (goal ≤ 2 pt): {_met(e['met'])}")
    lines.append("")
    return "\n".join(lines)


def dt_now() -> str:
    import datetime as dt

    return dt.date.today().isoformat()


SECTION_INTRO = """Recursive training of a Kneser–Ney trigram model for 10 generations under four regimes
(`benchmarks/collapse/`, see its `run.py` docstring): `human-only` (fresh human text each
generation), `replace` (only the previous generation's output), `pool-50` (fresh human text + as
much of the previous generation's output) and `pool-50+synthfilter` (that pool through
`synthfilter run --target-ratio 0.1`, near-dedup on, detector from `synthfilter train`).
Perplexity and tail coverage (share of held-out human word types the model learned) on
held-out human text; distinct-n and unigram KL (human || model, bits) on generated text.
Each command below replaces only its own subsection.
"""


def write_section(path: Path, text: str) -> None:
    """Replace (or add) this command's subsection of this benchmark's section of RESULTS.md,
    leaving every other section and subsection alone."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + SECTION + "\n\n" + SECTION_INTRO + "\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        end = len(old) if end < 0 else end + 1
        section = old[start:end]
        header = text.split("\n", 1)[0] + "\n"
        sub = section.find(header)
        if sub < 0:
            section = section.rstrip("\n") + "\n\n" + text
        else:
            nxt = [i for i in (section.find("\n### ", sub + 1), section.find("\n## ", sub + 1)) if i >= 0]
            stop = min(nxt) + 1 if nxt else len(section)
            section = section[:sub] + text.rstrip("\n") + "\n\n" + section[stop:]
        section = section.rstrip("\n") + "\n" + ("\n" if end < len(old) else "")
        new = old[:start] + section + old[end:]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def _experiment_args(argv: list[str]) -> list[str]:
    """The arguments that shape the experiment (not where its outputs go): the subsection's name."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--results", "--plot"):
            skip = True
        elif arg != "--no-record" and not arg.startswith(("--out=", "--results=", "--plot=")):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller pools (about 1 min on 2 cores)")
    ap.add_argument("--data", nargs="+", default=[DEFAULT_DATA], help="JSONL files or globs; their human rows are used")
    ap.add_argument("--text-field", default="text")
    ap.add_argument("--label-field", default="label")
    ap.add_argument("--human-label", default="human")
    ap.add_argument("--generations", type=int)
    ap.add_argument("--human-per-generation", type=int)
    ap.add_argument("--test-docs", type=int)
    ap.add_argument("--detector-docs", type=int)
    ap.add_argument("--metric-tokens", type=int)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--top-p", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--workers", type=int, help="synthfilter worker processes (default 1)")
    ap.add_argument("--retrain-detector", action="store_true", default=None,
                    help="train a new detector each generation on the current generator's output")
    ap.add_argument("--reject-repetitive", action="store_true", default=None,
                    help="run the filtered regimes with synthfilter run --reject-repetitive")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "_work" / "collapse", help="work directory")
    ap.add_argument("--results", type=Path, default=RESULTS, help="RESULTS.md to write the section to")
    ap.add_argument("--plot", type=Path, default=PLOT)
    ap.add_argument("--no-record", action="store_true", help="write only OUT/results.json (no RESULTS.md, no plot)")
    ap.add_argument("--record-only", action="store_true",
                    help="do not run: record OUT/results.json of an earlier run (RESULTS.md section and plot)")
    a = ap.parse_args(argv)
    if a.record_only:
        res = json.loads((a.out / "results.json").read_text())
    else:
        s = QUICK if a.quick else Settings()
        overrides = {k: getattr(a, k) for k in ("generations", "human_per_generation", "test_docs", "detector_docs",
                                                "metric_tokens", "temperature", "top_p", "seed", "workers",
                                                "retrain_detector", "reject_repetitive")}
        s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
        res = run(s, a.data, a.out, a.text_field, a.label_field, a.human_label,
                  log=lambda msg: print(msg, file=sys.stderr, flush=True))
        args = _experiment_args(argv if argv is not None else sys.argv[1:])
        res["command"] = " ".join(["python benchmarks/collapse/run.py", *args])
        (a.out / "results.json").write_text(json.dumps(res, indent=1))
    text = markdown(res)
    print(text)
    if not a.no_record:
        write_section(a.results, text)
        plot(res, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
