"""Diversity metrics on corpora whose values are known by construction."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from synthfilter.dedup.minhash import MinHasher
from synthfilter.diversity import (
    MATTR_WINDOW,
    MAX_CHARS,
    METRIC_KEYS,
    SIMILARITY_PAIRS,
    diversity_metrics,
    diversity_section,
    mattr,
    overrepresented_ngrams,
    sample_keys,
    words,
)
from synthfilter.text.normalize import normalize_for_dedup
from textgen import corpus, human_text

SENTENCE = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"  # 10 distinct words


def close(x: float):
    """Metric values are rounded to 6 decimals."""
    return pytest.approx(x, abs=1e-6)


def word(i: int) -> str:
    """A distinct lower-case letter word per integer (base 26, at least 4 letters)."""
    out = []
    i += 26**3
    while i:
        i, r = divmod(i, 26)
        out.append(chr(ord("a") + r))
    return "".join(reversed(out))


def unique_corpus(records: int, per_record: int) -> list[str]:
    return [" ".join(word(r * per_record + j) for j in range(per_record)) for r in range(records)]


# -- sampling -----------------------------------------------------------------------------------


def test_sample_keys_is_the_bottom_k_in_index_order():
    u = np.random.default_rng(3).random(10_000)
    got = sample_keys(u, 500)
    assert np.array_equal(got, np.sort(np.argsort(u, kind="stable")[:500]))
    assert got.dtype == np.int64


def test_sample_keys_breaks_ties_by_lower_index():
    u = np.array([0.5, 0.1, 0.5, 0.5, 0.2, 0.5])
    assert sample_keys(u, 4).tolist() == [0, 1, 2, 4]
    assert sample_keys(u, 2).tolist() == [1, 4]


def test_sample_keys_small_inputs_and_errors():
    u = np.array([0.3, 0.2])
    assert sample_keys(u, 5).tolist() == [0, 1]
    assert sample_keys(u, 0).tolist() == []
    assert sample_keys(np.zeros(0), 10).tolist() == []
    with pytest.raises(ValueError):
        sample_keys(u, -1)
    with pytest.raises(ValueError):
        sample_keys(np.array([0.1, np.nan]), 1)


def test_sample_of_kept_records_contains_the_kept_part_of_the_full_sample():
    rng = np.random.default_rng(5)
    u = rng.random(20_000)
    kept = np.flatnonzero(rng.random(20_000) < 0.7)
    before = set(sample_keys(u, 1000).tolist())
    after = set(kept[sample_keys(u[kept], 1000)].tolist())
    assert before & set(kept.tolist()) <= after
    assert len(after) == 1000


# -- lexical metrics ------------------------------------------------------------------------------


def test_one_repeated_sentence():
    texts = [SENTENCE] * 200
    m = diversity_metrics(texts)
    assert set(m) == set(METRIC_KEYS)
    assert m["records"] == 200 and m["tokens"] == 2000 and m["types"] == 10
    assert m["distinct_1"] == close(10 / 2000)
    assert m["distinct_2"] == close(9 / 1800)
    assert m["distinct_3"] == close(8 / 1600)
    assert m["entropy_1"] == pytest.approx(math.log2(10), abs=1e-6)
    assert m["entropy_2"] == pytest.approx(math.log2(9), abs=1e-6)
    assert m["entropy_3"] == pytest.approx(3.0, abs=1e-6)
    # Every window of 50 consecutive tokens of a 10-word cycle holds exactly 10 types.
    assert m["mattr"] == close(10 / MATTR_WINDOW)
    assert m["hapax_share"] == 0.0
    assert m["exact_duplicate_rate"] == 1.0
    assert m["near_duplicate_rate"] == 1.0
    assert m["mean_pairwise_similarity"] == 1.0
    assert m["compression_ratio"] > 50
    top = m["samey_ngrams"][0]
    assert top["records"] == 200 and top["count"] == 200 and top["share"] == 1.0
    assert top["ngram"] in {"alpha bravo charlie", "bravo charlie delta", "charlie delta echo"}
    assert len(m["samey_ngrams"]) == 8


def test_unique_words():
    texts = unique_corpus(100, 10)
    m = diversity_metrics(texts)
    assert m["tokens"] == m["types"] == 1000
    assert m["distinct_1"] == m["distinct_2"] == m["distinct_3"] == 1.0
    assert m["entropy_1"] == pytest.approx(math.log2(1000), abs=1e-6)
    assert m["entropy_2"] == pytest.approx(math.log2(900), abs=1e-6)
    assert m["entropy_3"] == pytest.approx(math.log2(800), abs=1e-6)
    assert m["mattr"] == 1.0
    assert m["hapax_share"] == 1.0
    assert m["exact_duplicate_rate"] == 0.0
    assert m["near_duplicate_rate"] == 0.0
    # Disjoint shingle sets: a signature position agrees only by a 32-bit hash collision.
    assert m["mean_pairwise_similarity"] < 0.01
    assert m["samey_ngrams"] == []
    assert m["compression_ratio"] < diversity_metrics([SENTENCE] * 100)["compression_ratio"]


def test_known_unigram_distribution():
    m = diversity_metrics(["xa xa yb zc"])
    assert m["distinct_1"] == close(3 / 4)
    assert m["entropy_1"] == close(1.5)  # p = 1/2, 1/4, 1/4
    assert m["hapax_share"] == close(2 / 3)
    assert m["mattr"] == close(3 / 4)  # fewer tokens than a window: the plain TTR
    assert m["distinct_3"] == 1.0 and m["entropy_3"] == close(1.0)
    assert m["mean_pairwise_similarity"] is None and m["similarity_pairs"] == 0


def test_two_word_alternation():
    m = diversity_metrics(["tick tock " * 100])
    assert m["mattr"] == close(2 / MATTR_WINDOW)
    assert m["distinct_2"] == close(2 / 199)
    assert m["entropy_2"] == close(-(100 / 199 * math.log2(100 / 199) + 99 / 199 * math.log2(99 / 199)))


def test_ngrams_never_cross_record_boundaries():
    m = diversity_metrics(["aa bb", "cc dd", "ee"])
    assert m["tokens"] == 5
    assert m["distinct_2"] == 1.0 and m["entropy_2"] == close(1.0)  # only "aa bb" and "cc dd"
    assert m["distinct_3"] is None and m["entropy_3"] is None


def mattr_by_brute_force(ids: list[int], window: int) -> float:
    if len(ids) <= window:
        return len(set(ids)) / len(ids)
    ratios = [len(set(ids[s:s + window])) / window for s in range(len(ids) - window + 1)]
    return sum(ratios) / len(ratios)


@pytest.mark.parametrize("vocab,length,window", [(5, 300, 50), (40, 500, 50), (1000, 200, 50), (7, 30, 10), (3, 10, 10)])
def test_mattr_matches_the_definition(vocab, length, window):
    rng = random.Random(vocab * 1000 + length)
    ids = [rng.randrange(vocab) for _ in range(length)]
    assert mattr(ids, window) == pytest.approx(mattr_by_brute_force(ids, window), rel=1e-12)
    assert mattr([], window) is None


def test_words_are_the_dedup_tokens():
    assert words("In today's fast-paced World, Ça VA!") == ["in", "todays", "fastpaced", "world", "ça", "va"]
    assert words("漢字かな") == ["漢", "字", "か", "な"]
    assert len(words("word " * MAX_CHARS)) == MAX_CHARS // 5


def test_empty_inputs_give_none_not_errors():
    for texts in ([], [""], ["", "   "]):
        m = diversity_metrics(texts)
        assert set(m) == set(METRIC_KEYS)
        assert m["tokens"] == 0 and m["distinct_1"] is None and m["entropy_1"] is None
        assert m["mattr"] is None and m["hapax_share"] is None
        json.dumps(m, allow_nan=False)
    assert diversity_metrics([])["compression_ratio"] is None
    assert diversity_metrics([])["near_duplicate_rate"] is None
    assert diversity_metrics([])["self_repeating_share"] is None
    assert diversity_metrics([SENTENCE] * 3)["self_repeating_share"] is None  # too short to judge


def test_self_repeating_share_counts_records_that_loop():
    rng = random.Random(0)
    prose = [human_text(rng, sentences=8) for _ in range(30)]
    loops = [" ".join([SENTENCE] * 6) for _ in range(3)]  # 58 trigrams, 10 distinct
    passage = " ".join(word(i) for i in range(30))
    twice = [f"{passage} {passage}"]  # 58 trigrams, 30 distinct: said twice, not a loop
    m = diversity_metrics(prose + loops + twice + ["too short to judge"])
    assert m["self_repeating_share"] == close(3 / 34)
    assert diversity_metrics(prose + twice)["self_repeating_share"] == 0.0


# -- MinHash metrics ------------------------------------------------------------------------------


def test_near_duplicate_rate_counts_records_with_a_copy_in_the_sample():
    rng = random.Random(11)
    originals = [human_text(rng, sentences=25) for _ in range(40)]
    assert len(set(originals)) == 40
    # Ten near copies (one word appended) of the first ten texts: 20 of 50 records have a near twin.
    texts = originals + [t + " indeed" for t in originals[:10]]
    m = diversity_metrics(texts)
    assert m["near_duplicate_rate"] == close(20 / 50)
    assert m["exact_duplicate_rate"] == 0.0
    # An exact copy is also a near-duplicate.
    m2 = diversity_metrics(originals + originals[:5])
    assert m2["exact_duplicate_rate"] == close(10 / 45)
    assert m2["near_duplicate_rate"] == close(10 / 45)


def test_given_signatures_are_used_and_agree_with_computed_ones():
    texts = [t for _, t in corpus(300, seed=2)]
    sigs = MinHasher(num_perm=128, seed=1, ngram=5).signatures([normalize_for_dedup(t) for t in texts])
    assert diversity_metrics(texts, sigs) == diversity_metrics(texts)
    # Signatures that say every record is the same text: the MinHash metrics follow them.
    same = np.repeat(sigs[:1], len(texts), axis=0)
    m = diversity_metrics(texts, same)
    assert m["mean_pairwise_similarity"] == 1.0 and m["near_duplicate_rate"] == 1.0
    with pytest.raises(ValueError):
        diversity_metrics(texts, sigs[:10])


def test_mean_pairwise_similarity_all_pairs_for_small_samples():
    # Records 0/1 identical, record 2 disjoint: pairs (0,1)=1, (0,2)=0, (1,2)=0 -> mean 1/3.
    m = diversity_metrics([SENTENCE, SENTENCE, "kilo lima mike november oscar papa quebec"])
    assert m["similarity_pairs"] == 3
    assert m["mean_pairwise_similarity"] == pytest.approx(1 / 3, abs=0.01)


def test_large_samples_use_a_seeded_fixed_number_of_pairs():
    texts = [t for _, t in corpus(400, seed=4)]
    a, b, c = (diversity_metrics(texts, seed=s) for s in (0, 0, 1))
    assert a == b
    assert a["similarity_pairs"] == min(400 * 399 // 2, SIMILARITY_PAIRS)
    assert a["mean_pairwise_similarity"] == pytest.approx(c["mean_pairwise_similarity"], abs=0.01)


# -- samey phrases ------------------------------------------------------------------------------


def test_overrepresented_ngrams_against_a_reference():
    rng = random.Random(1)
    plain = [human_text(rng) for _ in range(200)]
    target = [t + " It plays a crucial role." for t in plain[:100]]
    rows = overrepresented_ngrams(target, plain[100:], n=3, top=5)
    assert {r["ngram"] for r in rows[:3]} == {"it plays a", "plays a crucial", "a crucial role"}
    top = rows[0]
    assert top["records"] == 100 and top["share"] == 1.0 and top["reference_records"] == 0
    assert top["lift"] == close(1.0 / (0.5 / 100))
    for r in rows:
        assert r["share"] > r["reference_share"] and r["lift"] > 1
    # Phrases as common in the reference as in the target are not "over-represented".
    same = overrepresented_ngrams(plain[:100], plain[100:], n=3)
    assert all(r["lift"] > 1 and r["g2"] < top["g2"] / 10 for r in same)


def test_overrepresented_ngrams_without_reference_rank_by_records():
    texts = ["red fox runs"] * 5 + ["blue cat sits"] * 3 + ["green owl sleeps"]
    rows = overrepresented_ngrams(texts, None, n=3)
    assert [(r["ngram"], r["records"], r["count"]) for r in rows] == [("red fox runs", 5, 5), ("blue cat sits", 3, 3)]
    assert "lift" not in rows[0]
    assert overrepresented_ngrams(texts, [], n=1, top=1)[0]["ngram"] in {"red", "fox", "runs"}
    with pytest.raises(ValueError):
        overrepresented_ngrams(texts, None, n=0)


def test_count_is_occurrences_records_is_texts():
    rows = overrepresented_ngrams(["la la la la", "la la"], None, n=2)
    assert rows == [{"ngram": "la la", "count": 4, "records": 2, "share": 1.0}]


# -- the report section -----------------------------------------------------------------------------


def test_diversity_section_before_after_and_groups():
    unique = [t for _, t in corpus(300, seed=9, machine_share=0.0)]
    boiler = [SENTENCE + f" {word(i)}" for i in range(100)]
    before = unique + boiler
    before_groups = ["a.jsonl"] * 300 + ["b.jsonl"] * 100
    after = unique
    after_groups = ["a.jsonl"] * 300
    s = diversity_section(before, after, before_groups, after_groups, seed=3)
    json.dumps(s, allow_nan=False)
    assert set(s) == {"before", "after", "removed_ngrams", "by_group", "by_group_omitted"}
    assert s["by_group_omitted"] == 0
    assert s["before"]["records"] == 400 and s["after"]["records"] == 300
    assert s["after"]["distinct_3"] > s["before"]["distinct_3"]
    assert s["after"]["near_duplicate_rate"] < s["before"]["near_duplicate_rate"]
    assert s["after"]["mean_pairwise_similarity"] < s["before"]["mean_pairwise_similarity"]
    assert s["removed_ngrams"][0]["ngram"] in " ".join(SENTENCE.split())
    assert s["removed_ngrams"][0]["records"] == 100
    assert list(s["by_group"]) == ["a.jsonl", "b.jsonl"]
    a, b = s["by_group"]["a.jsonl"], s["by_group"]["b.jsonl"]
    assert a["records_sampled"] == {"before": 300, "after": 300}
    assert b["records_sampled"] == {"before": 100, "after": 0}
    assert b["after"]["records"] == 0 and b["after"]["distinct_1"] is None
    # The boilerplate group's samey phrases are measured against the rest of the sample.
    assert b["before"]["samey_ngrams"][0]["reference_records"] == 0
    assert b["before"]["samey_ngrams"][0]["records"] == 100
    # A group's metrics equal those of its texts on their own (apart from samey n-grams).
    alone = diversity_metrics(boiler, seed=3)
    assert {k: v for k, v in b["before"].items() if k != "samey_ngrams"} == {
        k: v for k, v in alone.items() if k != "samey_ngrams"}
    # One group holding everything has the overall metrics.
    one = diversity_section(before, after, ["all"] * 400, ["all"] * 300, seed=3)
    assert one["by_group"]["all"]["after"]["mattr"] == one["after"]["mattr"]
    assert one["by_group"]["all"]["before"]["samey_ngrams"] == one["before"]["samey_ngrams"][:10]
    # Overall metrics do not depend on grouping.
    assert diversity_section(before, after, seed=3)["before"] == s["before"]
    assert diversity_section(before, after, seed=3)["by_group"] == {}


def test_diversity_section_with_signatures_and_empty_after():
    texts = [t for _, t in corpus(50, seed=1)]
    sigs = MinHasher(num_perm=64, seed=1).signatures([normalize_for_dedup(t) for t in texts])
    s = diversity_section(texts, [], ["g"] * 50, [], before_sigs=sigs, after_sigs=np.zeros((0, 64), np.uint32))
    assert s["after"]["records"] == 0 and s["after"]["near_duplicate_rate"] is None
    assert s["by_group"]["g"]["records_sampled"] == {"before": 50, "after": 0}
    json.dumps(s, allow_nan=False)
    with pytest.raises(ValueError):
        diversity_section(texts, texts, ["g"] * 3, None)


def test_only_the_largest_groups_are_measured():
    texts = [t for _, t in corpus(60, seed=5)]
    groups = ["big"] * 30 + ["mid"] * 20 + ["small"] * 9 + ["tiny"]
    s = diversity_section(texts, texts[:50], groups, groups[:50], max_groups=2)
    assert list(s["by_group"]) == ["big", "mid"] and s["by_group_omitted"] == 2
    full = diversity_section(texts, texts[:50], groups, groups[:50])
    assert full["by_group_omitted"] == 0 and len(full["by_group"]) == 4
    # Listed groups are measured the same way, and compared with the same rest of the sample.
    assert s["by_group"]["mid"] == full["by_group"]["mid"]
    assert full["by_group"]["tiny"]["records_sampled"] == {"before": 1, "after": 0}


def test_hashed_ngram_keys_give_the_same_metrics_as_packed_ones():
    # Vocabularies too large to pack three word ids into 63 bits use 64-bit hashes of the n-grams.
    from synthfilter.diversity import _metrics, _samey, _Tokenized

    texts = [t for _, t in corpus(200, seed=8)] + [SENTENCE] * 5
    results = []
    for tok in (_Tokenized(), _Tokenized(id_bits=3)):
        stream = tok.encode(texts)
        results.append(_metrics(stream, None, 0, 0.8, _samey(stream, None, 3, 20)))
    assert _Tokenized().packed(3) and not _Tokenized(id_bits=3).encode(texts).tok.packed(3)
    packed, hashed = results
    assert packed == hashed


def test_known_bands_are_what_optimal_bands_gives():
    # The metrics skip scipy's integrator for the settings they use: the cached choice must be
    # the computed one.
    from synthfilter.dedup.lsh import optimal_bands
    from synthfilter.diversity import _KNOWN_BANDS, _bands

    for (threshold, num_perm), bands in _KNOWN_BANDS.items():
        assert optimal_bands(threshold, num_perm) == bands
    assert _bands(0.7, 64) == optimal_bands(0.7, 64)


def test_after_signatures_reused_from_before_are_the_computed_ones():
    # Without signatures, the after sample's are taken from the before sample's when every after
    # text is a before text: the section must be what separately computed signatures give.
    from synthfilter.diversity import _signatures

    texts = [t for _, t in corpus(300, seed=11, machine_share=0.4)]
    texts += texts[:40]  # some exact duplicates
    kept = [t for i, t in enumerate(texts) if i % 3]
    norm = [normalize_for_dedup(t[:4000]) for t in texts]
    sigs = _signatures(norm)
    explicit = diversity_section(texts, kept, before_sigs=sigs, after_sigs=_signatures([normalize_for_dedup(t[:4000]) for t in kept]))
    assert diversity_section(texts, kept) == explicit
    # An after text that is not a before text: the after signatures are computed.
    extra = kept + [human_text(random.Random(5))]
    explicit = diversity_section(texts, extra, before_sigs=sigs,
                                 after_sigs=_signatures([normalize_for_dedup(t[:4000]) for t in extra]))
    assert diversity_section(texts, extra) == explicit
