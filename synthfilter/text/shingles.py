"""Shingles of normalised text and their 32-bit hashes: a readable reference and a numpy batch version
that agree bit for bit. Input is text already passed through ``normalize_for_dedup``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import regex

__all__ = [
    "SHINGLE_HASH_NAME",
    "shingles",
    "shingle_hash",
    "shingle_hashes_batch",
    "shingle_hashes_from_tokens",
    "run_indices",
    "size_groups",
    "token_hash",
    "token_hashes_batch",
    "tokens",
    "uses_char_ngrams",
]

# Changes whenever any function below would hash a text differently; recorded in the manifest.
SHINGLE_HASH_NAME = "synthfilter-tab32-v1"

# A token is a maximal run of characters above U+0020. After ``normalize_for_dedup`` (NFKC,
# punctuation stripped, every Unicode space collapsed to one ASCII space) these are the
# Unicode-aware words of the text; the batch version finds the same runs on UTF-8 bytes,
# where no byte of a multi-byte character is <= 0x20.
_TOKEN = regex.compile(r"[^\x00-\x20]+")

# Scripts written without spaces between words: such texts are shingled by characters. All of
# them lie above U+0E00; a scan for that one range is much faster than for script properties.
_SPACELESS_RUN = regex.compile(
    r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]+"
)
_ABOVE_U0E00_RUN = regex.compile("[\u0e00-\U0010ffff]+")
DEFAULT_SPACELESS_SHARE = 0.3

_MASK = 0xFFFFFFFF
# Token hash: sum of BYTE_VALUES[byte] * TOKEN_MULT**position (mod 2**32), then fmix32.
# The byte table is random (tabulation), separators (bytes <= 0x20) weigh nothing so the
# batch version can take prefix sums across a whole buffer. Multipliers are odd and 3 mod 4
# (keeps swapped bytes from colliding more often than by chance).
TOKEN_MULT = 0x9E3779B3
_TOKEN_MULT_INV = pow(TOKEN_MULT, -1, 1 << 32)
_BYTE_VALUES_NP = np.random.RandomState(20240531).randint(1, 1 << 32, 256, dtype=np.uint64).astype(np.uint32)
_BYTE_VALUES_NP[: 0x21] = 0
_BYTE_VALUES: list[int] = [int(v) for v in _BYTE_VALUES_NP]
# Shingle hash: polynomial over the token hashes of the shingle, then fmix32.
SHINGLE_MULT = 0x85EBCA77
SHINGLE_SEED = 0x27D4EB2F

# Bytes in a UTF-8 character, by its lead byte (continuation bytes never start a character).
_UTF8_LEN = np.ones(256, dtype=np.int64)
_UTF8_LEN[0xC0:0xE0] = 2
_UTF8_LEN[0xE0:0xF0] = 3
_UTF8_LEN[0xF0:] = 4


# -- the reference, one text at a time ------------------------------------------------------


def uses_char_ngrams(text: str, share: float = DEFAULT_SPACELESS_SHARE) -> bool:
    """True when at least ``share`` of the non-space characters are in a script written without spaces."""
    if text.isascii():
        return False
    high = _ABOVE_U0E00_RUN.findall(text)
    if not high:
        return False
    spaceless = sum(map(len, _SPACELESS_RUN.findall("".join(high))))
    return spaceless > 0 and spaceless >= share * (len(text) - text.count(" "))


def tokens(text: str, *, char_mode: bool = False) -> list[str]:
    """Words (maximal runs of characters above U+0020), or single visible characters in char mode."""
    if char_mode:
        return [c for c in text if c > " "]
    return _TOKEN.findall(text)


def shingles(
    text: str, ngram: int = 5, char_ngram: int = 5, spaceless_share: float = DEFAULT_SPACELESS_SHARE
) -> list[tuple[str, ...]]:
    """The shingles of one normalised text, as tuples of tokens, in text order (repeats kept).

    Word ``ngram``-grams; character ``char_ngram``-grams for texts mostly in spaceless scripts
    (see ``uses_char_ngrams``). A text with fewer tokens than n is one shingle of all its
    tokens (the empty text gives the empty shingle), so every text has at least one shingle.

    Example:
        >>> shingles("the cat sat on the mat", ngram=5)
        [('the', 'cat', 'sat', 'on', 'the'), ('cat', 'sat', 'on', 'the', 'mat')]
    """
    char_mode = uses_char_ngrams(text, spaceless_share)
    n = char_ngram if char_mode else ngram
    toks = tokens(text, char_mode=char_mode)
    if len(toks) < n:
        return [tuple(toks)]
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def token_hash(token: str) -> int:
    """32-bit hash of one token (its UTF-8 bytes)."""
    raw, weight = 0, 1
    for byte in token.encode("utf-8"):
        raw = (raw + _BYTE_VALUES[byte] * weight) & _MASK
        weight = (weight * TOKEN_MULT) & _MASK
    return _fmix32(raw)


def shingle_hash(shingle: Sequence[str]) -> int:
    """32-bit hash of a shingle (a sequence of tokens); usable as datasketch ``hashfunc``."""
    h = SHINGLE_SEED
    for tok in shingle:
        h = (h * SHINGLE_MULT + token_hash(tok)) & _MASK
    return _fmix32(h)


# -- the batch version: numpy over many texts at once ----------------------------------------


def _fmix32_np(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, in place on a uint32 array."""
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """TOKEN_MULT**i and TOKEN_MULT**-i (mod 2**32) for i < size; small tables are cached."""
    global _FORWARD, _INVERSE
    forward, inverse = _FORWARD, _INVERSE
    while len(forward) < size:
        k = len(forward)
        forward = np.concatenate([forward, forward * np.uint32(pow(TOKEN_MULT, k, 1 << 32))])
        inverse = np.concatenate([inverse, inverse * np.uint32(pow(_TOKEN_MULT_INV, k, 1 << 32))])
    if len(forward) <= _POWERS_CACHED:
        _FORWARD, _INVERSE = forward, inverse
    return forward, inverse


_FORWARD = np.ones(1, dtype=np.uint32)
_INVERSE = np.ones(1, dtype=np.uint32)
_POWERS_CACHED = 1 << 21  # bigger tables (texts of megabytes) are rebuilt each time


def shingle_hashes_batch(
    texts: Sequence[str],
    ngram: int = 5,
    char_ngram: int = 5,
    spaceless_share: float = DEFAULT_SPACELESS_SHARE,
    chunk_bytes: int = 1 << 18,
) -> tuple[np.ndarray, np.ndarray]:
    """``shingle_hash`` of every shingle of every text, without a Python loop over tokens.

    Returns ``(hashes, offsets)``: uint32 hashes of all shingles, text after text, and int64
    offsets of length ``len(texts) + 1`` (text i owns ``hashes[offsets[i]:offsets[i + 1]]``;
    every text owns at least one). Equals ``[shingle_hash(s) for s in shingles(t)]`` per text.
    """
    encoded = [t.encode("utf-8") for t in texts]
    char_mode = np.fromiter((uses_char_ngrams(t, spaceless_share) for t in texts), dtype=bool, count=len(texts))
    counts = np.zeros(len(texts), dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray]] = []  # (doc indices, hashes of those docs in order)
    for mode, n in ((False, ngram), (True, char_ngram)):
        docs = np.flatnonzero(char_mode == mode)
        for chunk in size_groups(docs, _byte_sizes(encoded, docs), chunk_bytes):
            hashes, per_doc = _hash_chunk([encoded[i] for i in chunk], n, mode)
            counts[chunk] = per_doc
            parts.append((chunk, hashes))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if len(parts) == 1:
        return parts[0][1], offsets
    out = np.empty(int(offsets[-1]), dtype=np.uint32)
    for chunk, hashes in parts:
        # Word-mode and char-mode docs interleave in input order: put each doc's run in its place.
        if np.all(np.diff(chunk) == 1):
            out[offsets[chunk[0]] : offsets[chunk[-1] + 1]] = hashes
        else:
            out[run_indices(offsets[chunk], counts[chunk])] = hashes
    return out, offsets


def _byte_sizes(encoded: list[bytes], docs: np.ndarray) -> np.ndarray:
    return np.fromiter((len(encoded[i]) + 1 for i in docs), dtype=np.int64, count=len(docs))


def size_groups(docs: np.ndarray, sizes: np.ndarray, limit: int) -> list[np.ndarray]:
    """Split doc indices into consecutive groups whose ``sizes`` (one per doc) sum to about
    ``limit`` each (a doc larger than ``limit`` alone)."""
    if len(docs) == 0:
        return []
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(ends, np.arange(limit, int(ends[-1]), limit), side="right")
    cuts = np.unique(np.clip(cuts, 1, len(docs) - 1)) if len(docs) > 1 else np.empty(0, dtype=np.int64)
    return np.split(docs, cuts)


def run_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices of the runs ``[starts[i], starts[i] + lengths[i])``, one after the other:
    gathers the texts' slices of a flat array into one, or scatters them back into place."""
    local = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=local[1:])
    return np.repeat(np.asarray(starts, dtype=np.int64) - local[:-1], lengths) + np.arange(local[-1])


def _token_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, segment: int = 1 << 20) -> np.ndarray:
    """token_hash of every token buf[starts[i]:ends[i]], from prefix sums over the bytes.

    sum(V[b_j] * M**j) over a token is a difference of two prefix sums, shifted back to the
    token's start by M**-start. A huge text is done in segments of about ``segment`` bytes (cut
    between tokens), which keeps the temporary arrays and power tables small.
    """
    out = np.empty(len(starts), dtype=np.uint32)
    cuts = np.searchsorted(starts, np.arange(segment, len(buf), segment)) if len(buf) > segment else []
    for lo, hi in zip([0, *cuts], [*cuts, len(starts)]):
        if lo == hi:
            continue
        first, last = int(starts[lo]), int(ends[hi - 1])
        forward, inverse = _powers(last - first)
        weighted = _BYTE_VALUES_NP[buf[first:last]]
        weighted *= forward[: last - first]
        prefix = np.zeros(last - first + 1, dtype=np.uint32)
        np.cumsum(weighted, dtype=np.uint32, out=prefix[1:])
        s, e = starts[lo:hi] - first, ends[lo:hi] - first
        tok = prefix[e] - prefix[s]
        tok *= inverse[s]
        out[lo:hi] = tok
    return _fmix32_np(out)


def token_hashes_batch(
    texts: Sequence[str], spaceless_share: float = DEFAULT_SPACELESS_SHARE, chunk_bytes: int = 1 << 18,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``token_hash`` of every token of every normalised text, in order (words; single visible
    characters for texts mostly in scripts written without spaces, as ``shingles`` decides),
    without a Python loop over tokens. Returns ``(hashes, offsets, char_mode)``: uint32 hashes,
    text after text, int64 offsets of length ``len(texts) + 1``, and which texts are tokenised
    by characters (``shingle_hashes_from_tokens`` makes their shingles)."""
    encoded = [t.encode("utf-8") for t in texts]
    char_mode = np.fromiter((uses_char_ngrams(t, spaceless_share) for t in texts), dtype=bool, count=len(texts))
    counts = np.zeros(len(texts), dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for mode in (False, True):
        docs = np.flatnonzero(char_mode == mode)
        for chunk in size_groups(docs, _byte_sizes(encoded, docs), chunk_bytes):
            tok, tok_off = _chunk_tokens([encoded[i] for i in chunk], mode)
            counts[chunk] = np.diff(tok_off)
            parts.append((chunk, tok, tok_off))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint32)
    for chunk, tok, tok_off in parts:
        out[run_indices(offsets[chunk], np.diff(tok_off))] = tok
    return out, offsets, char_mode


def shingle_hashes_from_tokens(
    tok: np.ndarray, offsets: np.ndarray, char_mode: np.ndarray, ngram: int = 5, char_ngram: int = 5,
    chunk_tokens: int = 1 << 20,
) -> tuple[np.ndarray, np.ndarray]:
    """``shingle_hashes_batch`` of texts already tokenised by ``token_hashes_batch`` (the same
    hashes and offsets), for a caller that needs the tokens too."""
    n_docs = len(offsets) - 1
    ntok = np.diff(offsets)
    counts = np.zeros(n_docs, dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for mode, n in ((False, ngram), (True, char_ngram)):
        docs = np.flatnonzero(char_mode == mode)
        for group in size_groups(docs, ntok[docs], chunk_tokens):
            local = np.zeros(len(group) + 1, dtype=np.int64)
            np.cumsum(ntok[group], out=local[1:])
            hashes, per_doc = _shingles_from_tokens(tok[run_indices(offsets[group], ntok[group])], local, n)
            counts[group] = per_doc
            parts.append((group, hashes))
    out_off = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=out_off[1:])
    out = np.empty(int(out_off[-1]), dtype=np.uint32)
    for group, hashes in parts:
        out[run_indices(out_off[group], counts[group])] = hashes
    return out, out_off


def _chunk_tokens(docs: list[bytes], char_mode: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of a few consecutive docs sharing one mode, and the token offset of each doc
    (doc i owns ``tok[tok_off[i]:tok_off[i + 1]]``; len(docs) + 1 offsets)."""
    # One space before, between and after the docs: tokens never cross a doc boundary.
    buf = np.frombuffer(b" " + b" ".join(docs) + b" ", dtype=np.uint8)
    lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    doc_start = np.ones(len(docs) + 1, dtype=np.int64)
    np.cumsum(lens + 1, out=doc_start[1:])
    doc_start[1:] += 1  # doc i occupies [doc_start[i], doc_start[i] + lens[i])

    if char_mode:
        starts = np.flatnonzero(((buf & 0xC0) != 0x80) & (buf > 0x20))
        ends = starts + _UTF8_LEN[buf[starts]]
    else:
        # Separator/token transitions alternate: start, end, start, end, ...
        separator = buf <= 0x20
        edges = np.flatnonzero(separator[1:] ^ separator[:-1]) + 1
        starts, ends = edges[0::2], edges[1::2]

    return _token_hashes(buf, starts, ends), np.searchsorted(starts, doc_start)


def _hash_chunk(docs: list[bytes], n: int, char_mode: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of a few consecutive docs sharing one mode; returns (hashes, count per doc)."""
    return _shingles_from_tokens(*_chunk_tokens(docs, char_mode), n)


def _shingles_from_tokens(tok: np.ndarray, tok_off: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of docs given their token hashes (doc i: ``tok[tok_off[i]:tok_off[i + 1]]``,
    ``tok_off[0] == 0``); returns (hashes, count per doc)."""
    ntok = np.diff(tok_off)
    long_doc = ntok >= n
    per_doc = np.where(long_doc, ntok - n + 1, 1)
    out_off = np.zeros(len(ntok) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=out_off[1:])
    out = np.empty(int(out_off[-1]), dtype=np.uint32)

    # Every window of n consecutive tokens; keep those that stay inside one doc.
    n_windows = len(tok) - n + 1
    if n_windows > 0 and long_doc.any():
        h = np.full(n_windows, SHINGLE_SEED, dtype=np.uint32)
        for k in range(n):
            h *= np.uint32(SHINGLE_MULT)
            h += tok[k : k + n_windows]
        _fmix32_np(h)
        docs_long = np.flatnonzero(long_doc)
        # Window w of doc d goes to out[w - tok_off[d] + out_off[d]]; short docs take the rest.
        is_window = np.ones(len(out), dtype=bool)
        is_window[out_off[:-1][~long_doc]] = False
        dest = np.flatnonzero(is_window)
        src = dest + np.repeat(tok_off[docs_long] - out_off[docs_long], per_doc[docs_long])
        out[dest] = h[src]

    # Short docs: one shingle of all their tokens.
    docs_short = np.flatnonzero(~long_doc)
    if len(docs_short):
        h = np.full(len(docs_short), SHINGLE_SEED, dtype=np.uint32)
        first, count = tok_off[docs_short], ntok[docs_short]
        for k in range(int(count.max(initial=0))):
            active = count > k
            h[active] = h[active] * np.uint32(SHINGLE_MULT) + tok[first[active] + k]
        out[out_off[docs_short]] = _fmix32_np(h)
    return out, per_doc
