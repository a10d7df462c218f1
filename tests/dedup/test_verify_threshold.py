"""dedup.verify_threshold: candidates come from the bands of ``threshold``; a higher verify threshold
drops the candidate pairs whose estimated Jaccard falls below it and keeps those above it."""

from __future__ import annotations

import numpy as np
import pytest

from synthfilter.dedup.clusters import near_duplicate_components
from synthfilter.dedup.index import NearDupIndex
from synthfilter.dedup.lsh import band_keys, optimal_bands
from synthfilter.dedup.minhash import MinHasher, to_datasketch
from synthfilter.text.normalize import normalize_for_dedup

P = 128


@pytest.fixture
def pairs(maker):
    """Unrelated base documents, each followed by one edited copy (1-4 % of words replaced), with
    the pairs' estimated Jaccard; only pairs that share a band at threshold 0.8 are returned."""
    texts = []
    for i in range(40):
        base = maker.doc(300)
        texts += [base, maker.edit(base, 0.01 + 0.03 * i / 39)]
    sigs = MinHasher(num_perm=P).signatures([normalize_for_dedup(t) for t in texts])
    b, r = optimal_bands(0.8, P)
    keys = band_keys(sigs, b, r)
    est = np.count_nonzero(sigs[0::2] == sigs[1::2], axis=1) / P
    candidate = (keys[0::2] == keys[1::2]).any(axis=1)
    return sigs, keys, est, candidate


def _linked(labels: np.ndarray) -> np.ndarray:
    """Whether each (base, copy) pair ended in one cluster."""
    return labels[0::2] == labels[1::2]


def test_signatures_are_datasketch_minhashes(pairs):
    sigs, _keys, est, _candidate = pairs
    a, b = to_datasketch(sigs[0], 1), to_datasketch(sigs[1], 1)
    assert a.jaccard(b) == pytest.approx(est[0])


def test_a_higher_verify_threshold_drops_pairs_below_it_and_keeps_those_above(pairs):
    sigs, keys, est, candidate = pairs
    # The corpus spans the interesting range: candidates on both sides of 0.85.
    at = 0.85
    assert candidate.sum() >= 20
    assert (candidate & (est >= at)).sum() >= 3 and (candidate & (est >= 0.8) & (est < at)).sum() >= 3
    # Unrelated bases never link, so each pair is its own cluster or two singletons.
    default = near_duplicate_components(keys, sigs, threshold=0.8)
    assert (_linked(default) == (candidate & (est >= 0.8))).all()
    strict = near_duplicate_components(keys, sigs, threshold=at)
    assert (_linked(strict) == (candidate & (est >= at))).all()
    assert _linked(strict).sum() < _linked(default).sum()


def test_the_streaming_index_verifies_at_verify_threshold_with_the_same_bands(pairs):
    sigs, _keys, est, candidate = pairs
    default = NearDupIndex(threshold=0.8, num_perm=P)
    strict = NearDupIndex(threshold=0.8, num_perm=P, verify_threshold=0.85)
    assert (strict.b, strict.r) == (default.b, default.r) == optimal_bands(0.8, P)
    assert default.verify_threshold == 0.8
    for i in range(len(est)):
        default.add(i, sigs[2 * i])
        strict.add(i, sigs[2 * i])
    for i in range(len(est)):
        assert default.query(sigs[2 * i + 1]) == ([i] if candidate[i] and est[i] >= 0.8 else [])
        assert strict.query(sigs[2 * i + 1]) == ([i] if candidate[i] and est[i] >= 0.85 else [])


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_the_streaming_index_refuses_a_verify_threshold_outside_0_1(bad):
    with pytest.raises(ValueError, match="verify_threshold"):
        NearDupIndex(threshold=0.8, num_perm=P, verify_threshold=bad)
