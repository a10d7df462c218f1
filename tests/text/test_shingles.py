"""Shingles and their hashes: the readable reference and the numpy batch version agree bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from synthfilter.text.normalize import normalize_for_dedup
from synthfilter.text.shingles import (
    SHINGLE_HASH_NAME,
    shingle_hash,
    shingle_hashes_batch,
    shingle_hashes_from_tokens,
    shingles,
    token_hash,
    token_hashes_batch,
    tokens,
    uses_char_ngrams,
)


def test_word_shingles_are_consecutive_ngrams():
    assert shingles("a b c d e f g", ngram=5) == [
        ("a", "b", "c", "d", "e"),
        ("b", "c", "d", "e", "f"),
        ("c", "d", "e", "f", "g"),
    ]
    assert shingles("a b c d e f g", ngram=2)[:2] == [("a", "b"), ("b", "c")]


def test_short_texts_get_one_shingle_of_the_whole_text():
    assert shingles("only three words", ngram=5) == [("only", "three", "words")]
    assert shingles("", ngram=5) == [()]
    assert shingles("a b c d e", ngram=5) == [("a", "b", "c", "d", "e")]


def test_spaceless_scripts_fall_back_to_character_ngrams():
    assert uses_char_ngrams("東京都の天気は晴れです")
    assert uses_char_ngrams("ภาษาไทยเขียนติดกัน")
    assert uses_char_ngrams("我们 使用 python 和 numpy 进行 数据 分析")  # mostly Han, some Latin
    assert not uses_char_ngrams("plain english words")
    assert not uses_char_ngrams("naïve café déjà vu über straße")
    assert not uses_char_ngrams("한국어는 띄어쓰기를 합니다")  # Korean is written with spaces
    assert shingles("東京都の天気", char_ngram=3) == [
        ("東", "京", "都"), ("京", "都", "の"), ("都", "の", "天"), ("の", "天", "気"),
    ]
    assert shingles("東京 都", char_ngram=5) == [("東", "京", "都")]  # spaces are not characters of a shingle
    assert tokens("ab c", char_mode=True) == ["a", "b", "c"]


def test_shingle_hash_is_pinned_to_its_name():
    # If this fails, shingle hashing changed: bump SHINGLE_HASH_NAME (stored signatures differ).
    assert SHINGLE_HASH_NAME == "synthfilter-tab32-v1"
    assert token_hash("the") == 974239115
    assert shingle_hash(("the", "cat", "sat", "on", "the")) == 2964758460
    assert shingle_hash(()) == 2349025055


def test_hash_depends_on_order_and_token_boundaries():
    assert shingle_hash(("ab", "c")) != shingle_hash(("a", "bc"))
    assert shingle_hash(("a", "b")) != shingle_hash(("b", "a"))
    assert token_hash("ab") != token_hash("ba")
    values = {token_hash(w) for w in (f"w{i}" for i in range(20000))}
    assert len(values) == 20000


@pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 18])
def test_batch_equals_reference(maker, chunk_bytes):
    texts = [normalize_for_dedup(maker.mixed()) for _ in range(600)]
    texts += ["", " ", "x", maker.doc(3000), "a\tb\nc  d e f", "😀 " * 10]
    hashes, offsets = shingle_hashes_batch(texts, ngram=5, char_ngram=4, chunk_bytes=chunk_bytes)
    assert hashes.dtype == np.uint32 and offsets[0] == 0 and offsets[-1] == len(hashes)
    for i, text in enumerate(texts):
        expected = [shingle_hash(s) for s in shingles(text, ngram=5, char_ngram=4)]
        assert hashes[offsets[i] : offsets[i + 1]].tolist() == expected, repr(text[:80])


@pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 18])
def test_token_hashes_batch_equals_reference(maker, chunk_bytes):
    # The tokens the repetition rule counts: words, or characters for spaceless scripts.
    texts = [normalize_for_dedup(maker.mixed()) for _ in range(300)]
    texts += ["", " ", "x", maker.doc(3000), "a\tb\nc  d e f", "😀 " * 10]
    hashes, offsets, char_mode = token_hashes_batch(texts, chunk_bytes=chunk_bytes)
    assert hashes.dtype == np.uint32 and offsets[0] == 0 and offsets[-1] == len(hashes)
    assert char_mode.tolist() == [uses_char_ngrams(t) for t in texts] and char_mode.any()
    for i, text in enumerate(texts):
        expected = [token_hash(t) for t in tokens(text, char_mode=uses_char_ngrams(text))]
        assert hashes[offsets[i] : offsets[i + 1]].tolist() == expected, repr(text[:80])
    assert token_hashes_batch([])[1].tolist() == [0]
    # The shingles made from those tokens (one tokenisation for MinHash and the repetition rule)
    # are shingle_hashes_batch's, whatever the grouping.
    want = shingle_hashes_batch(texts, ngram=5, char_ngram=4)
    for chunk_tokens in (1, 50, 1 << 20):
        got = shingle_hashes_from_tokens(hashes, offsets, char_mode, 5, 4, chunk_tokens=chunk_tokens)
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()


def test_tokens_never_cross_text_boundaries():
    joined, _ = shingle_hashes_batch(["a b", "c d"], ngram=2)
    alone = [shingle_hashes_batch([t], ngram=2)[0][0] for t in ("a b", "c d")]
    assert joined.tolist() == alone
    assert len(joined) == 2  # no ("b", "c") shingle


def test_empty_batch():
    hashes, offsets = shingle_hashes_batch([])
    assert len(hashes) == 0 and offsets.tolist() == [0]


@pytest.mark.parametrize("segment", [1, 5, 64, 1 << 20])
def test_token_hashes_of_huge_texts_are_done_in_segments(maker, segment):
    from synthfilter.text.shingles import _token_hashes

    words = maker.words(300) + ["x" * 200, "ü" * 50, "東"]
    buf = np.frombuffer((" " + " ".join(words) + " ").encode("utf-8"), dtype=np.uint8)
    edges = np.flatnonzero((buf[1:] <= 0x20) ^ (buf[:-1] <= 0x20)) + 1
    hashes = _token_hashes(buf, edges[0::2], edges[1::2], segment=segment)
    assert hashes.tolist() == [token_hash(w) for w in words]
