"""Text to kept/rejected: normalise, sign, band, cluster, choose survivors."""

from __future__ import annotations

import numpy as np

from synthfilter.dedup import MinHasher, band_keys, choose_survivors, near_duplicate_components, optimal_bands
from synthfilter.text.normalize import normalize_for_dedup


def _clusters(texts: list[str]) -> np.ndarray:
    sigs = MinHasher().signatures([normalize_for_dedup(t) for t in texts])
    return near_duplicate_components(band_keys(sigs, *optimal_bands(0.8, 128)), sigs, threshold=0.8)


def test_obfuscated_and_lightly_edited_copies_join_their_original(maker):
    original = maker.doc(200)
    hidden = original.replace("a", "\u0430").replace("o", "\u03bf").replace(" ", " \u200b")  # Cyrillic a, Greek o
    shouting = original.upper().replace(".", "!!")
    edited = maker.edit(original, 0.01)
    cjk = maker.cjk(400)
    cjk_edited = cjk[:200] + "東" + cjk[201:]
    unrelated = maker.doc(200)
    labels = _clusters([original, hidden, shouting, edited, cjk, cjk_edited, unrelated])
    assert labels.tolist() == [0, 0, 0, 0, 4, 4, 6]


def test_shared_boilerplate_does_not_merge_different_documents(maker):
    boilerplate = maker.doc(60)  # a footer shared by every page
    pages = [maker.doc(140) + " " + boilerplate for _ in range(50)]
    labels = _clusters(pages)
    assert np.array_equal(labels, np.arange(50))


def test_survivor_prefers_human_then_low_score_then_first(maker):
    original = maker.doc(150)
    texts = [maker.edit(original, 0.005) for _ in range(4)] + [maker.doc(150)]
    labels = _clusters(texts)
    assert len(set(labels[:4].tolist())) == 1
    provenance_rank = np.array([1, 0, 0, 1, 1])  # 0 = human
    synthetic_score = np.array([0.1, 0.6, 0.4, 0.0, 0.9])
    survivor = choose_survivors(labels, [provenance_rank, synthetic_score])
    assert survivor.tolist() == [2, 2, 2, 2, 4]
