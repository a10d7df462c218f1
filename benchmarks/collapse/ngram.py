"""A word-level trigram language model with interpolated modified Kneser–Ney smoothing, and an
LLM-style sampler (temperature, then top-p) for the collapse benchmark. Not part of the library.

Tokens are ``\\w+`` runs and runs of one punctuation character (``...`` is one token, as in the
tokenizers of real models; a trigram over single dots could never tell how long a run already is
and loops on ``. . .`` forever). ``detokenize`` glues punctuation back so the text reads like prose,
and ``tokenize(detokenize(t)) == t`` always holds (two word tokens, or two runs of the same
character, are never glued), so text travels through synthfilter and comes back as the same tokens.

The model is all numpy: every n-gram is an int64 key (``u*V*V + v*V + w``), counts come from
``np.unique`` and look-ups from ``np.searchsorted``, so fitting and scoring are vectorised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

BOS, EOS = 0, 1
_TOKEN = re.compile(r"\w+|([^\w\s])\1*")
_GLUE_LEFT = set(".,;:!?%)]}")  # no space before these
_GLUE_RIGHT = set("([{$#")  # no space after these
_QUOTES = {'"', "“", "”", "«", "»"}


def tokenize(text: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(text)]


def detokenize(tokens: Sequence[str]) -> str:
    """Prose-like spacing. Any spacing round-trips as long as two word tokens keep their space."""
    out: list[str] = []
    open_quote = False
    glue_next = True  # no space before the first token
    for i, tok in enumerate(tokens):
        prev_word = i > 0 and tokens[i - 1][-1:].isalnum()
        next_word = i + 1 < len(tokens) and tokens[i + 1][:1].isalnum()
        glue = glue_next or tok[0] in _GLUE_LEFT
        glue_next = tok[0] in _GLUE_RIGHT
        if tok == "'" and prev_word and next_word:  # don't, it's
            glue, glue_next = True, True
        elif tok in _QUOTES:
            if open_quote:
                glue = True
            else:
                glue_next = True
            open_quote = not open_quote
        if i > 0 and tok[0] == tokens[i - 1][-1] and not tok[0].isalnum():
            glue = False  # two runs of one character would read back as one
        if not glue and out:
            out.append(" ")
        out.append(tok)
    return "".join(out)


class Vocab:
    """String <-> id; ids 0 and 1 are the document boundaries."""

    def __init__(self, words: Iterable[str] = ()):
        self.itos: list[str] = ["<s>", "</s>"]
        self.stoi: dict[str, int] = {"<s>": BOS, "</s>": EOS}
        for w in words:
            self.add(w)

    def add(self, word: str) -> int:
        i = self.stoi.get(word)
        if i is None:
            i = self.stoi[word] = len(self.itos)
            self.itos.append(word)
        return i

    def encode(self, tokens: Sequence[str], grow: bool = False) -> np.ndarray:
        if grow:
            return np.fromiter((self.add(t) for t in tokens), dtype=np.int64, count=len(tokens))
        return np.fromiter((self.stoi[t] for t in tokens), dtype=np.int64, count=len(tokens))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def __len__(self) -> int:
        return len(self.itos)


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser–Ney discounts D(0..3) from count-of-counts (Chen & Goodman 1998)."""
    n = np.bincount(np.minimum(counts, 5), minlength=6)[1:5].astype(float)
    d = np.array([0.0, 0.5, 1.0, 1.5])
    if n[0] > 0 and n[1] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        for c in (1, 2, 3):
            if n[c - 1] > 0:
                d[c] = c - (c + 1) * y * n[c] / n[c - 1]
    return np.clip(d, [0.0, 0.05, 0.1, 0.15], [0.0, 0.95, 1.95, 2.95])


class _Level:
    """One order of the model: sorted n-gram keys, discounted counts, per-context totals and
    back-off weights. ``ctx = key // V`` and a context's continuations are one contiguous slice."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int):
        self.keys = keys
        d = _discounts(counts)
        self.discounted = (counts - d[np.minimum(counts, 3)]).astype(float)
        ctx = keys // vocab_size
        self.ctx_keys, self.ctx_start = np.unique(ctx, return_index=True)
        self.ctx_end = np.append(self.ctx_start[1:], len(keys))
        self.ctx_total = np.add.reduceat(counts, self.ctx_start).astype(float)
        mass = d[np.minimum(counts, 3)]
        self.gamma = np.add.reduceat(mass, self.ctx_start) / self.ctx_total
        self._slices = None

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of ``keys`` in ``self.keys`` and whether each was found."""
        idx = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return idx, self.keys[idx] == keys

    def context(self, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.minimum(np.searchsorted(self.ctx_keys, ctx), len(self.ctx_keys) - 1)
        return idx, self.ctx_keys[idx] == ctx

    def slices(self) -> dict[int, int]:
        if self._slices is None:
            self._slices = {int(c): i for i, c in enumerate(self.ctx_keys)}
        return self._slices


class KneserNeyTrigram:
    """Interpolated modified Kneser–Ney trigram model over a fixed vocabulary of ``vocab_size`` ids.

    The top order uses raw counts, the lower orders continuation counts; the unigram level is
    interpolated with a uniform distribution over the whole vocabulary, so every word, seen or
    not, has a probability and perplexities of different models are comparable.
    """

    def __init__(self, docs: Sequence[np.ndarray], vocab_size: int):
        if not docs:
            raise ValueError("no training documents")
        self.V = V = int(vocab_size)
        seqs = [np.concatenate(([BOS, BOS], d, [EOS])) for d in docs]
        u = np.concatenate([s[:-2] for s in seqs])
        v = np.concatenate([s[1:-1] for s in seqs])
        w = np.concatenate([s[2:] for s in seqs])
        self.n_tokens = int(len(w))
        k3, c3 = np.unique((u * V + v) * V + w, return_counts=True)
        self.tri = _Level(k3, c3, V)
        k2, c2 = np.unique(k3 % (V * V), return_counts=True)  # N1+(. v w)
        self.bi = _Level(k2, c2, V)
        k1, c1 = np.unique(k2 % V, return_counts=True)  # N1+(. w)
        d1 = _discounts(c1)
        total1 = float(c1.sum())
        self.floor = float(d1[np.minimum(c1, 3)].sum() / total1) / V
        self.p1 = np.full(V, self.floor)
        self.p1[k1] += (c1 - d1[np.minimum(c1, 3)]) / total1
        self.seen = np.zeros(V, dtype=bool)
        self.seen[k1] = True

    # -- scoring ----------------------------------------------------------------------------------

    def prob(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        """P(w | u v) for aligned id arrays."""
        V = self.V
        p = self.p1[w]
        for level, ctx in ((self.bi, v), (self.tri, u * V + v)):
            ci, cfound = level.context(ctx)
            ki, kfound = level.lookup(ctx * V + w)
            top = np.where(kfound, level.discounted[ki], 0.0) / level.ctx_total[ci]
            p = np.where(cfound, top + level.gamma[ci] * p, p)
        return p

    def log2_likelihood(self, docs: Sequence[np.ndarray]) -> tuple[float, int]:
        """Total log2 probability of ``docs`` (each ends with </s>) and the number of predicted tokens."""
        seqs = [np.concatenate(([BOS, BOS], d, [EOS])) for d in docs]
        u = np.concatenate([s[:-2] for s in seqs])
        v = np.concatenate([s[1:-1] for s in seqs])
        w = np.concatenate([s[2:] for s in seqs])
        return float(np.log2(self.prob(u, v, w)).sum()), int(len(w))

    def perplexity(self, docs: Sequence[np.ndarray]) -> float:
        ll, n = self.log2_likelihood(docs)
        return float(2.0 ** (-ll / n))


class _BigramSide:
    """For one history word v: B(w) = P_bigram-level(w | v) over the candidates (v's observed
    continuations plus the ``k`` most probable unigrams), sorted descending, and ``bt`` = B ** (1/T).
    Every other word has B(w) = gamma(v) * p1(w), so its ``bt`` is at most ``bt_tail_max``."""

    __slots__ = ("k", "ids", "b", "bt", "cum_bt", "asc_ids", "asc_pos", "bt_total", "bt_tail_max")

    def __init__(self, model: KneserNeyTrigram, sampler: "Sampler", v: int, k: int):
        m, V = model, model.V
        ids2, a2, g2 = np.zeros(0, dtype=np.int64), np.zeros(0), 1.0
        i2 = m.bi.slices().get(v)
        if i2 is not None:
            s, e = m.bi.ctx_start[i2], m.bi.ctx_end[i2]
            ids2, a2 = m.bi.keys[s:e] % V, m.bi.discounted[s:e] / m.bi.ctx_total[i2]
            g2 = float(m.bi.gamma[i2])
        k = min(k, V)
        cand = np.union1d(ids2, sampler.unigram_order[:k])
        b = g2 * m.p1[cand]
        b[np.searchsorted(cand, ids2)] += a2
        order = np.argsort(-b, kind="stable")
        self.k, self.ids, self.b = k, cand[order], b[order]
        self.bt = self.b ** sampler.inv_t
        self.cum_bt = np.cumsum(self.bt)
        self.asc_ids, self.asc_pos = cand, np.argsort(order)
        outside = max(sampler.p1t_total - float(sampler.p1t[cand].sum()), 0.0)
        self.bt_total = float(self.cum_bt[-1]) + g2 ** sampler.inv_t * outside
        self.bt_tail_max = (g2 * m.p1[sampler.unigram_order[k]]) ** sampler.inv_t if k < V else 0.0


class Sampler:
    """Temperature-then-top-p (nucleus) sampling from a ``KneserNeyTrigram``, as LLM decoders do.

    Exact and fast: P(w | u v) = a3(w) + gamma(u v) * B_v(w), where a3 is non-zero only on the
    few observed continuations of (u, v) and B_v, the bigram side, depends on v alone. Words
    outside those continuations keep B_v's order, so the nucleus is a merge of a short list with
    B_v's sorted candidates (cached per v, widened x4 whenever the nucleus could reach past them).
    Nuclei are cached per context: a context's distribution never changes.
    """

    def __init__(self, model: KneserNeyTrigram, temperature: float = 0.8, top_p: float = 0.9,
                 top_k: int = 256):
        if not (0 < temperature and 0 < top_p <= 1):
            raise ValueError("temperature must be > 0 and top_p in (0, 1]")
        self.m = model
        self.inv_t = 1.0 / temperature
        self.top_p = top_p
        self.top_k = top_k
        self.unigram_order = np.argsort(-model.p1, kind="stable")
        self.p1t = model.p1 ** self.inv_t
        self.p1t_total = float(self.p1t.sum())
        self._sides: dict[int, _BigramSide] = {}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.widened = 0

    def _side(self, v: int, k: int) -> _BigramSide:
        side = self._sides.get(v)
        if side is None or side.k < k:
            side = self._sides[v] = _BigramSide(self.m, self, v, k)
        return side

    def nucleus(self, u: int, v: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the nucleus in descending probability and their cumulative distribution."""
        m, V = self.m, self.m.V
        key = u * V + v
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        i3 = m.tri.slices().get(key)
        if i3 is not None:
            s, e = m.tri.ctx_start[i3], m.tri.ctx_end[i3]
            ids3, a3 = m.tri.keys[s:e] % V, m.tri.discounted[s:e] / m.tri.ctx_total[i3]
            g3 = float(m.tri.gamma[i3])
        k = self.top_k
        while True:
            side = self._side(v, k)
            if i3 is None:  # unseen context: B_v itself
                ids, q, cum = side.ids, side.bt, side.cum_bt
                total, bound = side.bt_total, side.bt_tail_max
            else:  # observed continuations (all among v's candidates) merged into B_v's order
                pos = side.asc_pos[np.searchsorted(side.asc_ids, ids3)]
                g = g3 ** self.inv_t
                q3 = (a3 + g3 * side.b[pos]) ** self.inv_t
                stream = g * side.bt
                total = float(q3.sum()) + g * (side.bt_total - float(side.bt[pos].sum()))
                stream[pos] = 0.0
                values = np.concatenate((stream, q3))
                order = np.argsort(-values, kind="stable")  # two sorted runs: near-linear
                ids, q = np.concatenate((side.ids, ids3))[order], values[order]
                cum = np.cumsum(q)
                bound = g * side.bt_tail_max
            j = int(np.searchsorted(cum, self.top_p * total))
            if (j < len(q) and q[j] >= bound) or side.k >= V:
                break
            self.widened += 1
            k = side.k * 4
        j = min(j, int(np.count_nonzero(q)) - 1)  # merged-away duplicates sort last, at 0
        result = (ids[: j + 1], cum[: j + 1] / cum[j])
        if len(self._cache) > 300_000:
            self._cache.clear()
        self._cache[key] = result
        return result

    def sample_doc(self, rng: np.random.Generator, max_tokens: int = 400) -> np.ndarray:
        u, v = BOS, BOS
        out: list[int] = []
        for _ in range(max_tokens):
            ids, cdf = self.nucleus(u, v)
            w = int(ids[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(ids) - 1)])
            if w == EOS:
                break
            if w != BOS:
                out.append(w)
                u, v = v, w
        return np.array(out, dtype=np.int64)

    def sample_docs(self, n: int, rng: np.random.Generator, min_tokens: int = 20,
                    max_tokens: int = 400) -> list[np.ndarray]:
        """``n`` documents of at least ``min_tokens`` tokens (shorter ones are drawn again, as the
        human corpus holds no very short rows), at most ``max_tokens``."""
        docs: list[np.ndarray] = []
        tries = 0
        while len(docs) < n:
            d = self.sample_doc(rng, max_tokens)
            tries += 1
            if len(d) >= min_tokens or tries > 50 * n:
                docs.append(d)
        return docs
