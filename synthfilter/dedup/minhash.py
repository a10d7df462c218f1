"""Batch MinHash signatures, bit-identical to datasketch's ``MinHash(scheme="affine32")``, plus settings
that refuse mixing and helpers to and from datasketch ``MinHash``/``LeanMinHash``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from synthfilter import __version__
from synthfilter.text.normalize import NORMALIZATION_NAME
from synthfilter.text.shingles import (
    DEFAULT_SPACELESS_SHARE,
    SHINGLE_HASH_NAME,
    _fmix32_np,
    shingle_hash,
    shingle_hashes_batch,
    shingle_hashes_from_tokens,
    shingles,
)

__all__ = [
    "MinHasher",
    "SCHEME",
    "SignatureSettingsError",
    "check_settings",
    "datasketch_minhash",
    "estimate_jaccard",
    "from_datasketch",
    "permutations",
    "to_datasketch",
]

SCHEME = "affine32"
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for "no shingle seen"


class SignatureSettingsError(ValueError):
    """Signatures made with different settings were about to be compared or mixed."""


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine permutations ``h -> a * h + b (mod 2**32)`` datasketch derives from ``seed``.

    ``a`` is odd, so each permutation is a bijection on 32-bit values. Same generator and draw
    order as ``datasketch.MinHash(num_perm, seed, scheme="affine32")``.
    """
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class MinHasher:
    """MinHash signatures of normalised texts, many at once.

    Args:
        num_perm: number of permutations (signature length).
        seed: seeds the permutations, as datasketch's ``seed``.
        ngram: words per shingle.
        char_ngram: characters per shingle for texts in scripts written without spaces.
        spaceless_share: share of such characters from which a text is shingled by characters.
        slice_width: shingles permuted per numpy step (speed only; results do not depend on it).
            Default: 2**20 / num_perm, at least 2,560 (numpy's loops are much slower on shorter rows).

    Example:
        >>> h = MinHasher(num_perm=128, seed=1)
        >>> sigs = h.signatures([normalize_for_dedup(t) for t in texts])  # (len(texts), 128) uint32

    ``signatures(texts)[i]`` equals ``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash,
    scheme="affine32")`` updated with ``shingles(texts[i], ngram, char_ngram)``. Picklable.

    How: one numpy pass hashes every shingle of the batch (``shingle_hashes_batch``); a second
    applies all permutations to a few thousand shingles at a time and takes per-text minima
    with ``np.minimum.reduceat``. No Python loop per text or per permutation.
    """

    def __init__(
        self,
        num_perm: int = 128,
        seed: int = 1,
        ngram: int = 5,
        char_ngram: int = 5,
        spaceless_share: float = DEFAULT_SPACELESS_SHARE,
        slice_width: int | None = None,
    ) -> None:
        if not 1 <= num_perm <= 1 << 16:
            raise ValueError(f"num_perm must be in [1, 65536], got {num_perm}")
        if ngram < 1 or char_ngram < 1:
            raise ValueError(f"ngram and char_ngram must be >= 1, got {ngram} and {char_ngram}")
        if not 0.0 <= spaceless_share <= 1.0:
            raise ValueError(f"spaceless_share must be in [0, 1], got {spaceless_share}")
        if slice_width is None:
            slice_width = max(2560, (1 << 20) // num_perm)
        if slice_width < 1:
            raise ValueError(f"slice_width must be >= 1, got {slice_width}")
        self.num_perm = num_perm
        self.seed = seed
        self.ngram = ngram
        self.char_ngram = char_ngram
        self.spaceless_share = spaceless_share
        self.slice_width = slice_width
        self.a, self.b = permutations(num_perm, seed)
        self._tiles: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tiles"] = None  # rebuilt on first use; keeps pickles small
        return state

    def __repr__(self) -> str:
        return (
            f"MinHasher(num_perm={self.num_perm}, seed={self.seed}, ngram={self.ngram}, "
            f"char_ngram={self.char_ngram}, spaceless_share={self.spaceless_share})"
        )

    def settings(self) -> dict[str, Any]:
        """Everything that decides the signature values, for the manifest (see ``check_settings``)."""
        return {
            "scheme": SCHEME,
            "num_perm": self.num_perm,
            "seed": self.seed,
            "ngram": self.ngram,
            "char_ngram": self.char_ngram,
            "spaceless_share": self.spaceless_share,
            "shingle_hash": SHINGLE_HASH_NAME,
            "normalization": NORMALIZATION_NAME,
            "library_version": __version__,
        }

    def shingles(self, normalized_text: str) -> list[tuple[str, ...]]:
        """The shingles of one text with this hasher's settings (reference, not fast)."""
        return shingles(normalized_text, self.ngram, self.char_ngram, self.spaceless_share)

    def signatures(self, normalized_texts: Sequence[str]) -> np.ndarray:
        """uint32 array (len(texts), num_perm): one MinHash signature per text."""
        hashes, offsets = shingle_hashes_batch(
            normalized_texts, self.ngram, self.char_ngram, self.spaceless_share
        )
        return self.signatures_from_hashes(hashes, offsets)

    def signatures_from_tokens(self, tokens: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """``signatures`` of texts already tokenised by ``text.shingles.token_hashes_batch``
        (with this hasher's ``spaceless_share``): the same signatures, one tokenisation."""
        return self.signatures_from_hashes(*shingle_hashes_from_tokens(*tokens, self.ngram, self.char_ngram))

    def signatures_from_hashes(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures of sets given as 32-bit element hashes: set i is ``hashes[offsets[i]:offsets[i+1]]``.

        A set with no element gets datasketch's empty signature (all 0xFFFFFFFF).
        """
        hashes = np.asarray(hashes, dtype=np.uint32)
        offsets = np.asarray(offsets, dtype=np.int64)
        n_sets, total = len(offsets) - 1, len(hashes)
        if n_sets < 0 or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must start at 0, never decrease and end at len(hashes)")
        out = np.full((self.num_perm, n_sets), _EMPTY, dtype=np.uint32)  # one column per set
        if total == 0:
            return np.ascontiguousarray(out.T)
        mixed = _fmix32_np(hashes.copy())  # datasketch pre-mixes every input hash
        a_tile, b_tile = self._permutation_tiles()
        work = np.empty_like(a_tile)
        width = a_tile.shape[1]
        for lo in range(0, total, width):
            hi = min(lo + width, total)
            first = int(np.searchsorted(offsets, lo, side="right")) - 1
            last = int(np.searchsorted(offsets, hi - 1, side="right")) - 1
            starts = np.maximum(offsets[first : last + 1], lo) - lo
            block = work[:, : hi - lo]
            # Same-shape contiguous operands: numpy's SIMD loops, 32-bit wraparound = mod 2**32.
            np.multiply(a_tile[:, : hi - lo], mixed[None, lo:hi], out=block)
            np.add(block, b_tile[:, : hi - lo], out=block)
            minima = np.minimum.reduceat(block, starts, axis=1)
            np.minimum(out[:, first : last + 1], minima, out=out[:, first : last + 1])
        empty = offsets[1:] == offsets[:-1]
        out[:, empty] = _EMPTY  # reduceat gives an empty set its neighbour's value
        return np.ascontiguousarray(out.T)

    def _permutation_tiles(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tiles is None:
            shape = (self.num_perm, self.slice_width)
            self._tiles = (
                np.ascontiguousarray(np.broadcast_to(self.a[:, None], shape)),
                np.ascontiguousarray(np.broadcast_to(self.b[:, None], shape)),
            )
        return self._tiles


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Share of equal positions: the MinHash estimate of Jaccard similarity (row-wise for 2-D)."""
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape[-1] != sig_b.shape[-1]:
        raise SignatureSettingsError(f"signature lengths differ: {sig_a.shape[-1]} vs {sig_b.shape[-1]}")
    equal = np.count_nonzero(sig_a == sig_b, axis=-1) / sig_a.shape[-1]
    return float(equal) if np.ndim(equal) == 0 else equal


def check_settings(expected: Mapping[str, Any], found: Mapping[str, Any], where: str = "signatures") -> None:
    """Raise ``SignatureSettingsError`` unless two ``MinHasher.settings()`` describe the same signatures.

    ``library_version`` is informational: anything that changes signature values also changes
    ``shingle_hash`` or ``normalization`` (pinned by tests), so upgrades keep old signatures usable.
    """
    keys = (set(expected) | set(found)) - {"library_version"}
    differ = sorted(k for k in keys if expected.get(k) != found.get(k))
    if differ:
        detail = ", ".join(f"{k}: expected {expected.get(k)!r}, found {found.get(k)!r}" for k in differ)
        raise SignatureSettingsError(
            f"{where} were made with different MinHash settings ({detail}); "
            "signatures from different settings cannot be compared: re-score with one setting"
        )


def to_datasketch(signature: np.ndarray, seed: int = 1):
    """A ``datasketch.LeanMinHash`` holding one signature row (``seed`` must be the MinHasher's)."""
    from datasketch import LeanMinHash

    return LeanMinHash(seed=seed, hashvalues=np.asarray(signature, dtype=np.uint32), scheme=SCHEME)


def from_datasketch(minhash) -> np.ndarray:
    """The uint32 signature row of a datasketch ``MinHash``/``LeanMinHash`` made with scheme affine32."""
    scheme = getattr(minhash, "scheme", None)
    if scheme != SCHEME:
        raise SignatureSettingsError(
            f"datasketch MinHash uses scheme {scheme!r}; only {SCHEME!r} signatures are compatible "
            f"(create it with MinHash(..., scheme={SCHEME!r}))"
        )
    return np.array(minhash.hashvalues, dtype=np.uint32)


def datasketch_minhash(normalized_text: str, hasher: MinHasher):
    """The datasketch ``MinHash`` that ``hasher.signatures([normalized_text])[0]`` reproduces (slow)."""
    from datasketch import MinHash

    m = MinHash(num_perm=hasher.num_perm, seed=hasher.seed, hashfunc=shingle_hash, scheme=SCHEME)
    m.update_batch(hasher.shingles(normalized_text))
    return m
