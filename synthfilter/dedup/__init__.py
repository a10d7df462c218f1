"""Exact and near-duplicate detection: MinHash signatures, LSH banding, clusters."""

import importlib
from typing import Any

# Submodules are imported on first use: the pipeline's workers need only some of them, and
# the streaming index pulls in datasketch.
_WHERE = {
    "choose_survivors": "clusters", "near_duplicate_components": "clusters", "NearDupIndex": "index",
    "band_keys": "lsh", "candidate_probability": "lsh", "optimal_bands": "lsh",
    "MinHasher": "minhash", "SignatureSettingsError": "minhash", "check_settings": "minhash",
    "estimate_jaccard": "minhash", "from_datasketch": "minhash", "to_datasketch": "minhash",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"synthfilter.dedup.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'synthfilter.dedup' has no attribute {name!r}")


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
