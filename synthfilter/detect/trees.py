"""Gradient-boosted trees as plain arrays: exported from scikit-learn's
HistGradientBoostingClassifier, saved with ``np.savez``, evaluated with vectorised numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TreeEnsemble:
    """A binary boosted-tree model: ``raw(x) = baseline + sum_t leaf_value_t(x)`` (log-odds).

    All trees share flat node arrays; ``roots[t]`` is the index of tree ``t``'s root. A sample
    goes left when ``x[feature] <= threshold`` (NaN follows ``missing_left``).
    """

    def __init__(self, baseline: float, roots: np.ndarray, feature: np.ndarray, threshold: np.ndarray,
                 left: np.ndarray, right: np.ndarray, missing_left: np.ndarray, is_leaf: np.ndarray,
                 value: np.ndarray, n_features: int) -> None:
        self.baseline = float(baseline)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.missing_left = np.asarray(missing_left, dtype=bool)
        self.is_leaf = np.asarray(is_leaf, dtype=bool)
        self.value = np.asarray(value, dtype=np.float64)
        self.n_features = int(n_features)
        self._compiled = _compiled_predictors(self)

    @classmethod
    def from_sklearn(cls, model) -> "TreeEnsemble":  # noqa: ANN001 - any fitted HGB classifier
        """Copy the trees out of a fitted binary ``HistGradientBoostingClassifier``."""
        if getattr(model, "n_trees_per_iteration_", 1) != 1:
            raise ValueError("only binary classifiers can be exported")
        if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
            raise ValueError("categorical splits are not supported")
        roots, parts = [], []
        offset = 0
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            roots.append(offset)
            parts.append((nodes, offset))
            offset += len(nodes)
        cat = lambda f: np.concatenate([f(n, o) for n, o in parts])  # noqa: E731
        return cls(
            baseline=float(np.ravel(model._baseline_prediction)[0]),
            roots=np.array(roots),
            feature=cat(lambda n, o: n["feature_idx"]),
            threshold=cat(lambda n, o: n["num_threshold"]),
            left=cat(lambda n, o: n["left"].astype(np.int64) + o),
            right=cat(lambda n, o: n["right"].astype(np.int64) + o),
            missing_left=cat(lambda n, o: n["missing_go_to_left"]),
            is_leaf=cat(lambda n, o: n["is_leaf"]),
            value=cat(lambda n, o: n["value"]),
            n_features=model.n_features_in_,
        )

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw log-odds for each row of ``x`` (shape ``(n, n_features)``)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected shape (n, {self.n_features}), got {x.shape}")
        if self._compiled is not None and len(x):
            return _sum_compiled(self._compiled, self.baseline, x)
        return self.decision_function_numpy(x)

    def decision_function_numpy(self, x: np.ndarray) -> np.ndarray:
        """The same log-odds computed with numpy only (the fallback, and the reference in tests)."""
        x = np.asarray(x, dtype=np.float64)
        n, n_trees = x.shape[0], len(self.roots)
        # One (sample, tree) cursor per pair, all advanced together one level at a time.
        node = np.tile(self.roots, n)
        row = np.repeat(np.arange(n), n_trees)
        active = np.flatnonzero(~self.is_leaf[node])
        while active.size:
            nd = node[active]
            xv = x[row[active], self.feature[nd]]
            go_left = np.where(np.isnan(xv), self.missing_left[nd], xv <= self.threshold[nd])
            node[active] = np.where(go_left, self.left[nd], self.right[nd])
            active = active[~self.is_leaf[node[active]]]
        return self.baseline + self.value[node].reshape(n, n_trees).sum(axis=1)

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, baseline=np.array([self.baseline]), roots=self.roots, feature=self.feature.astype(np.int32),
            threshold=self.threshold, left=self.left.astype(np.int32), right=self.right.astype(np.int32),
            missing_left=self.missing_left, is_leaf=self.is_leaf, value=self.value,
            n_features=np.array([self.n_features]),
        )

    @classmethod
    def load(cls, path: Path) -> "TreeEnsemble":
        with np.load(path, allow_pickle=False) as z:
            return cls(float(z["baseline"][0]), z["roots"], z["feature"], z["threshold"], z["left"], z["right"],
                       z["missing_left"], z["is_leaf"], z["value"], int(z["n_features"][0]))


def _compiled_predictors(trees: TreeEnsemble) -> tuple | None:
    """The trees as scikit-learn's compiled per-tree predictors (about ten times faster than the
    numpy walk), built from our arrays; None where this scikit-learn lays them out differently.

    The predictor classes are internal to scikit-learn, so the result is checked against the
    numpy evaluation on probe rows before it is used.
    """
    try:
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

        ends = np.r_[trees.roots[1:], len(trees.feature)]
        predictors = []
        for start, end in zip(trees.roots, ends):
            nodes = np.zeros(end - start, dtype=PREDICTOR_RECORD_DTYPE)
            nodes["value"] = trees.value[start:end]
            nodes["feature_idx"] = trees.feature[start:end]
            nodes["num_threshold"] = trees.threshold[start:end]
            nodes["missing_go_to_left"] = trees.missing_left[start:end]
            leaf = trees.is_leaf[start:end]
            nodes["is_leaf"] = leaf
            nodes["left"] = np.where(leaf, 0, trees.left[start:end] - start)
            nodes["right"] = np.where(leaf, 0, trees.right[start:end] - start)
            empty = np.zeros((0, 8), dtype=np.uint32)
            predictors.append(TreePredictor(nodes, empty, empty))
        compiled = (predictors, np.zeros((0, 8), dtype=np.uint32), np.zeros(trees.n_features, dtype=np.uint32))
        probe = _probe_rows(trees)
        if not np.allclose(_sum_compiled(compiled, trees.baseline, probe), trees.decision_function_numpy(probe),
                           rtol=0, atol=1e-9):
            return None
        return compiled
    except Exception:  # noqa: BLE001 - any change inside scikit-learn: use numpy
        return None


def _sum_compiled(compiled: tuple, baseline: float, x: np.ndarray) -> np.ndarray:
    """Log-odds from the compiled predictors: the baseline plus every tree's value (one thread)."""
    predictors, no_cats, f_map = compiled
    out = np.full(len(x), baseline)
    for p in predictors:
        out += p.predict(x, no_cats, f_map, 1)
    return out


def _probe_rows(trees: TreeEnsemble, n: int = 64) -> np.ndarray:
    """Rows that reach both sides of many splits, and missing values, to check a fast path."""
    rng = np.random.default_rng(0)
    x = np.zeros((n, trees.n_features))
    split = ~trees.is_leaf
    for f in range(trees.n_features):
        th = trees.threshold[split & (trees.feature == f)]
        x[:, f] = rng.choice(th, n) + rng.choice([-1e-6, 1e-6], n) if len(th) else rng.normal(size=n)
    x[rng.random(x.shape) < 0.05] = np.nan
    return x
