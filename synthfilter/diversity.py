"""Corpus diversity ("everything becomes samey") measured on a deterministic, fixed-size sample.

Metrics and report keys are defined in ``docs/diversity.md``; words are the tokens dedup sees.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from collections.abc import Hashable, Sequence
from itertools import chain
from typing import Any

import numpy as np

from synthfilter.text.normalize import normalize_for_dedup
from synthfilter.text.shingles import tokens as _split_tokens
from synthfilter.text.shingles import uses_char_ngrams

__all__ = [
    "COMPRESSION_LEVEL",
    "DEFAULT_SAMPLE_SIZE",
    "MATTR_WINDOW",
    "MAX_CHARS",
    "MAX_GROUPS",
    "METRIC_KEYS",
    "NGRAM_ORDERS",
    "SIMILARITY_PAIRS",
    "diversity_metrics",
    "diversity_section",
    "mattr",
    "overrepresented_ngrams",
    "repeating_from_tokens",
    "repeating_records",
    "sample_keys",
    "set_diversity",
    "words",
]

DEFAULT_SAMPLE_SIZE = 5000
NGRAM_ORDERS = (1, 2, 3)
MATTR_WINDOW = 50
# Only the start of a very long record is read: keeps a 50 MB line from dominating the sample.
MAX_CHARS = 4000
COMPRESSION_LEVEL = 6
SIMILARITY_PAIRS = 5_000
DEFAULT_THRESHOLD = 0.8
DEFAULT_TOP = 20
GROUP_TOP = 10
# Groups beyond this many (the ones with the fewest sampled records) are counted, not measured.
MAX_GROUPS = 100
# A record loops when fewer than this share of its own word trigrams are distinct (judged on
# records of at least SELF_REPEAT_MIN_NGRAMS trigrams).
SELF_REPEAT_DISTINCT = 0.5
SELF_REPEAT_MIN_NGRAMS = 20
# --reject-repetitive judges a record on its first 200,000 tokens (a loop shows long before);
# standalone, it tokenises about REPEAT_CHUNK_CHARS characters at a time, and it judges about
# REPEAT_CHUNK_TOKENS tokens at a time.
REPEAT_MAX_TOKENS = 200_000
REPEAT_CHUNK_CHARS = 1_000_000
REPEAT_CHUNK_TOKENS = 250_000

# Every key of a ``diversity_metrics`` result, in the order reports show them.
METRIC_KEYS = (
    "records", "tokens", "types", "mean_tokens_per_record",
    "distinct_1", "distinct_2", "distinct_3", "entropy_1", "entropy_2", "entropy_3",
    "mattr", "mattr_window", "hapax_share", "compression_ratio", "self_repeating_share",
    "exact_duplicate_rate", "near_duplicate_rate", "near_duplicate_threshold",
    "mean_pairwise_similarity", "similarity_pairs", "samey_ngrams",
)

_HIGH_CHAR = re.compile("[\u0e00-\U0010ffff]")

# Token ids below 2**21 pack three to an int64 n-gram key exactly; larger vocabularies hash.
_ID_BITS = 21


# -- sampling ---------------------------------------------------------------------------------


def sample_keys(uniform: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` records with the smallest ``uniform`` (ties: lower index first).

    ``uniform`` holds one hash-uniform in [0, 1) per record (``record_uniforms``), so the
    sample is the same whatever the order, sharding or engine, and the bottom-k of a subset
    (the kept records) contains every sampled record of that subset. O(n), no full sort.
    Returned in ascending index order (int64).
    """
    u = np.asarray(uniform, dtype=np.float64)
    if u.ndim != 1:
        raise ValueError(f"uniform must be 1-D, got shape {u.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = len(u)
    if np.isnan(u).any():
        raise ValueError("uniform must not contain NaN")
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    cutoff = np.partition(u, k - 1)[k - 1]
    below = np.flatnonzero(u < cutoff)
    tied = np.flatnonzero(u == cutoff)[: k - len(below)]
    return np.sort(np.concatenate([below, tied])).astype(np.int64)


# -- words ------------------------------------------------------------------------------------


def _spaceless(normalized: str) -> bool:
    # Every script written without spaces starts at or after U+0E00 (Thai): most texts skip the count.
    return not normalized.isascii() and _HIGH_CHAR.search(normalized) is not None and uses_char_ngrams(normalized)


def _tokens(normalized: str) -> list[str]:
    # Normalised text has single-space separators and no control characters: split() = shingles.tokens.
    return _split_tokens(normalized, char_mode=True) if _spaceless(normalized) else normalized.split()


def words(text: str) -> list[str]:
    """The tokens the metrics count: the words of ``normalize_for_dedup(text[:MAX_CHARS])``
    (single characters for scripts written without spaces), as the dedup shingles see them."""
    return _tokens(normalize_for_dedup(text[:MAX_CHARS]))


class _Tokenized:
    """Texts as one stream of integer token ids (one vocabulary), with per-text offsets."""

    def __init__(self, id_bits: int = _ID_BITS) -> None:
        # A missing word gets the next id, all in C: ``map(vocab.__getitem__, words)``.
        self.vocab: defaultdict[str, int] = defaultdict()
        self.vocab.default_factory = self.vocab.__len__
        self._cache: dict[str, tuple[np.ndarray, str]] = {}
        self.id_bits = id_bits
        self._packed: bool | None = None  # fixed by the first n-gram keys: all keys must agree

    def packed(self, n: int) -> bool:
        """Whether n-gram keys pack word ids exactly (else they are 64-bit hashes)."""
        if self._packed is None:
            self._packed = len(self.vocab) < (1 << self.id_bits)
        return self._packed and n * self.id_bits <= 63

    def encode(self, texts: Sequence[str]) -> "_Stream":
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            normalized = [normalize_for_dedup(t[:MAX_CHARS]) for t in new]
            toks = [_tokens(x) for x in normalized]
            flat = np.fromiter(map(self.vocab.__getitem__, chain.from_iterable(toks)), dtype=np.int64)
            if self._packed and len(self.vocab) >= (1 << self.id_bits):
                raise RuntimeError("diversity: all texts must be encoded before n-gram keys are made")
            bounds = np.cumsum([0] + [len(x) for x in toks])
            for i, t in enumerate(new):
                self._cache[t] = (flat[bounds[i]:bounds[i + 1]], normalized[i])
        hits = [self._cache[t] for t in texts]
        lengths = np.fromiter((len(h[0]) for h in hits), dtype=np.int64, count=len(hits))
        offsets = np.zeros(len(hits) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.concatenate([h[0] for h in hits]) if hits else np.zeros(0, np.int64)
        return _Stream(self, ids, offsets, list(texts), [h[1] for h in hits])

    def decode(self, ids: Sequence[int]) -> str:
        if not hasattr(self, "_inverse") or len(self._inverse) != len(self.vocab):
            self._inverse = list(self.vocab)
        return " ".join(self._inverse[int(i)] for i in ids)


class _Stream:
    """One set of texts encoded by a ``_Tokenized``; n-gram keys never cross a text boundary."""

    def __init__(self, tok: _Tokenized, ids: np.ndarray, offsets: np.ndarray, texts: list[str], normalized: list[str]):
        self.tok = tok
        self.ids = ids
        self.offsets = offsets
        self.texts = texts
        self.normalized = normalized
        self.doc = np.repeat(np.arange(len(texts), dtype=np.int64), np.diff(offsets))
        self._ngrams: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._df: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: np.ndarray) -> "_Stream":
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.diff(self.offsets)[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        take = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]) if len(rows) else np.zeros(0, np.int64)
        return _Stream(self.tok, self.ids[take.astype(np.int64)], offsets,
                       [self.texts[r] for r in rows], [self.normalized[r] for r in rows])

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, doc, start): one int64 key per n-gram occurrence, its text, its first token."""
        if n not in self._ngrams:
            self._ngrams[n] = self._make_ngrams(n)
        return self._ngrams[n]

    def ngram_keys(self, n: int) -> np.ndarray:
        """``ngrams(n)[0]``, not kept when not already made (the n-gram tables of every order,
        24 B per token each, were most of the diversity section's memory)."""
        return self._ngrams[n][0] if n in self._ngrams else self._make_ngrams(n)[0]

    def _make_ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, doc = self.ids, self.doc
        m = len(ids) - n + 1
        if m <= 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        start = np.flatnonzero(doc[:m] == doc[n - 1:])
        if self.tok.packed(n):
            bits = self.tok.id_bits
            keys = np.zeros(len(start), dtype=np.int64)
            for j in range(n):
                keys = (keys << bits) | ids[start + j]
        else:
            keys = np.zeros(len(start), dtype=np.uint64)
            with np.errstate(over="ignore"):
                for j in range(n):
                    keys = _mix64(keys * np.uint64(0x9E3779B97F4A7C15) + ids[start + j].astype(np.uint64))
            keys = keys.view(np.int64)
        return keys, doc[start], start

    def doc_frequency(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``_doc_frequency`` of this stream's n-grams, computed once."""
        if n not in self._df:
            self._df[n] = _doc_frequency(*self.ngrams(n))
        return self._df[n]


def _mix64(h: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


# -- the lexical metrics ----------------------------------------------------------------------


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mattr(ids: Sequence[int] | np.ndarray, window: int = MATTR_WINDOW) -> float | None:
    """Moving-average type-token ratio: the mean share of distinct tokens over every window of
    ``window`` consecutive tokens (Covington & McFall 2010). With fewer tokens than a window,
    the plain type-token ratio; ``None`` for no tokens. O(n): a token counts in the windows
    that contain it but not its previous occurrence."""
    ids = np.asarray(ids)
    n = len(ids)
    if n == 0:
        return None
    if n <= window:
        return float(len(np.unique(ids)) / n)
    order = np.argsort(ids, kind="stable")
    prev = np.full(n, -1, dtype=np.int64)
    same = ids[order][1:] == ids[order][:-1]
    prev[order[1:][same]] = order[:-1][same]
    pos = np.arange(n, dtype=np.int64)
    lo = np.maximum(prev + 1, pos - window + 1)
    hi = np.minimum(pos, n - window)
    counted = np.clip(hi - lo + 1, 0, None).sum()
    return float(counted / ((n - window + 1) * window))


def _compression_ratio(texts: Sequence[str]) -> float | None:
    raw = "\n".join(t[:MAX_CHARS] for t in texts).encode("utf-8", errors="replace")
    if not raw:
        return None
    return len(raw) / len(zlib.compress(raw, COMPRESSION_LEVEL))


def _self_repeating_share(stream: "_Stream") -> float | None:
    """Share of the records (of those long enough to judge) that repeat themselves: fewer than
    ``SELF_REPEAT_DISTINCT`` of their own word trigrams distinct. Degenerate generator output
    (a phrase looping) looks like this, and a detector that never saw loops can score it human."""
    keys, doc, _ = stream.ngrams(3)
    judged, repeating = _repeating(keys.view(np.uint64), doc, len(stream), SELF_REPEAT_DISTINCT,
                                   SELF_REPEAT_MIN_NGRAMS)
    if not judged.any():
        return None
    return float(np.count_nonzero(repeating) / np.count_nonzero(judged))


def _repeating(keys: np.ndarray, doc: np.ndarray, n: int, min_distinct: float,
               min_ngrams: int) -> tuple[np.ndarray, np.ndarray]:
    """(judged, repeating) per record, given one uint64 key per trigram occurrence and its record
    (ascending): at least ``min_ngrams`` trigrams, and fewer than ``min_distinct`` of them
    distinct (the second implies the first)."""
    if not n or not len(keys):
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    total = np.bincount(doc, minlength=n)
    # One sort of (record, trigram hash) packed in 64 bits: the record in the high bits, the
    # rest of a 64-bit hash of the trigram below (two of a record's few hundred trigrams share
    # 50-odd hash bits with odds of about 1e-10), 6x faster than sorting the pairs.
    low = 64 - max(int(n).bit_length(), 1)
    with np.errstate(over="ignore"):
        packed = (doc.astype(np.uint64) << np.uint64(low)) | (_mix64(keys) & np.uint64((1 << low) - 1))
    packed.sort()
    first = np.ones(len(packed), dtype=bool)
    first[1:] = packed[1:] != packed[:-1]
    distinct = np.bincount((packed[first] >> np.uint64(low)).astype(np.int64), minlength=n)
    judged = total >= min_ngrams
    return judged, judged & (distinct < min_distinct * total)


def repeating_records(normalized: Sequence[str], min_distinct: float = SELF_REPEAT_DISTINCT,
                      min_trigrams: int = SELF_REPEAT_MIN_NGRAMS) -> np.ndarray:
    """Which of these ``normalize_for_dedup`` texts repeat themselves (bool per text): see
    ``repeating_from_tokens``. Tokenised ``REPEAT_CHUNK_CHARS`` characters at a time."""
    from synthfilter.text.shingles import size_groups, token_hashes_batch

    out = np.zeros(len(normalized), dtype=bool)
    sizes = np.fromiter(map(len, normalized), dtype=np.int64, count=len(normalized))
    for group in size_groups(np.arange(len(normalized)), sizes, REPEAT_CHUNK_CHARS):
        texts = [normalized[i] for i in group.tolist()]
        out[group] = repeating_from_tokens(token_hashes_batch(texts), min_distinct, min_trigrams)
    return out


def repeating_from_tokens(tokens: tuple[np.ndarray, np.ndarray, Any], min_distinct: float = SELF_REPEAT_DISTINCT,
                          min_trigrams: int = SELF_REPEAT_MIN_NGRAMS) -> np.ndarray:
    """Which texts repeat themselves (bool per text), given them tokenised by
    ``text.shingles.token_hashes_batch`` (the dedup shingles' tokens: words, or characters for
    scripts written without spaces): at least ``min_trigrams`` trigrams of tokens among a text's
    first ``REPEAT_MAX_TOKENS`` tokens, and fewer than ``min_distinct`` of them distinct. The
    rule of the report's ``self_repeating_share`` (which reads a sample's first ``MAX_CHARS``
    characters) and of ``--reject-repetitive``. Texts are judged ``REPEAT_CHUNK_TOKENS`` tokens
    at a time, so memory stays bounded whatever the batch."""
    from synthfilter.text.shingles import size_groups, run_indices

    tok, offsets = tokens[0], np.asarray(tokens[1], dtype=np.int64)
    n_docs = len(offsets) - 1
    ntok = np.minimum(np.diff(offsets), REPEAT_MAX_TOKENS)
    out = np.zeros(n_docs, dtype=bool)
    for group in size_groups(np.arange(n_docs), ntok, REPEAT_CHUNK_TOKENS):
        t = tok[run_indices(offsets[group], ntok[group])].astype(np.uint64)
        doc = np.repeat(np.arange(len(group), dtype=np.int64), ntok[group])
        # Trigrams that stay inside one text; key: the three 32-bit token hashes, mixed.
        at = np.flatnonzero(doc[:-2] == doc[2:]) if len(t) > 2 else np.zeros(0, np.int64)
        with np.errstate(over="ignore"):
            keys = ((t[at] << np.uint64(32)) | t[at + 1]) ^ (t[at + 2] * np.uint64(0x9E3779B97F4A7C15))
        out[group] = _repeating(keys, doc[at], len(group), min_distinct, min_trigrams)[1]
    return out


# A run without --reject-repetitive warns when at least this share of its kept sample loops.
LOOP_WARNING_SHARE = 0.01


def set_diversity(report: dict[str, Any], section: dict[str, Any], reject_repetitive: bool) -> None:
    """Put the diversity ``section`` into ``report``, with a warning when the kept records loop
    and ``--reject-repetitive`` is off (the report's warnings list is copied, not extended)."""
    report["diversity"] = section
    share = (section.get("after") or {}).get("self_repeating_share")
    if not reject_repetitive and share is not None and share >= LOOP_WARNING_SHARE:
        report["warnings"] = [*report.get("warnings", []), (
            f"{share:.1%} of the kept records (in the diversity sample) repeat themselves: fewer than half of their "
            "own word trigrams distinct, as a model stuck in a loop writes, which a detector can score as human; "
            "--reject-repetitive rejects them")]


def _exact_duplicate_rate(normalized: Sequence[str]) -> float | None:
    if not normalized:
        return None
    counts: dict[str, int] = {}
    for t in normalized:
        counts[t] = counts.get(t, 0) + 1
    return sum(c for c in counts.values() if c > 1) / len(normalized)


# -- the MinHash metrics ----------------------------------------------------------------------


_HASHER: Any = None


def _signatures(normalized: Sequence[str]) -> np.ndarray:
    """The pipeline's default MinHash settings (128 permutations, seed 1, 5-word shingles)."""
    global _HASHER
    if _HASHER is None:
        from synthfilter.dedup.minhash import MinHasher

        _HASHER = MinHasher(num_perm=128, seed=1, ngram=5, char_ngram=5)
    return _HASHER.signatures(list(normalized))


def _reused_signatures(before: "_Stream", bsigs: np.ndarray, after: "_Stream") -> np.ndarray | None:
    """``_signatures(after.normalized)`` taken from ``bsigs = _signatures(before.normalized)`` when
    every after text is also a before text (the kept part of a sample): a signature depends on its
    text only. None when some after text is new."""
    row = {t: i for i, t in enumerate(before.texts)}
    try:
        rows = np.fromiter((row[t] for t in after.texts), dtype=np.int64, count=len(after))
    except KeyError:
        return None
    return bsigs[rows]


# ``optimal_bands(threshold, num_perm)`` for the settings the metrics use (the defaults); a test
# checks these against it. Anything else is computed, with scipy's integrator (0.3 s to import).
_KNOWN_BANDS = {(DEFAULT_THRESHOLD, 128): (14, 9)}


def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    known = _KNOWN_BANDS.get((threshold, num_perm))
    if known is not None:
        return known
    from synthfilter.dedup.lsh import optimal_bands

    return optimal_bands(threshold, num_perm)


def _near_duplicate_rate(sigs: np.ndarray, threshold: float) -> float | None:
    n = len(sigs)
    if n == 0:
        return None
    if n == 1:
        return 0.0
    from synthfilter.dedup.clusters import near_duplicate_components
    from synthfilter.dedup.lsh import band_keys

    b, r = _bands(threshold, sigs.shape[1])
    labels = near_duplicate_components(band_keys(sigs, b, r), signatures=sigs, threshold=threshold, verify=True)
    sizes = np.bincount(labels, minlength=n)
    return float(np.count_nonzero(sizes[labels] >= 2) / n)


def _pairs(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j when there are at most ``m``, else ``m`` seeded random pairs (i != j)."""
    total = n * (n - 1) // 2
    if total <= m:
        i, j = np.triu_indices(n, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    rng = np.random.default_rng([seed, n, 0x5AE])
    i = rng.integers(0, n, m)
    j = rng.integers(0, n - 1, m)
    j = j + (j >= i)  # uniform over the other n - 1 records
    return i, j


def _mean_pairwise_similarity(sigs: np.ndarray, seed: int, pairs: int = SIMILARITY_PAIRS) -> tuple[float | None, int]:
    n = len(sigs)
    if n < 2:
        return None, 0
    i, j = _pairs(n, pairs, seed)
    total = 0.0
    for lo in range(0, len(i), 4096):
        a, b = sigs[i[lo:lo + 4096]], sigs[j[lo:lo + 4096]]
        total += float(np.count_nonzero(a == b, axis=1).sum()) / sigs.shape[1]
    return total / len(i), int(len(i))


# -- over-represented n-grams -----------------------------------------------------------------


def _doc_frequency(keys: np.ndarray, doc: np.ndarray, start: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct key: (key, occurrences, texts containing it, first occurrence's token)."""
    if len(keys) == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, z
    order = np.lexsort((doc, keys))
    k, d = keys[order], doc[order]
    new_key = np.ones(len(k), dtype=bool)
    new_key[1:] = k[1:] != k[:-1]
    new_doc = new_key.copy()
    new_doc[1:] |= d[1:] != d[:-1]
    key_start = np.flatnonzero(new_key)
    occurrences = np.diff(np.append(key_start, len(k)))
    docs = np.add.reduceat(new_doc.astype(np.int64), key_start)
    return k[key_start], occurrences, docs, start[order[key_start]]


def _g2(a: np.ndarray, n1: int, b: np.ndarray, n2: int) -> np.ndarray:
    """Log-likelihood keyness (Dunning's G^2) of a 2x2 table of text counts per n-gram."""
    obs = np.stack([a, n1 - a, b, n2 - b]).astype(np.float64)
    col = np.stack([a + b, (n1 - a) + (n2 - b)]).astype(np.float64)
    total = n1 + n2
    exp = np.stack([col[0] * n1, col[1] * n1, col[0] * n2, col[1] * n2]) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(obs > 0, obs * np.log(obs / exp), 0.0)
    return 2.0 * terms.sum(axis=0)


def _rank_ngrams(stream: _Stream, key: np.ndarray, count: np.ndarray, docs: np.ndarray, first: np.ndarray,
                 n_texts: int, ref_docs: np.ndarray | None, n_ref: int, n: int, top: int) -> list[dict[str, Any]]:
    """Rows of the ``top`` samey n-grams among those found in at least two texts; ties go to
    the n-gram seen first in the sample."""
    keep = docs >= 2
    share = docs / max(n_texts, 1)
    if ref_docs is not None and n_ref > 0:
        lift = share / ((ref_docs + 0.5) / n_ref)
        keep &= lift > 1.0
        score = _g2(docs, n_texts, ref_docs, n_ref)
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((first[idx], -docs[idx], -score[idx]))]
    else:
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((first[idx], -count[idx], -docs[idx]))]
    rows = []
    for i in order[:top]:
        s = int(first[i])
        row: dict[str, Any] = {
            "ngram": stream.tok.decode(stream.ids[s:s + n]),
            "count": int(count[i]),
            "records": int(docs[i]),
            "share": round(float(share[i]), 6),
        }
        if ref_docs is not None and n_ref > 0:
            row.update(reference_records=int(ref_docs[i]), reference_share=round(float(ref_docs[i] / n_ref), 6),
                       lift=round(float(lift[i]), 3), g2=round(float(score[i]), 3))
        rows.append(row)
    return rows


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values[k] for each wanted key present in sorted_keys, 0 where absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(wanted), dtype=np.int64)
    pos = np.searchsorted(sorted_keys, wanted)
    pos_c = np.minimum(pos, len(sorted_keys) - 1)
    found = sorted_keys[pos_c] == wanted
    return np.where(found, values[pos_c], 0)


def _samey(stream: _Stream, reference: _Stream | None, n: int, top: int) -> list[dict[str, Any]]:
    key, count, docs, first = stream.doc_frequency(n)
    ref_docs = None
    n_ref = 0
    if reference is not None and len(reference):
        rkey, _rcount, rdocs, _ = reference.doc_frequency(n)
        ref_docs = _lookup(rkey, rdocs, key)
        n_ref = len(reference)
    return _rank_ngrams(stream, key, count, docs, first, len(stream), ref_docs, n_ref, n, top)


def overrepresented_ngrams(texts: Sequence[str], reference: Sequence[str] | None, n: int = 3,
                           top: int = DEFAULT_TOP) -> list[dict[str, Any]]:
    """The "samey" phrases of ``texts``: word n-grams found in at least two of them.

    Without a reference (or an empty one), the n-grams in the most texts. With one (the rest of
    the corpus), only n-grams with a lift above 1 (see below), ranked by
    log-likelihood keyness (G^2) of those two shares. Each row: ``ngram`` (normalised words),
    ``count`` (occurrences), ``records`` (texts containing it), ``share`` (records / texts); with a
    reference also ``reference_records``, ``reference_share``, ``lift`` (share over the reference
    share, the reference count plus 1/2 so an absent phrase gets a finite lift) and ``g2``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tok = _Tokenized()
    stream = tok.encode(texts)
    ref = tok.encode(reference) if reference else None
    return _samey(stream, ref, n, top)


# -- one sample -------------------------------------------------------------------------------


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def _metrics(stream: _Stream, sigs: np.ndarray | None, seed: int, threshold: float,
             samey: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(stream)
    ids = stream.ids
    out: dict[str, Any] = {"records": n, "tokens": int(len(ids))}
    uni_keys = np.unique(ids, return_counts=True)[1] if len(ids) else np.zeros(0, np.int64)
    out["types"] = int(len(uni_keys))
    out["mean_tokens_per_record"] = _r(len(ids) / n, 3) if n else None
    for order in NGRAM_ORDERS:
        keys = stream.ngram_keys(order)
        if len(keys):
            counts = np.unique(keys, return_counts=True)[1]
            out[f"distinct_{order}"] = _r(len(counts) / len(keys))
            out[f"entropy_{order}"] = _r(_entropy_bits(counts))
        else:
            out[f"distinct_{order}"] = out[f"entropy_{order}"] = None
    out["mattr"] = _r(mattr(ids, MATTR_WINDOW))
    out["mattr_window"] = MATTR_WINDOW
    out["hapax_share"] = _r(np.count_nonzero(uni_keys == 1) / len(uni_keys)) if len(uni_keys) else None
    out["compression_ratio"] = _r(_compression_ratio(stream.texts), 4)
    out["self_repeating_share"] = _r(_self_repeating_share(stream))
    out["exact_duplicate_rate"] = _r(_exact_duplicate_rate(stream.normalized))
    if sigs is None:
        sigs = _signatures(stream.normalized) if n else np.zeros((0, 128), np.uint32)
    out["near_duplicate_rate"] = _r(_near_duplicate_rate(sigs, threshold))
    out["near_duplicate_threshold"] = threshold
    sim, pairs = _mean_pairwise_similarity(sigs, seed)
    out["mean_pairwise_similarity"] = _r(sim)
    out["similarity_pairs"] = pairs
    out["samey_ngrams"] = samey
    return out


def _check_sigs(sigs: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if sigs is None:
        return None
    sigs = np.asarray(sigs)
    if sigs.ndim != 2 or sigs.shape[0] != n:
        raise ValueError(f"{what}: expected shape ({n}, num_perm), got {sigs.shape}")
    return np.ascontiguousarray(sigs, dtype=np.uint32)


def diversity_metrics(texts: Sequence[str], signatures: np.ndarray | None = None, *, seed: int = 0,
                      threshold: float = DEFAULT_THRESHOLD, reference: Sequence[str] | None = None,
                      top: int = DEFAULT_TOP) -> dict[str, Any]:
    """Every diversity metric of one sample (keys: ``METRIC_KEYS``; see ``docs/diversity.md``).

    Args:
        texts: the sampled texts (only the first ``MAX_CHARS`` characters of each are read).
        signatures: (len(texts), num_perm) uint32 MinHash signatures of those texts, as the
            score stage made them; computed with the default settings when absent.
        seed: drives the choice of pairs for ``mean_pairwise_similarity``.
        threshold: Jaccard similarity from which two records are near-duplicates.
        reference: other texts (the rest of the corpus) the samey n-grams are compared with.
        top: how many samey n-grams to list.

    Undefined values (no records, no tokens, no bigrams, ...) are ``None``; all values are
    JSON-serialisable.
    """
    tok = _Tokenized()
    stream = tok.encode(texts)
    sigs = _check_sigs(signatures, len(stream), "signatures")
    ref = tok.encode(reference) if reference else None
    return _metrics(stream, sigs, seed, threshold, _samey(stream, ref, 3, top))


# -- before / after / per group ---------------------------------------------------------------


def _group_rows(groups: Sequence[Hashable] | None, n: int, what: str) -> dict[str, np.ndarray]:
    if groups is None:
        return {}
    if len(groups) != n:
        raise ValueError(f"{what}: {len(groups)} group labels for {n} texts")
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        rows.setdefault(str(g), []).append(i)
    return {g: np.asarray(r, dtype=np.int64) for g, r in sorted(rows.items())}


def _grouped_samey(stream: _Stream, rows: dict[str, np.ndarray], top: int,
                   only: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Samey trigrams of the groups in ``only`` against the rest of the sample (all groups)."""
    out: dict[str, list[dict[str, Any]]] = {}
    n_total = len(stream)
    key_all, _c, docs_all, _f = stream.doc_frequency(3)
    group_of_doc = np.zeros(n_total, dtype=np.int64)
    names = list(rows)
    for gi, g in enumerate(names):
        group_of_doc[rows[g]] = gi
    keys, doc, start = stream.ngrams(3)
    gdoc = group_of_doc[doc]
    order = np.argsort(gdoc, kind="stable")
    bounds = np.searchsorted(gdoc[order], np.arange(len(names) + 1))
    for gi, g in enumerate(names):
        if g not in only:
            continue
        sel = order[bounds[gi]:bounds[gi + 1]]
        key, count, docs, first = _doc_frequency(keys[sel], doc[sel], start[sel])
        n_g = len(rows[g])
        n_rest = n_total - n_g
        ref_docs = _lookup(key_all, docs_all, key) - docs if n_rest else None
        out[g] = _rank_ngrams(stream, key, count, docs, first, n_g, ref_docs, n_rest, 3, top)
    return out


def diversity_section(before_texts: Sequence[str], after_texts: Sequence[str],
                      before_groups: Sequence[Hashable] | None = None, after_groups: Sequence[Hashable] | None = None,
                      before_sigs: np.ndarray | None = None, after_sigs: np.ndarray | None = None,
                      seed: int = 0, *, threshold: float = DEFAULT_THRESHOLD, top: int = DEFAULT_TOP,
                      group_top: int = GROUP_TOP, max_groups: int = MAX_GROUPS) -> dict[str, Any]:
    """report.json's ``diversity``: the metrics of the sample before and after filtering,
    overall and per group (group labels aligned with the texts; a shard path by default).

    Returns ``{"before", "after", "removed_ngrams", "by_group", "by_group_omitted"}``;
    ``removed_ngrams`` are the trigrams over-represented before relative to after (what filtering
    took out); ``by_group[g]`` is ``{"records_sampled": {"before", "after"}, "before", "after"}``
    whose samey n-grams are compared with the rest of the sample, for the ``max_groups`` groups
    with the most sampled records; ``by_group_omitted`` counts the other groups. Texts are
    tokenised once for all of it.
    """
    tok = _Tokenized()
    before = tok.encode(before_texts)
    after = tok.encode(after_texts)
    bsigs = _check_sigs(before_sigs, len(before), "before_sigs")
    asigs = _check_sigs(after_sigs, len(after), "after_sigs")
    computed = bsigs is None and len(before) > 0
    if computed:
        bsigs = _signatures(before.normalized)
    if asigs is None and len(after):
        asigs = _reused_signatures(before, bsigs, after) if computed else None
        if asigs is None:
            asigs = _signatures(after.normalized)
    section: dict[str, Any] = {
        "before": _metrics(before, bsigs, seed, threshold, _samey(before, None, 3, top)),
        "after": _metrics(after, asigs, seed, threshold, _samey(after, None, 3, top)),
        "removed_ngrams": _samey(before, after, 3, top) if len(after) else _samey(before, None, 3, top),
    }
    by_group: dict[str, Any] = {}
    phases = (("before", before, bsigs, _group_rows(before_groups, len(before), "before_groups")),
              ("after", after, asigs, _group_rows(after_groups, len(after), "after_groups")))
    sizes = {g: (len(phases[0][3].get(g, ())), len(phases[1][3].get(g, ())))
             for g in {*phases[0][3], *phases[1][3]}}
    listed = set(sorted(sizes, key=lambda g: (-sizes[g][0], -sizes[g][1], g))[:max(max_groups, 0)])
    for phase, stream, sigs, rows in phases:
        samey = _grouped_samey(stream, rows, group_top, listed) if rows else {}
        for g, r in rows.items():
            if g not in listed:
                continue
            entry = by_group.setdefault(g, {"records_sampled": {"before": 0, "after": 0}})
            entry["records_sampled"][phase] = int(len(r))
            if len(r) == len(stream):  # one group holds the whole sample: its metrics are the overall ones
                entry[phase] = {**section[phase], "samey_ngrams": samey[g]}
                continue
            sub_sigs = sigs[r] if sigs is not None else None
            entry[phase] = _metrics(stream.subset(r), sub_sigs, seed, threshold, samey[g])
    for entry in by_group.values():
        for phase, stream in (("before", before), ("after", after)):
            if phase not in entry:
                entry[phase] = _metrics(stream.subset(np.zeros(0, np.int64)), None, seed, threshold, [])
    section["by_group"] = {g: by_group[g] for g in sorted(by_group)}
    section["by_group_omitted"] = len(sizes) - len(by_group)
    return section
