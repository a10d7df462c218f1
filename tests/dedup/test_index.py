"""NearDupIndex: streaming add/query on datasketch MinHashLSH, verified, agreeing with the batch path."""

from __future__ import annotations

import numpy as np
import pytest

from synthfilter.dedup.clusters import near_duplicate_components
from synthfilter.dedup.index import NearDupIndex
from synthfilter.dedup.lsh import band_keys
from synthfilter.dedup.minhash import MinHasher, SignatureSettingsError
from synthfilter.text.normalize import normalize_for_dedup


def test_finds_edited_copies_not_unrelated_texts(maker):
    originals = [maker.doc(150) for _ in range(30)]
    hasher = MinHasher()
    index = NearDupIndex(threshold=0.8, num_perm=128)
    for i, sig in enumerate(hasher.signatures([normalize_for_dedup(t) for t in originals])):
        index.add(f"doc{i}", sig)
    assert len(index) == 30 and "doc3" in index and (index.b, index.r) == (14, 9)
    copies = [maker.edit(originals[3], 0.01), maker.edit(originals[7], 0.005), maker.doc(150)]
    sigs = hasher.signatures([normalize_for_dedup(t) for t in copies])
    assert index.query(sigs[0]) == ["doc3"]
    assert index.query(sigs[1]) == ["doc7"]
    assert index.query(sigs[2]) == []


def test_verification_drops_candidates_that_only_share_a_band():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 1 << 32, size=(2, 128), dtype=np.uint32)
    b[:13] = a[:13]  # one band in common, estimated Jaccard 13/128
    verified, raw = NearDupIndex(), NearDupIndex(verify=False)
    for index in (verified, raw):
        index.add("a", a)
    assert verified.query(b) == [] and raw.query(b) == ["a"]


def test_results_come_in_insertion_order_and_misuse_is_refused():
    sig = np.arange(128, dtype=np.uint32)
    index = NearDupIndex()
    for key in ("z", "a", "m"):
        index.add(key, sig)
    assert index.query(sig) == ["z", "a", "m"]
    with pytest.raises(KeyError):
        index.add("a", sig)
    with pytest.raises(SignatureSettingsError):
        index.query(sig[:64])
    with pytest.raises(SignatureSettingsError):
        index.add("q", sig.astype(np.uint64))


def test_streaming_keeps_what_the_batch_path_keeps(maker):
    base = [maker.doc(120) for _ in range(40)]
    texts = base + [maker.edit(t, 0.01) for t in base[:20]]
    maker.rng.shuffle(texts)
    sigs = MinHasher().signatures([normalize_for_dedup(t) for t in texts])
    index = NearDupIndex()
    kept = []
    for i, sig in enumerate(sigs):
        if not index.query(sig):
            index.add(i, sig)
            kept.append(i)
    labels = near_duplicate_components(band_keys(sigs, index.b, index.r), sigs)
    assert kept == np.unique(labels).tolist()
