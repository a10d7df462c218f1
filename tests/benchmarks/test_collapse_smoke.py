"""The recursive-training benchmark (benchmarks/collapse): its Kneser–Ney model and exact top-p
sampler, and a tiny run end to end on project-made text through the real ``synthfilter train``
and ``synthfilter run --target-ratio``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from textgen import assistant_text, human_text

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "collapse" / "run.py"
sys.path.insert(0, str(RUN.parent))
from ngram import BOS, KneserNeyTrigram, Sampler, Vocab, detokenize, tokenize  # noqa: E402


def _small_model() -> tuple[Vocab, list[np.ndarray], KneserNeyTrigram]:
    rng = random.Random(5)
    texts = [human_text(rng) if i % 3 else assistant_text(rng) for i in range(300)]
    vocab = Vocab()
    docs = [vocab.encode(tokenize(t), grow=True) for t in texts]
    vocab.add("never-seen-word")  # in the vocabulary, not in training: only the uniform floor
    return vocab, docs, KneserNeyTrigram(docs[:200], len(vocab))


def test_tokenize_detokenize_round_trip() -> None:
    for text in ["Wait... what?! \"Yes,\" she said -- don't.", "a. . b ... ...(x) $5 [1]", "Ünïcode – “quotes” ok"]:
        tokens = tokenize(text)
        assert tokenize(detokenize(tokens)) == tokens
    assert tokenize("Wait...") == ["Wait", "..."]


def test_kneser_ney_is_a_distribution_over_the_whole_vocabulary() -> None:
    vocab, docs, model = _small_model()
    w = np.arange(len(vocab))
    for u, v in [(BOS, BOS), (int(docs[0][0]), int(docs[0][1])), (int(docs[5][3]), int(docs[7][2])), (7, 3)]:
        p = model.prob(np.full_like(w, u), np.full_like(w, v), w)
        assert abs(p.sum() - 1) < 1e-9 and (p > 0).all()
    assert not model.seen[vocab.stoi["never-seen-word"]]
    # the model fits its training text better than held-out text of the same kind
    assert model.perplexity(docs[:200]) < model.perplexity(docs[200:])


def test_sampler_nucleus_matches_brute_force() -> None:
    vocab, docs, model = _small_model()
    w = np.arange(len(vocab))
    for temperature, top_p in [(0.8, 0.9), (1.0, 0.5), (0.6, 0.99)]:
        sampler = Sampler(model, temperature, top_p, top_k=4)  # tiny k: exercises the widening
        for u, v in [(BOS, BOS), (int(docs[1][0]), int(docs[1][1])), (int(docs[9][4]), int(docs[3][1])), (9, 2)]:
            ids, cdf = sampler.nucleus(u, v)
            q = model.prob(np.full_like(w, u), np.full_like(w, v), w) ** (1 / temperature)
            q /= q.sum()
            order = np.argsort(-q, kind="stable")
            n = int(np.searchsorted(np.cumsum(q[order]), top_p)) + 1
            assert set(ids.tolist()) == set(order[:n].tolist())
            assert np.allclose(cdf, np.cumsum(q[ids]) / q[ids].sum())
    docs_out = Sampler(model).sample_docs(5, np.random.default_rng(0), min_tokens=5)
    again = Sampler(model).sample_docs(5, np.random.default_rng(0), min_tokens=5)
    assert all(len(d) >= 5 for d in docs_out) and all((a == b).all() for a, b in zip(docs_out, again))


def _write_corpus(path: Path, n_human: int, n_machine: int) -> None:
    rng = random.Random(11)
    rows = [{"text": human_text(rng), "label": "human"} for _ in range(n_human)]
    rows += [{"text": assistant_text(rng), "label": "machine"} for _ in range(n_machine)]
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.slow  # `synthfilter train` has a fixed cost (5-fold cross-fitting) whatever the data size
def test_collapse_benchmark_tiny_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "corpus.jsonl"
    _write_corpus(data, n_human=700, n_machine=50)  # machine rows must be ignored
    out = tmp_path / "work"
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\n## Another benchmark\n\nuntouched\n", encoding="utf-8")
    cmd = [sys.executable, str(RUN), "--data", str(data), "--out", str(out), "--generations", "2",
           "--human-per-generation", "150", "--test-docs", "80", "--detector-docs", "160",
           "--metric-tokens", "3000", "--seed", "3", "--results", str(results_md),
           "--plot", str(tmp_path / "collapse.png")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    res = json.loads((out / "results.json").read_text())
    assert set(res["metrics"]) == {"human-only", "replace", "pool-50", "pool-50+synthfilter"}
    for series in res["metrics"].values():
        assert len(series) == 3  # generation 0 + 2
        for m in series:
            assert m["perplexity"] > 1
            assert 0 < m["distinct_2"] <= 1 and 0 < m["tail_coverage"] <= 1 and m["unigram_kl_bits"] >= 0
    # generation 0 is one model shared by every regime
    assert len({json.dumps(s[0], sort_keys=True) for s in res["metrics"].values()}) == 1
    # the detector came from `synthfilter train`, the filtering from `synthfilter run --target-ratio`
    assert (out / "detector" / "card.json").is_file()
    assert list(res["filter"]) == ["pool-50+synthfilter"]
    assert len(res["filter"]["pool-50+synthfilter"]) == 2
    for f in res["filter"]["pool-50+synthfilter"]:
        assert f["pool"] == 300
        assert f["true_share_before"] > 0.3 and 0 <= f["estimated_share_before"] <= 1
        if f["reliability"] == "unreliable":  # downsampled anyway; the report does not claim a kept share
            assert f["estimated_share_after"] is None
        else:
            assert f["estimated_share_after"] <= 0.1 + 1e-9
        assert (out / f"filter_g{f['generation']:02d}" / "out" / "report.json").is_file()
    # the replace regime trains on generated text only: its vocabulary can only shrink
    vocab = [m["model_vocab"] for m in res["metrics"]["replace"]]
    assert vocab[2] <= vocab[1] <= vocab[0]

    md = results_md.read_text()
    assert "## Model collapse (issue 10)" in md and "### `python benchmarks/collapse/run.py --data " in md
    assert "--out" not in md and "## Another benchmark\n\nuntouched" in md
    assert (tmp_path / "collapse.png").stat().st_size > 1000
