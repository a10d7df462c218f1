"""Detector metrics (AUROC, TPR at fixed FPR, calibration error, per-group tables), labelled
JSONL loading, and the ``synthfilter eval`` command.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class DataError(ValueError):
    """Input data cannot be used; the message names the file (and line) and what to do."""


@dataclass
class LabelledData:
    texts: list[str]
    y: np.ndarray  # 1 = machine, 0 = human
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst") or name.endswith(".zstd"):
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file (.gz / .zst allowed)."""
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, rec


def load_labelled(paths: Sequence[Path], text_field: str = "text", label_field: str = "label",
                  human_label: str = "human", machine_label: str = "machine",
                  group_fields: Sequence[str] = ()) -> LabelledData:
    """Read texts and human/machine labels from JSONL files; every problem names file:line."""
    texts: list[str] = []
    labels: list[int] = []
    groups: dict[str, list[str]] = {g: [] for g in group_fields}
    wanted = {str(human_label): 0, str(machine_label): 1}
    for path in map(Path, paths):
        for lineno, rec in iter_jsonl(path):
            if text_field not in rec:
                raise DataError(f"{path}:{lineno}: no {text_field!r} field (set --text-field)")
            if label_field not in rec:
                raise DataError(f"{path}:{lineno}: no {label_field!r} field (set --label-field)")
            text, label = rec[text_field], str(rec[label_field])
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: field {text_field!r} is not a string")
            if label not in wanted:
                raise DataError(f"{path}:{lineno}: label {label!r} is neither {human_label!r} (human) nor "
                                f"{machine_label!r} (machine); set --human-label / --machine-label")
            texts.append(text)
            labels.append(wanted[label])
            for g in group_fields:
                groups[g].append(str(rec.get(g, "(missing)")))
    if not texts:
        raise DataError(f"{', '.join(map(str, paths)) or '(no files)'}: no records")
    return LabelledData(texts, np.array(labels, dtype=np.int8), {g: np.array(v) for g, v in groups.items()},
                        [Path(p) for p in paths])


# -- metrics ----------------------------------------------------------------------------------


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_at_fpr(human_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold (flag when score >= threshold) whose human FPR is at most ``fpr``."""
    # Scores are float32 (what predict_proba returns); the threshold is a float32 value too, so
    # "score >= threshold" gives the same answer in float32 and float64 arithmetic.
    s = np.sort(np.asarray(human_scores, dtype=np.float32))[::-1]
    if len(s) == 0:
        return 0.5
    k = int(np.floor(fpr * len(s)))
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.float32(np.inf)))


def tpr_at_fpr(y: np.ndarray, p: np.ndarray, fpr: float) -> float | None:
    """Share of machine texts flagged at the threshold that flags at most ``fpr`` of human ones."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return None
    t = threshold_at_fpr(p[~y], fpr)
    return float((p[y] >= t).mean())


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |mean predicted - observed share| over equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    n = np.bincount(idx, minlength=bins)
    sp = np.bincount(idx, weights=p, minlength=bins)
    sy = np.bincount(idx, weights=y, minlength=bins)
    has = n > 0
    return float(np.sum(np.abs(sp[has] - sy[has])) / max(len(y), 1))


def operating_point_at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    y = np.asarray(y).astype(bool)
    flagged = np.asarray(p) >= threshold
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
    return {"threshold": float(threshold), "tpr": tp / max(tp + fn, 1), "fpr": fp / max(fp + tn, 1),
            "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}}


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def summarise(y: np.ndarray, p: np.ndarray, threshold: float, groups: dict[str, np.ndarray] | None = None,
              group_by: Sequence[str] = ()) -> dict:
    """Every headline metric, the confusion at ``threshold`` and a per-group breakdown."""
    y = np.asarray(y).astype(np.int8)
    scores = np.asarray(p)  # thresholds compare against the scores as the model returned them
    p = scores.astype(np.float64)
    op = operating_point_at_threshold(y, scores, threshold)
    out = {
        "n": int(len(y)), "n_human": int((y == 0).sum()), "n_machine": int((y == 1).sum()),
        "auroc": _round(auroc(y, p)), "tpr_at_fpr1": _round(tpr_at_fpr(y, p, 0.01)),
        "tpr_at_fpr5": _round(tpr_at_fpr(y, p, 0.05)), "ece": _round(expected_calibration_error(y, p)),
        "brier": _round(float(np.mean((p - y) ** 2))), "threshold": float(threshold),
        "tpr": _round(op["tpr"]), "fpr": _round(op["fpr"]), "confusion": op["confusion"],
    }
    if groups:
        out["groups"] = {}
        for g in group_by:
            if g not in groups:
                continue
            table = {}
            for value in sorted(set(groups[g].tolist())):
                m = groups[g] == value
                gy, gp = y[m], p[m]
                gop = operating_point_at_threshold(gy, scores[m], threshold)
                table[value] = {
                    "n": int(m.sum()), "n_human": int((gy == 0).sum()), "n_machine": int((gy == 1).sum()),
                    "auroc": _round(auroc(gy, gp)),
                    "tpr": _round(gop["tpr"]) if (gy == 1).any() else None,
                    "fpr": _round(gop["fpr"]) if (gy == 0).any() else None,
                    "mean_score": _round(float(gp.mean())),
                }
            out["groups"][g] = table
            overall = out["fpr"]
            worst = max((r["fpr"] for r in table.values() if r["fpr"] is not None), default=None)
            out.setdefault("fairness", {})[g] = {
                "overall_human_fpr": overall,
                "max_group_human_fpr": worst,
                "max_fpr_ratio": _round(worst / overall) if worst is not None and overall else None,
            }
    return out


# -- command ----------------------------------------------------------------------------------


def eval_command(data: list[Path], model: Path | None = None, text_field: str = "text", label_field: str = "label",
                 human_label: str = "human", machine_label: str = "machine", group_by: list[str] | None = None,
                 json_out: Path | None = None, quiet: bool = False, operating_point: str = "default") -> int:
    """``synthfilter eval``: metrics of a model on labelled data; returns an exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from synthfilter.detect.model import Detector, ModelError, default_model_path

    err = Console(stderr=True)
    con = Console(quiet=quiet)
    group_by = [g for g in (group_by or []) if g]
    try:
        labelled = load_labelled(data, text_field, label_field, human_label, machine_label, group_by)
        det = Detector.load(model if model is not None else default_model_path())
    except (DataError, ModelError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    points = {pt["name"]: pt for pt in det.card.get("operating_points", [])}
    if operating_point not in points:
        err.print(f"[red]error:[/red] model has no operating point {operating_point!r} "
                  f"(has: {', '.join(points) or 'none'})", highlight=False)
        return 2
    threshold = float(points[operating_point]["threshold"])
    texts = labelled.texts
    proba = np.empty(len(texts), dtype=np.float64)
    step = 512
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=con,
                  disable=quiet) as bar:
        task = bar.add_task("scoring", total=len(texts))
        for start in range(0, len(texts), step):
            proba[start : start + step] = det.predict_proba(texts[start : start + step])
            bar.advance(task, min(step, len(texts) - start))
    summary = summarise(labelled.y, proba, threshold, labelled.groups, group_by)
    summary = {"model_id": det.model_id, "model_sha256": det.sha256, "operating_point": operating_point,
               "files": [str(p) for p in labelled.paths], **summary}
    print_summary(con, summary)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_summary(con, summary: dict) -> None:  # noqa: ANN001
    from rich.table import Table

    t = Table(title=f"{summary.get('model_id', 'model')} on {summary['n']} texts "
                    f"({summary['n_human']} human, {summary['n_machine']} machine)")
    for col in ("AUROC", "TPR@1%FPR", "TPR@5%FPR", "ECE", "threshold", "TPR", "FPR", "TP", "FP", "TN", "FN"):
        t.add_column(col, justify="right")
    c = summary["confusion"]
    t.add_row(_fmt(summary["auroc"], ".4f"), _fmt(summary["tpr_at_fpr1"]), _fmt(summary["tpr_at_fpr5"]),
              _fmt(summary["ece"], ".4f"), _fmt(summary["threshold"], ".4f"), _fmt(summary["tpr"]),
              _fmt(summary["fpr"], ".4f"), str(c["tp"]), str(c["fp"]), str(c["tn"]), str(c["fn"]))
    con.print(t)
    for g, table in summary.get("groups", {}).items():
        gt = Table(title=f"by {g}")
        for col in ("group", "n", "human", "machine", "AUROC", "TPR", "human FPR", "FPR / overall"):
            gt.add_column(col, justify="right" if col != "group" else "left")
        overall = summary["fpr"]
        for value, r in table.items():
            ratio = r["fpr"] / overall if r["fpr"] is not None and overall else None
            gt.add_row(value, str(r["n"]), str(r["n_human"]), str(r["n_machine"]), _fmt(r["auroc"]),
                       _fmt(r["tpr"]), _fmt(r["fpr"], ".4f"), _fmt(ratio, ".2f"))
        con.print(gt)
        fair = summary.get("fairness", {}).get(g)
        if fair:
            con.print(f"{g}: worst human FPR {_fmt(fair['max_group_human_fpr'], '.4f')} vs overall "
                      f"{_fmt(fair['overall_human_fpr'], '.4f')} (ratio {_fmt(fair['max_fpr_ratio'], '.2f')})",
                      highlight=False)
