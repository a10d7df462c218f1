"""Smoke test of the recursive-training benchmark (benchmarks/collapse): a tiny run end to end
on project-made text, through the real ``synthfilter train`` and ``synthfilter run --target-ratio``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from textgen import assistant_text, human_text

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "collapse" / "run.py"


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
        assert f["estimated_share_after"] <= 0.1 + 1e-9
        assert (out / f"filter_g{f['generation']:02d}" / "out" / "report.json").is_file()
    # the replace regime trains on generated text only: its vocabulary can only shrink
    vocab = [m["model_vocab"] for m in res["metrics"]["replace"]]
    assert vocab[2] <= vocab[1] <= vocab[0]

    md = results_md.read_text()
    assert "## Model collapse (issue 10)" in md and "### `python benchmarks/collapse/run.py --data " in md
    assert "--out" not in md and "## Another benchmark\n\nuntouched" in md
    assert (tmp_path / "collapse.png").stat().st_size > 1000
