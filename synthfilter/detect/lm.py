"""A small word-bigram language model (absolute discounting, Kneser-Ney-style continuation
unigram) held in plain numpy arrays, and per-document surprisal statistics from it.
"""

from __future__ import annotations

from collections import Counter
from itertools import repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from synthfilter.detect.features import TokenIds, Vocabulary

UNK = 0
BOS = 1

SURPRISAL_STAT_NAMES: tuple[str, ...] = (
    "mean",
    "std",
    "p10",
    "p50",
    "p90",
    "seen_bigram_rate",
    "unk_rate",
    "absdiff_mean",
)


class BigramLM:
    """Word-bigram model: ``P(w | v)`` discounted, backing off to a continuation unigram."""

    def __init__(self, words: Sequence[str], bigram_keys: np.ndarray, bigram_counts: np.ndarray,
                 discount: float = 0.75) -> None:
        self.words = list(words)
        self.vocab = {w: i + 2 for i, w in enumerate(self.words)}
        self.size = len(self.words) + 2
        self._token_vocabulary: Vocabulary | None = None
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.bigram_keys = np.asarray(bigram_keys, dtype=np.int64)
        self.bigram_counts = np.asarray(bigram_counts, dtype=np.float64)
        self.discount = float(discount)
        v = self.size
        prev = self.bigram_keys // v
        nxt = self.bigram_keys % v
        self._context_count = np.bincount(prev, weights=self.bigram_counts, minlength=v)
        self._context_types = np.bincount(prev, minlength=v).astype(np.float64)
        cont = np.bincount(nxt, minlength=v).astype(np.float64) + 0.5
        self._continuation = cont / cont.sum()

    # -- training -----------------------------------------------------------------------------

    @staticmethod
    def vocabulary(documents: Iterable[Sequence[str]], min_count: int = 2) -> list[str]:
        """Words seen at least ``min_count`` times, sorted (the rest are UNK)."""
        counts: Counter[str] = Counter()
        for d in documents:
            counts.update(d)
        return sorted(w for w, c in counts.items() if c >= min_count)

    @classmethod
    def fit(cls, documents: Iterable[Sequence[str]], words: Sequence[str] | None = None, min_count: int = 2,
            discount: float = 0.75, min_bigram_count: int = 1) -> "BigramLM":
        """Count bigrams over tokenised documents, with a given vocabulary or one built from them.

        Two models that share a vocabulary share token ids, so a text is mapped to ids once.
        Bigrams seen fewer than ``min_bigram_count`` times can be dropped (they back off to the
        unigram) for a smaller, faster model; the default keeps them all, because pruning
        singletons cost 0.02 cross-validated AUROC.
        """
        docs = [list(d) for d in documents]
        if words is None:
            words = cls.vocabulary(docs, min_count)
        lm = cls(words, np.zeros(0, dtype=np.int64), np.zeros(0), discount)
        keys = [lm._keys(lm.ids(d)) for d in docs if d]
        all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        uniq, c = np.unique(all_keys, return_counts=True)
        keep = c >= min_bigram_count
        return cls(words, uniq[keep], c[keep].astype(np.float64), discount)

    # -- persistence (plain arrays, no pickle) ------------------------------------------------

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            words=np.array(self.words, dtype=str),
            bigram_keys=self.bigram_keys,
            bigram_counts=self.bigram_counts.astype(np.uint32),
            discount=np.array([self.discount]),
        )

    @classmethod
    def load(cls, path: Path) -> "BigramLM":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["words"].tolist(), z["bigram_keys"], z["bigram_counts"].astype(np.float64),
                       float(z["discount"][0]))

    # -- scoring ------------------------------------------------------------------------------

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        get = self.vocab.get
        return np.array([get(w, UNK) for w in tokens], dtype=np.int64)

    def same_vocabulary(self, other: "BigramLM") -> bool:
        return self.words == other.words

    def _keys(self, ids: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        prev = np.empty_like(ids)
        prev[1:] = ids[:-1]
        if len(ids):
            prev[0] = BOS
        if starts is not None:
            prev[starts] = BOS
        return prev * self.size + ids

    def token_surprisal(self, ids: np.ndarray, starts: np.ndarray | None = None,
                        order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        surprisal, pos, hit = self.token_lookup(ids, starts, order)
        return surprisal, hit

    def token_lookup(self, ids: np.ndarray, starts: np.ndarray | None = None,
                     order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-log P of each token, the row of its bigram in the table and whether it was seen there;
        ``starts`` marks document starts.

        The bigram table is searched with the queries in sorted order (``order``, an argsort of
        the query keys, can be shared by models with the same vocabulary): sorted queries walk
        the table forwards and run about seven times faster than queries in text order.
        """
        keys = self._keys(ids, starts)
        prev = keys // self.size
        if len(self.bigram_keys):
            if order is None:
                order = np.argsort(keys)
            pos = np.empty(len(keys), dtype=np.int64)
            pos[order] = np.searchsorted(self.bigram_keys, keys[order])
            np.minimum(pos, len(self.bigram_keys) - 1, out=pos)
            hit = self.bigram_keys[pos] == keys
            c = np.where(hit, self.bigram_counts[pos], 0.0)
        else:
            pos = np.zeros(len(keys), dtype=np.int64)
            hit = np.zeros(len(keys), dtype=bool)
            c = np.zeros(len(keys))
        ctx = self._context_count[prev]
        has_ctx = ctx > 0
        safe_ctx = np.maximum(ctx, 1.0)
        backoff = np.where(has_ctx, self.discount * self._context_types[prev] / safe_ctx, 1.0)
        p = np.where(has_ctx, np.maximum(c - self.discount, 0.0) / safe_ctx, 0.0)
        p = p + backoff * self._continuation[ids]
        return -np.log(p), pos, hit

    def context_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per context word, the entropy of the next-word distribution (the *expected* surprisal
        there); per seen bigram, the rank of its word among the context's seen continuations
        (1 = likeliest); per word, its rank under the continuation unigram. Computed once."""
        if self._tables is None:
            v, disc = self.size, self.discount
            prev = self.bigram_keys // v
            nxt = self.bigram_keys % v
            ctx, cont = self._context_count, self._continuation
            backoff = np.where(ctx > 0, disc * self._context_types / np.maximum(ctx, 1.0), 1.0)
            p_seen = np.maximum(self.bigram_counts - disc, 0.0) / np.maximum(ctx[prev], 1.0) + backoff[prev] * cont[nxt]
            cont_log = cont * np.log(cont)
            seen_plogp = np.bincount(prev, weights=p_seen * np.log(p_seen), minlength=v)
            seen_cont = np.bincount(prev, weights=cont[nxt], minlength=v)
            seen_cont_log = np.bincount(prev, weights=cont_log[nxt], minlength=v)
            # Words never seen after a context share its backoff mass in proportion to ``cont``.
            unseen = backoff * ((1.0 - seen_cont) * np.log(backoff) + (float(cont_log.sum()) - seen_cont_log))
            entropy = -(seen_plogp + unseen)
            order = np.lexsort((-p_seen, prev))
            starts = np.r_[0, np.flatnonzero(np.diff(prev[order])) + 1] if len(order) else np.zeros(0, np.int64)
            sizes = np.diff(np.r_[starts, len(order)])
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order)) - np.repeat(starts, sizes) + 1
            uni_rank = np.empty(v, dtype=np.int64)
            uni_rank[np.argsort(-cont, kind="stable")] = np.arange(1, v + 1)
            self._tables = (entropy, rank, uni_rank)
        return self._tables

    def key_order(self, ids: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """The sort order of the bigram keys of ``ids`` (see ``token_surprisal``)."""
        return np.argsort(self._keys(ids, starts))

    def ids_for_vocabulary(self, words: Sequence[str | None]) -> np.ndarray:
        """This model's id for each of ``words`` (UNK where unknown): map a batch's distinct
        tokens once, then index, instead of looking up every token."""
        return np.fromiter(map(self.vocab.get, words, repeat(UNK)), dtype=np.int64, count=len(words))

    @property
    def token_vocabulary(self) -> Vocabulary:
        """This model's ids as a shared ``Vocabulary``: batches tokenised against it carry
        this model's ids directly (tokens it lacks get ids from ``size`` up, i.e. UNK here)."""
        if self._token_vocabulary is None:
            self._token_vocabulary = Vocabulary(self.vocab, self.size)
        return self._token_vocabulary

    def ids_of(self, token_ids: TokenIds) -> np.ndarray:
        """This model's id of every token of a batch."""
        if token_ids.base is self.token_vocabulary:
            return np.where(token_ids.ids >= self.size, UNK, token_ids.ids)
        return self.ids_for_vocabulary(token_ids.words())[token_ids.ids]


def segment_stats(values: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
    """Mean, std, 10th/50th/90th percentile and mean absolute step of ``values`` per document.

    ``doc`` gives each value's document index (non-decreasing). Empty documents get zeros.
    """
    out = np.zeros((n_docs, 6))
    if len(values) == 0:
        return out
    n = np.bincount(doc, minlength=n_docs).astype(np.float64)
    safe_n = np.maximum(n, 1.0)
    s1 = np.bincount(doc, weights=values, minlength=n_docs)
    s2 = np.bincount(doc, weights=values * values, minlength=n_docs)
    mean = s1 / safe_n
    out[:, 0] = mean
    out[:, 1] = np.sqrt(np.maximum(s2 / safe_n - mean * mean, 0.0))
    # Each document's values sorted on their own: exact, so a text's figures do not depend on
    # the texts scored with it (an offset per document into one float sort, faster in theory,
    # rounded them by the batch's range), and small sorts are faster than one big one here.
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    has = n > 0
    sorted_vals = np.empty_like(values)
    for a, b in zip(starts[has].tolist(), (starts + n.astype(np.int64))[has].tolist()):
        sorted_vals[a:b] = np.sort(values[a:b])
    for col, q in ((2, 0.1), (3, 0.5), (4, 0.9)):
        idx = starts + np.floor(q * np.maximum(n - 1, 0)).astype(np.int64)
        out[has, col] = sorted_vals[np.minimum(idx[has], len(values) - 1)]
    step = np.abs(np.diff(values))
    same = doc[1:] == doc[:-1]
    steps = np.bincount(doc[1:][same], weights=step[same], minlength=n_docs)
    out[:, 5] = steps / np.maximum(n - 1, 1.0)
    return out


def document_starts(lengths: np.ndarray) -> np.ndarray:
    """Offsets of the non-empty documents in the concatenated token array."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]])[lengths > 0]


def surprisal_features(lm: BigramLM, tokenised: Sequence[Sequence[str]], ids: np.ndarray | None = None,
                       order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-document surprisal statistics (``SURPRISAL_STAT_NAMES``), plus the token-level
    surprisal array and document index, so that two models can be compared token by token.
    ``ids`` (all documents' token ids, concatenated) skips the vocabulary look-up; ``order``
    (``lm.key_order``) skips the sort of the bigram keys.
    """
    n_docs = len(tokenised)
    lengths = np.fromiter((len(t) for t in tokenised), dtype=np.int64, count=n_docs)
    if ids is None:
        ids = lm.ids([w for t in tokenised for w in t])
    feats, surprisal, doc, _, _ = _surprisal_features(lm, lengths, ids, order)
    return feats, surprisal, doc


def _surprisal_features(lm: BigramLM, lengths: np.ndarray, ids: np.ndarray, order: np.ndarray | None):
    n_docs = len(lengths)
    doc = np.repeat(np.arange(n_docs), lengths)
    starts = document_starts(lengths)
    surprisal, pos, seen = lm.token_lookup(ids, starts, order)
    stats = segment_stats(surprisal, doc, n_docs)
    safe_n = np.maximum(lengths, 1).astype(np.float64)
    seen_rate = np.bincount(doc, weights=seen.astype(np.float64), minlength=n_docs) / safe_n
    unk_rate = np.bincount(doc, weights=(ids == UNK).astype(np.float64), minlength=n_docs) / safe_n
    feats = np.column_stack([stats[:, :5], seen_rate, unk_rate, stats[:, 5]])
    return feats, surprisal, doc, pos, seen


EXPECTED_STAT_NAMES: tuple[str, ...] = ("gap_mean", "gap_std", "ratio", "log_rank_mean", "top1_rate", "top10_rate")


def expected_surprisal_features(lm: BigramLM, lengths: np.ndarray, ids: np.ndarray, surprisal: np.ndarray,
                                pos: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """How surprising each text is *relative to how surprising it could be expected to be*
    (the Binoculars idea, with a bigram LM): per document, the mean and spread of observed minus
    expected surprisal (the entropy of the model's next-word distribution at each token), their
    ratio, and token-rank statistics (GLTR): the mean log rank of each word among the model's
    predictions and the share of words that are its first / top-ten choice.

    ``surprisal``, ``pos`` and ``seen`` are ``lm.token_lookup``'s outputs for ``ids``.
    """
    entropy, rank, uni_rank = lm.context_tables()
    n = len(lengths)
    doc = np.repeat(np.arange(n), lengths)
    prev = np.empty_like(ids)
    if len(ids):
        prev[1:] = ids[:-1]
        prev[document_starts(lengths)] = BOS
    h = entropy[prev]
    r = np.where(seen, rank[np.minimum(pos, max(len(rank) - 1, 0))] if len(rank) else 1,
                 lm._context_types[prev].astype(np.int64) + uni_rank[ids])
    cnt = np.maximum(np.bincount(doc, minlength=n), 1).astype(np.float64)

    def mean(v: np.ndarray) -> np.ndarray:
        return np.bincount(doc, weights=v, minlength=n) / cnt

    gap = surprisal - h
    g1 = mean(gap)
    out = np.column_stack([
        g1,
        np.sqrt(np.maximum(mean(gap * gap) - g1 * g1, 0.0)),
        mean(surprisal) / np.maximum(mean(h), 1e-6),
        mean(np.log(r.astype(np.float64))),
        mean((r <= 1).astype(np.float64)),
        mean((r <= 10).astype(np.float64)),
    ])
    out[lengths == 0] = 0.0
    return out
