"""Cheap, length-robust text features for the detector: normalisation, fastText input views,
and a dense stylometric vector (burstiness, lexical richness, function words, punctuation, ...).
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import Counter
from typing import Sequence

import numpy as np

from synthfilter.text.normalize import clean_text, map_homoglyphs

# Characters that ``clean_text`` leaves alone; a text made only of these (and already in NFKC)
# needs nothing more than whitespace collapsing. Decided once per distinct character.
_PLAIN_CHAR: dict[str, bool] = {}
_NOT_PLAIN_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Mn", "Mc", "Me"}


def _is_plain(ch: str) -> bool:
    plain = _PLAIN_CHAR.get(ch)
    if plain is None:
        if ch in " \t\n\r\v\f":
            plain = True
        else:
            plain = (unicodedata.category(ch) not in _NOT_PLAIN_CATEGORIES
                     and map_homoglyphs(ch) == ch
                     and not (0x1100 <= ord(ch) <= 0x11FF or 0x3130 <= ord(ch) <= 0x318F
                              or 0xA960 <= ord(ch) <= 0xA97F or 0xD7B0 <= ord(ch) <= 0xD7FF)
                     and clean_text(f"a{ch}a") == f"a{ch}a")
        _PLAIN_CHAR[ch] = plain
    return plain


def normalize_text(text: str) -> str:
    """The detector's view of a text: exactly ``clean_text(text)``, computed faster.

    Most texts need only whitespace collapsing (no look-alikes, no invisible characters, already
    NFKC); those skip ``clean_text``'s regular expressions. Anything else goes through it.
    """
    if unicodedata.is_normalized("NFKC", text) and all(
        _is_plain(ch) for ch in set(text) if not (ch.isascii() and ch.isprintable())
    ):
        return " ".join(text.split())
    return clean_text(text)


_MARKUP_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]{0,200})?/?>|&(?:[a-z]{2,8}|#[0-9]{1,5});")
_LAYOUT_LABEL_WORDS = ("Question", "Answer", "Context", "Title", "Abstract", "Summary")
_LAYOUT_LABEL = re.compile(r"\b(?:" + "|".join(_LAYOUT_LABEL_WORDS) + r")\s?:\s?")


def detector_text(text: str, max_chars: int | None = None) -> str:
    """``normalize_text`` plus layout that says nothing about the author removed.

    HTML tags and entities (``<br />``, ``&amp;``) and field labels such as ``Question:`` /
    ``Answer:`` are formatting of the page or data set, not writing style: a human page with
    markup must not look different from the same words without it.
    """
    norm = normalize_text(text)
    if max_chars is not None and len(norm) > 2 * max_chars:  # only the window is read: spare the regexes the rest
        norm = norm[: 2 * max_chars]
    if "<" in norm or "&" in norm:
        norm = _MARKUP_TAG.sub(" ", norm)
    if ":" in norm and any(label in norm for label in _LAYOUT_LABEL_WORDS):
        norm = _LAYOUT_LABEL.sub("", norm)
    return " ".join(norm.split())


# Scores read at most this many characters of normalised text: enough for every style
# statistic to settle (training texts are mostly shorter), and a bounded cost per document.
DEFAULT_MAX_CHARS = 2000


def analysis_window(norm: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The first ``max_chars`` characters of a normalised text, cut back to a word boundary.

    Cut after normalisation, so invisible characters or extra spaces cannot shift the window.
    """
    if len(norm) <= max_chars:
        return norm
    cut = norm.rfind(" ", 0, max_chars + 1)
    return norm[: cut if cut > max_chars // 2 else max_chars]


# Punctuation split into its own tokens for fastText and counted in the style profile.
PUNCTUATION = ",.;:!?\"'()[]-*/&%$#@_" + "\u2014\u2013\u2026\u2018\u2019\u201c\u201d"
_PUNCT_SET = frozenset(PUNCTUATION)
_TOKEN = re.compile(r"[^\s" + re.escape(PUNCTUATION) + r"]+|[" + re.escape(PUNCTUATION) + "]")
_DIGIT = re.compile(r"\d")
_SENTENCE_END = frozenset(".!?")


def tokenize(norm: str) -> list[str]:
    """Lower-cased word and punctuation tokens. Case never reaches a model, so casing tricks
    (SHOUTING, rAnDoM case) cannot move a score."""
    return _TOKEN.findall(norm.lower())


def fasttext_view(norm: str) -> str:
    """Lower-cased, punctuation split into its own tokens, one line (fastText's input)."""
    return " ".join(tokenize(norm))


# About 160 English function words: the part of vocabulary that carries style, not topic.
FUNCTION_WORDS: tuple[str, ...] = tuple(
    """a about above after again against all also although am among an and another any are
    around as at be because been before being below between both but by can could did do does
    doing down during each either enough even ever every few for from further had has have
    having he her here hers herself him himself his how however i if in indeed into is it its
    itself just let like many may me might more moreover most much must my myself neither no
    nor not now of off often on once one only or other our ours ourselves out over own perhaps
    quite rather really same several she should since so some such than that the their theirs
    them themselves then there therefore these they this those though through thus to too
    under until up upon us very was we well were what when where whether which while who whom
    whose why will with within without would yet you your yours yourself additionally
    furthermore overall ultimately crucial essential significant various""".split()
)
_FW_SET = frozenset(FUNCTION_WORDS)

# token -> skeleton symbol, filled lazily; bounded so that a stream of novel tokens cannot grow it.
_SKELETON_CACHE: dict[str, str] = {t: t for t in (*FUNCTION_WORDS, *PUNCTUATION)}
_SKELETON_CACHE_MAX = 500_000


def _shape(tok: str) -> str:
    if tok.isalpha():
        sym = "xx" if len(tok) >= 8 else "x"
    else:
        sym = "0" if _DIGIT.search(tok) else "x"
    if len(_SKELETON_CACHE) < _SKELETON_CACHE_MAX:
        _SKELETON_CACHE[tok] = sym
    return sym


def skeleton_view(tokens: Sequence[str]) -> str:
    """Content words replaced by their shape: the text's syntax and rhythm without its topic.

    Function words and punctuation stay; other tokens become ``x`` (short word), ``xx``
    (8+ letters) or ``0`` (has a digit).
    """
    get = _SKELETON_CACHE.get
    return " ".join([get(t) or _shape(t) for t in tokens])


_PUNCT_PROFILE = ",.;:!?\"'()-*/&%$\u2014\u2013\u2026\u2018\u2019\u201c\u201d"

STYLE_FEATURE_NAMES: tuple[str, ...] = (
    *(f"punct_{ord(c):04x}" for c in _PUNCT_PROFILE),
    "digit_rate",
    "word_len_mean",
    "word_len_std",
    "long_word_rate",
    "ttr_first100",
    "ttr_chunk100_mean",
    "hapax_first300",
    "repeat_bigram_first200",
    "repeat_trigram_first200",
    "sent_len_mean",
    "sent_len_std",
    "sent_len_cv",
    "sent_len_absdiff",
    "short_sent_rate",
    "long_sent_rate",
    "sent_start_fw_rate",
    "zlib_ratio_prefix",
    "log_words",
    *(f"fw_{w}" for w in FUNCTION_WORDS),
)
N_STYLE = len(STYLE_FEATURE_NAMES)
_N_FIXED = N_STYLE - len(FUNCTION_WORDS)


def style_features(norm: str, tokens: Sequence[str] | None = None) -> np.ndarray:
    """A dense stylometric vector (float32, ``N_STYLE`` values) for one normalised text.

    Rates are per token or per word so that document length changes them little; richness and
    repetition are measured on fixed-size windows for the same reason. Case-blind.
    """
    if tokens is None:
        tokens = tokenize(norm)
    v = np.zeros(N_STYLE, dtype=np.float32)
    n_tok = len(tokens)
    if n_tok == 0:
        return v
    counts = Counter(tokens)
    inv_tok = 100.0 / n_tok
    get = counts.get
    v[: len(_PUNCT_PROFILE)] = [get(c, 0) * inv_tok for c in _PUNCT_PROFILE]
    i = len(_PUNCT_PROFILE)
    v[i] = 100.0 * len(_DIGIT.findall(norm)) / max(len(norm), 1)
    i += 1

    words = [t for t in tokens if t not in _PUNCT_SET]
    n_words = len(words)
    if n_words:
        lens = np.fromiter(map(len, words), dtype=np.float32, count=n_words)
        v[i] = lens.mean()
        v[i + 1] = lens.std()
        v[i + 2] = float((lens >= 8).mean())
        head = words[:100]
        v[i + 3] = len(set(head)) / len(head)
        chunks = [words[k : k + 100] for k in range(0, max(n_words - 99, 1), 100)]
        v[i + 4] = sum(len(set(c)) / len(c) for c in chunks) / len(chunks)
        head = words[:300]
        v[i + 5] = sum(1 for c in Counter(head).values() if c == 1) / len(head)
        head = words[:200]
        if len(head) > 1:
            v[i + 6] = 1.0 - len(set(zip(head, head[1:]))) / (len(head) - 1)
        if len(head) > 2:
            v[i + 7] = 1.0 - len(set(zip(head, head[1:], head[2:]))) / (len(head) - 2)
    i += 8

    ends = [k for k, t in enumerate(tokens) if t in _SENTENCE_END]
    if not ends or ends[-1] != n_tok - 1:
        ends.append(n_tok - 1)
    bounds = np.array([-1, *ends])
    sent_lens = np.diff(bounds).astype(np.float32)
    sent_lens = sent_lens[sent_lens > 1]  # "..." and "?!" are not sentences
    if len(sent_lens):
        mean = float(sent_lens.mean())
        std = float(sent_lens.std())
        v[i] = mean
        v[i + 1] = std
        v[i + 2] = std / mean
        v[i + 3] = float(np.abs(np.diff(sent_lens)).mean()) / mean if len(sent_lens) > 1 else 0.0
        v[i + 4] = float((sent_lens < 8).mean())
        v[i + 5] = float((sent_lens > 35).mean())
        starts = [tokens[k + 1] for k in ends[:-1] if k + 1 < n_tok]
        starts.append(tokens[0])
        v[i + 6] = sum(1 for s in starts if s in _FW_SET) / len(starts)
    i += 7

    prefix = norm[:1500].lower().encode("utf-8", "replace")
    v[i] = len(zlib.compress(prefix, 1)) / max(len(prefix), 1)
    v[i + 1] = math.log1p(n_words)
    i += 2

    if n_words:
        inv = 1.0 / n_words
        v[i:] = [get(w, 0) * inv for w in FUNCTION_WORDS]
    return v


def style_matrix(norms: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """``style_features`` for many texts, stacked into an ``(n, N_STYLE)`` float32 matrix."""
    out = np.empty((len(norms), N_STYLE), dtype=np.float32)
    for k, t in enumerate(norms):
        out[k] = style_features(t, tokens[k] if tokens is not None else None)
    return out
