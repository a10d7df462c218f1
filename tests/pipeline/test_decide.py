"""The local decide stage's lean parts: the annotations it loads (band keys memory-mapped band by
band), exact-duplicate labels, the merge of two labelings; each against a plain reference."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import make_records, write_jsonl
from synthfilter.config import Config
from synthfilter.dedup.clusters import component_roots
from synthfilter.io.shards import discover_shards
from synthfilter.pipeline.run import load_annotations
from synthfilter.pipeline.stages import STATUS_OK, WorkPaths, _exact_labels, decide, merge_labels, score_shard


def _groups_to_labels(group: np.ndarray) -> np.ndarray:
    """Label = smallest index of each record's group."""
    smallest = np.full(group.max() + 1, len(group))
    np.minimum.at(smallest, group, np.arange(len(group)))
    return smallest[group]


@pytest.mark.parametrize("seed", range(4))
def test_exact_labels_are_the_first_record_with_the_whole_hash(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    # Few distinct first halves, so that many records share one without sharing the second.
    hi = rng.integers(0, 40, n).astype(np.uint64)
    lo = rng.integers(0, 3, n).astype(np.uint64)
    ok = rng.random(n) > 0.1
    first: dict[tuple[int, int], int] = {}
    want = np.arange(n)
    for i in range(n):
        if ok[i]:
            want[i] = first.setdefault((int(hi[i]), int(lo[i])), i)
    assert np.array_equal(_exact_labels(ok, hi, lo), want)


@pytest.mark.parametrize("seed", range(4))
def test_merge_labels_are_the_components_of_both_labelings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    a = _groups_to_labels(rng.integers(0, n // 3, n))
    b = _groups_to_labels(rng.integers(0, n // 2, n))
    idx = np.arange(n)
    want = component_roots(np.r_[idx, idx], np.r_[a, b], n)
    assert np.array_equal(merge_labels(a, b.copy()), want)


def _annotated(inp: Path, work: Path) -> tuple[Config, list, dict, Any, list[int]]:
    """The score stage over the shards of ``inp`` (exact and near dedup, no detector) and the
    annotations the decide stage loads: (config, shards, score summaries, annotations, offsets)."""
    cfg = Config.from_dict({"detector": {"enabled": False}, "quiet": True,
                            "report": {"diversity": False, "html": False}})
    shards, _ = discover_shards([str(inp)])
    metas = {sh.rel: score_shard(sh, cfg, work) for sh in shards}
    ann, offsets = load_annotations(shards, work, metas, near=True)
    return cfg, shards, metas, ann, offsets


def test_load_annotations_maps_band_keys_band_by_band(tmp_path: Path) -> None:
    for s in range(3):
        write_jsonl(tmp_path / "in" / f"part-{s}.jsonl", make_records(60, seed=s, dup_every=4))
    work = tmp_path / "work"
    cfg, shards, metas, ann, offsets = _annotated(tmp_path / "in", work)
    nb = metas[shards[0].rel]["bands"]
    rows = np.concatenate([np.fromfile(WorkPaths.for_shard(work, sh).bands, dtype=np.uint64).reshape(-1, nb)
                           for sh in shards])
    assert offsets == [0, 60, 120, 180] and ann.bands.shape == (180, nb)
    assert isinstance(ann.bands, np.memmap) and ann.bands[:, 0].flags.c_contiguous
    assert np.array_equal(ann.bands, rows)
    assert ann.shard.tolist() == [0] * 60 + [1] * 60 + [2] * 60
    assert (ann.status == STATUS_OK).all() and ann.hash_hi.flags.owndata

    mapped = decide(ann, cfg)
    in_memory = decide(dataclasses.replace(ann, bands=rows), cfg)
    assert mapped.counts()["exact_duplicate"] > 0
    for field in ("reason", "duplicate_of", "cluster_sizes"):
        assert np.array_equal(getattr(mapped, field), getattr(in_memory, field))


def _decided(tmp_path: Path, rows: list[dict]) -> tuple[Config, Any]:
    """The local engine's score and decide stages over one shard of ``rows`` (no detector)."""
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    cfg, *_, ann, _ = _annotated(tmp_path / "in", tmp_path / "work")
    return cfg, decide(ann, cfg)


def test_texts_that_normalise_to_nothing_are_copies_only_of_the_same_text(tmp_path: Path) -> None:
    # "!!!", "???", a Hangul filler and an ellipsis all normalise to "": each is a copy of itself
    # only, as exact and as near duplicate; numbers that differ only in punctuation differ.
    texts = ["!!!", "???", "!!!", "\u3164", "\u2026", "costs $10.50 for the whole lot of apples today",
             "costs $1,050 for the whole lot of apples today", "???"]
    _, got = _decided(tmp_path, [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    rejected = {i: int(got.duplicate_of[i]) for i in range(len(texts)) if got.duplicate_of[i] >= 0 and got.duplicate_of[i] != i}
    assert rejected == {2: 0, 7: 1}


def test_a_chain_of_edits_keeps_the_records_that_do_not_resemble_the_survivor(tmp_path: Path) -> None:
    # 21 documents of 100 words, each with one more word changed than the one before: neighbours
    # are near-duplicates, the two ends share no 5-gram. Every record removed must resemble the
    # record it is removed for, so the chain is cut into rings around survivors.
    import random

    from synthfilter.dedup.minhash import MinHasher
    from synthfilter.text.normalize import normalize_for_dedup

    rng = random.Random(7)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ta", "vi", "zo") for b in
             ("bar", "cen", "dol", "fim", "gat", "hus", "jor", "kel", "lun", "mab", "nir", "pox")]
    words = [rng.choice(vocab) for _ in range(100)]
    docs = []
    for i in range(21):
        docs.append(" ".join(words))
        words = list(words)
        words[(i * 5) % 100] = rng.choice(vocab) + "x"
    cfg, got = _decided(tmp_path, [{"id": f"d{i:02d}", "text": t} for i, t in enumerate(docs)])
    sigs = MinHasher(num_perm=cfg.dedup.num_perm).signatures([normalize_for_dedup(t) for t in docs])
    removed = [i for i in range(21) if got.duplicate_of[i] >= 0]
    kept = [i for i in range(21) if got.duplicate_of[i] < 0]
    assert removed and len(kept) >= 3 and 0 in kept and 20 in kept
    for i in removed:
        j = int(got.duplicate_of[i])
        assert np.count_nonzero(sigs[i] == sigs[j]) / sigs.shape[1] >= cfg.dedup.verify_at, (i, j)
    # The cluster sizes count the rings, not the whole chain.
    assert int(got.cluster_sizes.sum()) == len(removed) + int(len(got.cluster_sizes)) and got.cluster_sizes.max() < 21
