"""A linear model over hashed word uni- and bigrams (sublinear TF-IDF, L2-normalised), held in
plain numpy arrays: what scikit-learn's TfidfVectorizer + LogisticRegression compute, hashed
into a fixed number of buckets and fed from a batch's token ids, so scoring is a few sorts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import xxhash

from synthfilter.detect.features import TokenIds

DEFAULT_BUCKETS = 2**20
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio): mixes the bigram's halves


def token_hashes(words: Sequence[str | None]) -> np.ndarray:
    """A stable 64-bit hash of each token (0 where there is none)."""
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(w.encode("utf-8")) if w is not None else 0 for w in words), dtype=np.uint64,
                       count=len(words))


class TokenHasher:
    """Hashes of a shared vocabulary's tokens, computed once; a batch's other tokens are hashed
    per batch."""

    def __init__(self) -> None:
        self._base: dict[int, np.ndarray] = {}

    def of(self, tid: TokenIds) -> np.ndarray:
        """The 64-bit hash of every token of a batch."""
        if tid.base is None:
            return token_hashes(list(tid.extra))[tid.ids] if len(tid.ids) else np.zeros(0, np.uint64)
        key = id(tid.base)
        base = self._base.get(key)
        if base is None:
            base = self._base[key] = token_hashes(tid.base.words)
        table = np.concatenate([base, token_hashes(list(tid.extra))]) if tid.extra else base
        return table[tid.ids]


def bucket_counts(hashes: np.ndarray, lengths: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, bucket, count) of every distinct word unigram and bigram of each document.

    Bigrams never cross a document boundary. Rows come sorted by document, then bucket.
    """
    n_docs = len(lengths)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    uni = hashes % np.uint64(buckets)
    same = doc[1:] == doc[:-1] if len(doc) else np.zeros(0, dtype=bool)
    with np.errstate(over="ignore"):
        bi = (hashes[:-1] * _MIX + (hashes[1:] ^ (hashes[1:] >> np.uint64(29))))[same] % np.uint64(buckets)
    keys = np.concatenate([doc * buckets + uni.astype(np.int64), doc[1:][same] * buckets + bi.astype(np.int64)])
    uniq, counts = np.unique(keys, return_counts=True)
    return uniq // buckets, uniq % buckets, counts


def tfidf_rows(hashes: np.ndarray, lengths: np.ndarray, idf: np.ndarray):
    """Sublinear TF-IDF rows (scipy CSR, L2-normalised) of a batch; buckets with idf 0 are unused."""
    from scipy.sparse import csr_matrix

    docs, cols, counts = bucket_counts(hashes, lengths, len(idf))
    vals = (1.0 + np.log(counts)) * idf[cols]
    norm = np.sqrt(np.bincount(docs, weights=vals * vals, minlength=len(lengths)))
    vals = vals / np.maximum(norm[docs], 1e-12)
    keep = vals != 0
    return csr_matrix((vals[keep], (docs[keep], cols[keep])), shape=(len(lengths), len(idf)))


class HashedLinear:
    """``score = w . tfidf(text) + b`` over hashed uni/bigram buckets (log-odds of machine)."""

    def __init__(self, weights: np.ndarray, idf: np.ndarray, bias: float) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)
        self.idf = np.asarray(idf, dtype=np.float32)
        self.bias = float(bias)
        self._w_idf = (self.weights.astype(np.float64) * self.idf)

    @property
    def buckets(self) -> int:
        return len(self.idf)

    def decision(self, hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        docs, cols, counts = bucket_counts(hashes, lengths, self.buckets)
        tf = 1.0 + np.log(counts)
        idf = self.idf[cols].astype(np.float64)
        n = len(lengths)
        norm = np.sqrt(np.bincount(docs, weights=(tf * idf) ** 2, minlength=n))
        dot = np.bincount(docs, weights=tf * self._w_idf[cols], minlength=n)
        return dot / np.maximum(norm, 1e-12) + self.bias

    @staticmethod
    def document_frequencies(hashes: np.ndarray, lengths: np.ndarray, buckets: int) -> np.ndarray:
        _, cols, _ = bucket_counts(hashes, lengths, buckets)
        return np.bincount(cols, minlength=buckets).astype(np.float64)

    @classmethod
    def fit(cls, hashes: np.ndarray, lengths: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None,
            buckets: int = DEFAULT_BUCKETS, min_df: int = 2, c: float = 4.0) -> "HashedLinear":
        """Fit on a batch's token hashes (documents concatenated, ``lengths`` tokens each).

        Logistic regression (L2, lbfgs) on the TF-IDF rows; buckets seen in fewer than
        ``min_df`` documents get idf 0 (never used).
        """
        from sklearn.linear_model import LogisticRegression

        n = len(lengths)
        df = cls.document_frequencies(hashes, lengths, buckets)
        idf = np.where(df >= min_df, np.log((1.0 + n) / (1.0 + df)) + 1.0, 0.0)
        x = tfidf_rows(hashes, lengths, idf)
        used = np.flatnonzero(idf > 0)  # the solver only sees used buckets (far fewer dimensions)
        lr = LogisticRegression(C=c, max_iter=3000, tol=1e-6)
        lr.fit(x[:, used], y, sample_weight=weight)
        weights = np.zeros(buckets)
        weights[used] = lr.coef_[0]
        return cls(weights, idf, float(lr.intercept_[0]))

    def save(self, path: Path) -> None:
        """Only the used buckets (idf > 0) are stored: their index, idf and weight."""
        used = np.flatnonzero(self.idf > 0).astype(np.int32)
        np.savez_compressed(path, buckets=np.array([self.buckets]), used=used, weights=self.weights[used],
                            idf=self.idf[used], bias=np.array([self.bias]))

    @classmethod
    def load(cls, path: Path) -> "HashedLinear":
        with np.load(path, allow_pickle=False) as z:
            n = int(z["buckets"][0])
            weights, idf = np.zeros(n, np.float32), np.zeros(n, np.float32)
            weights[z["used"]] = z["weights"]
            idf[z["used"]] = z["idf"]
            return cls(weights, idf, float(z["bias"][0]))
