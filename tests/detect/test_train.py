"""Training and evaluation commands end to end on a small generated corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthfilter.detect.evaluate import eval_command
from synthfilter.detect.model import Detector
from synthfilter.detect.train import TrainParams, train_command

from .conftest import human_text, machine_text, write_corpus

FAST = TrainParams(
    folds=2,
    ft_word=dict(epoch=5, wordNgrams=2, dim=8, lr=0.2, minCount=1, bucket=20_000, minn=0, maxn=0),
    ft_quantize_cutoff=5_000,
    stacker=dict(learning_rate=0.1, max_iter=30, max_leaf_nodes=7, min_samples_leaf=5, l2_regularization=1.0),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    fields = dict(text_field="body", label_field="who", human_label="staff", machine_label="bot")
    train = write_corpus(d / "train.jsonl", 70, 90, seed=1, **fields)
    val = write_corpus(d / "val.jsonl", 40, 40, seed=2, **fields)
    out = d / "model"
    code = train_command([train], out, val=[val], seed=3, quiet=True, params=FAST, group_by=["domain"],
                         balance_by="domain", **fields)
    return code, out, val, fields


def test_train_writes_a_loadable_model_with_a_card(trained):
    code, out, _, _ = trained
    assert code == 0
    det = Detector.load(out)
    card = det.card
    assert card["operating_points_measured_on"] == "validation"
    assert {p["name"] for p in card["operating_points"]} >= {"default", "fpr1", "fpr5"}
    assert card["training_data"]["n_human"] == 70 and card["training_data"]["n_machine"] == 90
    assert card["train_prior"] == pytest.approx(90 / 160)
    assert card["metrics"]["validation"]["auroc"] > 0.9  # the two styles are easy to tell apart
    assert card["balanced_by"]["field"] == "domain"
    assert set(card["balanced_by"]["human_weight"]) == {"blog", "news"}
    assert set(card["metrics"]["cross_validation"]["groups"]["domain"]) == {"blog", "news"}
    import random

    r = random.Random(8)
    p_h = det.predict_proba([human_text(r) for _ in range(20)])
    p_m = det.predict_proba([machine_text(r) for _ in range(20)])
    assert p_m.mean() - p_h.mean() > 0.5


def test_eval_command_writes_json_with_groups(trained, tmp_path):
    _, out, val, fields = trained
    js = tmp_path / "eval.json"
    code = eval_command([val], out, group_by=["domain"], json_out=js, quiet=True, **fields)
    assert code == 0
    s = json.loads(js.read_text())
    for key in ("auroc", "tpr_at_fpr1", "tpr_at_fpr5", "ece", "confusion", "groups", "fairness"):
        assert key in s
    assert set(s["groups"]["domain"]) == {"blog", "news"}
    assert s["n"] == 80


def test_training_is_reproducible_with_a_seed(trained, tmp_path):
    code, out, _, fields = trained
    train = out.parent / "train.jsonl"
    again = tmp_path / "again"
    assert train_command([train], again, seed=3, quiet=True, params=FAST, balance_by="domain", **fields) == 0
    a, b = Detector.load(out), Detector.load(again)
    assert a.sha256 == b.sha256
    x = [machine_text(__import__("random").Random(0)) for _ in range(3)]
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


def test_single_class_and_tiny_sets_fail_clearly(tmp_path, capsys):
    one = write_corpus(tmp_path / "one.jsonl", 0, 50)
    assert train_command([one], tmp_path / "m1", quiet=True, params=FAST) == 2
    assert "single class (no human rows)" in capsys.readouterr().err
    tiny = write_corpus(tmp_path / "tiny.jsonl", 5, 50)
    assert train_command([tiny], tmp_path / "m2", quiet=True, params=FAST) == 2
    assert "too small (5 human, 50 machine rows)" in capsys.readouterr().err.replace("\n", " ")


def test_missing_field_fails_clearly(tmp_path, capsys):
    f = write_corpus(tmp_path / "d.jsonl", 30, 30)
    assert train_command([f], tmp_path / "m", text_field="content", quiet=True, params=FAST) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "no 'content' field" in err and "d.jsonl:1" in err


def test_group_weights_lift_the_human_group_the_stacker_over_flags():
    from synthfilter.detect.train import group_weights

    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.random(n) < 0.5).astype(np.int8)
    groups = rng.choice(np.array(["a", "b", "c"]), size=n)
    x = rng.normal(size=(n, 4)) + y[:, None] * 1.5
    # Humans of group "c" write like the machine class on every feature.
    x[(y == 0) & (groups == "c")] += 1.2
    w = group_weights(x, y, groups, FAST, seed=1)
    human = y == 0
    wc = w[human & (groups == "c")].mean()
    assert wc > 1.3 * w[human & (groups == "a")].mean()
    assert wc > 1.3 * w[human & (groups == "b")].mean()
    assert (w[y == 1] == 1.0).all()
    assert w[human].sum() == pytest.approx(human.sum())


def test_train_cli_with_the_default_recipe_and_balance_by(tmp_path):
    """The real command line, default hyper-parameters, ``--balance-by`` on a record field."""
    import subprocess
    import sys

    data = write_corpus(tmp_path / "data.jsonl", 60, 60, seed=5)
    out = tmp_path / "m"
    proc = subprocess.run([sys.executable, "-m", "synthfilter", "train", str(data), "--out", str(out),
                           "--balance-by", "domain", "--seed", "1", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["balanced_by"]["field"] == "domain"
    assert set(card["balanced_by"]["human_weight"]) == {"blog", "news"}
    det = Detector.load(out)
    import random

    r = random.Random(9)
    assert det.predict_proba([machine_text(r)])[0] > det.predict_proba([human_text(r)])[0]
