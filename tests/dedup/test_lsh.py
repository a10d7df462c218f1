"""Bands x rows selection (as datasketch) and band keys (equal bands <=> equal keys)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from datasketch import MinHashLSH

from synthfilter.dedup.lsh import (
    band_keys,
    candidate_probability,
    false_negative_probability,
    false_positive_probability,
    optimal_bands,
)
from synthfilter.dedup.minhash import MinHasher, to_datasketch
from synthfilter.text.normalize import normalize_for_dedup


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.85, 0.9, 0.95])
@pytest.mark.parametrize("num_perm", [16, 128, 256])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.1, 0.9), (0.7, 0.3)])
def test_bands_and_rows_match_datasketch(threshold, num_perm, weights):
    ours = optimal_bands(threshold, num_perm, weights=weights)
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    except ValueError as e:  # datasketch refuses a single band; we return it
        assert "b < 2" in str(e) and ours[0] == 1
        return
    assert ours == (lsh.b, lsh.r)


def test_default_weights_depend_on_verification():
    assert optimal_bands(0.8, 128, verify=False) == (9, 13)  # datasketch MinHashLSH's own choice
    assert optimal_bands(0.8, 128) == optimal_bands(0.8, 128, weights=(0.1, 0.9)) == (14, 9)


def test_default_parameters_and_curve():
    b, r = optimal_bands(0.8, 128)
    assert candidate_probability(0.85, b, r) > 0.97
    assert candidate_probability(0.5, b, r) < 0.03
    assert candidate_probability(0.8, b, r) == pytest.approx(1 - (1 - 0.8**r) ** b)


@pytest.mark.parametrize("b,r", [(1, 1), (9, 13), (14, 9), (32, 8), (128, 2)])
@pytest.mark.parametrize("threshold", [0.3, 0.8, 0.95])
def test_error_areas_match_scipy_quadrature(b, r, threshold):
    # Our exact Gauss-Legendre areas against the adaptive integrator datasketch uses.
    from scipy.integrate import quad

    fp, _ = quad(lambda s: 1.0 - (1.0 - s**r) ** b, 0.0, threshold)
    fn, _ = quad(lambda s: (1.0 - s**r) ** b, threshold, 1.0)
    assert false_positive_probability(threshold, b, r) == pytest.approx(fp, rel=1e-9, abs=1e-12)
    assert false_negative_probability(threshold, b, r) == pytest.approx(fn, rel=1e-9, abs=1e-12)


def test_equal_bands_give_equal_keys_and_nothing_else_does():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 1 << 32, size=(4, 12), dtype=np.uint32)
    sigs[1] = sigs[0]
    sigs[1, 5] ^= 1  # band 1 (columns 4..7) differs by one bit
    sigs[2, 4:8] = sigs[0, 0:4]  # band 1 of record 2 holds band 0's values of record 0
    keys = band_keys(sigs, b=3, r=4)
    assert keys.shape == (4, 3) and keys.dtype == np.uint64
    assert keys[1, 0] == keys[0, 0] and keys[1, 2] == keys[0, 2]
    assert keys[1, 1] != keys[0, 1]
    assert keys[2, 1] != keys[0, 0]  # the band index is mixed in
    assert len(np.unique(keys)) == keys.size - 2


def test_band_keys_handle_unused_columns_and_chunks():
    rng = np.random.default_rng(1)
    sigs = rng.integers(0, 1 << 32, size=(1000, 128), dtype=np.uint32)
    keys = band_keys(sigs, 9, 13)
    assert np.array_equal(band_keys(sigs, 9, 13, chunk_rows=7), keys)
    changed = sigs.copy()
    changed[:, 117:] = 0  # columns beyond 9 * 13 are not part of any band
    assert np.array_equal(band_keys(changed, 9, 13), keys)
    with pytest.raises(ValueError):
        band_keys(sigs, 10, 13)
    with pytest.raises(ValueError):
        band_keys(sigs.astype(np.uint64), 9, 13)


def test_candidate_pairs_match_datasketch_minhashlsh(maker):
    base = [maker.doc(120) for _ in range(40)]
    texts = base + [maker.edit(t, maker.rng.choice([0.01, 0.03, 0.08, 0.2])) for t in base for _ in range(2)]
    sigs = MinHasher().signatures([normalize_for_dedup(t) for t in texts])
    b, r = optimal_bands(0.8, 128)
    keys = band_keys(sigs, b, r)
    ours = {(i, j) for i, j in itertools.combinations(range(len(texts)), 2) if np.any(keys[i] == keys[j])}
    lsh = MinHashLSH(threshold=0.8, num_perm=128, weights=(0.1, 0.9))
    assert (lsh.b, lsh.r) == (b, r)
    for i, sig in enumerate(sigs):
        lsh.insert(i, to_datasketch(sig))
    theirs = {(min(i, j), max(i, j)) for i, sig in enumerate(sigs) for j in lsh.query(to_datasketch(sig)) if i != j}
    assert ours == theirs
    assert len(ours) > 20  # the corpus does have candidates
