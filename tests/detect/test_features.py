"""Normalisation and stylometric features: equal to clean_text, blind to layout, length-robust."""

from __future__ import annotations

import random

import numpy as np

from synthfilter.detect.features import (
    N_STYLE,
    STYLE_FEATURE_NAMES,
    detector_text,
    fasttext_view,
    normalize_text,
    skeleton_view,
    style_features,
    style_matrix,
)
from synthfilter.text.normalize import clean_text

from .conftest import human_text, machine_text


def test_ascii_fast_path_matches_clean_text():
    r = random.Random(7)
    alphabet = "abcXYZ 019.,;!?\t\n\r\x0b\x0c\x00\x01\x1b\x1f\x7f-'\""
    for _ in range(2000):
        s = "".join(r.choice(alphabet) for _ in range(r.randint(0, 40)))
        assert normalize_text(s) == clean_text(s), repr(s)


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
    sk = skeleton_view(t)
    assert set(sk.split()) <= {"X", "x", "xx", "0", *",.;:!?\"'()[]-*/&%$#@_"} | set(
        w for w in sk.split() if w.isalpha() and w.islower())
    assert "fostering" not in sk  # content words become shapes


def test_style_vector_shape_and_finite(rng):
    texts = [detector_text(human_text(rng)) for _ in range(5)] + ["", "x", "One. Two! Three?"]
    m = style_matrix(texts)
    assert m.shape == (len(texts), N_STYLE) == (len(texts), len(STYLE_FEATURE_NAMES))
    assert m.dtype == np.float32 and np.isfinite(m).all()


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
