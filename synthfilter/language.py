"""Language identification per record, and the language rules both engines apply.

The model is py3langid's (shipped inside its package: no download). Its naive Bayes classifier is
scored here a whole batch at a time with numpy, which gives the same label and confidence as
``py3langid``'s own ``classify`` on the same text (tested) at about a twentieth of the cost; only the
first ``sample_chars`` characters of a record are read.

Codes are ISO 639-1 where the language has one (``en``, ``zh``), ISO 639-3 otherwise (``yue``);
``zxx`` is py3langid's "no linguistic content"; ``und`` means not identified (confidence below
``min_confidence``, or no text). In the annotation files a language is a small integer code into
``CODES``.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = [
    "CODES", "UNDETERMINED", "LanguageIdentifier", "LanguageRoles", "code_of", "language_roles", "names_of",
]

UNDETERMINED = "und"

# py3langid 0.4's labels, in a fixed order, after "und" (code 0). Codes index this tuple in the
# annotation files, so new labels are only ever appended.
CODES: tuple[str, ...] = (UNDETERMINED,) + tuple((
    "af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he hi hr "
    "ht hu hy id ig is it ja jv ka kk km kn ko ku ky la lg ln lo lt lv mg mk ml mn mr ms my ne nl no om "
    "or pa pl ps pt qu ro ru sa si sk sl so sq sr sv sw ta te th tl tr ug uk ur uz vi xh yo zh zu zxx "
    "ace bcl dz ext gcf gom grc gug hbo kik nso pcm rw se sn st an ary crh fo fuv gcr guw kab lb lij ltg "
    "uzs wa sdh arz ba mt nn oc tg tk tt vec vo wuu yue"
).split())
_INDEX = {c: i for i, c in enumerate(CODES)}


def code_of(language: str) -> int:
    """The integer code of a language label (``und`` for one the table does not have)."""
    return _INDEX.get(language, 0)


def names_of(codes: np.ndarray) -> list[str]:
    """Language labels of integer codes."""
    return [CODES[int(c)] for c in codes]


class LanguageIdentifier:
    """Batch language identification with py3langid's model. Picklable; loads on first use."""

    def __init__(self, sample_chars: int = 200, min_confidence: float = 0.5):
        self.sample_chars = sample_chars
        self.min_confidence = min_confidence
        self._model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sample_chars": self.sample_chars, "min_confidence": self.min_confidence}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    @staticmethod
    def settings() -> dict[str, Any]:
        from importlib.metadata import version

        return {"library": "py3langid", "version": version("py3langid")}

    @property
    def model(self) -> "_Model":
        if self._model is None:
            self._model = _shared_model()
        return self._model

    def identify(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(code per text as uint8 into ``CODES``, confidence per text as float32)."""
        n = len(texts)
        if n == 0:
            return np.zeros(0, np.uint8), np.zeros(0, np.float32)
        probs = self.model.probabilities([_encode(t[: self.sample_chars]) for t in texts])
        best = probs.argmax(axis=1)
        conf = probs[np.arange(n), best].astype(np.float32)
        codes = self.model.codes[best]
        codes[conf < self.min_confidence] = 0
        return codes, conf


@functools.lru_cache(maxsize=1)
def _shared_model() -> "_Model":
    """The model, loaded once per process (about a second: the package ships it xz-compressed)."""
    return _Model.load()


def _encode(text: str) -> bytes:
    """The bytes py3langid classifies for a text (its ``_encode``)."""
    if text.isupper():
        text = text.lower()
    return unicodedata.normalize("NFC", text).encode("utf-8", errors="surrogatepass")


@dataclass
class _Model:
    """py3langid's byte n-gram DFA and naive Bayes tables as numpy arrays."""

    nextmove: np.ndarray  # distinct 256-entry transition rows, flattened (unsigned, as shipped)
    rowbase: np.ndarray  # state -> offset of its row in nextmove
    out_feat: np.ndarray  # state -> feature emitted on entering it, or -1
    ptc: Any  # (features, classes) float32, CSR-multiplied
    pc: np.ndarray  # (classes,) log prior
    codes: np.ndarray  # class -> our integer code
    alias_pairs: list[tuple[int, int]]  # (first, duplicate) columns of a label that appears twice

    @classmethod
    def load(cls) -> "_Model":
        from py3langid.langid import MODEL_DIR, MODEL_FILE
        from py3langid.modelio import load_model

        ptc, pc, classes, nextmove, row, output = load_model(MODEL_DIR / MODEL_FILE)
        unknown = sorted(set(classes) - set(CODES))
        if unknown:
            raise RuntimeError(f"py3langid labels not in synthfilter.language.CODES: {unknown}")
        first: dict[str, int] = {}
        aliases = []
        for i, c in enumerate(classes):
            if c in first:
                aliases.append((first[c], i))
            else:
                first[c] = i
        # The transitions (39 MB) are used where py3langid's loader put them, not copied: a copy
        # was a third of the peak memory of loading. The weights ship as float16 and are widened
        # once (a sparse product in float16 would add in float16).
        return cls(
            nextmove=np.frombuffer(nextmove, dtype=f"u{nextmove.itemsize}"),
            rowbase=np.asarray(row).astype(np.int64) << 8,
            out_feat=np.asarray(output, dtype=np.int32),
            ptc=np.asarray(ptc, dtype=np.float32), pc=np.asarray(pc, dtype=np.float32),
            codes=np.array([code_of(c) for c in classes], dtype=np.uint8), alias_pairs=aliases,
        )

    def features(self, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(document, feature) of every feature the DFA emits, walking all documents at once."""
        n = len(encoded)
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        buf = np.frombuffer(b"".join(encoded[i] for i in order.tolist()), dtype=np.uint8)
        sorted_len = lengths[order]
        starts = np.concatenate([[0], np.cumsum(sorted_len)[:-1]]).astype(np.int64)
        # Documents are sorted longest first, so the ones still walking at step p are a prefix.
        active = np.searchsorted(-sorted_len, -np.arange(int(sorted_len[0]) if n else 0), side="left")
        state = np.zeros(n, dtype=np.int64)
        docs, feats = [], []
        nextmove, rowbase, out_feat = self.nextmove, self.rowbase, self.out_feat
        for p, k in enumerate(active.tolist()):
            s = nextmove[rowbase[state[:k]] + buf[starts[:k] + p]]
            state[:k] = s
            f = out_feat[s]
            hit = np.flatnonzero(f >= 0)
            if len(hit):
                docs.append(order[hit])
                feats.append(f[hit])
        if not docs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(docs), np.concatenate(feats).astype(np.int64)

    def probabilities(self, encoded: list[bytes]) -> np.ndarray:
        """(documents, classes) probabilities, as py3langid's ``norm_probs`` computes them."""
        from scipy.sparse import csr_matrix

        n = len(encoded)
        docs, feats = self.features(encoded)
        n_feat = self.ptc.shape[0]
        # Repeated (document, feature) pairs are summed into counts by the CSR conversion.
        counts = csr_matrix((np.ones(len(docs), np.float32), (docs, feats)), shape=(n, n_feat))
        counts.sum_duplicates()
        np.log1p(counts.data, out=counts.data)
        scores = np.asarray(counts @ self.ptc, dtype=np.float32) + self.pc
        has = np.diff(counts.indptr) > 0
        scores[~has] = 0.0  # no features: uniform, so never above min_confidence
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.float32, count=n)
        scores *= (1.0 / np.sqrt(np.maximum(lengths, 1.0)))[:, None]
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self.alias_pairs:
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        return scores


# -- the rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageRoles:
    """What the language rules say of each record (row-aligned boolean arrays)."""

    scored: np.ndarray  # the detector is trusted on its language: score it
    allowed: np.ndarray  # passes the ``--languages`` filter (else rejected, reason ``language``)


def language_roles(codes: np.ndarray, detector_languages: Sequence[str], keep_languages: Sequence[str] | None) -> LanguageRoles:
    """The one place the language rules are decided, for every engine.

    ``detector_languages``: the detector scores records in these languages, and records it cannot
    identify (``und``: too short or mixed to tell); ``"*"`` trusts it on all. ``keep_languages``:
    only records in these languages are kept (``und`` only when listed); None keeps all.
    """
    codes = np.asarray(codes)
    if "*" in detector_languages:
        scored = np.ones(len(codes), dtype=bool)
    else:
        trusted = np.zeros(len(CODES), dtype=bool)
        trusted[[code_of(c) for c in detector_languages]] = True
        trusted[0] = True
        scored = trusted[codes]
    if keep_languages is None:
        allowed = np.ones(len(codes), dtype=bool)
    else:
        keep = np.zeros(len(CODES), dtype=bool)
        keep[[code_of(c) for c in keep_languages if c in _INDEX]] = True
        allowed = keep[codes]
    return LanguageRoles(scored=scored, allowed=allowed)
