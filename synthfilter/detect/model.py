"""The detector: load a model directory (no pickle) and score texts with a calibrated
P(machine-generated); plus the per-process cache the pipeline uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from synthfilter.detect.features import (
    STYLE_FEATURE_NAMES,
    DEFAULT_MAX_CHARS,
    TokenIds,
    Vocabulary,
    analysis_window,
    detector_text,
    style_matrix,
    tokenize,
)
from synthfilter.detect.lm import (
    SURPRISAL_STAT_NAMES,
    BigramLM,
    document_starts,
    segment_stats,
    surprisal_features,
)
from synthfilter.detect.trees import TreeEnsemble

FORMAT_VERSION = 2
CARD_FILE = "card.json"
CONFIG_FILE = "config.json"
FT_WORD_FILE = "ft_word.bin"
LM_HUMAN_FILE = "lm_human.npz"
LM_MACHINE_FILE = "lm_machine.npz"
STACKER_FILE = "stacker.npz"
CALIBRATION_FILE = "calibration.npz"
MODEL_FILES = (CONFIG_FILE, FT_WORD_FILE, LM_HUMAN_FILE, LM_MACHINE_FILE, STACKER_FILE, CALIBRATION_FILE)

LLR_STAT_NAMES = ("llr_mean", "llr_std", "llr_p10", "llr_p50", "llr_p90", "llr_absdiff")
STACK_FEATURE_NAMES: tuple[str, ...] = (
    *STYLE_FEATURE_NAMES,
    *(f"lm_human_{s}" for s in SURPRISAL_STAT_NAMES),
    *(f"lm_machine_{s}" for s in SURPRISAL_STAT_NAMES),
    *LLR_STAT_NAMES,
    "ft_word_logit",
)


class ModelError(RuntimeError):
    """A model directory is missing, incomplete or was written by an incompatible version."""


def load_fasttext(path: Path):  # noqa: ANN202 - fasttext has no public type
    import fasttext

    # fastText's loader warns on stderr about a deprecated API; the model format is its own.
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(str(path))


def fasttext_logit(model, lines: Sequence[str]) -> np.ndarray:  # noqa: ANN001
    """log-odds of ``__label__machine`` for each line under a two-label fastText classifier."""
    lines = [ln if ln else "." for ln in lines]  # fastText returns no label for an empty line
    labels, probs = model.predict(list(lines), k=2)
    out = np.empty(len(lines), dtype=np.float64)
    for i, (lab, pr) in enumerate(zip(labels, probs)):
        p = 0.5
        for name, value in zip(lab, pr):
            if name == "__label__machine":
                p = float(value)
                break
            if name == "__label__human":
                p = 1.0 - float(value)
                break
        p = min(max(p, 1e-5), 1.0 - 1e-5)
        out[i] = np.log(p / (1.0 - p))
    return out


@dataclass
class TextViews:
    """Everything the models read from a batch of texts, computed once."""

    norms: list[str]
    ft_lines: list[str]
    tokens: list[list[str]]
    token_ids: TokenIds
    style: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[str], already_normalised: bool = False,
           max_chars: int = DEFAULT_MAX_CHARS, vocabulary: Vocabulary | None = None) -> "TextViews":
        """``vocabulary``: number tokens against this shared map (the LMs'), saving a look-up."""
        norms = list(texts) if already_normalised else [analysis_window(detector_text(t, max_chars), max_chars)
                                                             for t in texts]
        tokens = [tokenize(t) for t in norms]
        token_ids = TokenIds.of(tokens, vocabulary)
        return cls(norms, [" ".join(t) for t in tokens], tokens, token_ids,
                   style_matrix(norms, tokens, token_ids))

    def subset(self, idx: Sequence[int]) -> "TextViews":
        tokens = [self.tokens[i] for i in idx]
        return TextViews([self.norms[i] for i in idx], [self.ft_lines[i] for i in idx], tokens,
                         TokenIds.of(tokens, self.token_ids.base), self.style[idx])


@dataclass
class Components:
    """The base models whose outputs, with the style vector, feed the stacker."""

    ft_word: object
    lm_human: BigramLM
    lm_machine: BigramLM
    max_chars: int = DEFAULT_MAX_CHARS
    shared_vocabulary: bool = field(init=False)  # the LMs were trained together (same ids)

    def __post_init__(self) -> None:
        self.shared_vocabulary = self.lm_machine.same_vocabulary(self.lm_human)

    def features(self, texts: Sequence[str], already_normalised: bool = False) -> np.ndarray:
        """The stacker's input matrix (``STACK_FEATURE_NAMES`` columns) for raw texts."""
        return self.features_from_views(TextViews.of(texts, already_normalised, self.max_chars,
                                                     self.lm_human.token_vocabulary))

    def features_from_views(self, views: "TextViews") -> np.ndarray:
        tokens, tid = views.tokens, views.token_ids
        # Both models share the vocabulary (and so the ids and the sort order of the bigram
        # keys) when trained together.
        ids = self.lm_human.ids_of(tid)
        order = self.lm_human.key_order(ids, document_starts(tid.lengths))
        if self.shared_vocabulary:
            ids_m, order_m = ids, order
        else:
            ids_m, order_m = self.lm_machine.ids_of(tid), None
        lm_h, s_h, doc = surprisal_features(self.lm_human, tokens, ids, order)
        lm_m, s_m, _ = surprisal_features(self.lm_machine, tokens, ids_m, order_m)
        llr = segment_stats(s_h - s_m, doc, len(tokens))  # > 0: the machine model finds it likelier
        ft_w = fasttext_logit(self.ft_word, views.ft_lines)
        return np.column_stack([views.style, lm_h, lm_m, llr, ft_w]).astype(np.float64)


class Calibrator:
    """Isotonic map from the stacker's log-odds to a probability, stored as two arrays."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)

    def save(self, path: Path) -> None:
        np.savez(path, x=self.x, y=self.y)

    @classmethod
    def load(cls, path: Path) -> "Calibrator":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["x"], z["y"])


def files_sha256(directory: Path, names: Sequence[str] = MODEL_FILES) -> str:
    """One stable digest over the named files (name and content), in a fixed order."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode())
        h.update(b"\0")
        h.update(hashlib.sha256((directory / name).read_bytes()).digest())
    return h.hexdigest()


class Detector:
    """A loaded detector: ``predict_proba(texts)`` gives calibrated P(machine-generated)."""

    def __init__(self, path: Path, components: Components, stacker: TreeEnsemble, calibrator: Calibrator,
                 config: dict, card: dict, batch_size: int = 1024) -> None:
        self.path = path
        self.components = components
        self.stacker = stacker
        self.calibrator = calibrator
        self.config = config
        self.card = card
        self.batch_size = batch_size
        self._sha256: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Detector":
        """Load a model directory written by ``synthfilter train``; nothing is unpickled."""
        d = Path(path)
        if not d.is_dir():
            raise ModelError(f"{d}: model directory does not exist")
        missing = [n for n in (*MODEL_FILES, CARD_FILE) if not (d / n).is_file()]
        if missing:
            raise ModelError(f"{d}: not a synthfilter detector model (missing {', '.join(missing)})")
        config = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{d}: model format {config.get('format_version')!r} is not supported (expected {FORMAT_VERSION}); "
                "retrain it with this version of synthfilter"
            )
        if list(config.get("features", [])) != list(STACK_FEATURE_NAMES):
            raise ModelError(f"{d}: model was trained with a different feature set; retrain it")
        card = json.loads((d / CARD_FILE).read_text(encoding="utf-8"))
        components = Components(
            ft_word=load_fasttext(d / FT_WORD_FILE),
            lm_human=BigramLM.load(d / LM_HUMAN_FILE),
            lm_machine=BigramLM.load(d / LM_MACHINE_FILE),
            max_chars=int(config.get("max_chars", DEFAULT_MAX_CHARS)),
        )
        return cls(d, components, TreeEnsemble.load(d / STACKER_FILE), Calibrator.load(d / CALIBRATION_FILE),
                   config, card)

    @property
    def model_id(self) -> str:
        return str(self.card.get("model_id", f"{self.path.name}@unversioned"))

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = files_sha256(self.path)
        return self._sha256

    def raw_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated stacker log-odds (what the calibrator maps)."""
        out = np.empty(len(texts), dtype=np.float64)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out[start : start + len(batch)] = self.stacker.decision_function(self.components.features(batch))
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated P(machine-generated) for each text, float32 of shape ``(len(texts),)``."""
        if isinstance(texts, str):
            raise TypeError("predict_proba takes a sequence of texts, not a single string")
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return self.calibrator(self.raw_scores(texts)).astype(np.float32)


def default_model_path() -> Path:
    """The shipped model: inside the installed wheel, else ``<repo>/models/default``."""
    try:
        packaged = Path(str(resources.files("synthfilter") / "_models" / "default"))
        if (packaged / CONFIG_FILE).is_file():
            return packaged
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parents[2] / "models" / "default"


_CACHE: dict[tuple[int, str], Detector] = {}
_CACHE_LOCK = threading.Lock()


def get_detector(path: str | os.PathLike[str] | None = None) -> Detector:
    """The detector at ``path`` (None: the shipped default), loaded once per process."""
    resolved = str(Path(path).resolve() if path is not None else default_model_path().resolve())
    key = (os.getpid(), resolved)
    det = _CACHE.get(key)
    if det is None:
        with _CACHE_LOCK:
            det = _CACHE.get(key)
            if det is None:
                det = Detector.load(resolved)
                _CACHE[key] = det
    return det
