"""The numpy bigram LM and the exported boosted trees."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from synthfilter.detect.features import detector_text, fasttext_view
from synthfilter.detect.lm import BigramLM, segment_stats, surprisal_features
from synthfilter.detect.trees import TreeEnsemble

from .conftest import human_text, machine_text


def _tokens(texts):
    return [fasttext_view(detector_text(t)).split() for t in texts]


def test_lm_prefers_its_own_style_and_round_trips(tmp_path, rng):
    human = _tokens([human_text(rng) for _ in range(80)])
    machine = _tokens([machine_text(rng) for _ in range(80)])
    lm = BigramLM.fit(human)
    held_h = _tokens([human_text(rng) for _ in range(20)])
    held_m = _tokens([machine_text(rng) for _ in range(20)])
    fh, _, _ = surprisal_features(lm, held_h)
    fm, _, _ = surprisal_features(lm, held_m)
    assert fh[:, 0].mean() < fm[:, 0].mean()  # lower mean surprisal on the style it learned
    lm.save(tmp_path / "lm.npz")
    again = BigramLM.load(tmp_path / "lm.npz")
    np.testing.assert_allclose(surprisal_features(again, held_m)[0], fm)
    assert machine  # both styles built


def test_lm_handles_empty_documents(rng):
    lm = BigramLM.fit(_tokens([human_text(rng) for _ in range(10)]))
    feats, _, _ = surprisal_features(lm, [[], ["the"], []])
    assert feats.shape == (3, 8) and np.isfinite(feats).all()
    assert (feats[0] == 0).all()


def test_segment_stats_matches_per_document_numpy():
    r = np.random.default_rng(0)
    lengths = [5, 1, 0, 17, 3]
    vals = [r.normal(size=n) for n in lengths]
    doc = np.repeat(np.arange(len(lengths)), lengths)
    got = segment_stats(np.concatenate(vals), doc, len(lengths))
    for i, v in enumerate(vals):
        if not len(v):
            assert (got[i] == 0).all()
            continue
        s = np.sort(v)
        n = len(v)
        expect = [v.mean(), v.std(), s[int(0.1 * (n - 1))], s[int(0.5 * (n - 1))], s[int(0.9 * (n - 1))],
                  np.abs(np.diff(v)).mean() if n > 1 else 0.0]
        np.testing.assert_allclose(got[i], expect, atol=1e-9)


def test_exported_trees_match_sklearn(tmp_path):
    r = np.random.default_rng(1)
    x = r.normal(size=(600, 6))
    y = ((x[:, 0] + x[:, 1] * x[:, 2] + r.normal(scale=0.3, size=600)) > 0).astype(int)
    x[r.random(x.shape) < 0.02] = np.nan  # missing values take the learned side
    clf = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf)
    test = r.normal(size=(300, 6))
    test[r.random(test.shape) < 0.05] = np.nan
    np.testing.assert_allclose(trees.decision_function(test), clf.decision_function(test), atol=1e-9)
    trees.save(tmp_path / "t.npz")
    again = TreeEnsemble.load(tmp_path / "t.npz")
    np.testing.assert_allclose(again.decision_function(test), clf.decision_function(test), atol=1e-9)



def test_loading_and_scoring_with_the_detector_never_imports_scikit_learn():
    # scikit-learn (with scipy and pandas) costs a scoring process ~170 MB; only training needs it.
    import subprocess
    import sys

    code = ("import sys; from synthfilter.detect.model import get_detector; "
            "p = get_detector(None).predict_proba(['A short note about the weather, written on a train.'] * 3); "
            "assert len(p) == 3; print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_calibrator_is_monotone_calibrated_and_keeps_ranking():
    from synthfilter.detect.train import fit_calibrator

    r = np.random.default_rng(5)
    raw = r.normal(size=20_000) * 2.0
    y = (r.random(20_000) < 1 / (1 + np.exp(-raw))).astype(int)
    cal = fit_calibrator(raw, y)
    grid = np.linspace(-6, 6, 500)
    p = cal(grid)
    assert np.all(np.diff(p) >= 0) and p[0] >= 0 and p[-1] <= 1
    # centred isotonic: far fewer ties than the step function it comes from
    assert len(np.unique(cal(raw))) > 0.5 * len(np.unique(raw))
    mid = np.abs(grid) < 3
    np.testing.assert_allclose(p[mid], 1 / (1 + np.exp(-grid[mid])), atol=0.06)


def test_shared_key_order_and_vocabulary_ids_give_the_same_surprisal(rng):
    from synthfilter.detect.features import TokenIds
    from synthfilter.detect.lm import document_starts

    docs = _tokens([human_text(rng) for _ in range(40)])
    lm_h = BigramLM.fit(docs[:20], BigramLM.vocabulary(docs, 1))
    lm_m = BigramLM.fit(docs[20:], lm_h.words)
    held = _tokens([machine_text(rng) for _ in range(15)]) + [[]]
    tid = TokenIds.of(held)
    ids = lm_h.ids_of(tid)
    np.testing.assert_array_equal(ids, lm_h.ids([w for d in held for w in d]))
    # Numbered against the LM's own vocabulary, the batch carries the LM's ids directly.
    np.testing.assert_array_equal(lm_h.ids_of(TokenIds.of(held, lm_h.token_vocabulary)), ids)
    np.testing.assert_array_equal(lm_m.ids_of(TokenIds.of(held, lm_h.token_vocabulary)), ids)
    order = lm_h.key_order(ids, document_starts(tid.lengths))
    for lm in (lm_h, lm_m):
        plain = surprisal_features(lm, held)
        shared = surprisal_features(lm, held, ids, order)
        for a, b in zip(plain, shared):
            np.testing.assert_array_equal(a, b)
