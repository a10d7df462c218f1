"""Metrics against scikit-learn, and clear errors for bad labelled data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthfilter.detect.evaluate import (
    DataError,
    auroc,
    expected_calibration_error,
    load_labelled,
    summarise,
    threshold_at_fpr,
    tpr_at_fpr,
)


def test_auroc_matches_sklearn_with_ties():
    r = np.random.default_rng(0)
    y = r.integers(0, 2, 500)
    p = np.round(r.random(500) * 0.5 + y * 0.3, 2)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert auroc(np.ones(5), np.arange(5)) is None


def test_threshold_at_fpr_bounds_false_positives():
    r = np.random.default_rng(2)
    human = r.random(1000)
    for target in (0.01, 0.05, 0.2):
        t = threshold_at_fpr(human, target)
        assert (human >= t).mean() <= target
        assert (human >= t).mean() >= target - 0.002


def test_tpr_at_fpr_perfect_and_random():
    y = np.array([0] * 100 + [1] * 100)
    assert tpr_at_fpr(y, np.r_[np.zeros(100), np.ones(100)], 0.01) == 1.0
    assert tpr_at_fpr(y, np.r_[np.ones(100), np.zeros(100)], 0.01) == 0.0


def test_ece_zero_when_calibrated_and_large_when_not():
    r = np.random.default_rng(3)
    p = r.random(200_000)
    y = (r.random(200_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p * 0.5, 0, 1)) > 0.2


def test_summarise_groups_and_fairness():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.9, 0.1, 0.2, 0.1, 0.8, 0.9, 0.3, 0.7])
    g = {"domain": np.array(["a", "a", "b", "b", "a", "a", "b", "b"])}
    s = summarise(y, p, 0.5, g, ["domain"])
    assert s["confusion"] == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    assert s["groups"]["domain"]["a"]["fpr"] == 0.5 and s["groups"]["domain"]["b"]["fpr"] == 0.0
    assert s["fairness"]["domain"]["max_fpr_ratio"] == 2.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_labelled_errors_name_file_and_line(tmp_path):
    f = _write(tmp_path / "a.jsonl", [{"text": "hello", "label": "human"}, {"body": "x", "label": "machine"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: no 'text' field"):
        load_labelled([f])
    f = _write(tmp_path / "b.jsonl", [{"text": "hello", "label": "bot"}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: label 'bot'"):
        load_labelled([f])
    (tmp_path / "c.jsonl").write_text('{"text": "ok", "label": "human"}\n{oops\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        load_labelled([tmp_path / "c.jsonl"])
    with pytest.raises(DataError, match="does not exist"):
        load_labelled([tmp_path / "missing.jsonl"])


def test_load_labelled_custom_fields_and_compression(tmp_path):
    import gzip

    rows = [{"body": f"text {i}", "src": "ours" if i % 2 else "web", "team": "x"} for i in range(6)]
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    data = load_labelled([tmp_path / "d.jsonl.gz"], text_field="body", label_field="src", human_label="web",
                         machine_label="ours", group_fields=["team"])
    assert data.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.groups["team"].tolist() == ["x"] * 6


def test_threshold_gives_the_same_answer_in_float32_and_float64():
    r = np.random.default_rng(4)
    human = np.round(r.random(999), 3).astype(np.float32)  # many ties, like a step calibrator
    t = threshold_at_fpr(human, 0.05)
    assert np.float32(t) == t
    assert (human >= t).sum() == (human.astype(np.float64) >= t).sum()
    assert (human >= t).mean() <= 0.05
