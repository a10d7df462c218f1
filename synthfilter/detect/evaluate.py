"""Detector metrics (AUROC, TPR at fixed FPR, calibration error, per-group tables), labelled
JSONL loading, and the ``synthfilter eval`` command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from synthfilter.records import get_path, is_blank, is_missing


class DataError(ValueError):
    """Input data cannot be used; the message names the file (and line) and what to do."""


@dataclass
class LabelledData:
    texts: list[str]
    y: np.ndarray  # 1 = machine, 0 = human
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)


_JSONL_KINDS = ".jsonl/.jsonl.gz/.jsonl.zst"
# A number as JSON writes it: a label given as text ("1.0") also matches the number it spells.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _compression(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        return "gz"
    if name.endswith((".zst", ".zstd")):
        return "zst"
    return None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file (.gz / .zst allowed).

    Read with the pipeline's reader (``ShardReader``), so a file reads here as it does in
    ``synthfilter run``: a UTF-8 BOM and CRLF line ends are accepted; a line that is not a JSON
    object, not UTF-8 or too long, and a truncated or corrupt .gz/.zst file, raise ``DataError``
    naming the file (and line). Records before a problem are yielded first.
    """
    for lines, objs in _record_batches(Path(path)):
        yield from zip(lines, objs)


def _record_batches(path: Path, fields: Sequence[str] = ()) -> Iterator[tuple[list[int], list[dict]]]:
    """``iter_jsonl`` a batch at a time: (line numbers, records), as the reader gives them."""
    from synthfilter.io.shards import InputError, Shard, ShardReader

    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {_JSONL_KINDS} file")
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.name.lower().endswith(".parquet"):
        raise DataError(f"{path}: Parquet is not read here, expected a {_JSONL_KINDS} file")
    reader = ShardReader(Shard(path, path.name, "jsonl", _compression(path)), fields=fields)
    last = 0
    try:
        for batch in reader.batches(raw=False):
            lines, objs, errors = batch.lines, batch.objs, batch.errors
            if any(errors):  # a line the reader could not read as a JSON object
                j = next(i for i, e in enumerate(errors) if e is not None)
                if j:
                    yield lines[:j], objs[:j]  # the records before it come first
                error = errors[j]
                if error.startswith("malformed JSON"):
                    error = "not valid JSON" + error[len("malformed JSON"):]
                raise DataError(f"{path}:{lines[j]}: {error}")
            if lines:
                yield lines, objs
                last = lines[-1]
    except InputError as e:
        if not reader.breaks:  # cannot open or read the file
            raise DataError(str(e)) from None
        # A truncated or corrupt .gz/.zst file. The reader's advice names --on-error, which
        # train/adapt/eval do not have: the file must be fixed, not partly read.
        after = f"; the records stop after line {last:,}" if last else ""
        raise DataError(f"{path}: {reader.breaks[-1].detail}{after}; re-copy or re-create the file") from None


def _label_keys(label: Any, flag: str) -> set[str]:
    """The canonical values (``provenance.canonical_value``) a --human-label / --machine-label matches."""
    from synthfilter.provenance import canonical_value

    key = canonical_value(label)
    if key is None:
        raise DataError(f"{flag} {label!r}: expected a string, number or boolean")
    keys = {key}
    if isinstance(label, str) and _JSON_NUMBER.fullmatch(label.strip()):
        number = canonical_value(json.loads(label.strip()))
        if number is not None:
            keys.add(number)
    return keys


def _shown(value: Any) -> str:
    """A label value as the user wrote it: JSON for non-strings (false, 1.0), quoted text otherwise."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


def _field_getter(name: str) -> Callable[[dict], Any]:
    """``rec[name]`` (KeyError when absent); a dotted ``name`` is a path into nested objects, as
    ``records.get_path`` follows it (a top-level key spelt with the dots wins)."""
    if "." not in name:
        return lambda rec: rec[name]

    def get(rec: dict) -> Any:
        value = get_path(rec, name)
        if is_missing(value):
            raise KeyError(name)
        return value

    return get


def load_labelled(paths: Sequence[Path], text_field: str = "text", label_field: str = "label",
                  human_label: str = "human", machine_label: str = "machine",
                  group_fields: Sequence[str] = ()) -> LabelledData:
    """Read texts and human/machine labels from JSONL files; every problem names file:line.

    Labels match the way the provenance mapper matches values: text stripped and case-folded,
    booleans as true/false, integral numbers as integers (``--human-label false`` matches JSON
    false and "False"; ``--machine-label 1`` matches 1, 1.0 and "1"). A null label, an empty text
    (``records.is_blank``: nothing but white space or invisible format characters) and an empty
    file are errors. A field may be a dotted path into nested objects (``meta.label``), read as
    ``synthfilter run`` reads ``--text-field``: a top-level key spelt ``meta.label`` is read first.
    """
    from synthfilter.provenance import canonical_value

    human_keys = _label_keys(human_label, "--human-label")
    machine_keys = _label_keys(machine_label, "--machine-label")
    if human_keys & machine_keys:
        raise DataError(f"--human-label {human_label!r} and --machine-label {machine_label!r} are the same label "
                        "(labels match case-folded, booleans as true/false, 1.0 as 1): give two different values")
    wanted = dict.fromkeys(human_keys, 0) | dict.fromkeys(machine_keys, 1)
    known: dict[str, int] = {}  # label strings seen -> their code (matched ones only)
    texts: list[str] = []
    labels: list[int] = []
    groups: dict[str, list[str]] = {g: [] for g in group_fields}
    add_text, add_label = texts.append, labels.append
    add_groups = [(g, groups[g].append) for g in group_fields]

    def problem(path: Path, lineno: int, rec: dict) -> DataError:
        """What is wrong with a record the fast path refused."""
        text, value = get_path(rec, text_field), get_path(rec, label_field)
        if is_missing(text):
            return DataError(f"{path}:{lineno}: no {text_field!r} field (set --text-field)")
        if is_missing(value):
            return DataError(f"{path}:{lineno}: no {label_field!r} field (set --label-field)")
        if type(text) is not str:
            kind = "null" if text is None else type(text).__name__
            return DataError(f"{path}:{lineno}: text field {text_field!r} is {kind}, expected a string")
        if is_blank(text):
            return DataError(f"{path}:{lineno}: text field {text_field!r} is empty")
        if value is None:
            return DataError(f"{path}:{lineno}: label is null (field {label_field!r}); every record needs a "
                             f"{human_label!r} (human) or {machine_label!r} (machine) label")
        if canonical_value(value) is None:
            return DataError(f"{path}:{lineno}: label is a {type(value).__name__} ({_shown(value)}), "
                             "expected a string, number or boolean")
        return DataError(f"{path}:{lineno}: label {_shown(value)} is neither {human_label!r} (human) nor "
                         f"{machine_label!r} (machine); set --human-label / --machine-label")

    text_of, label_of = _field_getter(text_field), _field_getter(label_field)
    for path in map(Path, paths):
        before = len(texts)
        for lines, objs in _record_batches(path, (text_field, label_field, *group_fields)):
            for lineno, rec in zip(lines, objs):
                try:
                    text, value = text_of(rec), label_of(rec)
                except KeyError:
                    raise problem(path, lineno, rec) from None
                if type(text) is not str or is_blank(text):
                    raise problem(path, lineno, rec)
                code = known.get(value) if type(value) is str else None
                if code is None:
                    code = wanted.get(canonical_value(value))  # type: ignore[arg-type]
                    if code is None:
                        raise problem(path, lineno, rec)
                    if type(value) is str:
                        known[value] = code
                add_text(text)
                add_label(code)
                for g, add in add_groups:
                    v = get_path(rec, g)
                    add("(missing)" if is_missing(v) else str(v))
        if len(texts) == before:
            raise DataError(f"{path}: no records (empty file)")
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

    con = Console(quiet=quiet)
    group_by = [g for g in (group_by or []) if g]
    try:
        labelled = load_labelled(data, text_field, label_field, human_label, machine_label, group_by)
        det = Detector.load(model if model is not None else default_model_path())
    except (DataError, ModelError) as e:
        print_error(str(e))
        return 2
    points = {str(pt["name"]): pt for pt in det.card.get("operating_points", []) if "name" in pt}
    if operating_point not in points:
        print_error(f"model has no operating point {operating_point!r} (has: {', '.join(points) or 'none'})")
        return 2
    try:
        threshold = float(points[operating_point]["threshold"])
    except (KeyError, TypeError, ValueError):
        print_error(f"{det.path / 'card.json'}: damaged or unreadable model file (operating point {operating_point!r} "
                    "has no numeric threshold); reinstall the model or train it again")
        return 2
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


def print_error(message: str) -> None:
    """``error: message`` on stderr for train / adapt / eval: one line, as written (a file name
    such as ``export[v2]`` is not markup, and a message longer than the terminal is not wrapped)."""
    import sys

    print(f"error: {message}", file=sys.stderr, flush=True)


def fmt_value(x: float | None, spec: str = ".3f") -> str:
    """A metric as printed: "-" where there is none (e.g. AUROC of a single-class set)."""
    return "-" if x is None else format(x, spec)


def print_summary(con, summary: dict) -> None:  # noqa: ANN001
    from rich.table import Table

    t = Table(title=f"{summary.get('model_id', 'model')} on {summary['n']} texts "
                    f"({summary['n_human']} human, {summary['n_machine']} machine)")
    for col in ("AUROC", "TPR@1%FPR", "TPR@5%FPR", "ECE", "threshold", "TPR", "FPR", "TP", "FP", "TN", "FN"):
        t.add_column(col, justify="right")
    c = summary["confusion"]
    t.add_row(fmt_value(summary["auroc"], ".4f"), fmt_value(summary["tpr_at_fpr1"]), fmt_value(summary["tpr_at_fpr5"]),
              fmt_value(summary["ece"], ".4f"), fmt_value(summary["threshold"], ".4f"), fmt_value(summary["tpr"]),
              fmt_value(summary["fpr"], ".4f"), str(c["tp"]), str(c["fp"]), str(c["tn"]), str(c["fn"]))
    con.print(t)
    for g, table in summary.get("groups", {}).items():
        gt = Table(title=f"by {g}")
        for col in ("group", "n", "human", "machine", "AUROC", "TPR", "human FPR", "FPR / overall"):
            gt.add_column(col, justify="right" if col != "group" else "left")
        overall = summary["fpr"]
        for value, r in table.items():
            ratio = r["fpr"] / overall if r["fpr"] is not None and overall else None
            gt.add_row(value, str(r["n"]), str(r["n_human"]), str(r["n_machine"]), fmt_value(r["auroc"]),
                       fmt_value(r["tpr"]), fmt_value(r["fpr"], ".4f"), fmt_value(ratio, ".2f"))
        con.print(gt)
        fair = summary.get("fairness", {}).get(g)
        if fair:
            con.print(f"{g}: worst human FPR {fmt_value(fair['max_group_human_fpr'], '.4f')} vs overall "
                      f"{fmt_value(fair['overall_human_fpr'], '.4f')} (ratio {fmt_value(fair['max_fpr_ratio'], '.2f')})",
                      highlight=False)
