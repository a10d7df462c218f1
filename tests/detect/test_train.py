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
    calibration_share=0.25,
    holdout_min_rows=100,  # 160 rows: a held-out calibration share (the shipped model's path)
    head=dict(buckets=2**16, min_df=1, c=4.0),
    trees=dict(learning_rate=0.1, max_iter=30, max_leaf_nodes=7, min_samples_leaf=5, l2_regularization=1.0),
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
    assert card["train_prior"] == pytest.approx(90 / 160, abs=0.02)  # as held out for calibration
    assert card["metrics"]["validation"]["auroc"] > 0.9  # the two styles are easy to tell apart
    assert card["balanced_by"]["field"] == "domain"
    assert card["kinds"] == ["machine"]  # the corpus names no generator: one expert
    assert card["training_data"]["n_calibration"] == 40  # a quarter of each (domain, kind) stratum
    assert card["calibrated_on"] == "held_out_share"  # what the prevalence estimate reads to pick EM
    assert set(card["metrics"]["calibration_share"]["groups"]["domain"]) == {"blog", "news"}
    dist = card["score_distribution"]
    assert dist["measured_on"] == "validation" and sum(dist["human"]) == sum(dist["machine"]) == 40
    assert len(dist["edges"]) == len(dist["human"]) + 1
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


def test_cell_weights_give_every_source_the_same_weight_within_a_label():
    from synthfilter.detect.train import cell_weights

    y = np.array([0] * 10 + [1] * 30)
    cells = np.array(["a"] * 8 + ["b"] * 2 + ["a"] * 10 + ["b"] * 20)
    w = cell_weights(y, cells)
    for lab in (0, 1):
        m = y == lab
        assert w[m].sum() == pytest.approx(m.sum())
        assert w[m & (cells == "a")].sum() == pytest.approx(w[m & (cells == "b")].sum())


def test_length_parity_removes_length_as_a_signal():
    from synthfilter.detect.evaluate import auroc
    from synthfilter.detect.train import parity_lengths

    rng = np.random.default_rng(0)
    y = np.array([0] * 500 + [1] * 500)
    lengths = np.where(y == 1, rng.integers(1500, 3000, 1000), rng.integers(300, 1500, 1000))
    assert auroc(y, lengths) > 0.99
    target = parity_lengths(lengths, y, None, seed=1)
    assert (target <= lengths).all()
    assert abs(auroc(y, target) - 0.5) < 0.06


def test_generators_decide_the_kinds():
    from synthfilter.detect.train import machine_kind, row_kinds

    assert machine_kind("gpt2-xl") == machine_kind("gpt-neox-20b") == machine_kind("llama-7b") == "base"
    assert machine_kind("gpt-4o") == machine_kind("llama-3-70b") == machine_kind("claude-3") == "chat"
    assert machine_kind("(missing)") == "machine"
    y = np.array([0] * 30 + [1] * 60 + [1] * 5)
    gens = np.array(["human"] * 30 + ["gpt-4"] * 30 + ["opt-2.7b"] * 30 + ["(missing)"] * 5)
    kinds = row_kinds(y, gens)
    assert set(kinds[:30]) == {"human"} and set(kinds[30:60]) == {"chat"} and set(kinds[60:90]) == {"base"}
    assert len(set(kinds[90:])) == 1 and kinds[90] in ("chat", "base")  # unnamed rows join a kind
    few = np.array(["human"] * 30 + ["gpt-4"] * 80 + ["gpt2-xl"] * 10 + ["gpt-4"] * 5)
    assert set(row_kinds(np.array([0] * 30 + [1] * 95), few)[30:]) == {"chat"}  # 10 base rows: too few


def test_calibration_split_holds_out_a_share_of_every_stratum():
    from synthfilter.detect.train import calibration_split

    strata = np.array(["a|human"] * 40 + ["a|chat"] * 100 + ["b|chat"] * 20)
    fit, cal = calibration_split(strata, 0.2, seed=0)
    assert len(np.intersect1d(fit, cal)) == 0 and len(fit) + len(cal) == len(strata)
    for s, n in (("a|human", 8), ("a|chat", 20), ("b|chat", 4)):
        assert (strata[cal] == s).sum() == n


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
    # 120 rows are too few to hold some out: every row is scored out of fold for calibration.
    assert card["training_data"]["n_calibration"] == 120 and card["thresholds_chosen_on"].startswith("out-of-fold")
    det = Detector.load(out)
    import random

    r = random.Random(9)
    assert det.predict_proba([machine_text(r)])[0] > det.predict_proba([human_text(r)])[0]


def test_the_default_threshold_holds_on_every_source_it_was_measured_on():
    from synthfilter.detect.train import MIN_CELL_HUMANS, operating_points

    rng = np.random.default_rng(3)
    # Source "b"'s human texts score higher than source "a"'s: the pooled 1 % point lets ~2.5 %
    # of b's humans through; the default threshold holds b to 1 % too.
    a, b = rng.normal(0.2, 0.1, 2000), rng.normal(0.5, 0.1, 400)
    humans = np.clip(np.r_[a, b], 0, 1)
    cells = np.array(["a"] * len(a) + ["b"] * len(b))
    pts = operating_points(humans, None, cells)
    assert pts["default"] > pts["fpr1"]
    assert (b >= pts["default"]).mean() <= 0.01 and (a >= pts["default"]).mean() <= 0.01
    assert (b >= pts["fpr1"]).mean() > 0.02
    # Without cells, or when a source has too few human texts for its own 1 % point: the pooled one.
    assert operating_points(humans)["default"] == pts["fpr1"]
    tiny = np.r_[np.full(MIN_CELL_HUMANS - 5, 0.1), np.full(4, 0.9)]  # 4 % of a small source at 0.9
    cells = np.array(["a"] * len(a) + ["t"] * len(tiny))
    assert operating_points(np.r_[a, tiny], None, cells)["default"] < 0.9
    bigger = np.r_[tiny, 0.1]  # with one more text the source counts, and its own 1 % point with it
    cells = np.array(["a"] * len(a) + ["t"] * len(bigger))
    assert operating_points(np.r_[a, bigger], None, cells)["default"] >= 0.9


def test_train_writes_its_model_whole_and_only_where_it_may(tmp_path, monkeypatch, capsys):
    from synthfilter.detect import train as train_mod
    from synthfilter.detect.model import ModelError

    data = write_corpus(tmp_path / "d.jsonl", 40, 40, seed=5)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "config.json").write_text('{"mine": 1}')
    with pytest.raises(ModelError, match="holds no synthfilter model"):
        train_command([data], precious, quiet=True, params=FAST)
    assert (precious / "config.json").read_text() == '{"mine": 1}'  # it used to be overwritten
    out = tmp_path / "m"
    assert train_command([data], out, seed=1, quiet=True, params=FAST) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ModelError, match="a model is already there; pass --overwrite"):
        train_command([data], out, seed=2, quiet=True, params=FAST)

    # A retrain that dies after writing part of its files leaves the old model as it was.
    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "write_card", dies)
    with pytest.raises(KeyboardInterrupt):
        train_command([data], out, seed=2, quiet=True, params=FAST, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "m", "precious"]  # no staging left
    monkeypatch.undo()
    assert train_command([data], out, seed=2, quiet=True, params=FAST, overwrite=True) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} != before
    Detector.load(out)


def test_a_single_class_validation_set_is_refused_like_single_class_training_data(tmp_path, capsys):
    # It used to train, print "TPR 0.000" on no machine texts and write a card whose score
    # histograms were malformed (the reliability checks then silently said "unchecked").
    data = write_corpus(tmp_path / "d.jsonl", 40, 40, seed=6)
    only_human = write_corpus(tmp_path / "v.jsonl", 20, 0, seed=7)
    assert train_command([data], tmp_path / "m", val=[only_human], quiet=True, params=FAST) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "v.jsonl: validation data (--val) has a single class (no machine rows)" in err
    assert not (tmp_path / "m").exists()
    only_machine = write_corpus(tmp_path / "w.jsonl", 0, 20, seed=8)
    assert train_command([data], tmp_path / "m", val=[only_machine], quiet=True, params=FAST) == 2
    assert "has a single class (no human rows)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "v.jsonl", "w.jsonl"]


def test_too_few_labels_for_the_default_recipe_are_refused_with_advice(tmp_path, capsys):
    # 25 + 25 records used to train a model that scored every text 0.5 (AUROC 0.5, TPR 0) and
    # exit 0: the experts' trees (leaves of 40 or more) could not split.
    data = write_corpus(tmp_path / "few.jsonl", 25, 25, seed=3)
    assert train_command([data], tmp_path / "m", quiet=True) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "(25 human, 25 machine rows)" in err and "need at least 60 of each class" in err
    assert "synthfilter adapt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    # The adapt command it gives can be pasted: files apart, the fields and labels carried over.
    other = tmp_path / "other one.jsonl"
    other.write_text(data.read_text())
    assert train_command([data, other], tmp_path / "m", quiet=True, label_field="label", human_label="human",
                         machine_label="machine", text_field="text") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"synthfilter adapt {data} '{other}' --out DIR" in err
    from synthfilter.detect.evaluate import LabelledData
    from synthfilter.detect.train import _adapt_command

    cmd = _adapt_command(LabelledData([], np.zeros(0), paths=[data]),
                         {"text_field": "doc.body", "label_field": "source", "human_label": "web",
                          "machine_label": "ours"})
    assert cmd == f"synthfilter adapt {data} --text-field doc.body --label-field source --human-label web " \
                  "--machine-label ours --out DIR"


def test_a_model_that_cannot_tell_the_classes_apart_is_not_written(tmp_path, monkeypatch, capsys):
    from synthfilter.detect import train as train_mod

    data = write_corpus(tmp_path / "d.jsonl", 25, 25, seed=3)
    # Below the minimum the trees cannot split and every text scores the same: the check after
    # training catches it whatever the minimum lets through.
    monkeypatch.setattr(train_mod, "min_per_class", lambda params: 20, raising=False)
    assert train_command([data], tmp_path / "m", quiet=True) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "25 human and 25 machine records" in err and "scores every text alike" in err
    assert "no model written" in err and "synthfilter adapt" in err
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]

    # A model that ranks the --val texts no better than chance (here their labels are swapped)
    # is not written either, and does not replace the model already there.
    data = write_corpus(tmp_path / "d2.jsonl", 40, 40, seed=6)
    swapped = write_corpus(tmp_path / "v.jsonl", 20, 20, seed=7, human_label="machine", machine_label="human")
    out = tmp_path / "m"
    assert train_command([data], out, seed=1, quiet=True, params=FAST) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert train_command([data], out, val=[swapped], seed=2, quiet=True, params=FAST, overwrite=True) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "ranks no better than chance (AUROC 0.0" in err and "on the --val data" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "d2.jsonl", "m", "v.jsonl"]  # no staging left


def test_the_card_names_its_data_files_by_absolute_path_and_nested_fields_are_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [json.loads(x) for x in write_corpus(tmp_path / "flat.jsonl", 40, 40, seed=4).read_text().splitlines()]
    nested = [{"doc": {"body": r["text"]}, "meta": {"who": r["label"], "site": r["domain"]}} for r in rows]
    (tmp_path / "nested.jsonl").write_text("".join(json.dumps(r) + "\n" for r in nested), encoding="utf-8")
    from pathlib import Path

    code = train_command([Path("nested.jsonl")], Path("m"), val=[Path("nested.jsonl")], quiet=True, params=FAST,
                         text_field="doc.body", label_field="meta.who", balance_by="meta.site")
    assert code == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training_data"]["files"] == [str(tmp_path / "nested.jsonl")]
    assert card["validation_data"]["files"] == [str(tmp_path / "nested.jsonl")]
    assert card["training_data"]["n_human"] == 40 and card["training_data"]["n_machine"] == 40
    assert set(card["metrics"]["calibration_share"]) and card["balanced_by"]["field"] == "meta.site"
