"""The repetition filter (``--reject-repetitive``): records that repeat themselves, as a model
stuck in a loop writes, are rejected with reason ``repetitive`` before deduplication, on every
entry point (run, the Python API, ``datasets``, the gate). Text made here (tests/textgen.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import read_jsonl, run_cli, write_jsonl
from langtext import sentences
from synthfilter.api import REPETITIVE_COL, SynthFilter
from synthfilter.config import Config, ConfigError
from synthfilter.diversity import diversity_metrics, repeating_records
from synthfilter.pipeline.run import run_pipeline
from synthfilter.text.normalize import normalize_for_dedup
from textgen import assistant_text, human_text, looping_text

OPTIONS: dict[str, Any] = {"detector": {"enabled": False}, "repetition": {"reject": True}}


def _norm(texts: list[str]) -> list[str]:
    return [normalize_for_dedup(t) for t in texts]


def corpus(seed: int = 0) -> list[dict[str, Any]]:
    """Prose of both registers, loops, a copied loop, a copied human text, a loop too short to judge."""
    rng = random.Random(seed)
    rows = [{"id": f"h{i}", "text": human_text(rng)} for i in range(60)]
    rows += [{"id": f"a{i}", "text": assistant_text(rng)} for i in range(30)]
    rows += [{"id": f"loop{i}", "text": looping_text(rng)} for i in range(8)]
    rows.append({"id": "loop-copy", "text": rows[-1]["text"]})
    rows.append({"id": "h-copy", "text": rows[3]["text"]})
    rows.append({"id": "short-loop", "text": "so so so so so so so so"})
    rng.shuffle(rows)
    return rows


def loops_of(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows if r["id"].startswith("loop")}


# -- the rule ---------------------------------------------------------------------------------------


def test_loops_are_flagged_and_prose_is_not() -> None:
    rng = random.Random(1)
    loops = [looping_text(rng) for _ in range(100)]
    prose = [human_text(rng) for _ in range(1000)] + [assistant_text(rng) for _ in range(1000)]
    assert repeating_records(_norm(loops)).all()
    assert not repeating_records(_norm(prose)).any()
    # Scripts written without spaces are judged on characters, as the dedup shingles see them.
    zh = "".join(sentences("zh", 3, seed=2))
    assert repeating_records(_norm([zh * 8, zh])).tolist() == [True, False]
    # Too short to judge (under min_trigrams), whatever it repeats; the threshold is the config's.
    assert repeating_records(_norm(["so so so so so so so so"])).tolist() == [False]
    assert repeating_records(_norm(["so so so so so so so so"]), min_trigrams=5).tolist() == [True]
    assert not repeating_records(_norm(loops), min_distinct=0.05).any()


def test_chunks_and_the_length_cap_bound_memory_not_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import synthfilter.diversity as div

    rng = random.Random(3)
    texts = _norm([looping_text(rng) if i % 3 == 0 else human_text(rng) for i in range(60)])
    want = repeating_records(texts)
    assert want.sum() == 20
    monkeypatch.setattr(div, "REPEAT_CHUNK_CHARS", 500)  # a few texts a chunk, and texts longer than a chunk
    assert repeating_records(texts).tolist() == want.tolist()
    monkeypatch.setattr(div, "REPEAT_CHUNK_TOKENS", 100)  # judged a few texts at a time
    assert repeating_records(texts).tolist() == want.tolist()
    # A record is judged on its first REPEAT_MAX_TOKENS tokens: a loop that starts after them is not seen.
    late = texts[1] + " " + texts[0] * 3
    monkeypatch.setattr(div, "REPEAT_MAX_TOKENS", len(texts[1].split()))
    assert repeating_records([late, texts[0]]).tolist() == [False, True]


def test_the_report_metric_applies_the_same_rule() -> None:
    rng = random.Random(2)
    texts = [looping_text(rng) for _ in range(30)] + [human_text(rng) for _ in range(170)]
    flagged = repeating_records(_norm(texts))
    # Every text here is long enough to judge and shorter than the metric's MAX_CHARS.
    assert diversity_metrics(texts)["self_repeating_share"] == pytest.approx(flagged.mean(), abs=1e-6)


def test_config_checks_the_rule() -> None:
    with pytest.raises(ConfigError, match="repetition.min_distinct"):
        Config.from_dict({"repetition": {"min_distinct": 0}})
    with pytest.raises(ConfigError, match="repetition.min_trigrams"):
        Config.from_dict({"repetition": {"min_trigrams": 0}})


# -- synthfilter run ---------------------------------------------------------------------------------


def _run(tmp_path: Path, rows: list[dict[str, Any]], name: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    src = tmp_path / "in" / "part.jsonl"
    if not src.exists():
        write_jsonl(src, rows)
    cfg = Config.from_dict({"quiet": True, "workers": 1, "annotate": True, "report": {"html": False}, **options})
    res = run_pipeline([str(src.parent)], tmp_path / name, cfg)
    out: dict[str, Any] = {}
    for kind in ("kept", "rejected"):
        path = tmp_path / name / kind / "part.jsonl"
        for line in read_jsonl(path) if path.exists() else []:
            rec = json.loads(line)
            assert rec["id"] not in out, "a record written twice"
            out[rec["id"]] = rec["synthfilter"]
    assert len(out) == len(rows)  # every record in exactly one output
    return res, out


def test_run_rejects_loops_before_dedup(tmp_path: Path) -> None:
    rows = corpus()
    loops = loops_of(rows)
    res, out = _run(tmp_path, rows, "on", OPTIONS)
    why = {i: s.get("reason", "kept") for i, s in out.items()}
    assert {i for i, r in why.items() if r == "repetitive"} == loops
    # A loop and its copy are both set aside as loops: neither is the other's duplicate.
    assert "duplicate_of" not in out["loop-copy"]
    assert sorted([why["h3"], why["h-copy"]]) == ["exact_duplicate", "kept"] and why["short-loop"] == "kept"
    assert res.report["output"]["rejected_by_reason"]["repetitive"] == len(loops)
    assert not any("repeat themselves" in w for w in res.report["warnings"])
    div = res.report["diversity"]
    assert div["before"]["self_repeating_share"] > 0 and div["after"]["self_repeating_share"] == 0
    # Off (the default): the loops stay, but for the copy, a duplicate as any other.
    res, out = _run(tmp_path, rows, "off", {"detector": {"enabled": False}})
    why = {i: s.get("reason", "kept") for i, s in out.items()}
    assert "repetitive" not in why.values() and sorted([why["loop7"], why["loop-copy"]]) == ["exact_duplicate", "kept"]
    assert res.report["output"]["rejected_by_reason"]["repetitive"] == 0
    # ... and the report says how many of the kept records loop, and what to do.
    (warning,) = [w for w in res.report["warnings"] if "repeat themselves" in w]
    share = res.report["diversity"]["after"]["self_repeating_share"]
    # Kept: all but the two copies; judged: all of those but the short loop; looping: 8 of them.
    assert share == pytest.approx(8 / (len(rows) - 3), abs=1e-6) and f"{share:.1%}" in warning
    assert "--reject-repetitive" in warning


def test_cli_flag(tmp_path: Path) -> None:
    rows = corpus(seed=3)
    write_jsonl(tmp_path / "in.jsonl", rows)
    code, out, err = run_cli(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--no-detector",
                              "--reject-repetitive"])
    assert code == 0, err
    assert f"repetitive {len(loops_of(rows))}" in out
    rejected = [json.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "in.jsonl")]
    assert {r["id"] for r in rejected if r["synthfilter"]["reason"] == "repetitive"} == loops_of(rows)


# -- the Python API and datasets --------------------------------------------------------------------


def test_api_and_datasets_decide_as_run(tmp_path: Path) -> None:
    from datasets import Dataset, IterableDataset

    from synthfilter.hf import filter_dataset, stream_filter

    rows = corpus(seed=4)
    _, out = _run(tmp_path, rows, "run", OPTIONS)
    want = {i: s.get("reason", "kept") for i, s in out.items()}
    sf = SynthFilter(OPTIONS)
    ids = [r["id"] for r in rows]
    ann = sf.annotate({"text": [r["text"] for r in rows], "id": ids})
    assert ann[REPETITIVE_COL].tolist() == [i in loops_of(rows) for i in ids]
    got = sf.decide(ann, ids=ids)
    assert dict(zip(ids, got.reason)) == want
    with pytest.raises(ValueError, match="synth_repetitive"):
        sf.decide({k: v for k, v in ann.items() if k != REPETITIVE_COL}, ids=ids)

    res = filter_dataset(Dataset.from_list(rows), OPTIONS)
    reasons = {i: "kept" for i in res.kept["id"]}
    reasons.update(zip(res.rejected["id"], res.rejected["synth_reason"]))
    assert reasons == want
    streamed = stream_filter(IterableDataset.from_generator(lambda: iter(rows)), OPTIONS)
    loops = {r["id"] for r in streamed.rejected if r["synth_reason"] == "repetitive"}
    assert loops == loops_of(rows) and not loops & {r["id"] for r in streamed.kept}


# -- the gate ----------------------------------------------------------------------------------------


def test_gate_sets_loops_aside_and_counts_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthfilter.cli import main

    rows = corpus(seed=5)
    export = tmp_path / "posts.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["gate", str(export), "--no-detector", "--reject-repetitive", "--max-duplicates", "0.05",
            "--json", str(tmp_path / "g.json"), "--report", str(tmp_path / "g.html"),
            "--write-approved", str(tmp_path / "ok")]
    with pytest.raises(SystemExit) as exc:
        main(args)
    printed = capsys.readouterr().out
    assert exc.value.code == 0, printed  # one human copy in ~90 gated posts; the loop copy is not counted
    n_loops = len(loops_of(rows))
    assert f"{n_loops} repeating themselves (--reject-repetitive)" in printed
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["measured"]["repetitive_rejected"] == n_loops
    assert doc["measured"]["with_text"] == len(rows) - n_loops and doc["measured"]["without_text"] == 0
    assert doc["offending_ids"] in (["h3"], ["h-copy"])  # whichever of the pair comes second
    assert f"{n_loops} repeating themselves" in (tmp_path / "g.html").read_text(encoding="utf-8")
    rejected = [json.loads(x) for x in (tmp_path / "ok" / "rejected.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rejected if r["synthfilter"]["reason"] == "repetitive"} == loops_of(rows)
    approved = {json.loads(x)["id"] for x in (tmp_path / "ok" / "approved.jsonl").read_text().splitlines()}
    assert not approved & loops_of(rows) and len(approved) + len(rejected) == len(rows)


def test_score_batch_says_why_a_usable_record_is_set_aside() -> None:
    # score_batch reports why a usable record is set aside; status stays 0 for it.
    sf = SynthFilter(OPTIONS)
    rng = random.Random(6)
    texts = [looping_text(rng), human_text(rng), ""]
    got = sf.score_batch(texts)
    assert got["status"].tolist() == [0, 0, 1] and got["set_aside"].tolist() == [3, 0, 0]
    assert np.isnan(got["score"]).all()  # the detector is off here
