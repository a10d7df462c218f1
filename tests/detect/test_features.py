"""Normalisation and stylometric features: equal to clean_text, blind to layout, length-robust."""

from __future__ import annotations

import random

import numpy as np
import pytest

from synthfilter.detect.features import (
    N_STYLE,
    STYLE_FEATURE_NAMES,
    TokenIds,
    Vocabulary,
    detector_text,
    fasttext_view,
    normalize_text,
    style_features,
    style_matrix,
    tokenize,
)
from synthfilter.text.normalize import clean_text

from .conftest import human_text, machine_text


def test_ascii_fast_path_matches_clean_text():
    r = random.Random(7)
    alphabet = "abcXYZ 019.,;!?\t\n\r\x0b\x0c\x00\x01\x1b\x1f\x7f-'\""
    for _ in range(2000):
        s = "".join(r.choice(alphabet) for _ in range(r.randint(0, 40)))
        assert normalize_text(s) == clean_text(s), repr(s)


def test_detector_text_equals_its_plain_definition():
    # clean_text, then only the first 2 * max_chars, then markup and field labels removed and
    # whitespace collapsed: the fast paths must not change any of it.
    from synthfilter.detect import features as f

    def plain(text, max_chars):
        norm = clean_text(text)
        if max_chars is not None and len(norm) > 2 * max_chars:
            norm = norm[: 2 * max_chars]
        norm = f._MARKUP_TAG.sub(" ", norm)
        norm = f._LAYOUT_LABEL.sub("", norm)
        return " ".join(norm.split())

    r = random.Random(11)
    alphabet = "abcXYZ 019.,;!?\t\n\x00\x1b-'\"<>/&;:\u00a0\u200b\u0435\uff41\u00e9"
    pieces = ["<br />", "&amp;", "Question: ", "Answer:", " ", "word", "\u200b"]
    for _ in range(3000):
        s = "".join(r.choice(alphabet) if r.random() < 0.8 else r.choice(pieces) for _ in range(r.randint(0, 50)))
        for max_chars in (None, 8, 2000):
            assert detector_text(s, max_chars) == plain(s, max_chars), (repr(s), max_chars)


def test_non_ascii_goes_through_clean_text():
    s = "Th\u0435 c\u0430t\u200b sat\u00a0on  the \uff4d\uff41t"
    assert normalize_text(s) == clean_text(s) == "The cat sat on the mat"


def test_layout_and_markup_do_not_change_the_detector_view(rng):
    text = human_text(rng)
    variants = [
        text.replace(". ", ".\n\n"),
        "  " + text.replace(" ", "   ") + "\n",
        text.replace(". ", ".<br /><br />"),
        "Question: " + text,
        text.replace("e", "\u0435"),  # Cyrillic look-alike
        "\u200b".join(text.split(" ")).replace("\u200b", " \u200b"),
    ]
    base = detector_text(text)
    for v in variants:
        assert detector_text(v) == base


def test_views_are_single_lines_and_lower_case(rng):
    t = detector_text(machine_text(rng))
    ft = fasttext_view(t)
    assert "\n" not in ft and ft == ft.lower()
    assert " , " in ft


def test_style_vector_shape_and_finite(rng):
    texts = [detector_text(human_text(rng)) for _ in range(5)] + ["", "x", "One. Two! Three?"]
    m = style_matrix(texts)
    assert m.shape == (len(texts), N_STYLE) == (len(texts), len(STYLE_FEATURE_NAMES))
    assert m.dtype == np.float32 and np.isfinite(m).all()


def test_a_batch_of_texts_without_words_is_scored_as_in_any_other_batch():
    # A shard of one record whose text is a NUL (or any such record with --batch-size 1)
    # stopped the run with an internal error: the sentence arrays were one longer than the ends.
    other = "The council met on Tuesday. It voted to keep the library open."
    for texts in (["\x00"], ["\x00", "\x01 \x02"], ["", "   "], [""]):
        m = style_matrix(texts)
        assert m.shape == (len(texts), N_STYLE) and np.isfinite(m).all()
        np.testing.assert_array_equal(m, style_matrix(texts + [other])[: len(texts)])


def test_style_rates_do_not_scale_with_length(rng):
    short = detector_text(machine_text(rng, 10))
    doubled = short + " " + short
    a, b = style_features(short), style_features(doubled)
    names = list(STYLE_FEATURE_NAMES)
    for name in ("punct_002c", "word_len_mean", "sent_len_mean", "fw_the", "sent_len_cv"):
        i = names.index(name)
        assert abs(a[i] - b[i]) <= 0.1 * max(abs(a[i]), 1e-3), name


def test_burstiness_separates_the_two_styles(rng):
    names = list(STYLE_FEATURE_NAMES)
    cv = names.index("sent_len_cv")
    h = np.mean([style_features(detector_text(human_text(rng, 12)))[cv] for _ in range(20)])
    m = np.mean([style_features(detector_text(machine_text(rng, 12)))[cv] for _ in range(20)])
    assert h > m


@pytest.mark.parametrize("packed_keys", [True, False])
def test_batched_style_matrix_equals_the_per_text_features(rng, monkeypatch, packed_keys):
    if not packed_keys:  # the overflow-free path that very large batches take
        monkeypatch.setattr("synthfilter.detect.features._KEY_LIMIT", 0)
    # Long texts cross every window (100-word chunks, 200/300-word heads); the odd ones hit
    # the edge cases: empty, punctuation only, no sentence end, one word, digits, repeats.
    texts = [detector_text(human_text(rng, rng.randint(1, 60))) for _ in range(12)]
    texts += [detector_text(machine_text(rng, rng.randint(1, 60))) for _ in range(12)]
    texts += ["", "   ", "...", "?!", "word", "no end here", "1 2 3 4 5.", "Again. " * 150,
              "the the the the " * 120, "A, b; c: d! e? (f) \u201cg\u201d \u2014 h\u2026"]
    m = style_matrix(texts)
    for k, t in enumerate(texts):
        np.testing.assert_allclose(m[k], style_features(t), rtol=2e-5, atol=1e-6, err_msg=repr(t[:40]))
    # Numbered against a shared vocabulary that knows some tokens (and not others): same values.
    tokens = [tokenize(t) for t in texts]
    shared = Vocabulary({w: 5 + i for i, w in enumerate(["the", ".", ",", "council", "and", "word"])}, 11)
    np.testing.assert_array_equal(style_matrix(texts, tokens, TokenIds.of(tokens, shared)), m)
