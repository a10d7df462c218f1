"""Cheap, length-robust text features for the detector: normalisation, fastText input views,
and a dense stylometric vector (burstiness, lexical richness, function words, punctuation, ...).
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from itertools import chain, repeat
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


_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def _normalize(text: str) -> tuple[str, bool]:
    """``clean_text(text)`` and whether the fast path (whitespace collapsed by split/join) gave it."""
    if unicodedata.is_normalized("NFKC", text) and all(
        _is_plain(ch) for ch in set(_NOT_PRINTABLE_ASCII.findall(text))
    ):
        return " ".join(text.split()), True
    return clean_text(text), False


def normalize_text(text: str) -> str:
    """The detector's view of a text: exactly ``clean_text(text)``, computed faster.

    Most texts need only whitespace collapsing (no look-alikes, no invisible characters, already
    NFKC); those skip ``clean_text``'s regular expressions. Anything else goes through it.
    """
    return _normalize(text)[0]


_MARKUP_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]{0,200})?/?>|&(?:[a-z]{2,8}|#[0-9]{1,5});")
_LAYOUT_LABEL_WORDS = ("Question", "Answer", "Context", "Title", "Abstract", "Summary")
_LAYOUT_LABEL = re.compile(r"\b(?:" + "|".join(_LAYOUT_LABEL_WORDS) + r")\s?:\s?")


def detector_text(text: str, max_chars: int | None = None) -> str:
    """``normalize_text`` plus layout that says nothing about the author removed.

    HTML tags and entities (``<br />``, ``&amp;``) and field labels such as ``Question:`` /
    ``Answer:`` are formatting of the page or data set, not writing style: a human page with
    markup must not look different from the same words without it.
    """
    norm, collapsed = _normalize(text)
    if max_chars is not None and len(norm) > 2 * max_chars:  # only the window is read: spare the regexes the rest
        norm = norm[: 2 * max_chars].rstrip(" ")
    if "<" in norm or "&" in norm:
        before, norm = norm, _MARKUP_TAG.sub(" ", norm)
        collapsed = collapsed and norm == before
    if ":" in norm and any(label in norm for label in _LAYOUT_LABEL_WORDS):
        before, norm = norm, _LAYOUT_LABEL.sub("", norm)
        collapsed = collapsed and norm == before
    return norm if collapsed else " ".join(norm.split())


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


# -- batched style vectors ---------------------------------------------------------------------
#
# ``style_features`` reads one text at a time in Python; scoring spends most of its style time
# there. The batched form below computes the same values for many texts at once from one array
# of token ids (each distinct token of the batch gets an id once), so the per-token work is
# numpy, and only the zlib ratio and the digit count stay per text. Values agree with
# ``style_features`` to float32 rounding (tested).

_PUNCT_COL = {c: k for k, c in enumerate(_PUNCT_PROFILE)}
_FW_COL = {w: k for k, w in enumerate(FUNCTION_WORDS)}
_N_PUNCT = len(_PUNCT_PROFILE)
_N_FW = len(FUNCTION_WORDS)
_KEY_LIMIT = 2**62  # (text, word, word) keys are packed into one int64 below this


class Vocabulary:
    """A fixed token -> id map that many batches share (the language models'), so that a
    batch's tokens are looked up once and the ids serve both the style vector and the LMs."""

    def __init__(self, index: dict[str, int], size: int) -> None:
        self.index = index
        self.size = size  # ids are below this; ids not in ``index`` (e.g. UNK) are never given out
        self.words: list[str | None] = [None] * size
        for w, i in index.items():
            self.words[i] = w
        self.lengths = np.zeros(size, dtype=np.float64)
        self.lengths[list(index.values())] = [len(w) for w in index]


@dataclass
class TokenIds:
    """The tokens of a batch as ids, all texts concatenated: equal tokens, equal ids.

    Ids below ``offset`` come from a shared ``base`` vocabulary; the others (tokens the base
    lacks, or every token when there is no base) are numbered from ``offset`` in ``extra``.
    """

    ids: np.ndarray  # int64, one per token
    lengths: np.ndarray  # tokens per text
    base: Vocabulary | None
    extra: dict[str, int]
    offset: int

    @classmethod
    def of(cls, tokens: Sequence[Sequence[str]], base: Vocabulary | None = None) -> "TokenIds":
        flat = list(chain.from_iterable(tokens))
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        if base is None:
            extra = {w: k for k, w in enumerate(dict.fromkeys(flat))}
            ids = np.fromiter(map(extra.__getitem__, flat), dtype=np.int64, count=len(flat))
            return cls(ids, lengths, None, extra, 0)
        ids = np.fromiter(map(base.index.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
        unknown = np.flatnonzero(ids < 0)
        extra = {}
        if len(unknown):
            ids[unknown] = [extra.setdefault(flat[k], base.size + len(extra)) for k in unknown.tolist()]
        return cls(ids, lengths, base, extra, base.size)

    @property
    def n_ids(self) -> int:
        return self.offset + len(self.extra)

    def lookup(self, token: str) -> int | None:
        j = self.base.index.get(token) if self.base is not None else None
        return self.extra.get(token) if j is None else j

    def words(self) -> list[str | None]:
        """The token of every id (None for base ids no token can have)."""
        return [*(self.base.words if self.base is not None else ()), *self.extra]

    def word_lengths(self) -> np.ndarray:
        extra = np.fromiter(map(len, self.extra), dtype=np.float64, count=len(self.extra))
        return np.concatenate([self.base.lengths, extra]) if self.base is not None else extra


def _rank(*columns: np.ndarray) -> np.ndarray:
    """Dense ids for the distinct rows of equal-length non-negative int columns (no overflow)."""
    key = columns[0]
    for col in columns[1:]:
        _, key = np.unique(key, return_inverse=True)
        key = key.astype(np.int64) * (int(col.max(initial=0)) + 1) + col
    return key


def _distinct_per_group(group: np.ndarray, *columns: np.ndarray, n_groups: int) -> np.ndarray:
    """How many distinct rows of ``columns`` each group holds."""
    if len(group) == 0:
        return np.zeros(n_groups)
    _, first = np.unique(_rank(group, *columns), return_index=True)
    return np.bincount(group[first], minlength=n_groups).astype(np.float64)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` for int keys by a plain sort (faster than its hash-based path here)."""
    s = np.sort(keys)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def _first_of_runs(keys: np.ndarray) -> np.ndarray:
    """Index of one occurrence of each distinct key."""
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(keys)
    s = keys[order]
    return order[np.r_[True, s[1:] != s[:-1]]]


def _group_mean(values: np.ndarray, group: np.ndarray, n_groups: int, counts: np.ndarray) -> np.ndarray:
    return np.bincount(group, weights=values, minlength=n_groups) / np.maximum(counts, 1.0)


def style_matrix(norms: Sequence[str], tokens: Sequence[Sequence[str]] | None = None,
                 token_ids: TokenIds | None = None) -> np.ndarray:
    """``style_features`` for many texts, stacked into an ``(n, N_STYLE)`` float32 matrix."""
    n = len(norms)
    if tokens is None:
        tokens = [tokenize(t) for t in norms]
    tid = token_ids if token_ids is not None else TokenIds.of(tokens)
    out = np.zeros((n, N_STYLE), dtype=np.float64)
    n_tok = tid.lengths.astype(np.float64)
    if n == 0:
        return out.astype(np.float32)
    ids = tid.ids
    doc = np.repeat(np.arange(n), tid.lengths)
    # Per-id lookup tables: only the few special tokens need a look-up.
    n_v = tid.n_ids
    punct_col = np.full(n_v, -1, dtype=np.int64)
    fw_col = np.full(n_v, -1, dtype=np.int64)
    is_punct = np.zeros(n_v, dtype=bool)
    is_end = np.zeros(n_v, dtype=bool)
    for table, mapping in ((punct_col, _PUNCT_COL), (fw_col, _FW_COL)):
        for w, k in mapping.items():
            j = tid.lookup(w)
            if j is not None:
                table[j] = k
    for flags, members in ((is_punct, _PUNCT_SET), (is_end, _SENTENCE_END)):
        for w in members:
            j = tid.lookup(w)
            if j is not None:
                flags[j] = True
    word_len = tid.word_lengths()
    safe_tok = np.maximum(n_tok, 1.0)

    pc = punct_col[ids]
    sel = pc >= 0
    counts = np.bincount(doc[sel] * _N_PUNCT + pc[sel], minlength=n * _N_PUNCT).reshape(n, _N_PUNCT)
    out[:, :_N_PUNCT] = counts * (100.0 / safe_tok)[:, None]
    i = _N_PUNCT
    out[:, i] = [100.0 * len(_DIGIT.findall(t)) / max(len(t), 1) if t else 0.0 for t in norms]
    i += 1

    # Words: tokens that are not punctuation, with their position among the text's words.
    wmask = ~is_punct[ids]
    w_ids, w_doc = ids[wmask], doc[wmask]
    n_words = np.bincount(w_doc, minlength=n).astype(np.float64)
    w_start = np.r_[0, np.cumsum(n_words)[:-1]].astype(np.int64)
    w_pos = np.arange(len(w_ids)) - w_start[w_doc]
    has_w = n_words > 0
    lens = word_len[w_ids]
    mean = _group_mean(lens, w_doc, n, n_words)
    out[:, i] = mean
    out[:, i + 1] = np.sqrt(np.maximum(_group_mean(lens * lens, w_doc, n, n_words) - mean * mean, 0.0))
    out[:, i + 2] = _group_mean((lens >= 8).astype(np.float64), w_doc, n, n_words)
    # Distinct-word statistics from one stable sort by (text, word): inside each run of equal
    # words the positions stay in reading order, so a run's first element is its first use.
    n_vocab = max(n_v, 1)
    order = np.argsort(w_doc * n_vocab + w_ids, kind="stable")
    s_key = (w_doc * n_vocab + w_ids)[order]
    s_pos, s_doc = w_pos[order], w_doc[order]
    run_start = np.r_[True, s_key[1:] != s_key[:-1]] if len(s_key) else np.zeros(0, dtype=bool)
    run_next_pos = np.r_[np.where(run_start[1:], np.iinfo(np.int64).max, s_pos[1:]), np.iinfo(np.int64).max] \
        if len(s_key) else np.zeros(0, dtype=np.int64)
    first_pos = s_pos[run_start]
    first_doc = s_doc[run_start]
    second_pos = run_next_pos[run_start]

    def distinct_before(limit: int) -> np.ndarray:
        return np.bincount(first_doc[first_pos < limit], minlength=n).astype(np.float64)

    out[:, i + 3] = distinct_before(100) / np.maximum(np.minimum(n_words, 100), 1)
    # Chunks of 100 words starting at 0, 100, ... while the start is below max(n_words - 99, 1);
    # a word counts once in a chunk: where it starts its run or its previous use was an earlier chunk.
    n_chunks = np.maximum(-(-np.maximum(n_words - 99, 1) // 100), 1).astype(np.int64)
    s_chunk = s_pos // 100
    new_in_chunk = run_start | np.r_[True, s_chunk[1:] != s_chunk[:-1]] if len(s_key) else run_start
    max_chunks = int(n_chunks.max(initial=1))
    counted = new_in_chunk & (s_chunk < n_chunks[s_doc])
    distinct = np.bincount(s_doc[counted] * max_chunks + s_chunk[counted], minlength=n * max_chunks)
    in_chunk = w_pos // 100 < n_chunks[w_doc]
    chunk_len = np.bincount(w_doc[in_chunk] * max_chunks + (w_pos // 100)[in_chunk], minlength=n * max_chunks)
    ttr = (distinct / np.maximum(chunk_len, 1)).reshape(n, max_chunks)
    out[:, i + 4] = ttr.sum(axis=1) / n_chunks
    hapax = np.bincount(first_doc[(first_pos < 300) & (second_pos >= 300)], minlength=n)
    out[:, i + 5] = hapax / np.maximum(np.minimum(n_words, 300), 1)
    # Repeated bigrams and trigrams among the first 200 words.
    head200 = np.minimum(n_words, 200)
    nxt = np.r_[w_pos[1:], -1]
    idx2 = np.flatnonzero((w_pos < 199) & (nxt == w_pos + 1) & (nxt < 200))
    nxt2 = np.r_[w_pos[2:], -1, -1][: len(w_pos)]
    pair = w_ids[idx2] * n_vocab + w_ids[idx2 + 1]
    pair_doc = w_doc[idx2]
    has3 = (nxt2[idx2] == w_pos[idx2] + 2) & (nxt2[idx2] < 200) if len(idx2) else np.zeros(0, dtype=bool)
    idx3 = idx2[has3]
    if n * n_vocab * n_vocab < _KEY_LIMIT:
        # (text, w1, w2) in one int64; a trigram is (rank of its (text, w1, w2), w3).
        pair_key = pair_doc * (n_vocab * n_vocab) + pair
        uniq_pairs = _sorted_unique(pair_key)
        d2 = np.bincount(uniq_pairs // (n_vocab * n_vocab), minlength=n).astype(np.float64)
        tri_key = np.searchsorted(uniq_pairs, pair_key[has3]) * n_vocab + w_ids[idx3 + 2]
        d3 = np.bincount(w_doc[idx3][_first_of_runs(tri_key)], minlength=n).astype(np.float64)
    else:  # astronomically large batches: slower, overflow-free ranks
        d2 = _distinct_per_group(pair_doc, pair, n_groups=n)
        d3 = _distinct_per_group(w_doc[idx3], w_ids[idx3], w_ids[idx3 + 1], w_ids[idx3 + 2], n_groups=n)
    out[:, i + 6] = np.where(head200 > 1, 1.0 - d2 / np.maximum(head200 - 1, 1), 0.0)
    out[:, i + 7] = np.where(head200 > 2, 1.0 - d3 / np.maximum(head200 - 2, 1), 0.0)
    out[~has_w, i : i + 8] = 0.0
    i += 8

    # Sentences end at . ! ? and at the text's last token.
    t_start = np.r_[0, np.cumsum(tid.lengths)[:-1]].astype(np.int64)
    last = t_start + tid.lengths - 1
    end_mask = is_end[ids].copy()
    end_mask[last[tid.lengths > 0]] = True
    ends = np.flatnonzero(end_mask)
    e_doc = doc[ends]
    # As long as ``ends`` even when the batch holds no token at all (then all three are empty).
    first_end = np.ones(len(ends), dtype=bool)
    first_end[1:] = e_doc[1:] != e_doc[:-1]
    prev = np.r_[-1, ends[:-1]][: len(ends)]
    s_len = np.where(first_end, ends - (t_start[e_doc] - 1), ends - prev).astype(np.float64)
    keep = s_len > 1
    k_len, k_doc = s_len[keep], e_doc[keep]
    n_sent = np.bincount(k_doc, minlength=n).astype(np.float64)
    has_s = n_sent > 0
    s_mean = _group_mean(k_len, k_doc, n, n_sent)
    s_std = np.sqrt(np.maximum(_group_mean(k_len * k_len, k_doc, n, n_sent) - s_mean * s_mean, 0.0))
    safe_mean = np.where(has_s, s_mean, 1.0)
    out[:, i] = s_mean
    out[:, i + 1] = s_std
    out[:, i + 2] = s_std / safe_mean
    same = k_doc[1:] == k_doc[:-1]
    steps = np.bincount(k_doc[1:][same], weights=np.abs(np.diff(k_len))[same], minlength=n)
    out[:, i + 3] = np.where(n_sent > 1, steps / np.maximum(n_sent - 1, 1) / safe_mean, 0.0)
    out[:, i + 4] = _group_mean((k_len < 8).astype(np.float64), k_doc, n, n_sent)
    out[:, i + 5] = _group_mean((k_len > 35).astype(np.float64), k_doc, n, n_sent)
    # Sentence starts: the token after every end but a text's last, plus the text's first token.
    not_last_end = np.zeros(len(ends), dtype=bool)
    not_last_end[:-1] = e_doc[1:] == e_doc[:-1]
    start_tok = ids[ends[not_last_end] + 1]
    fw_start = np.bincount(e_doc[not_last_end], weights=(fw_col[start_tok] >= 0).astype(np.float64), minlength=n)
    nonempty = tid.lengths > 0
    fw_start[nonempty] += fw_col[ids[t_start[nonempty]]] >= 0
    n_starts = np.bincount(e_doc, minlength=n).astype(np.float64)
    out[:, i + 6] = fw_start / np.maximum(n_starts, 1.0)
    out[~has_s, i : i + 7] = 0.0
    i += 7

    for k, t in enumerate(norms):
        prefix = t[:1500].lower().encode("utf-8", "replace")
        out[k, i] = len(zlib.compress(prefix, 1)) / max(len(prefix), 1)
    out[:, i + 1] = np.log1p(n_words)
    i += 2

    fc = fw_col[ids]
    sel = fc >= 0
    counts = np.bincount(doc[sel] * _N_FW + fc[sel], minlength=n * _N_FW).reshape(n, _N_FW)
    out[:, i:] = counts / np.maximum(n_words, 1.0)[:, None]
    out[n_tok == 0] = 0.0
    return out.astype(np.float32)
