"""Exact and near-duplicate detection: MinHash signatures, LSH banding, clusters."""

from synthfilter.dedup.clusters import choose_survivors, near_duplicate_components
from synthfilter.dedup.index import NearDupIndex
from synthfilter.dedup.lsh import band_keys, candidate_probability, optimal_bands
from synthfilter.dedup.minhash import (
    MinHasher,
    SignatureSettingsError,
    check_settings,
    estimate_jaccard,
    from_datasketch,
    to_datasketch,
)

__all__ = [
    "MinHasher",
    "NearDupIndex",
    "SignatureSettingsError",
    "band_keys",
    "candidate_probability",
    "check_settings",
    "choose_survivors",
    "estimate_jaccard",
    "from_datasketch",
    "near_duplicate_components",
    "optimal_bands",
    "to_datasketch",
]
