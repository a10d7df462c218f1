"""Exact and near-duplicate detection: MinHash signatures, LSH banding, clusters."""
