"""MinHasher: bit-identical to datasketch, settings that refuse mixing, interop helpers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash

from synthfilter.dedup.minhash import (
    MinHasher,
    SignatureSettingsError,
    check_settings,
    datasketch_minhash,
    estimate_jaccard,
    from_datasketch,
    permutations,
    to_datasketch,
)
from synthfilter.text.normalize import normalize_for_dedup
from synthfilter.text.shingles import shingle_hash


def _datasketch_signature(text: str, hasher: MinHasher) -> np.ndarray:
    m = MinHash(num_perm=hasher.num_perm, seed=hasher.seed, hashfunc=shingle_hash, scheme="affine32")
    m.update_batch(hasher.shingles(text))
    return m.hashvalues


def test_bit_identical_to_datasketch_on_1000_random_documents(maker):
    texts = [normalize_for_dedup(maker.mixed()) for _ in range(1000)]
    hasher = MinHasher(num_perm=128, seed=1)
    sigs = hasher.signatures(texts)
    assert sigs.shape == (1000, 128) and sigs.dtype == np.uint32
    mismatched = [i for i, t in enumerate(texts) if not np.array_equal(sigs[i], _datasketch_signature(t, hasher))]
    assert mismatched == []


@pytest.mark.parametrize("num_perm,seed,ngram,char_ngram", [(64, 7, 3, 2), (256, 42, 1, 1), (2, 0, 9, 7)])
def test_bit_identical_with_other_settings(maker, num_perm, seed, ngram, char_ngram):
    from synthfilter.text.shingles import token_hashes_batch

    texts = [normalize_for_dedup(maker.mixed()) for _ in range(60)]
    hasher = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram, char_ngram=char_ngram)
    sigs = hasher.signatures(texts)
    for i, text in enumerate(texts):
        assert np.array_equal(sigs[i], _datasketch_signature(text, hasher))
    # The score stage's path: the texts tokenised once, shared with the repetition rule.
    assert np.array_equal(hasher.signatures_from_tokens(token_hashes_batch(texts, hasher.spaceless_share)), sigs)


def test_permutations_are_datasketchs():
    a, b = permutations(128, 5)
    expected = MinHash(num_perm=128, seed=5, scheme="affine32").permutations
    assert np.array_equal(a, expected[0]) and np.array_equal(b, expected[1])


def test_result_does_not_depend_on_batching_or_slice_width(maker):
    texts = [normalize_for_dedup(maker.mixed()) for _ in range(120)]
    reference = MinHasher().signatures(texts)
    for width in (1, 7, 300):
        assert np.array_equal(MinHasher(slice_width=width).signatures(texts), reference)
    one_by_one = np.vstack([MinHasher().signatures([t]) for t in texts])
    assert np.array_equal(one_by_one, reference)


def test_sets_without_elements_get_the_empty_signature():
    hasher = MinHasher(num_perm=16)
    sigs = hasher.signatures_from_hashes(np.array([5, 6, 7], dtype=np.uint32), np.array([0, 0, 2, 2, 3]))
    empty = MinHash(num_perm=16, scheme="affine32").hashvalues
    assert np.array_equal(sigs[0], empty) and np.array_equal(sigs[2], empty)
    m = MinHash(num_perm=16, hashfunc=int, scheme="affine32")
    m.update_batch([5, 6])
    assert np.array_equal(sigs[1], m.hashvalues)
    with pytest.raises(ValueError):
        hasher.signatures_from_hashes(np.array([1], dtype=np.uint32), np.array([0, 2]))


def test_pickled_hasher_gives_the_same_signatures(maker):
    texts = [normalize_for_dedup(maker.doc(80)) for _ in range(5)]
    hasher = MinHasher(num_perm=64, seed=3)
    before = hasher.signatures(texts)
    clone = pickle.loads(pickle.dumps(hasher))
    assert len(pickle.dumps(hasher)) < 4096  # permutation tiles are not shipped to workers
    assert np.array_equal(clone.signatures(texts), before)


def test_signature_of_a_fixed_text_is_pinned():
    # If this fails, signatures changed: bump SHINGLE_HASH_NAME or NORMALIZATION_NAME.
    sig = MinHasher().signatures([normalize_for_dedup("The quick brown fox jumps over the lazy dog again and again.")])
    assert sig[0, :4].tolist() == PINNED_FIRST_VALUES


PINNED_FIRST_VALUES = [117697304, 356232206, 162681484, 1106886989]


def test_settings_describe_the_signatures_and_refuse_mixing():
    settings = MinHasher(num_perm=128, seed=1).settings()
    assert settings["scheme"] == "affine32"
    assert {"num_perm", "seed", "ngram", "char_ngram", "shingle_hash", "normalization", "library_version"} <= set(settings)
    check_settings(settings, dict(settings, library_version="9.9.9"))  # version alone is informational
    with pytest.raises(SignatureSettingsError, match="seed: expected 1, found 2"):
        check_settings(settings, MinHasher(num_perm=128, seed=2).settings(), where="shard 3")
    with pytest.raises(SignatureSettingsError, match="ngram"):
        check_settings(settings, MinHasher(ngram=3).settings())


def test_datasketch_interop_round_trip(maker):
    texts = [normalize_for_dedup(maker.doc(60)) for _ in range(2)]
    texts.append(normalize_for_dedup(maker.edit(texts[0], 0.02)))
    hasher = MinHasher(seed=9)
    sigs = hasher.signatures(texts)
    lean = to_datasketch(sigs[0], seed=9)
    assert isinstance(lean, LeanMinHash) and lean.seed == 9 and lean.scheme == "affine32"
    assert np.array_equal(from_datasketch(lean), sigs[0])
    assert np.array_equal(from_datasketch(datasketch_minhash(texts[1], hasher)), sigs[1])
    assert lean.jaccard(to_datasketch(sigs[2], seed=9)) == estimate_jaccard(sigs[0], sigs[2])
    assert estimate_jaccard(sigs[0], sigs[2]) > 0.7 > estimate_jaccard(sigs[0], sigs[1])
    row_wise = estimate_jaccard(sigs[[0, 0]], sigs[[1, 2]])
    assert np.allclose(row_wise, [estimate_jaccard(sigs[0], sigs[1]), estimate_jaccard(sigs[0], sigs[2])])
    with pytest.raises(SignatureSettingsError, match="scheme"):
        from_datasketch(MinHash(num_perm=128, scheme="legacy"))


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        MinHasher(num_perm=0)
    with pytest.raises(ValueError):
        MinHasher(ngram=0)
