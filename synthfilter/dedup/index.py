"""A streaming near-duplicate index for single-pass use (HF streaming, gate), on datasketch MinHashLSH;
it holds every record in memory (~5 KB each), so whole corpora go through ``near_duplicate_components``."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from synthfilter.dedup.lsh import optimal_bands
from synthfilter.dedup.minhash import SignatureSettingsError, to_datasketch

__all__ = ["NearDupIndex"]


class NearDupIndex:
    """Add signatures under keys; query returns the keys of verified near-duplicates.

    Args:
        threshold: Jaccard threshold; bands x rows come from ``optimal_bands(threshold,
            num_perm, verify=verify)``, as in the decide stage, so streaming and batch runs
            find the same candidates.
        num_perm: signature length.
        seed: the MinHasher seed (recorded in the datasketch sketches).
        verify: keep only candidates whose estimated Jaccard reaches ``verify_threshold``.
        verify_threshold: the estimated Jaccard a candidate must reach when ``verify`` is on;
            None (the default) means ``threshold``. The bands stay those of ``threshold``.

    Example:
        >>> index = NearDupIndex(threshold=0.8, num_perm=128)
        >>> for key, sig in zip(keys, hasher.signatures(texts)):
        ...     if not index.query(sig):
        ...         index.add(key, sig)  # first of its kind: keep it
    """

    def __init__(
        self, threshold: float = 0.8, num_perm: int = 128, seed: int = 1, verify: bool = True,
        verify_threshold: float | None = None,
    ) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = seed
        self.verify = verify
        self.verify_threshold = threshold if verify_threshold is None else float(verify_threshold)
        if not 0.0 < self.verify_threshold <= 1.0:
            raise ValueError(f"verify_threshold must be in (0, 1], got {verify_threshold}")
        self.b, self.r = optimal_bands(threshold, num_perm, verify=verify)
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(self.b, self.r))
        self._signatures: dict[Hashable, np.ndarray] = {}
        self._order: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._signatures

    def add(self, key: Hashable, signature: np.ndarray) -> None:
        """Index ``signature`` under ``key`` (a key may be added once)."""
        row = self._row(signature)
        if key in self._signatures:
            raise KeyError(f"key {key!r} is already in the index")
        self._lsh.insert(key, to_datasketch(row, self.seed), check_duplication=False)
        self._signatures[key] = row
        self._order[key] = len(self._order)

    def query(self, signature: np.ndarray) -> list[Hashable]:
        """Keys of indexed near-duplicates of ``signature``, in the order they were added."""
        row = self._row(signature)
        found = self._lsh.query(to_datasketch(row, self.seed))
        if self.verify:
            at = self.verify_threshold
            found = [k for k in found if np.count_nonzero(self._signatures[k] == row) / self.num_perm >= at]
        return sorted(found, key=self._order.__getitem__)

    def _row(self, signature: np.ndarray) -> np.ndarray:
        row = np.asarray(signature)
        if row.shape != (self.num_perm,) or row.dtype != np.uint32:
            raise SignatureSettingsError(
                f"expected a uint32 signature of length {self.num_perm}, got {row.dtype} {row.shape}"
            )
        return row.copy()
