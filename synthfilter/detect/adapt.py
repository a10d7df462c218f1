"""Adapt a trained detector to one corpus with a few hundred labelled records of it
(``synthfilter adapt``), without retraining from scratch.

The shipped components (language models, TF-IDF heads) stay as they are. Two ways to adapt:

- an adapter on top: a standardised, regularised logistic regression over the shipped
  combination alone (a pure recalibration), the experts' standardised scores, or these and
  every feature;
- refitted experts: when the model carries its experts' training rows (``replay.npz``, feature
  vectors only), the experts are fitted again on those rows plus the labelled records, which
  weigh a set multiple of the training data, so the corpus's own human and machine texts
  shape the experts' split points.

The method, the input set and the strength are chosen by cross-validated AUROC on the labels
(5 folds); the isotonic calibration and the operating thresholds come from the same out-of-fold
scores, so every figure in the adapted card is measured on labels the adapter did not see when
it scored them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synthfilter.detect.evaluate import (
    DataError,
    auroc,
    load_labelled,
    operating_point_at_threshold,
    summarise,
    tpr_at_fpr,
)
from synthfilter.detect.model import (
    ADAPTER_FILE,
    CALIBRATION_FILE,
    CONFIG_FILE,
    REPLAY_FILE,
    Detector,
    Expert,
    LinearModel,
    Replay,
    adapter_inputs,
    adapter_method,
    combine,
    expert_file,
    read_model_file,
)

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# Refitted experts: the labelled records together weigh this many times the training rows (per
# class and expert). Chosen among by cross-validation like the adapter's strength.
REFIT_WEIGHTS = (2.0, 8.0)
FOLDS = 5
MIN_PER_CLASS = 20
METHODS = ("auto", "linear", "refit")


@dataclass
class Adaptation:
    adapter: LinearModel | None  # the linear adapter, or None when the experts were refitted
    c: float  # the adapter's strength, or the labelled records' weight for refitted experts
    oof_raw: np.ndarray  # out-of-fold adapter scores of the labelled records
    base_raw: np.ndarray  # the unadapted model's raw scores of them
    cv_auroc: dict[str, float]  # out-of-fold AUROC per "inputs:strength"
    inputs: str  # which input set was chosen ("refit" for refitted experts)
    experts: list[Expert] | None = None  # the refitted experts


def refit_experts(det: Detector, replay: Replay, x: np.ndarray, y: np.ndarray, weight: float,
                  seed: int) -> list[Expert]:
    """Every expert fitted again on the replay rows plus the labelled records (features ``x``,
    labels ``y``): humans join the human rows; machine records join every expert's kind, since a
    corpus does not say which kind wrote them. Per expert, the labelled humans together weigh
    ``weight`` times the replay's humans, the labelled machine records ``weight`` times its rows
    of that kind."""
    from synthfilter.detect.model import feature_names
    from synthfilter.detect.train import TrainParams, fit_expert

    saved = det.config.get("params", {})
    params = TrainParams(**{k: saved[k] for k in ("trees", "linear_c", "expert_model") if k in saved})
    names = list(feature_names([e.kind for e in det.experts]))
    human = replay.kinds == "human"
    n_h, n_m = max(int((y == 0).sum()), 1), max(int((y == 1).sum()), 1)
    out = []
    for j, e in enumerate(det.experts):
        kinds = np.concatenate([replay.kinds, np.where(y == 1, e.kind, "human")])
        w_h = weight * replay.weight[human].sum() / n_h
        w_m = weight * replay.weight[replay.kinds == e.kind].sum() / n_m
        w = np.concatenate([replay.weight, np.where(y == 1, w_m, w_h)])
        out.append(fit_expert(e.kind, np.vstack([replay.x, x]), kinds, w, names, params, seed + j))
    return out


def _fit(inputs: np.ndarray, y: np.ndarray, c: float, cols: np.ndarray) -> LinearModel:
    """A logistic regression on ``cols`` of ``inputs``, as a model over all of them (zeros elsewhere)."""
    from synthfilter.detect.train import fit_linear

    w = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))  # classes weigh the same
    part = fit_linear(inputs[:, cols], y, w, c)
    n = inputs.shape[1]
    mean, scale, coef = np.zeros(n), np.ones(n), np.zeros(n)
    mean[cols], scale[cols], coef[cols] = part.mean, part.scale, part.coef
    return LinearModel(mean, scale, coef, part.bias)


def candidates(n_features: int, n_experts: int) -> list[tuple[str, np.ndarray]]:
    """Input sets, simplest first: the shipped combination alone (a recalibration, same
    ranking), the experts' scores, everything."""
    n = n_features + n_experts + 1
    return [("combined", np.array([n - 1])), ("experts", np.arange(n_features, n)), ("all", np.arange(n))]


def fit_adaptation(det: Detector, texts: Sequence[str], y: np.ndarray, seed: int = 0,
                   method: str = "auto") -> Adaptation:
    """Choose the adapter's inputs and strength by cross-validated AUROC and fit it on every
    label. The simplest candidate keeps the shipped ranking, so an adapter only changes the
    ranking where the labels show that doing so ranks better out of fold. ``method`` limits the
    candidates to linear adapters or to refitted experts."""
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    x = np.concatenate([det.components.features(list(texts[i : i + 1024])) for i in range(0, len(texts), 1024)])
    z = det.expert_z(x)
    inputs = adapter_inputs(x, z)
    folds = list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(inputs, y))
    grid = [(name, cols, c) for name, cols in candidates(x.shape[1], z.shape[1])
            for c in (C_GRID if name != "combined" else (1.0,))] if method != "refit" else []
    replay = (read_model_file(det.path / REPLAY_FILE, Replay.load)
              if method != "linear" and (det.path / REPLAY_FILE).is_file() else None)
    with threadpool_limits(1):
        oof = {}
        for name, cols, c in grid:
            o = np.zeros(len(y))
            for tr, te in folds:
                o[te] = _fit(inputs[tr], y[tr], c, cols).decision_function(inputs[te])
            oof[(name, c)] = o
        for weight in REFIT_WEIGHTS if replay is not None else ():
            o = np.zeros(len(y))
            for tr, te in folds:
                experts = refit_experts(det, replay, x[tr], y[tr], weight, seed)
                o[te] = combine(np.column_stack([e.z(x[te]) for e in experts]))
            oof[("refit", weight)] = o
        scores = {k: float(auroc(y, v) or 0.0) for k, v in oof.items()}
        # A richer candidate must beat the simplest by a margin the labels can show, ties go to
        # the simpler input set and then the stronger prior (smaller C, lighter labels).
        order = {name: i for i, (name, _) in enumerate(candidates(x.shape[1], z.shape[1]))}
        order["refit"] = len(order)
        base_key = ("combined", 1.0) if method != "refit" else ("refit", REFIT_WEIGHTS[0])
        best = base_key
        for k in sorted(scores, key=lambda k: (order[k[0]], k[1])):
            if scores[k] > scores[best] + (0.005 if best == base_key else 0.0):
                best = k
        if best[0] == "refit":
            experts = refit_experts(det, replay, x, y, best[1], seed)
            return Adaptation(None, best[1], oof[best], combine(z), {f"{k[0]}:{k[1]}": v for k, v in scores.items()},
                              "refit", experts)
        cols = dict(candidates(x.shape[1], z.shape[1]))[best[0]]
        adapter = _fit(inputs, y, best[1], cols)
    return Adaptation(adapter, best[1], oof[best], combine(z), {f"{k[0]}:{k[1]}": v for k, v in scores.items()},
                      best[0])


def adapted_card(det: Detector, src: Path, out: Path, data: Sequence[Path], y: np.ndarray, proba: np.ndarray,
                 thresholds: dict[str, float], ad: Adaptation, seed: int, seconds: float) -> dict:
    """The adapted model's card: every figure at the top level is the adapted model's own
    (measured out of fold on the labelled records); the card of the model it was adapted from
    is kept whole under ``base_model``, so nothing reads the base model's validation metrics,
    timings or held-out-source rates (``source_shift``) as this model's."""
    from synthfilter.detect.train import score_distribution

    base = {k: v for k, v in det.card.items() if k not in ("files", "sha256")}
    n_h, n_m = int((y == 0).sum()), int((y == 1).sum())
    before = {"auroc": auroc(y, ad.base_raw), "tpr_at_fpr1": tpr_at_fpr(y, ad.base_raw, 0.01)}
    after = {"auroc": auroc(y, ad.oof_raw), "tpr_at_fpr1": tpr_at_fpr(y, ad.oof_raw, 0.01)}
    card = {
        "model_id": f"{det.model_id}+adapted-{out.name}",
        "format_version": det.card.get("format_version", det.config.get("format_version")),
        "created_with": "synthfilter adapt",
        "seed": seed,
        "train_prior": float(y.mean()),
        "prior_note": "calibrated probabilities correspond to the labelled records' share of machine text",
        "calibrated_on": "out_of_fold",
        "kinds": [e.kind for e in det.experts],
        # What the components (language models, TF-IDF heads) were fitted on, as the base card says.
        **({"training_data": det.card["training_data"]} if "training_data" in det.card else {}),
        "adapted_from": {"model_id": det.model_id, "sha256": det.sha256, "path": os.path.abspath(src)},
        "adaptation": {"data": [os.path.abspath(p) for p in data], "n": int(len(y)), "n_human": n_h, "n_machine": n_m,
                       "method": "refit" if ad.experts is not None else "linear", "inputs": ad.inputs,
                       **({"labels_weigh": ad.c} if ad.experts is not None else {"strength_c": ad.c}),
                       "cv_auroc": {k: round(v, 4) for k, v in ad.cv_auroc.items()},
                       "before": before, "after_out_of_fold": after},
        "operating_points_measured_on": "out-of-fold scores of the labelled records",
        "operating_points": [{"name": k, **operating_point_at_threshold(y, proba, t)} for k, t in thresholds.items()],
        "thresholds_chosen_on": "out-of-fold scores of the labelled records (1 % / 5 % human FPR)",
        "score_distribution": score_distribution(proba, y, "out-of-fold scores of the labelled records"),
        "metrics": {"adaptation_out_of_fold": summarise(y, proba, thresholds["default"])},
        "adapt_seconds": round(seconds, 1),
        # What the adapted model was made from: its components (language models, TF-IDF heads)
        # and, unless refitted, its experts. Its figures describe that model, not this one.
        "base_model": base,
    }
    return card


def adapt_command(data: list[Path], out: Path, model: Path | None = None, text_field: str = "text",
                  label_field: str = "label", human_label: str = "human", machine_label: str = "machine",
                  seed: int = 0, quiet: bool = False, method: str = "auto", overwrite: bool = False) -> int:
    """``synthfilter adapt``: write an adapted copy of ``model`` to ``out``; returns an exit code.

    ``out`` is checked before any work; it may hold a model only with ``overwrite``, which is
    replaced once the adapted one is complete. Never the model being adapted, nor a folder holding it.
    """
    from rich.console import Console

    from synthfilter.detect.evaluate import fmt_value, print_error
    from synthfilter.detect.model import check_model_out, default_model_path, staged_model_dir
    from synthfilter.detect.train import fit_calibrator, operating_points, write_card

    con = Console(quiet=quiet)
    src = Path(model) if model is not None else default_model_path()
    out = check_model_out(out, overwrite, protect=[src])
    if method not in METHODS:
        print_error(f"--method {method!r}: expected one of {', '.join(METHODS)}")
        return 2
    try:
        labelled = load_labelled(data, text_field=text_field, label_field=label_field, human_label=human_label,
                                 machine_label=machine_label)
        n_h, n_m = int((labelled.y == 0).sum()), int((labelled.y == 1).sum())
        if min(n_h, n_m) < MIN_PER_CLASS:
            raise DataError(f"{', '.join(map(str, data))}: {n_h} human and {n_m} machine records; adapting needs "
                            f"at least {MIN_PER_CLASS} of each (200-500 in all is a good start)")
    except DataError as e:
        print_error(str(e))
        return 2
    det = Detector.load(src)
    if adapter_method(det.config) is not None:
        base = det.card.get("adapted_from")
        base = base if isinstance(base, dict) else {}
        name = ", ".join(str(base[k]) for k in ("model_id", "path") if base.get(k))
        print_error(f"{src}: already adapted; adapt the model it was adapted from{f' ({name})' if name else ''} "
                    "again, with all your labels")
        return 2
    if method == "refit" and not (src / REPLAY_FILE).is_file():
        print_error(f"{src}: has no {REPLAY_FILE} (the experts' training rows), so its experts cannot be refitted; "
                    "retrain it with this version of synthfilter, or use --method linear")
        return 2
    y = labelled.y.astype(int)
    t0 = time.perf_counter()
    ad = fit_adaptation(det, labelled.texts, y, seed, method)
    calibrator = fit_calibrator(ad.oof_raw, y)
    proba = calibrator(ad.oof_raw)
    thresholds = operating_points(proba[y == 0], proba)
    with staged_model_dir(out) as tmp:  # renamed into place once complete
        config = dict(det.config)
        for name in config["files"]:
            shutil.copyfile(src / name, tmp / name)
        calibrator.save(tmp / CALIBRATION_FILE)
        if ad.experts is not None:
            config["experts"] = dict(config["experts"])
            for e in ad.experts:
                e.model.save(tmp / expert_file(e.kind))
                config["experts"][e.kind] = {**config["experts"][e.kind], "centre": e.centre, "spread": e.spread}
            config["adapter"] = {"method": "refit", "inputs": ad.inputs, "weight": ad.c, "n_labels": int(len(y)),
                                 "seed": seed}
        else:
            ad.adapter.save(tmp / ADAPTER_FILE)
            config["adapter"] = {"method": "linear", "inputs": ad.inputs, "c": ad.c, "n_labels": int(len(y)),
                                 "seed": seed}
            config["files"] = [*config["files"], ADAPTER_FILE]
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        card = adapted_card(det, src, out, data, y, proba, thresholds, ad, seed, time.perf_counter() - t0)
        write_card(tmp, card)
    before, after = card["adaptation"]["before"], card["adaptation"]["after_out_of_fold"]
    con.print(f"adapted {det.model_id} on {len(y)} labelled records ({n_h} human, {n_m} machine) -> {out}",
              highlight=False)
    con.print(f"AUROC on these records: {fmt_value(before['auroc'])} before, {fmt_value(after['auroc'])} after "
              f"(out of fold); TPR at 1 % FPR {fmt_value(before['tpr_at_fpr1'])} -> "
              f"{fmt_value(after['tpr_at_fpr1'])}", highlight=False)
    if ad.inputs == "combined":
        # A recalibration of the shipped score: the ranking is the shipped one. Out of fold, each
        # fold's own rescaling pools into a slightly different AUROC, which is not a change of ranking.
        con.print("the adapter recalibrates the shipped score (same ranking): no richer input set ranked these "
                  "labels better out of fold", highlight=False)
    con.print(f"use it with --model {out}", highlight=False)
    return 0
