"""``synthfilter.hf``: Hugging Face ``datasets`` integration (needs ``pip install "synthfilter[hf]"``)."""

from synthfilter.integrations.hf import (
    FilterResult,
    annotate_dataset,
    annotation_features,
    decision_features,
    filter_dataset,
    stream_filter,
)

__all__ = [
    "FilterResult",
    "annotate_dataset",
    "annotation_features",
    "decision_features",
    "filter_dataset",
    "stream_filter",
]
