"""LSH banding for MinHash signatures: bands x rows for a Jaccard threshold, and per-band keys.
A pair with similarity s shares one of b bands of r rows with probability 1 - (1 - s**r)**b."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = [
    "band_keys",
    "candidate_probability",
    "false_negative_probability",
    "false_positive_probability",
    "optimal_bands",
    "UNVERIFIED_WEIGHTS",
    "VERIFIED_WEIGHTS",
]


def candidate_probability(similarity: float | np.ndarray, b: int, r: int) -> float | np.ndarray:
    """Probability that a pair with Jaccard ``similarity`` shares at least one of ``b`` bands of ``r`` rows."""
    return 1.0 - (1.0 - np.power(similarity, float(r))) ** float(b)


def false_positive_probability(threshold: float, b: int, r: int) -> float:
    """Area under the candidate curve below ``threshold`` (pairs that should not be candidates)."""
    return _area(lambda s: 1.0 - (1.0 - s ** float(r)) ** float(b), 0.0, threshold, b * r)


def false_negative_probability(threshold: float, b: int, r: int) -> float:
    """Area above the candidate curve from ``threshold`` to 1 (pairs that should be candidates)."""
    return _area(lambda s: (1.0 - s ** float(r)) ** float(b), threshold, 1.0, b * r)


def _area(curve: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, degree: int) -> float:
    """The integral of ``curve``, a polynomial of ``degree``, from ``lo`` to ``hi``: Gauss-Legendre
    quadrature with enough nodes to be exact (scipy's integrator, which datasketch uses, costs the
    process some 35 MB of memory to import and agrees to rounding: tests/dedup/test_lsh.py)."""
    nodes, weights = _gauss_legendre(degree // 2 + 1)
    half = (hi - lo) / 2.0
    return float(half * np.dot(weights, curve(lo + half * (nodes + 1.0))))


@lru_cache(maxsize=32)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [-1, 1], exact for polynomials of degree up to 2n - 1."""
    from numpy.polynomial.legendre import leggauss

    return leggauss(n)


# (false positive weight, false negative weight). Without verification every candidate pair is
# linked, so both errors count the same (datasketch's default). With verification a false
# positive only costs one signature comparison, while a false negative is a duplicate kept.
UNVERIFIED_WEIGHTS = (0.5, 0.5)
VERIFIED_WEIGHTS = (0.1, 0.9)


def optimal_bands(
    threshold: float,
    num_perm: int,
    *,
    verify: bool = True,
    weights: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """Bands ``b`` and rows ``r`` (``b * r <= num_perm``) minimising weighted FP + FN areas.

    The grid search, integrals and tie-breaking of ``datasketch.MinHashLSH``, which picks the
    same parameters for the same weights. ``weights`` defaults to ``VERIFIED_WEIGHTS`` when
    candidates are verified (``verify=True``, the default: ``(14, 9)`` at 0.8 and 128
    permutations, 97.5 % of pairs at Jaccard 0.85 become candidates) and to datasketch's
    ``UNVERIFIED_WEIGHTS`` otherwise (``(9, 13)``: 69 % at 0.85, but fewer false links).
    """
    fp_weight, fn_weight = weights or (VERIFIED_WEIGHTS if verify else UNVERIFIED_WEIGHTS)
    return _optimal_bands(float(threshold), int(num_perm), float(fp_weight), float(fn_weight))


@lru_cache(maxsize=64)
def _optimal_bands(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> tuple[int, int]:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    # Every (b, r) at once: one Gauss-Legendre rule with enough nodes for the largest degree
    # (b * r <= num_perm) is exact for all of them, so the areas are those of the two
    # functions above; the first minimum in (b, then r) order is datasketch's tie-break.
    grid = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    b, r = grid[:, :1], grid[:, 1:]
    nodes, weights = _gauss_legendre(num_perm // 2 + 1)
    below = threshold / 2.0 * (nodes + 1.0)
    above = threshold + (1.0 - threshold) / 2.0 * (nodes + 1.0)
    fp = threshold / 2.0 * ((1.0 - (1.0 - below[None, :] ** r) ** b) @ weights)
    fn = (1.0 - threshold) / 2.0 * (((1.0 - above[None, :] ** r) ** b) @ weights)
    best = int(np.argmin(fp_weight * fp + fn_weight * fn))
    return int(grid[best, 0]), int(grid[best, 1])


_MUL64 = np.uint64(0x9E3779B97F4A7C15)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _band_seeds(b: int) -> np.ndarray:
    return _fmix64(np.arange(1, b + 1, dtype=np.uint64) * _MUL64)


def band_keys(signatures: np.ndarray, b: int, r: int, *, chunk_rows: int = 65536) -> np.ndarray:
    """uint64 array (n, b): a 64-bit hash of each band's ``r`` values, seeded by the band index.

    Band ``i`` covers signature columns ``[i * r, (i + 1) * r)``. Equal bands give equal keys;
    the seed makes equal values in different bands give different keys, so keys of different
    bands are never confused (``near_duplicate_components`` also compares only within a band).
    """
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or signatures.dtype != np.uint32:
        raise ValueError(f"signatures must be a 2-D uint32 array, got {signatures.dtype} {signatures.shape}")
    if b < 1 or r < 1 or b * r > signatures.shape[1]:
        raise ValueError(f"b * r must be in [1, {signatures.shape[1]}] (signature length), got {b} x {r}")
    n = signatures.shape[0]
    out = np.empty((n, b), dtype=np.uint64)
    seeds = _band_seeds(b)
    for lo in range(0, n, chunk_rows):
        bands = signatures[lo : lo + chunk_rows, : b * r].reshape(-1, b, r)
        h = np.repeat(seeds[None, :], len(bands), axis=0)
        for j in range(r):
            h ^= bands[:, :, j]
            h *= _MUL64
            h ^= h >> np.uint64(29)
        out[lo : lo + len(bands)] = _fmix64(h)
    return out
