"""The hashed TF-IDF head, the expected-surprisal features and ``synthfilter adapt``."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from synthfilter.detect.features import TokenIds, tokenize
from synthfilter.detect.linear import HashedLinear, TokenHasher, tfidf_rows
from synthfilter.detect.lm import BOS, BigramLM, EXPECTED_STAT_NAMES, document_starts, expected_surprisal_features
from synthfilter.detect.model import Detector

from .conftest import human_text, machine_text, write_corpus


def _batch(texts: list[str]):
    toks = [tokenize(t.lower()) for t in texts]
    tid = TokenIds.of(toks)
    return toks, tid, TokenHasher().of(tid)


def test_hashed_head_scores_like_its_sparse_matrix_and_round_trips(tmp_path):
    r = random.Random(5)
    texts = [human_text(r, 8) for _ in range(60)] + [machine_text(r, 8) for _ in range(60)]
    y = np.array([0] * 60 + [1] * 60)
    _, tid, hashes = _batch(texts)
    head = HashedLinear.fit(hashes, tid.lengths, y, buckets=2**14, min_df=1)
    x = tfidf_rows(hashes, tid.lengths, head.idf.astype(np.float64))
    np.testing.assert_allclose(head.decision(hashes, tid.lengths), x @ head.weights.astype(np.float64) + head.bias,
                               rtol=1e-6, atol=1e-6)
    assert (head.decision(hashes, tid.lengths)[y == 1] > 0).mean() > 0.9
    head.save(tmp_path / "h.npz")
    back = HashedLinear.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(back.decision(hashes, tid.lengths), head.decision(hashes, tid.lengths))
    # Hashes do not depend on how a batch numbers its tokens: a shared vocabulary gives the same.
    lm = BigramLM.fit(_batch(texts)[0])
    toks = [tokenize(t.lower()) for t in texts]
    shared = TokenIds.of(toks, lm.token_vocabulary)
    np.testing.assert_array_equal(TokenHasher().of(shared), hashes)


def test_expected_surprisal_matches_a_brute_force_definition():
    r = random.Random(2)
    docs = [tokenize(human_text(r, 6).lower()) for _ in range(40)]
    lm = BigramLM.fit(docs, min_count=1)
    test = [tokenize(machine_text(r, 3).lower()), tokenize(human_text(r, 2).lower()), []]
    lengths = np.array([len(t) for t in test])
    ids = lm.ids([w for t in test for w in t])
    s, pos, seen = lm.token_lookup(ids, document_starts(lengths))
    got = expected_surprisal_features(lm, lengths, ids, s, pos, seen)
    assert got.shape == (3, len(EXPECTED_STAT_NAMES)) and (got[2] == 0).all()
    # Brute force: the whole next-word distribution after each context, one query per word.
    every = np.arange(lm.size)

    def entropy_after(prev: int) -> float:
        if prev == BOS:
            sv, _ = lm.token_surprisal(every, np.arange(lm.size))
        else:
            pairs = np.column_stack([np.full(lm.size, prev), every]).ravel()
            sv = lm.token_surprisal(pairs, np.arange(0, len(pairs), 2))[0][1::2]
        p = np.exp(-sv)
        assert p.sum() == pytest.approx(1.0, abs=1e-6)
        return float(-(p * np.log(p)).sum())

    k = 0
    for d, t in enumerate(test[:2]):
        gaps = [s[k + j] - entropy_after(BOS if j == 0 else int(ids[k + j - 1])) for j in range(len(t))]
        assert got[d, 0] == pytest.approx(np.mean(gaps), abs=1e-9)
        k += len(t)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from synthfilter.detect.train import TrainParams, train_command

    d = tmp_path_factory.mktemp("adapt")
    data = write_corpus(d / "train.jsonl", 80, 80, seed=11)
    fast = TrainParams(folds=2, calibration_share=0.25, head=dict(buckets=2**16, min_df=1, c=4.0),
                       trees=dict(learning_rate=0.1, max_iter=30, max_leaf_nodes=7, min_samples_leaf=5,
                                  l2_regularization=1.0))
    assert train_command([data], d / "model", seed=2, quiet=True, params=fast) == 0
    return d


def _labels(path, n, seed, swap=False):
    """Labelled records of a corpus the model never saw: here the labels of the two styles are
    swapped (a corpus where 'formal' is the human house style), the largest shift there is."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        machine = i % 2 == 1
        style_machine = machine != swap
        text = machine_text(r, r.randint(5, 10)) if style_machine else human_text(r, r.randint(5, 10))
        rows.append({"text": text, "label": "machine" if machine else "human"})
    path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    return path


def test_adapt_recovers_a_shifted_corpus_and_writes_an_honest_card(small_model, capsys):
    from synthfilter.cli import app
    from typer.testing import CliRunner

    d = small_model
    labels = _labels(d / "labels.jsonl", 120, seed=4, swap=True)
    res = CliRunner().invoke(app, ["adapt", str(labels), "--model", str(d / "model"), "--out", str(d / "adapted")])
    assert res.exit_code == 0, res.output
    assert "before" in res.output and "after" in res.output
    base, adapted = Detector.load(d / "model"), Detector.load(d / "adapted")
    card = adapted.card
    assert card["adapted_from"]["sha256"] == base.sha256 and card["adaptation"]["n"] == 120
    assert card["adaptation"]["inputs"] in ("experts", "all", "refit")  # the shipped ranking is wrong here
    assert card["adaptation"]["after_out_of_fold"]["auroc"] > 0.9 > card["adaptation"]["before"]["auroc"]
    # Its map is fitted on fold models' scores, whatever the base card said: the estimate keeps
    # the operating points' rates rather than reading the map (docs/ratio.md, "Estimators").
    assert card["calibrated_on"] == "out_of_fold"
    fresh = _labels(d / "fresh.jsonl", 60, seed=9, swap=True)
    rows = [json.loads(x) for x in fresh.read_text().splitlines()]
    y = np.array([x["label"] == "machine" for x in rows])
    p = adapted.predict_proba([x["text"] for x in rows])
    assert p[y].mean() - p[~y].mean() > 0.5
    assert adapted.sha256 != base.sha256


def test_adapt_refits_the_experts_on_the_replay_rows_plus_the_labels(small_model):
    from synthfilter.detect.adapt import adapt_command

    d = small_model
    config = json.loads((d / "model" / "config.json").read_text())
    assert "replay.npz" in config["files"]  # training kept the experts' rows (numbers, no text)
    labels = _labels(d / "refit.jsonl", 120, seed=4, swap=True)
    assert adapt_command([labels], d / "refit", model=d / "model", quiet=True, method="refit") == 0
    adapted_config = json.loads((d / "refit" / "config.json").read_text())
    assert adapted_config["adapter"]["method"] == "refit" and "adapter.npz" not in adapted_config["files"]
    for kind in config["kinds"]:  # the experts themselves changed, and their scales with them
        assert (d / "refit" / f"expert_{kind}.npz").read_bytes() != (d / "model" / f"expert_{kind}.npz").read_bytes()
        assert adapted_config["experts"][kind]["centre"] != config["experts"][kind]["centre"]
    adapted = Detector.load(d / "refit")  # np.load(allow_pickle=False) throughout
    assert adapted.adapter is None and adapted.card["adaptation"]["inputs"] == "refit"
    assert adapted.card["adaptation"]["after_out_of_fold"]["auroc"] > 0.9
    rows = [json.loads(x) for x in _labels(d / "fresh-refit.jsonl", 60, seed=9, swap=True).read_text().splitlines()]
    y = np.array([x["label"] == "machine" for x in rows])
    p = adapted.predict_proba([x["text"] for x in rows])
    assert p[y].mean() - p[~y].mean() > 0.5
    assert adapt_command([labels], d / "refit-again", model=d / "refit", quiet=True) == 2  # already adapted


def test_a_model_without_replay_rows_adapts_linearly_and_refuses_refit(small_model, capsys):
    import shutil

    from synthfilter.detect.adapt import adapt_command
    from synthfilter.detect.train import write_card

    d = small_model
    old = d / "no-replay"
    shutil.copytree(d / "model", old)  # a model written before replay rows existed
    (old / "replay.npz").unlink()
    config = json.loads((old / "config.json").read_text())
    config["files"].remove("replay.npz")
    (old / "config.json").write_text(json.dumps(config))
    write_card(old, json.loads((old / "card.json").read_text()))
    Detector.load(old)
    labels = _labels(d / "old.jsonl", 120, seed=4, swap=True)
    assert adapt_command([labels], d / "old-refit", model=old, quiet=True, method="refit") == 2
    assert "has no replay.npz" in capsys.readouterr().err.replace("\n", "")
    assert adapt_command([labels], d / "old-auto", model=old, quiet=True) == 0
    assert json.loads((d / "old-auto" / "config.json").read_text())["adapter"]["method"] == "linear"
    assert adapt_command([labels], d / "bad", model=d / "model", quiet=True, method="retrain") == 2
    assert "--method 'retrain'" in capsys.readouterr().err


def test_adapt_keeps_the_ranking_when_labels_agree_and_refuses_bad_input(small_model, capsys):
    from synthfilter.detect.adapt import adapt_command

    d = small_model
    labels = _labels(d / "agree.jsonl", 100, seed=5, swap=False)
    assert adapt_command([labels], d / "agree", model=d / "model", quiet=True) == 0
    card = Detector.load(d / "agree").card
    assert card["adaptation"]["after_out_of_fold"]["auroc"] >= card["adaptation"]["before"]["auroc"] - 0.01
    few = _labels(d / "few.jsonl", 20, seed=6)
    assert adapt_command([few], d / "few", model=d / "model", quiet=True) == 2
    assert "adapting needs at least 20 of each" in capsys.readouterr().err.replace("\n", " ")
    assert adapt_command([labels], d / "again", model=d / "agree", quiet=True) == 2
    assert "already adapted" in capsys.readouterr().err
    assert not (d / "few").exists() and not (d / "again").exists()


def test_the_adapted_card_is_its_own_and_keeps_the_base_card_apart(small_model, tmp_path, monkeypatch):
    # The adapted card used to keep the base model's created_with, train_seconds, validation
    # metrics and source_shift at the top level: run widened the adapted model's interval with
    # the base model's held-out-source rates, measured at other operating points.
    import shutil

    from synthfilter import ratio
    from synthfilter import reliability as rel
    from synthfilter.detect.adapt import adapt_command

    d = small_model
    base = tmp_path / "base"
    shutil.copytree(d / "model", base)
    card = json.loads((base / "card.json").read_text())
    card["source_shift"] = {"measured_on": "made up", "points": {"default": [
        {"held_out": "x", "train_tpr": 0.9, "train_fpr": 0.01, "tpr": 0.5, "fpr": 0.05}]}}
    (base / "card.json").write_text(json.dumps(card))
    assert ratio.rel.card_source_shift(card)
    monkeypatch.chdir(tmp_path)
    _labels(tmp_path / "labels.jsonl", 100, seed=5)
    from pathlib import Path

    assert adapt_command([Path("labels.jsonl")], Path("adapted"), model=Path("base"), quiet=True,
                         method="linear") == 0
    adapted = Detector.load(tmp_path / "adapted").card
    assert adapted["created_with"] == "synthfilter adapt" and "train_seconds" not in adapted
    assert adapted["adaptation"]["data"] == [str(tmp_path / "labels.jsonl")]
    assert adapted["adapted_from"]["path"] == str(tmp_path / "base")
    assert set(adapted["metrics"]) == {"adaptation_out_of_fold"}  # no base calibration_share / validation
    assert "source_shift" not in adapted and rel.card_source_shift(adapted) == {}
    assert "validation_data" not in adapted and "balanced_by" not in adapted
    kept = adapted["base_model"]
    assert kept["created_with"] == "synthfilter train" and kept["source_shift"] == card["source_shift"]
    assert kept["train_seconds"] == card["train_seconds"] and kept["metrics"] == card["metrics"]
    assert kept["model_id"] == card["model_id"] and "files" not in kept
    # A flagged estimate's advice for an adapted model: re-adapt the model it came from (an
    # adapted model cannot be adapted again), naming it; the plain advice for any other model.
    advice = rel.advice(adapted)
    assert card["model_id"] in advice and f"--model {tmp_path / 'base'}" in advice
    assert "cannot be adapted again" in advice and advice != rel.ADVICE
    assert rel.advice(card) == rel.ADVICE
    flagged = rel.Reliability("unreliable", ("a reason",), (), advice=advice)
    assert flagged.message().endswith(f"To fix it, {advice}")


def test_plain_rewrite_keeps_the_sentences_and_uses_only_frequent_words():
    from synthfilter.detect.augment import plain_rewrite

    r = random.Random(3)
    docs = [tokenize(human_text(r, 8).lower()) for _ in range(200)]
    lm = BigramLM.fit(docs, min_count=1)
    text = "The council argued about the parking rules - honestly. Why the mayor? Xylophonic quibbles abound."
    top = 40
    out = plain_rewrite([text], lm, top_n=top)[0]
    assert out == plain_rewrite([text], lm, top_n=top)[0]  # deterministic
    assert out != text.lower() and out.count(".") == text.count(".") and "?" in out and " - " in out
    v = lm.size
    counts = np.bincount(lm.bigram_keys % v, weights=lm.bigram_counts, minlength=v)
    counts[:2] = 0
    frequent = {([None, None, *lm.words])[i] for i in np.argsort(-counts, kind="stable")[:top]}
    for tok in tokenize(out):
        assert tok in frequent or not tok.isalpha(), tok


def test_adapt_never_replaces_what_is_not_its_own_model(small_model, tmp_path):
    from synthfilter.detect.adapt import adapt_command
    from synthfilter.detect.model import ModelError

    d = small_model
    labels = _labels(tmp_path / "labels.jsonl", 80, seed=21)
    # A folder of the user's: refused before any work, untouched (it used to be deleted).
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub" / "thesis.txt").write_text("important")
    with pytest.raises(ModelError, match="holds no synthfilter model"):
        adapt_command([labels], precious, model=d / "model", quiet=True, method="linear")
    assert (precious / "sub" / "thesis.txt").read_text() == "important"
    # A folder holding the model being adapted (it used to be deleted with it), a file, the model itself.
    with pytest.raises(ModelError, match="would replace .*the model being adapted"):
        adapt_command([labels], d, model=d / "model", quiet=True, method="linear")
    with pytest.raises(ModelError, match="would replace .*the model being adapted"):
        adapt_command([labels], d / "model", model=d / "model", quiet=True, method="linear")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ModelError, match="exists and is not a directory"):
        adapt_command([labels], tmp_path / "afile", model=d / "model", quiet=True, method="linear")
    # A model: replaced only with overwrite, and then whole (no staging directory left beside it).
    out = tmp_path / "adapted"
    assert adapt_command([labels], out, model=d / "model", quiet=True, method="linear") == 0
    with pytest.raises(ModelError, match="a model is already there; pass --overwrite"):
        adapt_command([labels], out, model=d / "model", quiet=True, method="linear")
    assert adapt_command([labels], out, model=d / "model", quiet=True, method="linear", seed=5, overwrite=True) == 0
    assert Detector.load(out).config["adapter"]["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted", "afile", "labels.jsonl", "precious"]


def test_adapt_says_when_it_keeps_the_shipped_ranking(small_model):
    # Labels the shipped model already ranks well: the simplest candidate wins and only rescales
    # the score; its pooled out-of-fold AUROC can print a hair under "before", which read as a
    # worse ranking. The command says the ranking is the shipped one.
    from synthfilter.cli import app
    from typer.testing import CliRunner

    d = small_model
    labels = _labels(d / "plain.jsonl", 120, seed=6, swap=False)
    res = CliRunner().invoke(app, ["adapt", str(labels), "--model", str(d / "model"), "--out", str(d / "recal"),
                                   "--method", "linear"])
    assert res.exit_code == 0, res.output
    assert Detector.load(d / "recal").card["adaptation"]["inputs"] == "combined"
    assert "the adapter recalibrates the shipped score (same ranking)" in res.output
