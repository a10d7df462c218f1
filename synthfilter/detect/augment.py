"""Rewrites of human text for training and probing the detector: plain vocabulary, the same
sentences (``plain_rewrite``). Text that uses only frequent words is not machine text; a
detector that rewards low surprisal or low lexical variety flags plain and non-native human
writing, the writing a filter must not remove.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from synthfilter.detect.features import _TOKEN, FUNCTION_WORDS
from synthfilter.detect.lm import BigramLM


def plain_rewrite(texts: Sequence[str], lm: BigramLM, top_n: int = 3000, choices: int = 1,
                  seed: int = 0) -> list[str]:
    """Each text with its words outside the ``top_n`` most frequent (under the human LM)
    replaced by the frequent content word that best fits between its neighbours (the likeliest
    ``prev -> word -> next`` under the human LM among frequent words seen after ``prev`` or
    before ``next``): plain vocabulary, the same sentences. A stand-in for plain and non-native
    writing, which the detector must not flag much more often than other human text.

    ``choices`` > 1 picks at random among that many best-fitting words (more varied rewrites,
    for training); 1 takes the best (the fairness probe).
    """
    rng = np.random.default_rng(seed)
    v = lm.size
    prev_ids, next_ids = lm.bigram_keys // v, lm.bigram_keys % v
    uni = np.bincount(next_ids, weights=lm.bigram_counts, minlength=v)
    uni[:2] = 0  # BOS / UNK
    words = [None, None, *lm.words]  # ids 0, 1: BOS, UNK
    order = np.argsort(-uni, kind="stable")[:top_n]
    order = order[uni[order] > 0]  # never BOS / UNK, nor words the LM never saw follow anything
    frequent = set(order.tolist())
    content = np.array([i for i in order.tolist() if words[i].isalpha() and len(words[i]) > 2
                        and words[i] not in FUNCTION_WORDS], dtype=np.int64)
    is_content = np.zeros(v, dtype=bool)
    is_content[content] = True
    after: dict[int, list[int]] = defaultdict(list)
    before: dict[int, list[int]] = defaultdict(list)
    for p_, n_ in zip(prev_ids.tolist(), next_ids.tolist()):
        if is_content[n_]:
            after[p_].append(n_)
        if is_content[p_]:
            before[n_].append(p_)
    fallback = int(content[0])

    def fit(prev: int, nxt: int) -> int:
        cands = np.unique(np.array(after.get(prev, [])[:200] + before.get(nxt, [])[:200], dtype=np.int64))
        if not len(cands):
            return fallback
        ids = np.column_stack([np.full(len(cands), prev), cands, np.full(len(cands), nxt)]).ravel()
        starts = np.arange(0, len(ids), 3)
        s, _ = lm.token_surprisal(ids, starts)
        cost = s[1::3] + s[2::3]
        if choices <= 1:
            return int(cands[np.argmin(cost)])
        best = cands[np.argsort(cost, kind="stable")[:choices]]
        return int(best[rng.integers(len(best))])

    out = []
    for t in texts:
        low = t.lower()
        spans = [(m.start(), m.end()) for m in _TOKEN.finditer(low)]
        toks = [low[a:b] for a, b in spans]
        ids = lm.ids(toks).tolist()
        res = list(ids)
        for j, (tok, i) in enumerate(zip(toks, ids)):
            if i not in frequent and tok.isalpha():
                res[j] = fit(res[j - 1] if j else 1, ids[j + 1] if j + 1 < len(ids) else 1)
        parts, last = [], 0
        for (a, b), i, r in zip(spans, ids, res):  # the text as it was, with the words replaced
            parts.append(low[last:a])
            parts.append(low[a:b] if r == i else words[r])
            last = b
        parts.append(low[last:])
        out.append("".join(parts))
    return out
