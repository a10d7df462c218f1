"""The detector: load a model directory (no pickle) and score texts with a calibrated
P(machine-generated); plus the per-process cache the pipeline uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

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
from synthfilter.detect.linear import HashedLinear, TokenHasher
from synthfilter.detect.lm import (
    EXPECTED_STAT_NAMES,
    SURPRISAL_STAT_NAMES,
    BigramLM,
    _surprisal_features,
    document_starts,
    expected_surprisal_features,
    segment_stats,
)
from synthfilter.detect.trees import TreeEnsemble

FORMAT_VERSION = 3
CARD_FILE = "card.json"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.npz"
ADAPTER_FILE = "adapter.npz"
REPLAY_FILE = "replay.npz"

LLR_STAT_NAMES = ("llr_mean", "llr_std", "llr_p10", "llr_p50", "llr_p90", "llr_absdiff")
# Raw length is a property of how a data set was cut, not of who wrote the text: it is left out.
STYLE_KEEP = tuple(i for i, n in enumerate(STYLE_FEATURE_NAMES) if n != "log_words")


def lm_file(name: str) -> str:
    return f"lm_{name}.npz"


def head_file(kind: str) -> str:
    return f"head_{kind}.npz"


def expert_file(kind: str) -> str:
    return f"expert_{kind}.npz"


def model_files(kinds: Sequence[str], adapted: bool = False, replay: bool = False) -> tuple[str, ...]:
    """The array files of a model with these machine kinds (besides its card)."""
    return (CONFIG_FILE, *(lm_file(n) for n in ("human", *kinds)), *(head_file(k) for k in kinds),
            *(expert_file(k) for k in kinds), CALIBRATION_FILE, *((ADAPTER_FILE,) if adapted else ()),
            *((REPLAY_FILE,) if replay else ()))


def feature_names(kinds: Sequence[str]) -> tuple[str, ...]:
    """The columns ``Components.features`` computes for a model with these machine kinds."""
    return (
        *(STYLE_FEATURE_NAMES[i] for i in STYLE_KEEP),
        *(f"lm_{n}_{s}" for n in ("human", *kinds) for s in SURPRISAL_STAT_NAMES),
        *(f"llr_{k}_{s.removeprefix('llr_')}" for k in kinds for s in LLR_STAT_NAMES),
        *(f"expected_human_{s}" for s in EXPECTED_STAT_NAMES),
        *(f"head_{k}" for k in kinds),
    )


class ModelError(RuntimeError):
    """A model directory is missing, incomplete or was written by an incompatible version."""


def check_model_out(out: Path, overwrite: bool, protect: Sequence[Path] = ()) -> Path:
    """The model directory ``train`` / ``adapt`` will write, checked before any work is done
    (ModelError when it cannot be used). It may not exist yet, be empty, or (with ``overwrite``)
    hold a synthfilter model and nothing else; it may not be, or hold, a ``protect`` path (the
    model being adapted)."""
    out = Path(os.path.abspath(out))
    if not out.name:
        raise ModelError(f"{out}: not a usable --out; name a directory")
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a directory; choose another --out")
    for p in protect:
        p = Path(os.path.abspath(p))
        if p == out or out in p.parents:
            raise ModelError(f"{out}: --out would replace {p}, the model being adapted; choose another --out")
    if out.is_dir():
        entries = {e.name for e in out.iterdir()}
        if entries - {".gitkeep"}:
            if CONFIG_FILE not in entries or CARD_FILE not in entries:
                raise ModelError(f"{out}: directory is not empty and holds no synthfilter model "
                                 f"({', '.join(sorted(entries)[:3])}); choose another --out")
            try:
                listed = set(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")).get("files", []))
            except (OSError, ValueError, AttributeError):
                listed = set()
            others = sorted(entries - listed - {CONFIG_FILE, CARD_FILE, ".gitkeep"})
            if others:
                raise ModelError(f"{out}: holds a model and also {', '.join(others[:3])}; --overwrite replaces only "
                                 "a model directory: choose another --out")
            if not overwrite:
                raise ModelError(f"{out}: a model is already there; pass --overwrite to replace it")
    return out


@contextmanager
def staged_model_dir(out: Path) -> Iterator[Path]:
    """Write a model into a temporary sibling of ``out``, renamed into place when complete (a
    previous model there is replaced only then): a run stopped midway never leaves a model
    directory that mixes files of two trainings, nor half of one, under ``out``."""
    import shutil

    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_model_file(path: Path, load: Any) -> Any:
    """``load(path)``, with any failure of a damaged or cut file (a bad zip, a missing array, bad
    JSON) as a ModelError that names the file."""
    try:
        return load(path)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes numpy or json raise
        raise ModelError(f"{path}: damaged or unreadable model file ({type(e).__name__}: {e}); reinstall the "
                         "model or train it again") from None


@dataclass
class TextViews:
    """Everything the models read from a batch of texts, computed once."""

    norms: list[str]
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
        return cls(norms, tokens, token_ids, style_matrix(norms, tokens, token_ids))

    def subset(self, idx: Sequence[int]) -> "TextViews":
        tokens = [self.tokens[i] for i in idx]
        return TextViews([self.norms[i] for i in idx], tokens, TokenIds.of(tokens, self.token_ids.base),
                         self.style[idx])


@dataclass
class Components:
    """What every text is described by: word-bigram LMs of human text and of each machine kind
    (one shared vocabulary), and one hashed TF-IDF linear head per kind (kind vs human)."""

    lms: dict[str, BigramLM]  # "human" and each kind
    heads: dict[str, HashedLinear]  # each kind
    max_chars: int = DEFAULT_MAX_CHARS
    hasher: TokenHasher = field(default_factory=TokenHasher, repr=False)

    def __post_init__(self) -> None:
        human = self.lms["human"]
        if not all(lm.same_vocabulary(human) for lm in self.lms.values()):
            raise ModelError("the language models of a detector must share one vocabulary")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.heads)

    @property
    def vocabulary(self) -> Vocabulary:
        return self.lms["human"].token_vocabulary

    def views(self, texts: Sequence[str], already_normalised: bool = False) -> TextViews:
        return TextViews.of(texts, already_normalised, self.max_chars, self.vocabulary)

    def features(self, texts: Sequence[str], already_normalised: bool = False) -> np.ndarray:
        """The experts' input matrix (``feature_names(kinds)`` columns) for raw texts."""
        return self.features_from_views(self.views(texts, already_normalised))

    def features_from_views(self, views: TextViews) -> np.ndarray:
        tid = views.token_ids
        lengths = tid.lengths
        n = len(lengths)
        human = self.lms["human"]
        ids = human.ids_of(tid)  # the same ids (and bigram key order) for every LM
        order = human.key_order(ids, document_starts(lengths))
        cols = [views.style[:, STYLE_KEEP]]
        feats, s_h, doc, pos, seen = _surprisal_features(human, lengths, ids, order)
        cols.append(feats)
        surprisal = {}
        for k in self.kinds:
            feats_k, surprisal[k], _, _, _ = _surprisal_features(self.lms[k], lengths, ids, order)
            cols.append(feats_k)
        for k in self.kinds:  # > 0: the kind's model finds the text likelier than the human one
            cols.append(segment_stats(s_h - surprisal[k], doc, n))
        cols.append(expected_surprisal_features(human, lengths, ids, s_h, pos, seen))
        hashes = self.hasher.of(tid)
        cols.extend(self.heads[k].decision(hashes, lengths)[:, None] for k in self.kinds)
        return np.column_stack(cols).astype(np.float64)


class LinearModel:
    """``score = ((x - mean) / scale) . coef + bias`` (a standardised logistic regression)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, bias: float) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.bias = float(bias)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        # A sum per row, not a matrix product: BLAS sums a row in an order it picks by the number
        # of rows, and a text's score would then depend in its last bits on the batch.
        return (((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) * self.coef).sum(axis=1) + self.bias

    def save(self, path: Path) -> None:
        np.savez(path, kind=np.array(["linear"]), mean=self.mean, scale=self.scale, coef=self.coef,
                 bias=np.array([self.bias]))

    @classmethod
    def load(cls, path: Path) -> "LinearModel":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["scale"], z["coef"], float(z["bias"][0]))


def load_expert(path: Path) -> "TreeEnsemble | LinearModel":
    with np.load(path, allow_pickle=False) as z:
        linear = "kind" in z.files and str(z["kind"][0]) == "linear"
    return LinearModel.load(path) if linear else TreeEnsemble.load(path)


@dataclass
class Expert:
    """One machine kind's detector (kind vs human) and the centre and spread of its scores on
    human text, which put every expert on one scale: 0 at the human median, 1 at the human
    99th percentile."""

    kind: str
    model: "TreeEnsemble | LinearModel"
    centre: float
    spread: float

    def z(self, x: np.ndarray) -> np.ndarray:
        return (self.model.decision_function(x) - self.centre) / self.spread


@dataclass
class Replay:
    """What the experts were fitted on, as numbers: each training row's (out-of-fold) feature
    vector, its kind and its weight. No text. ``synthfilter adapt`` refits the experts on these
    rows plus a user's labelled records, so a few hundred labels move the experts themselves,
    not only a recalibration on top of them. Stored as float16 (the experts' split points need
    no more)."""

    x: np.ndarray
    kinds: np.ndarray  # str: "human" or a machine kind
    weight: np.ndarray

    def save(self, path: Path) -> None:
        names = sorted(set(self.kinds.tolist()))
        codes = np.searchsorted(np.array(names), self.kinds).astype(np.uint8)
        np.savez_compressed(path, x=self.x.astype(np.float16), kind_names=np.array(names), kinds=codes,
                            weight=self.weight.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> "Replay":
        with np.load(path, allow_pickle=False) as z:
            names = z["kind_names"].astype(str)
            return cls(z["x"].astype(np.float64), names[z["kinds"]], z["weight"].astype(np.float64))


class Calibrator:
    """Isotonic map from the raw score to a probability, stored as two arrays."""

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


def check_card_files(directory: Path, card: Any) -> dict[str, bytes]:
    """Each file the card lists (``files``: name -> bytes, sha256) must be the one it describes: a
    file replaced by another model's, or edited, would score with parts that were never trained
    together, and every figure on the card would describe another model. Cards without the list
    (written by hand, or before it existed) are not checked. Returns the checked files' digests
    (``files_sha256`` reuses them instead of reading the files again)."""
    files = card.get("files") if isinstance(card, dict) else None
    digests: dict[str, bytes] = {}
    if not isinstance(files, dict):
        return digests
    for name, want in sorted(files.items()):
        path = directory / name
        if not isinstance(want, dict) or "sha256" not in want or not path.is_file():
            continue
        digest = hashlib.sha256(path.read_bytes()).digest()
        if digest.hex() != want["sha256"]:
            raise ModelError(f"{path}: does not match the model card (sha256 differs: the file was changed or comes "
                             "from another model); reinstall the model or train it again")
        digests[name] = digest
    return digests


def files_sha256(directory: Path, names: Sequence[str] | None = None,
                 digests: Mapping[str, bytes] | None = None) -> str:
    """One stable digest over the named files (name and content), in a fixed order; by default
    the files the directory's config lists. ``digests``: files' sha256 already computed."""
    if names is None:
        config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        names = config.get("files") or [CONFIG_FILE]
    digests = digests or {}
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode())
        h.update(b"\0")
        h.update(digests.get(name) or hashlib.sha256((directory / name).read_bytes()).digest())
    return h.hexdigest()


def model_identity(path: str | os.PathLike[str] | None) -> dict[str, str]:
    """The id and sha256 of the model at ``path`` (None: the shipped one), as the loaded
    ``Detector`` gives them (``model_id``, ``sha256``: ``files_sha256`` of its files), read from
    its card and files without loading it. A model whose files are missing or unreadable raises
    (OSError, ValueError); ``Detector.load`` says what is wrong with it."""
    d = Path(path).resolve() if path is not None else default_model_path().resolve()
    card = json.loads((d / CARD_FILE).read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError(f"{d / CARD_FILE}: not a JSON object")
    return {"id": model_id_of(card, d), "sha256": files_sha256(d)}


def model_id_of(card: Mapping[str, Any], path: Path) -> str:
    """A model's id: its card's ``model_id``, else ``<directory name>@unversioned``."""
    return str(card.get("model_id", f"{path.name}@unversioned"))


def combine(z: np.ndarray) -> np.ndarray:
    """The raw score from the experts' standardised scores (one column per kind): the largest.

    Each expert only has to tell its kind from human text; a text is as suspicious as the
    expert that finds it most so, and on the common scale no kind dominates by its units.
    """
    return z.max(axis=1)


def adapter_method(config: dict) -> str | None:
    """How a model was adapted: ``linear`` (an adapter over its features and experts, in
    ``adapter.npz``), ``refit`` (experts refitted on the replay rows plus the labels), or None."""
    adapter = config.get("adapter")
    if adapter is None:
        return None
    return str(adapter.get("method", "linear"))


def adapter_inputs(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """What an adapter (``synthfilter adapt``) reads: the features, each expert's standardised
    score and the shipped combination of them."""
    return np.column_stack([x, z, combine(z)])


# The JSON types of the top-level fields a loaded model's config and card are read with (a
# field may be absent; null is allowed where the writer writes it). (type, element type) for lists.
CONFIG_SHAPE: dict[str, Any] = {"kinds": (list, str), "features": (list, str), "files": (list, str),
                                "experts": dict, "adapter": (dict, type(None)), "params": dict,
                                "max_chars": int}
CARD_SHAPE: dict[str, Any] = {"model_id": str, "operating_points": (list, dict), "train_prior": (float, int, type(None)),
                              "score_distribution": dict, "source_shift": dict, "metrics": dict, "files": dict,
                              "training_data": dict, "adapted_from": dict, "adaptation": dict, "base_model": dict}


def _check_shape(path: Path, doc: Any, shape: Mapping[str, Any]) -> None:
    """A ModelError (a damaged file) unless ``doc`` is a JSON object whose fields in ``shape``
    have the types the loader and the pipeline read them as."""
    def wrong(what: str) -> ModelError:
        return ModelError(f"{path}: damaged or unreadable model file ({what}); reinstall the model or train it again")

    def name(t: type) -> str:
        return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
                bool: "a boolean", type(None): "null"}.get(t, t.__name__)

    if not isinstance(doc, dict):
        raise wrong(f"{name(type(doc))}, expected a JSON object")
    for key, want in shape.items():
        if key not in doc:
            continue
        value = doc[key]
        if isinstance(want, tuple) and want[0] is list:
            if not isinstance(value, list) or not all(isinstance(v, want[1]) for v in value):
                raise wrong(f"{key!r} is not a list of {name(want[1]).removeprefix('a ').removeprefix('an ')}s")
            continue
        types = want if isinstance(want, tuple) else (want,)
        if isinstance(value, bool) or not isinstance(value, types):
            raise wrong(f"{key!r} is {name(type(value))}, expected {' or '.join(dict.fromkeys(map(name, types)))}")


class Detector:
    """A loaded detector: ``predict_proba(texts)`` gives calibrated P(machine-generated)."""

    def __init__(self, path: Path, components: Components, experts: list[Expert], calibrator: Calibrator,
                 config: dict, card: dict, adapter: LinearModel | None = None, batch_size: int = 1024) -> None:
        self.path = path
        self.components = components
        self.experts = experts
        self.calibrator = calibrator
        self.adapter = adapter
        self.config = config
        self.card = card
        self.batch_size = batch_size
        self._sha256: str | None = None
        self._digests: dict[str, bytes] = {}  # files' sha256 from the card check at load

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Detector":
        """Load a model directory written by ``synthfilter train``; nothing is unpickled."""
        d = Path(path)
        if not d.is_dir():
            raise ModelError(f"{d}: model directory does not exist")
        if not (d / CONFIG_FILE).is_file() or not (d / CARD_FILE).is_file():
            raise ModelError(f"{d}: not a synthfilter detector model (missing "
                             f"{', '.join(n for n in (CONFIG_FILE, CARD_FILE) if not (d / n).is_file())})")
        config = read_model_file(d / CONFIG_FILE, lambda p: json.loads(p.read_text(encoding="utf-8")))
        _check_shape(d / CONFIG_FILE, config, CONFIG_SHAPE)
        if config.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{d}: model format {config.get('format_version')!r} is not supported (expected {FORMAT_VERSION}); "
                "retrain it with this version of synthfilter"
            )
        kinds = list(config.get("kinds", []))
        adapted = adapter_method(config) == "linear"
        missing = [n for n in model_files(kinds, adapted, REPLAY_FILE in config.get("files", ())) if not (d / n).is_file()]
        if not kinds or missing:
            raise ModelError(f"{d}: not a synthfilter detector model (missing {', '.join(missing) or 'kinds'})")
        if list(config.get("features", [])) != list(feature_names(kinds)):
            raise ModelError(f"{d}: model was trained with a different feature set; retrain it")
        card = read_model_file(d / CARD_FILE, lambda p: json.loads(p.read_text(encoding="utf-8")))
        _check_shape(d / CARD_FILE, card, CARD_SHAPE)
        components = Components(
            lms={n: read_model_file(d / lm_file(n), BigramLM.load) for n in ("human", *kinds)},
            heads={k: read_model_file(d / head_file(k), HashedLinear.load) for k in kinds},
            max_chars=int(config.get("max_chars", DEFAULT_MAX_CHARS)),
        )
        try:
            spread = {k: (float(config["experts"][k]["centre"]), float(config["experts"][k]["spread"])) for k in kinds}
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{d / CONFIG_FILE}: damaged: no expert centre / spread ({e!r})") from None
        experts = [Expert(k, read_model_file(d / expert_file(k), load_expert), *spread[k]) for k in kinds]
        adapter = read_model_file(d / ADAPTER_FILE, LinearModel.load) if adapted else None
        calibrator = read_model_file(d / CALIBRATION_FILE, Calibrator.load)
        det = cls(d, components, experts, calibrator, config, card, adapter)
        det._digests = check_card_files(d, card)
        return det

    @property
    def model_id(self) -> str:
        return model_id_of(self.card, self.path)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = files_sha256(self.path, digests=self._digests)
        return self._sha256

    def expert_z(self, x: np.ndarray) -> np.ndarray:
        """Each expert's standardised score (one column per kind) for a feature matrix."""
        return np.column_stack([e.z(x) for e in self.experts])

    def raw_from_features(self, x: np.ndarray) -> np.ndarray:
        z = self.expert_z(x)
        if self.adapter is not None:
            return self.adapter.decision_function(adapter_inputs(x, z))
        return combine(z)

    def raw_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated scores (what the calibrator maps)."""
        out = np.empty(len(texts), dtype=np.float64)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            out[start : start + len(batch)] = self.raw_from_features(self.components.features(batch))
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


_CACHE: dict[tuple[int, str, tuple], Detector] = {}
_CACHE_LOCK = threading.Lock()


def model_files_stamp(directory: Path) -> tuple:
    """Name, size and modification time of each file in a model directory: what changes when a
    model is replaced in place (``adapt --overwrite``), read without reading the files."""
    try:
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in directory.iterdir() if p.is_file()
                            for st in (p.stat(),)))
    except OSError:
        return ()


def get_detector(path: str | os.PathLike[str] | None = None) -> Detector:
    """The detector at ``path`` (None: the shipped default), loaded once per process, and again
    when its files were replaced since (a long-lived process would score with the old model)."""
    resolved = str(Path(path).resolve() if path is not None else default_model_path().resolve())
    key = (os.getpid(), resolved, model_files_stamp(Path(resolved)))
    det = _CACHE.get(key)
    if det is None:
        with _CACHE_LOCK:
            det = _CACHE.get(key)
            if det is None:
                det = Detector.load(resolved)
                _CACHE[key] = det
    return det
