"""Train, calibrate and write a detector model directory (with its card), and the
``synthfilter train`` command built on it.

Recipe (format 3, chosen by the *worst* held-out-source AUROC, see models/README.md): machine
text comes in kinds that differ in opposite directions from human text (samples of base LMs
use more frequent words than people; chat models use rarer, longer ones), so one detector per
kind (``chat``, ``base``; a single ``machine`` kind when the data names no generators) learns
"this kind vs human" only. Every text is described by what does not name a topic: a stylometric
vector (no raw length), surprisal statistics under word-bigram LMs of human text and of each
kind (and their per-token gap), observed-vs-expected surprisal and token ranks under the human
LM, and a hashed TF-IDF linear head per kind. Components are cross-fitted (experts only see
out-of-fold outputs); training texts are cropped to length parity within their source so that
length cannot decide; each (source, label) cell weighs the same within its label. Expert scores
are put on one scale (0 at the human median, 1 at the human 99th percentile) and the largest
decides. The isotonic calibration and the operating thresholds are fitted on a held-out
calibration share scored by the final model itself, as it will score users' text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from synthfilter.detect.evaluate import (
    LabelledData,
    DataError,
    auroc,
    fmt_value,
    load_labelled,
    operating_point_at_threshold,
    print_error,
    summarise,
    threshold_at_fpr,
)
from synthfilter.detect.features import DEFAULT_MAX_CHARS, analysis_window, detector_text
from synthfilter.detect.linear import HashedLinear, TokenHasher
from synthfilter.detect.lm import BigramLM
from synthfilter.detect.model import (
    CALIBRATION_FILE,
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_VERSION,
    Calibrator,
    Components,
    Detector,
    Expert,
    LinearModel,
    REPLAY_FILE,
    Replay,
    TextViews,
    check_model_out,
    combine,
    expert_file,
    feature_names,
    files_sha256,
    head_file,
    lm_file,
    model_files,
    staged_model_dir,
)
from synthfilter.detect.trees import TreeEnsemble

MIN_PER_CLASS = 20  # the floor; with boosted-tree experts, ``min_per_class`` asks for more
MISSING = "(missing)"

# Generators whose output is a sample of a base (not instruction-tuned) LM. Any other named
# generator is taken for a chat / instruction model, what users meet today.
BASE_GENERATOR = re.compile(r"^(gpt-?2|opt-|gpt-neo|gpt-j|pythia|bloom-|llama-(7|13|30|33|65)b$|"
                            r"llama-2-(7|13|70)b$|mistral-7b$|falcon-(7|40)b$)", re.IGNORECASE)


def machine_kind(generator: str) -> str:
    """``base`` or ``chat`` for a generator name (``machine`` when none is named)."""
    g = generator.strip()
    if not g or g == MISSING or g.lower() in ("machine", "unknown", "ai"):
        return "machine"
    return "base" if BASE_GENERATOR.match(g) else "chat"


def row_kinds(y: np.ndarray, generators: np.ndarray | None) -> np.ndarray:
    """Each row's kind: ``human``, or its machine kind. Rows of a machine kind the data has too
    few of to learn (fewer than ``MIN_PER_CLASS``) join the most common kind."""
    kinds = np.array(["human" if lab == 0 else "machine" for lab in y], dtype=object)
    if generators is not None:
        for i in np.flatnonzero(y == 1):
            kinds[i] = machine_kind(str(generators[i]))
    machine = kinds[y == 1]
    names, counts = np.unique(machine, return_counts=True)
    if "machine" in names and len(names) > 1:  # some rows name their generator, some do not
        kinds[kinds == "machine"] = names[np.argmax(np.where(names == "machine", -1, counts))]
    names, counts = np.unique(kinds[y == 1], return_counts=True)
    for name, c in zip(names, counts):
        if c < MIN_PER_CLASS and len(names) > 1:
            kinds[kinds == name] = names[np.argmax(counts)]
    return kinds.astype(str)


@dataclass
class TrainParams:
    """Hyper-parameters, chosen by leave-one-source-out AUROC (worst source) in models/README.md."""

    folds: int = 3  # cross-fitting of the components
    calibration_share: float = 0.2  # held out of fitting; calibrates and sets the thresholds
    # Plain-vocabulary rewrites (augment.plain_rewrite, the 5,000 most frequent words) of this
    # share of the human training texts are added as human texts.
    plain_share: float = 0.3
    plain_top_n: int = 5000
    holdout_min_rows: int = 2000  # below this, calibrate on out-of-fold scores instead of a holdout
    calibration_folds: int = 3
    max_chars: int = DEFAULT_MAX_CHARS
    lm_min_count: int = 2
    length_parity: bool = True
    head: dict = field(default_factory=lambda: dict(buckets=2**20, min_df=2, c=4.0))
    # chat-like kinds: boosted trees, monotone in the kind's TF-IDF head; base kinds: a strongly
    # regularised logistic regression (trees over-fit the sources there).
    trees: dict = field(default_factory=lambda: dict(learning_rate=0.05, max_iter=200, max_leaf_nodes=15,
                                                     min_samples_leaf=40, l2_regularization=1.0))
    linear_c: float = 0.03
    expert_model: dict = field(default_factory=lambda: {"chat": "trees", "machine": "trees", "base": "linear"})


def min_per_class(params: TrainParams) -> int:
    """Texts of each class training needs: below this the boosted-tree experts, whose leaves
    hold at least ``min_samples_leaf`` texts, cannot fill a leaf with one class in every
    calibration fold, never split, and score every text alike (60 with the defaults; a useful
    model needs a few hundred of each)."""
    k = max(params.calibration_folds, 2)
    leaf = int(params.trees.get("min_samples_leaf", 1)) if "trees" in params.expert_model.values() else 1
    return max(MIN_PER_CLASS, -(-leaf * k // (k - 1)))


ProgressFn = Callable[[str], None]


def _noop(_: str) -> None:
    pass


# -- pieces -----------------------------------------------------------------------------------


def cell_weights(y: np.ndarray, cells: np.ndarray | None) -> np.ndarray:
    """Sample weights under which every cell (e.g. source) weighs the same within each label,
    and each label keeps its count: no single source can carry a label."""
    w = np.ones(len(y))
    if cells is None:
        return w
    for lab in np.unique(y):
        m = y == lab
        names = np.unique(cells[m])
        for c in names:
            mm = m & (cells == c)
            w[mm] = m.sum() / len(names) / mm.sum()
    return w


def parity_lengths(lengths: np.ndarray, y: np.ndarray, cells: np.ndarray | None, seed: int) -> np.ndarray:
    """A target length per text: the smaller of its own and a random length of the *other*
    label's texts in the same cell, so that within a source both labels have the same length
    distribution (where one label's texts are longer, length alone would tell them apart)."""
    rng = np.random.default_rng(seed)
    out = lengths.copy()
    groups = cells if cells is not None else np.zeros(len(y), dtype=int)
    for g in np.unique(groups):
        m = groups == g
        for lab in (0, 1):
            me = np.flatnonzero(m & (y == lab))
            other = lengths[m & (y != lab)]
            if len(me) and len(other):
                out[me] = np.minimum(lengths[me], rng.choice(other, size=len(me), replace=True))
    return out


def crop_text(text: str, n: int) -> str:
    """``text`` cut to about ``n`` characters at a word boundary."""
    if len(text) <= n:
        return text
    cut = text.rfind(" ", 0, n + 1)
    return text[: cut if cut > n // 2 else n]


def fit_components(views: TextViews, kinds: np.ndarray, weight: np.ndarray, params: TrainParams,
                   hasher: TokenHasher | None = None) -> Components:
    names = [k for k in dict.fromkeys(kinds.tolist()) if k != "human"]
    names.sort()
    words = BigramLM.vocabulary(views.tokens, params.lm_min_count)
    lms = {n: BigramLM.fit((t for t, k in zip(views.tokens, kinds) if k == n), words) for n in ("human", *names)}
    hasher = hasher or TokenHasher()
    hashes = hasher.of(views.token_ids)
    ends = np.cumsum(views.token_ids.lengths)
    starts = ends - views.token_ids.lengths
    heads = {}
    for k in names:
        rows = np.flatnonzero((kinds == "human") | (kinds == k))
        sel = np.concatenate([np.arange(starts[i], ends[i]) for i in rows]) if len(rows) else np.zeros(0, int)
        heads[k] = HashedLinear.fit(hashes[sel], views.token_ids.lengths[rows], (kinds[rows] == k).astype(int),
                                    weight[rows], buckets=params.head["buckets"], min_df=params.head["min_df"],
                                    c=params.head["c"])
    return Components(lms, heads, params.max_chars)


def fit_trees(x: np.ndarray, y: np.ndarray, weight: np.ndarray, params: TrainParams, seed: int,
              monotone: Sequence[int] | None = None) -> TreeEnsemble:
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(early_stopping=False, random_state=seed, monotonic_cst=monotone,
                                         **params.trees)
    clf.fit(x, y, sample_weight=weight)
    trees = TreeEnsemble.from_sklearn(clf)
    check = x[: min(len(x), 256)]
    if not np.allclose(trees.decision_function(check), clf.decision_function(check), atol=1e-6):
        raise RuntimeError("exported trees disagree with scikit-learn; refusing to write a wrong model")
    return trees


def fit_linear(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None, c: float) -> LinearModel:
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    lr = LogisticRegression(C=c, max_iter=5000, tol=1e-6).fit((x - mean) / scale, y, sample_weight=weight)
    return LinearModel(mean, scale, lr.coef_[0], float(lr.intercept_[0]))


def fit_expert(kind: str, x: np.ndarray, kinds: np.ndarray, weight: np.ndarray, names: Sequence[str],
               params: TrainParams, seed: int) -> Expert:
    """``kind`` vs human on out-of-fold features; centred and scaled on the human scores."""
    rows = np.flatnonzero((kinds == "human") | (kinds == kind))
    y = (kinds[rows] == kind).astype(int)
    w = weight[rows] * _rebalance(y, weight[rows])
    if params.expert_model.get(kind, "trees") == "linear":
        model: TreeEnsemble | LinearModel = fit_linear(x[rows], y, w, params.linear_c)
    else:
        monotone = [1 if n == f"head_{kind}" else 0 for n in names]
        model = fit_trees(x[rows], y, w, params, seed, monotone)
    scores = model.decision_function(x[rows])
    human = scores[y == 0]
    centre, top = float(np.median(human)), float(np.percentile(human, 99))
    # Where training separates the classes cleanly (few, easy texts), human scores can sit in
    # one leaf: a tenth of the gap between the classes' medians keeps the scale finite.
    gap = abs(float(np.median(scores[y == 1])) - centre)
    return Expert(kind, model, centre, max(top - centre, 0.1 * gap, 1e-3))


def _rebalance(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Factors that give both labels the same total weight."""
    tot = np.array([w[y == 0].sum(), w[y == 1].sum()])
    return np.where(y == 1, tot.sum() / 2 / max(tot[1], 1e-12), tot.sum() / 2 / max(tot[0], 1e-12))


def fit_calibrator(raw: np.ndarray, y: np.ndarray) -> Calibrator:
    """Isotonic regression of labels on held-out raw scores, kept as its breakpoints."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
    x, p = iso.X_thresholds_, iso.y_thresholds_
    # Interpolate between the centres of the isotonic steps ("centred isotonic"): the map stays
    # monotone and calibrated but no longer collapses hundreds of texts onto one value, so
    # rankings keep their resolution and no threshold has to cut through a tie.
    starts = np.r_[0, np.flatnonzero(np.diff(p) != 0) + 1]
    ends = np.r_[starts[1:], len(p)] - 1
    centres = (x[starts] + x[ends]) / 2.0
    knots_x = np.r_[x[0], centres, x[-1]]
    knots_y = np.r_[p[starts[0]], p[starts], p[starts[-1]]]
    keep = np.r_[True, np.diff(knots_x) > 0]
    return Calibrator(knots_x[keep], knots_y[keep])


def _folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def calibration_split(strata: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows): ``share`` of every stratum (e.g. source x kind) held out."""
    rng = np.random.default_rng(seed)
    cal = []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        n = int(round(len(idx) * share))
        if len(idx) >= 4 and n:
            cal.append(rng.choice(idx, size=n, replace=False))
    cal_idx = np.sort(np.concatenate(cal)) if cal else np.zeros(0, dtype=np.int64)
    fit_idx = np.setdiff1d(np.arange(len(strata)), cal_idx)
    return fit_idx, cal_idx


@dataclass
class TrainResult:
    components: Components
    experts: list[Expert]
    calibrator: Calibrator
    kinds: list[str]
    cal_idx: np.ndarray  # the training rows held out for calibration
    cal_proba: np.ndarray  # the final model's calibrated scores on them
    seconds: float
    replay: Replay | None = None  # the experts' training rows, for synthfilter adapt


def normalised(texts: Sequence[str], max_chars: int) -> list[str]:
    return [analysis_window(detector_text(t, max_chars), max_chars) for t in texts]


def _fit_models(norms: list[str], y: np.ndarray, kinds: np.ndarray, cells: np.ndarray | None,
                params: TrainParams, seed: int, progress: ProgressFn) -> tuple[Components, list[Expert], Replay]:
    """Components (cross-fitted for the experts, then refitted on all), experts on ``norms``, and
    the rows the experts were fitted on (for ``synthfilter adapt``)."""
    if params.plain_share > 0:
        norms, y, kinds, cells = _with_plain_rewrites(norms, y, kinds, cells, params, seed)
    if params.length_parity:
        lengths = np.array([len(t) for t in norms])
        target = parity_lengths(lengths, y, cells, seed)
        norms = [crop_text(t, int(n)) for t, n in zip(norms, target)]
    views = TextViews.of(norms, already_normalised=True, max_chars=params.max_chars)
    weight = cell_weights(y, cells)
    kind_names = sorted(set(kinds.tolist()) - {"human"})
    names = feature_names(kind_names)
    x = np.zeros((len(y), len(names)))
    hasher = TokenHasher()
    for k, (tr, te) in enumerate(_folds(kinds, params.folds, seed)):
        comps = fit_components(views.subset(tr), kinds[tr], weight[tr], params, hasher)
        x[te] = comps.features_from_views(views.subset(te))
        progress(f"components, fold {k + 1}/{params.folds}")
    experts = [fit_expert(kind, x, kinds, weight, names, params, seed + j) for j, kind in enumerate(kind_names)]
    progress("experts")
    components = fit_components(views, kinds, weight, params, hasher)
    progress("final components")
    return components, experts, Replay(x, kinds, weight)


def _with_plain_rewrites(norms: list[str], y: np.ndarray, kinds: np.ndarray, cells: np.ndarray | None,
                         params: TrainParams, seed: int):
    """The training texts plus plain-vocabulary rewrites of ``plain_share`` of the human ones,
    labelled human: using only frequent words does not make a text machine-written."""
    from synthfilter.detect.augment import plain_rewrite
    from synthfilter.detect.features import tokenize

    human = np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed + 7)
    pick = np.sort(rng.choice(human, size=int(round(len(human) * params.plain_share)), replace=False))
    if not len(pick):
        return norms, y, kinds, cells
    lm = BigramLM.fit((tokenize(norms[i]) for i in human), min_count=params.lm_min_count)
    plain = plain_rewrite([norms[i] for i in pick], lm, top_n=params.plain_top_n, choices=3, seed=seed)
    return ([*norms, *plain], np.concatenate([y, y[pick]]), np.concatenate([kinds, kinds[pick]]),
            np.concatenate([cells, cells[pick]]) if cells is not None else None)


def _raw(components: Components, experts: list[Expert], norms: list[str]) -> np.ndarray:
    return combine(np.column_stack([e.z(components.features(norms, already_normalised=True)) for e in experts]))


def fit_detector(texts: Sequence[str], y: np.ndarray, params: TrainParams, seed: int,
                 progress: ProgressFn = _noop, cells: np.ndarray | None = None,
                 generators: np.ndarray | None = None) -> TrainResult:
    """Fit components (cross-fitted), experts and calibration; see the module docstring.

    With at least ``params.holdout_min_rows`` texts, ``calibration_share`` of them is held out
    and scored by the final model; with fewer, every text is scored by models fitted without
    its fold (``calibration_folds``) and the final model is fitted on all of them.
    """
    import sklearn.ensemble  # noqa: F401 - load the OpenMP / BLAS runtimes before limiting them
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    quiet: ProgressFn = _noop
    # One thread: parallel sums add in varying order, which moves values in the last digits
    # between otherwise identical runs; the shipped model must rebuild bit for bit.
    with threadpool_limits(1):
        kinds = row_kinds(y, generators)
        norms = normalised(texts, params.max_chars)
        if len(y) >= params.holdout_min_rows:
            strata = np.array([f"{c}|{k}" for c, k in zip(cells if cells is not None else [""] * len(y), kinds)])
            fit_idx, cal_idx = calibration_split(strata, params.calibration_share, seed)
            components, experts, replay = _fit_models([norms[i] for i in fit_idx], y[fit_idx], kinds[fit_idx],
                                                      cells[fit_idx] if cells is not None else None, params, seed,
                                                      progress)
            raw = _raw(components, experts, [norms[i] for i in cal_idx])
        else:
            cal_idx = np.arange(len(y))
            raw = np.zeros(len(y))
            for k, (tr, te) in enumerate(_folds(kinds, params.calibration_folds, seed + 1000)):
                comps, exps, _ = _fit_models([norms[i] for i in tr], y[tr], kinds[tr],
                                             cells[tr] if cells is not None else None, params, seed + k, quiet)
                raw[te] = _raw(comps, exps, [norms[i] for i in te])
            components, experts, replay = _fit_models(norms, y, kinds, cells, params, seed, progress)
        calibrator = fit_calibrator(raw, y[cal_idx])
        progress("calibration")
    return TrainResult(components, experts, calibrator, [e.kind for e in experts], cal_idx, calibrator(raw),
                       time.perf_counter() - t0, replay)


# -- model directory --------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def margin_threshold(human_scores: np.ndarray, all_scores: np.ndarray | None, fpr: float) -> float:
    """``threshold_at_fpr``, moved to the middle of the gap it sits in: every threshold between
    the highest human score it lets through and the next score above flags the same texts here,
    and the middle leaves new texts the widest margin (it matters where the classes separate
    cleanly, e.g. every human scored 0 would otherwise put the threshold just above 0)."""
    thr = threshold_at_fpr(human_scores, fpr)
    if all_scores is None:
        return thr
    h = np.asarray(human_scores, dtype=np.float32)
    s = np.asarray(all_scores, dtype=np.float32)
    below, above = h[h < thr], s[s >= thr]
    if not len(below) or not len(above):
        return thr
    mid = np.float32((float(below.max()) + float(above.min())) / 2.0)
    return float(mid) if float(below.max()) < mid <= float(above.min()) else thr


# A cell (source) needs this many human texts in the calibration share for its own 1 % point.
MIN_CELL_HUMANS = 100


def operating_points(human_scores: np.ndarray, all_scores: np.ndarray | None = None,
                     human_cells: np.ndarray | None = None) -> dict[str, float]:
    """Thresholds at 1 % and 5 % human false positives (on the calibration scores).

    ``default`` flags at most 1 % of the human texts of *every* cell (``human_cells``: e.g. the
    source of each human score, cells with at least ``MIN_CELL_HUMANS``), so at least the pooled
    1 % point: every human text wrongly flagged is rare data lost, and a threshold that holds on
    each source it was measured on drifts less on a source it never saw (held-out human FPR 2-3 %
    where the pooled point let 9 % through, models/README.md). Without cells it is the 1 % point.
    """
    fpr1 = margin_threshold(human_scores, all_scores, 0.01)
    fpr5 = margin_threshold(human_scores, all_scores, 0.05)
    default = fpr1
    if human_cells is not None:
        for cell in np.unique(human_cells):
            own = np.asarray(human_scores)[human_cells == cell]
            if len(own) >= MIN_CELL_HUMANS:
                default = max(default, margin_threshold(own, all_scores, 0.01))
    return {"default": default, "fpr1": fpr1, "fpr5": fpr5}


# Histogram edges of the card's score_distribution: dense where calibrated scores crowd (near 0 and 1).
SCORE_EDGES = np.concatenate(([0.0], 1.0 / (1.0 + np.exp(-np.linspace(-7.0, 7.0, 29))), [1.0]))


def score_distribution(scores: np.ndarray, y: np.ndarray, measured_on: str) -> dict:
    """Held-out score histograms per class, what the reliability checks fit mixtures with."""
    y = np.asarray(y).astype(bool)
    return {"measured_on": measured_on, "edges": SCORE_EDGES.tolist(),
            "human": np.histogram(scores[~y], SCORE_EDGES)[0].tolist(),
            "machine": np.histogram(scores[y], SCORE_EDGES)[0].tolist()}


def write_model(out: Path, result: TrainResult, params: TrainParams, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    comps = result.components
    for name, lm in comps.lms.items():
        lm.save(out / lm_file(name))
    for kind, head in comps.heads.items():
        head.save(out / head_file(kind))
    for e in result.experts:
        e.model.save(out / expert_file(e.kind))
    result.calibrator.save(out / CALIBRATION_FILE)
    if result.replay is not None:
        result.replay.save(out / REPLAY_FILE)
    files = list(model_files(result.kinds, replay=result.replay is not None))
    config = {
        "format_version": FORMAT_VERSION,
        "kinds": result.kinds,
        "features": list(feature_names(result.kinds)),
        "experts": {e.kind: {"model": "linear" if isinstance(e.model, LinearModel) else "trees",
                             "centre": e.centre, "spread": e.spread} for e in result.experts},
        "combine": "max",
        "adapter": None,
        "max_chars": params.max_chars,
        "files": files,
        "params": {"folds": params.folds, "calibration_share": params.calibration_share,
                   "lm_min_count": params.lm_min_count, "length_parity": params.length_parity,
                   "plain_share": params.plain_share, "plain_top_n": params.plain_top_n,
                   "head": params.head, "trees": params.trees, "linear_c": params.linear_c,
                   "expert_model": params.expert_model},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_card(out, card)


def write_card(out: Path, card: dict) -> None:
    """The card, with the size and digest of every model file the config lists."""
    files = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))["files"]
    card = dict(card)
    card["files"] = {n: {"bytes": (out / n).stat().st_size, "sha256": _sha256_file(out / n)} for n in files}
    card["sha256"] = files_sha256(out, files)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def build_card(*, model_id: str, train: LabelledData, val: LabelledData | None, result: TrainResult,
               val_proba: np.ndarray | None, seed: int, sources: list[dict] | None = None,
               group_by: Sequence[str] = (), balance_by: str | None = None) -> dict:
    cal_y = train.y[result.cal_idx]
    cells = train.groups[balance_by][result.cal_idx] if balance_by and balance_by in train.groups else None
    thresholds = operating_points(result.cal_proba[cal_y == 0], result.cal_proba,
                                  cells[cal_y == 0] if cells is not None else None)
    measured_on = "validation" if val is not None and val_proba is not None else "calibration share"
    eval_y, eval_p = (val.y, val_proba) if measured_on == "validation" else (cal_y, result.cal_proba)
    points = [
        {"name": name, **operating_point_at_threshold(eval_y, eval_p, thr)} for name, thr in thresholds.items()
    ]
    cal_groups = {g: v[result.cal_idx] for g, v in train.groups.items() if g in group_by}
    y = train.y
    card = {
        "model_id": model_id,
        "format_version": FORMAT_VERSION,
        "created_with": "synthfilter train",
        "seed": seed,
        "train_prior": float(cal_y.mean()),
        "prior_note": "calibrated probabilities correspond to this share of machine text (the training mix, "
                      "as held out for calibration)",
        # What the prevalence estimate's method choice reads (ratio.card_calibration_held_out).
        "calibrated_on": "held_out_share" if len(cal_y) < len(y) else "out_of_fold",
        "kinds": result.kinds,
        "training_data": {"files": [os.path.abspath(p) for p in train.paths], "n": int(len(y)),
                          "n_human": int((y == 0).sum()), "n_machine": int((y == 1).sum()),
                          "n_calibration": int(len(cal_y)), "sources": sources or []},
        "operating_points_measured_on": measured_on,
        "operating_points": points,
        "thresholds_chosen_on": ("the calibration share of the training data (held out of fitting, scored by "
                                 "this model; 1 % / 5 % human FPR)" if len(cal_y) < len(y) else
                                 "out-of-fold scores of the training data (1 % / 5 % human FPR)")
                                + (f"; default: at most 1 % of the human texts of each {balance_by} value with "
                                   f"{MIN_CELL_HUMANS} or more" if cells is not None else ""),
        "score_distribution": score_distribution(eval_p, eval_y, measured_on),
        "metrics": {"calibration_share": summarise(cal_y, result.cal_proba, thresholds["default"],
                                                   groups=cal_groups, group_by=list(cal_groups))},
        "train_seconds": round(result.seconds, 1),
    }
    if balance_by:
        card["balanced_by"] = {"field": balance_by, "rule": "every (value, label) cell weighs the same within "
                                                            "its label; texts cropped to length parity within a value"}
    if measured_on == "validation":
        card["validation_data"] = {"files": [os.path.abspath(p) for p in val.paths], "n": int(len(val.y)),
                                   "n_human": int((val.y == 0).sum()), "n_machine": int((val.y == 1).sum())}
        card["metrics"]["validation"] = summarise(val.y, val_proba, thresholds["default"], groups=val.groups,
                                                  group_by=group_by)
    return card


# -- command ----------------------------------------------------------------------------------


def train_command(data: list[Path], out: Path, text_field: str = "text", label_field: str = "label",
                  human_label: str = "human", machine_label: str = "machine", val: list[Path] | None = None,
                  seed: int = 0, quiet: bool = False, model_id: str | None = None,
                  sources: list[dict] | None = None, group_by: Sequence[str] = (),
                  params: TrainParams | None = None, balance_by: str | None = None,
                  generator_field: str = "generator", overwrite: bool = False) -> int:
    """``synthfilter train``: returns an exit code; errors are one clear line on stderr.

    ``balance_by``: the field naming each text's origin (e.g. source); ``generator_field``: the
    field naming the model that wrote a machine text (optional; it decides the kinds).
    ``overwrite``: replace a model already in ``out`` (only once the new one is complete).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    con = Console(quiet=quiet)
    fields = dict(text_field=text_field, label_field=label_field, human_label=human_label,
                  machine_label=machine_label)
    out = check_model_out(out, overwrite)  # before hours of training, not after
    params = params or TrainParams()
    try:
        group_fields = tuple(dict.fromkeys([*group_by, *([balance_by] if balance_by else []), generator_field]))
        train = load_labelled(data, group_fields=group_fields, **fields)
        _check_trainable(train, params, fields)
        val_data = load_labelled(val, group_fields=group_by, **fields) if val else None
        if val_data is not None:
            _check_two_classes(val_data, "validation data (--val)")
    except DataError as e:
        print_error(str(e))
        return 2
    n_steps = params.folds + 4 + (1 if val_data else 0)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=con, disable=quiet, transient=False) as bar:
            task = bar.add_task("fitting", total=n_steps)

            def step(msg: str) -> None:
                bar.update(task, advance=1, description=msg)

            cells = train.groups[balance_by] if balance_by else None
            result = fit_detector(train.texts, train.y, params, seed, progress=step, cells=cells,
                                  generators=train.groups.get(generator_field))
            _check_separates(train, fields, train.y[result.cal_idx], result.cal_proba,
                             "the held-out calibration share" if len(result.cal_idx) < len(train.y)
                             else "the training texts scored out of fold")
            val_proba = None
            mid = model_id or f"{out.name}@1"
            with staged_model_dir(out) as staging:  # removed, not renamed into place, on an error
                # Written once without validation metrics so the evaluation runs on the saved files.
                write_model(staging, result, params, build_card(model_id=mid, train=train, val=None, result=result,
                                                                val_proba=None, seed=seed, sources=sources,
                                                                balance_by=balance_by))
                if val_data is not None:
                    val_proba = Detector.load(staging).predict_proba(val_data.texts)
                    step("validation scored")
                    _check_separates(train, fields, val_data.y, val_proba, "the --val data")
                card = build_card(model_id=mid, train=train, val=val_data, result=result, val_proba=val_proba,
                                  seed=seed, sources=sources, group_by=group_by, balance_by=balance_by)
                write_card(staging, card)
            step("model written")
    except DataError as e:
        print_error(str(e))
        return 2
    _print_summary(con, out, card)
    return 0


def _check_two_classes(data: LabelledData, what: str) -> None:
    n_h, n_m = int((data.y == 0).sum()), int((data.y == 1).sum())
    if n_h == 0 or n_m == 0:
        missing = "human" if n_h == 0 else "machine"
        raise DataError(f"{', '.join(str(p) for p in data.paths)}: {what} has a single class (no {missing} rows); "
                        "a detector needs both human and machine examples")


def _adapt_command(train: LabelledData, fields: Mapping[str, str]) -> str:
    """The ``synthfilter adapt`` command line for the same labelled files and fields, as a user
    can paste it."""
    import shlex

    defaults = {"text_field": "text", "label_field": "label", "human_label": "human", "machine_label": "machine"}
    options = [f"--{k.replace('_', '-')} {shlex.quote(v)}" for k, v in fields.items() if v != defaults.get(k)]
    return " ".join(["synthfilter adapt", *(shlex.quote(str(p)) for p in train.paths), *options, "--out DIR"])


def _check_trainable(train: LabelledData, params: TrainParams, fields: Mapping[str, str]) -> None:
    n_h, n_m = int((train.y == 0).sum()), int((train.y == 1).sum())
    where = ", ".join(str(p) for p in train.paths)
    _check_two_classes(train, "training data")
    need = min_per_class(params)
    if min(n_h, n_m) < need:
        raise DataError(f"{where}: training set too small ({n_h} human, {n_m} machine rows); "
                        f"need at least {need} of each class (a few hundred for a useful model), or adapt the "
                        f"shipped model with these labels: {_adapt_command(train, fields)}")


def _check_separates(train: LabelledData, fields: Mapping[str, str], y: np.ndarray, proba: np.ndarray,
                     where: str) -> None:
    """A DataError unless the trained model ranks machine text above human text on ``where``
    (held out of fitting): a model that scores every text alike, or no better than chance,
    would flag nothing, or at random, and its card would say so only in passing."""
    proba = np.asarray(proba, dtype=np.float64)
    score = auroc(y, proba)
    alike = bool(len(proba)) and float(proba.max() - proba.min()) < 1e-9
    if not alike and score is not None and score > 0.5:
        return
    n_h, n_m = int((train.y == 0).sum()), int((train.y == 1).sum())
    files = " ".join(str(p) for p in train.paths)
    how = "scores every text alike" if alike else f"ranks no better than chance (AUROC {fmt_value(score, '.3f')})"
    raise DataError(f"{files}: training on {n_h} human and {n_m} machine records gave a model that cannot tell them "
                    f"apart (it {how} on {where}); no model written. Label more records (a few hundred of each "
                    "class), or adapt the shipped model with these labels, which needs far fewer: "
                    f"{_adapt_command(train, fields)}")


def _print_summary(con, out: Path, card: dict) -> None:  # noqa: ANN001
    from rich.table import Table

    table = Table(title=f"{card['model_id']} -> {out}")
    table.add_column("operating point")
    table.add_column("threshold", justify="right")
    table.add_column("TPR", justify="right")
    table.add_column("FPR", justify="right")
    for p in card["operating_points"]:
        table.add_row(p["name"], f"{p['threshold']:.4f}", f"{p['tpr']:.3f}", f"{p['fpr']:.4f}")
    con.print(table)
    for name, m in card["metrics"].items():
        con.print(f"{name}: AUROC {fmt_value(m['auroc'], '.4f')}  TPR@1%FPR {fmt_value(m['tpr_at_fpr1'])}  "
                  f"TPR@5%FPR {fmt_value(m['tpr_at_fpr5'])}  ECE {fmt_value(m['ece'], '.4f')}", highlight=False)
