"""Train, calibrate and write a detector model directory (with its card), and the
``synthfilter train`` command built on it.

Recipe: a fastText classifier on words, word-bigram LMs of human and machine text, and a
stylometric vector feed a boosted-tree stacker. Base models are cross-fitted (the stacker only
sees out-of-fold outputs); an isotonic map fitted on out-of-fold stacker scores makes the output
a calibrated probability. With ``balance_by`` (e.g. the domain of each text), human texts of
groups that the stacker flags more often than the rest get more weight (see ``group_weights``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from synthfilter.detect.evaluate import (
    LabelledData,
    DataError,
    load_labelled,
    operating_point_at_threshold,
    summarise,
    threshold_at_fpr,
)
from synthfilter.detect.features import DEFAULT_MAX_CHARS
from synthfilter.detect.lm import BigramLM
from synthfilter.detect.model import (
    CALIBRATION_FILE,
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_VERSION,
    FT_WORD_FILE,
    LM_HUMAN_FILE,
    LM_MACHINE_FILE,
    MODEL_FILES,
    STACK_FEATURE_NAMES,
    STACKER_FILE,
    Calibrator,
    Components,
    Detector,
    TextViews,
    files_sha256,
    load_fasttext,
)
from synthfilter.detect.trees import TreeEnsemble

MIN_PER_CLASS = 20


@dataclass
class TrainParams:
    """Hyper-parameters, chosen by cross-validation on the training split (see models/README.md)."""

    folds: int = 5
    max_chars: int = DEFAULT_MAX_CHARS
    ft_word: dict = field(default_factory=lambda: dict(epoch=10, wordNgrams=2, dim=32, lr=0.2, minCount=2,
                                                       bucket=100_000, minn=0, maxn=0))
    # 0 keeps fastText's dense matrices: 19 MB instead of 3, but it predicts 2.8x faster than a
    # quantised model (the largest single cost of scoring otherwise).
    ft_quantize_cutoff: int = 0
    lm_min_count: int = 2
    stacker: dict = field(default_factory=lambda: dict(learning_rate=0.05, max_iter=500, max_leaf_nodes=31,
                                                       min_samples_leaf=40, l2_regularization=1.0))
    # Group balancing (``balance_by``): rounds of re-weighting, the human false-positive rate the
    # groups are compared at, the pseudo-count that shrinks a small group's rate towards the
    # overall one, and the largest rate ratio one round acts on (weights grow by its square root).
    balance_rounds: int = 2
    balance_fpr: float = 0.02
    balance_shrink: float = 10.0
    balance_cap: float = 4.0


ProgressFn = Callable[[str], None]


def _noop(_: str) -> None:
    pass


# -- base models ------------------------------------------------------------------------------


def train_fasttext(lines: Sequence[str], y: np.ndarray, params: dict, seed: int, cutoff: int):
    """A quantised two-label fastText classifier; human lines are repeated to balance the classes."""
    rng = np.random.default_rng(seed)
    idx = np.arange(len(lines))
    humans, machines = idx[y == 0], idx[y == 1]
    minority, majority = (humans, machines) if len(humans) < len(machines) else (machines, humans)
    extra = rng.choice(minority, size=len(majority) - len(minority), replace=True) if len(minority) else []
    order = np.concatenate([idx, np.asarray(extra, dtype=np.int64)])
    rng.shuffle(order)
    with tempfile.TemporaryDirectory(prefix="synthfilter-ft-") as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            for i in order:
                label = "machine" if y[i] else "human"
                f.write(f"__label__{label} {lines[i] or '.'}\n")
        spec = {"input": path, "output": os.path.join(tmp, "model.bin"), "params": params, "seed": int(seed),
                "cutoff": int(cutoff)}
        proc = subprocess.run([sys.executable, "-m", "synthfilter.detect._fasttext_worker", json.dumps(spec)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "fastText failed")
        model = load_fasttext(Path(spec["output"]))
    return model


def fit_components(views: TextViews, y: np.ndarray, params: TrainParams, seed: int) -> Components:
    words = BigramLM.vocabulary(views.tokens, params.lm_min_count)
    return Components(
        ft_word=train_fasttext(views.ft_lines, y, params.ft_word, seed, params.ft_quantize_cutoff),
        lm_human=BigramLM.fit((t for t, lab in zip(views.tokens, y) if lab == 0), words),
        lm_machine=BigramLM.fit((t for t, lab in zip(views.tokens, y) if lab == 1), words),
        max_chars=params.max_chars,
    )


def fit_stacker(x: np.ndarray, y: np.ndarray, params: TrainParams, seed: int,
                weight: np.ndarray | None = None) -> TreeEnsemble:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    clf = HistGradientBoostingClassifier(early_stopping=False, random_state=seed, **params.stacker)
    # One OpenMP thread: parallel gradient sums add in varying order, which moved leaf values in
    # the 14th digit between otherwise identical runs; the shipped model must rebuild bit for bit.
    with threadpool_limits(1, user_api="openmp"):
        clf.fit(x, y, sample_weight=weight)
    trees = TreeEnsemble.from_sklearn(clf)
    check = x[: min(len(x), 256)]
    if not np.allclose(trees.decision_function(check), clf.decision_function(check), atol=1e-6):
        raise RuntimeError("exported trees disagree with scikit-learn; refusing to write a wrong model")
    return trees


def fit_calibrator(raw: np.ndarray, y: np.ndarray) -> Calibrator:
    """Isotonic regression of labels on out-of-fold log-odds, kept as its breakpoints."""
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


def group_weights(x: np.ndarray, y: np.ndarray, groups: np.ndarray, params: TrainParams, seed: int) -> np.ndarray:
    """Sample weights that even out the human false-positive rate across groups (e.g. domains).

    Each round scores every text out of fold (3 folds) with a stacker fitted under the current
    weights, measures each group's human false-positive rate at the ``balance_fpr`` point
    (shrunk towards the overall rate by ``balance_shrink`` pseudo-texts, so a group of a few
    texts cannot swing it), and multiplies the weight of that group's human texts by
    ``sqrt(rate / overall)``, with the ratio clipped to ``[1, balance_cap]``. Machine texts keep
    weight 1; human weights are rescaled to keep their total. The goal is that no kind of human
    writing is flagged much more often than human writing overall: every human text wrongly
    flagged is rare data lost.
    """
    w = np.ones(len(y))
    human = y == 0
    names = np.unique(groups[human])
    for r in range(params.balance_rounds):
        scores = np.zeros(len(y))
        for k, (tr, te) in enumerate(_folds(y, 3, seed + 2000 + r)):
            scores[te] = fit_stacker(x[tr], y[tr], params, seed + k, w[tr]).decision_function(x[te])
        thr = np.quantile(scores[human], 1.0 - params.balance_fpr)
        overall = float((scores[human] > thr).mean())
        if overall <= 0.0:
            break
        for g in names:
            m = human & (groups == g)
            rate = (float((scores[m] > thr).sum()) + overall * params.balance_shrink) / (m.sum() + params.balance_shrink)
            w[m] *= float(np.clip(rate / overall, 1.0, params.balance_cap)) ** 0.5
        w[human] *= human.sum() / w[human].sum()
    return w


def _folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


@dataclass
class TrainResult:
    components: Components
    stacker: TreeEnsemble
    calibrator: Calibrator
    oof_proba: np.ndarray  # calibrated, out-of-fold: honest scores for every training text
    seconds: float
    weights: np.ndarray | None = None  # the stacker's sample weights (``balance_by``), else None


def fit_detector(views: TextViews, y: np.ndarray, params: TrainParams, seed: int,
                 progress: ProgressFn = _noop, groups: np.ndarray | None = None) -> TrainResult:
    """Cross-fit base models, fit the stacker and its calibration, then refit on everything."""
    t0 = time.perf_counter()
    folds = _folds(y, params.folds, seed)
    stack_x = np.zeros((len(y), len(STACK_FEATURE_NAMES)))
    for k, (tr, te) in enumerate(folds):
        comps = fit_components(views.subset(tr), y[tr], params, seed + k)
        stack_x[te] = comps.features_from_views(views.subset(te))
        progress(f"base models, fold {k + 1}/{len(folds)}")
    weight = group_weights(stack_x, y, groups, params, seed) if groups is not None else None
    # Out-of-fold stacker scores (second, independent split) give the calibration data; the
    # calibration itself is unweighted, so probabilities stay true to the training mix.
    raw_oof = np.zeros(len(y))
    for k, (tr, te) in enumerate(_folds(y, params.folds, seed + 1000)):
        w = weight[tr] if weight is not None else None
        raw_oof[te] = fit_stacker(stack_x[tr], y[tr], params, seed + k, w).decision_function(stack_x[te])
    calibrator = fit_calibrator(raw_oof, y)
    progress("stacker and calibration")
    stacker = fit_stacker(stack_x, y, params, seed, weight)
    components = fit_components(views, y, params, seed)
    progress("final base models")
    return TrainResult(components, stacker, calibrator, calibrator(raw_oof), time.perf_counter() - t0, weight)


# -- model directory --------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def operating_points(human_scores: np.ndarray) -> dict[str, float]:
    """Thresholds chosen on out-of-fold training scores: 1 % and 5 % human false positives.

    ``default`` is the 1 % point: every human text wrongly flagged is rare data lost.
    """
    fpr1 = threshold_at_fpr(human_scores, 0.01)
    fpr5 = threshold_at_fpr(human_scores, 0.05)
    return {"default": fpr1, "fpr1": fpr1, "fpr5": fpr5}


def write_model(out: Path, result: TrainResult, params: TrainParams, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.components.ft_word.save_model(str(out / FT_WORD_FILE))
    result.components.lm_human.save(out / LM_HUMAN_FILE)
    result.components.lm_machine.save(out / LM_MACHINE_FILE)
    result.stacker.save(out / STACKER_FILE)
    result.calibrator.save(out / CALIBRATION_FILE)
    config = {
        "format_version": FORMAT_VERSION,
        "features": list(STACK_FEATURE_NAMES),
        "max_chars": params.max_chars,
        "params": {"ft_word": params.ft_word, "stacker": params.stacker,
                   "folds": params.folds, "lm_min_count": params.lm_min_count,
                   "ft_quantize_cutoff": params.ft_quantize_cutoff},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    card = dict(card)
    card["files"] = {n: {"bytes": (out / n).stat().st_size, "sha256": _sha256_file(out / n)} for n in MODEL_FILES}
    card["sha256"] = files_sha256(out)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def build_card(*, model_id: str, train: LabelledData, val: LabelledData | None, result: TrainResult,
               val_proba: np.ndarray | None, seed: int, sources: list[dict] | None = None,
               group_by: Sequence[str] = (), balance_by: str | None = None) -> dict:
    y = train.y
    thresholds = operating_points(result.oof_proba[y == 0])
    measured_on = "validation" if val is not None and val_proba is not None else "cross-validation"
    eval_y, eval_p = (val.y, val_proba) if measured_on == "validation" else (y, result.oof_proba)
    points = [
        {"name": name, **operating_point_at_threshold(eval_y, eval_p, thr)} for name, thr in thresholds.items()
    ]
    card = {
        "model_id": model_id,
        "format_version": FORMAT_VERSION,
        "created_with": "synthfilter train",
        "seed": seed,
        "train_prior": float(y.mean()),
        "prior_note": "calibrated probabilities correspond to this share of machine text (the training mix); "
                      "classes were balanced only inside the fastText base models",
        "training_data": {"files": [str(p) for p in train.paths], "n": int(len(y)),
                          "n_human": int((y == 0).sum()), "n_machine": int((y == 1).sum()),
                          "sources": sources or []},
        "operating_points_measured_on": measured_on,
        "operating_points": points,
        "thresholds_chosen_on": "out-of-fold scores of the training data (1 % / 5 % human FPR)",
        "metrics": {"cross_validation": summarise(y, result.oof_proba, thresholds["default"], groups=train.groups,
                                                  group_by=[g for g in group_by if g in train.groups])},
        "train_seconds": round(result.seconds, 1),
    }
    if balance_by and result.weights is not None:
        groups = train.groups[balance_by]
        human = y == 0
        card["balanced_by"] = {
            "field": balance_by,
            "human_weight": {str(g): round(float(result.weights[human & (groups == g)].mean()), 4)
                             for g in sorted(set(groups[human].tolist()))},
        }
    if measured_on == "validation":
        card["validation_data"] = {"files": [str(p) for p in val.paths], "n": int(len(val.y)),
                                   "n_human": int((val.y == 0).sum()), "n_machine": int((val.y == 1).sum())}
        card["metrics"]["validation"] = summarise(val.y, val_proba, thresholds["default"], groups=val.groups,
                                                  group_by=group_by)
    return card


# -- command ----------------------------------------------------------------------------------


def train_command(data: list[Path], out: Path, text_field: str = "text", label_field: str = "label",
                  human_label: str = "human", machine_label: str = "machine", val: list[Path] | None = None,
                  seed: int = 0, quiet: bool = False, model_id: str | None = None,
                  sources: list[dict] | None = None, group_by: Sequence[str] = (),
                  params: TrainParams | None = None, balance_by: str | None = None) -> int:
    """``synthfilter train``: returns an exit code; errors are one clear line on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    con = Console(quiet=quiet)
    fields = dict(text_field=text_field, label_field=label_field, human_label=human_label,
                  machine_label=machine_label)
    try:
        group_fields = tuple(dict.fromkeys([*group_by, *([balance_by] if balance_by else [])]))
        train = load_labelled(data, group_fields=group_fields, **fields)
        _check_trainable(train)
        val_data = load_labelled(val, group_fields=group_by, **fields) if val else None
    except DataError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    params = params or TrainParams()
    n_steps = params.folds + 4 + (1 if val_data else 0)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=con, disable=quiet, transient=False) as bar:
        task = bar.add_task("normalising texts", total=n_steps)

        def step(msg: str) -> None:
            bar.update(task, advance=1, description=msg)

        views = TextViews.of(train.texts, max_chars=params.max_chars)
        step("texts normalised")
        groups = train.groups[balance_by] if balance_by else None
        result = fit_detector(views, train.y, params, seed, progress=step, groups=groups)
        val_proba = None
        out.mkdir(parents=True, exist_ok=True)
        mid = model_id or f"{out.resolve().name}@1"
        # Write once without validation metrics so the evaluation runs on the saved files.
        write_model(out, result, params, build_card(model_id=mid, train=train, val=None, result=result,
                                                    val_proba=None, seed=seed, sources=sources,
                                                    balance_by=balance_by))
        if val_data is not None:
            val_proba = Detector.load(out).predict_proba(val_data.texts)
            step("validation scored")
        card = build_card(model_id=mid, train=train, val=val_data, result=result, val_proba=val_proba,
                          seed=seed, sources=sources, group_by=group_by, balance_by=balance_by)
        write_model(out, result, params, card)
        step("model written")
    _print_summary(con, out, card)
    return 0


def _check_trainable(train: LabelledData) -> None:
    n_h, n_m = int((train.y == 0).sum()), int((train.y == 1).sum())
    where = ", ".join(str(p) for p in train.paths)
    if n_h == 0 or n_m == 0:
        missing = "human" if n_h == 0 else "machine"
        raise DataError(f"{where}: training data has a single class (no {missing} rows); "
                        "a detector needs both human and machine examples")
    if min(n_h, n_m) < MIN_PER_CLASS:
        raise DataError(f"{where}: training set too small ({n_h} human, {n_m} machine rows); "
                        f"need at least {MIN_PER_CLASS} of each class")


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
        con.print(f"{name}: AUROC {m['auroc']:.4f}  TPR@1%FPR {m['tpr_at_fpr1']:.3f}  "
                  f"TPR@5%FPR {m['tpr_at_fpr5']:.3f}  ECE {m['ece']:.4f}", highlight=False)
