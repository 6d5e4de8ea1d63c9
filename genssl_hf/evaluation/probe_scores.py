"""Scores of frozen features: weighted kNN and a logistic-regression linear probe, each as the test
split's mean ROC AUC (as fine-tuning reports it). Used by :mod:`genssl_hf.evaluation.frozen_features`.

* kNN: cosine similarity, ``k = 20`` nearest labelled training features, votes weighted by
  ``exp(sim / 0.07)`` (Wu et al. 2018; the package's SSL monitor);
* linear probe: scikit-learn ``LogisticRegression`` on features standardised with the training
  subset's statistics (one per class for multi-label data, multinomial for multi-class); the inverse
  regularisation ``C`` is chosen on the validation split from a grid, never on test.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from genssl_hf.core.classification_metrics import classification_metrics
from genssl_hf.training.ssl.monitor import knn_scores

__all__ = ["DEFAULT_C_GRID", "mean_auc", "knn_class_scores", "knn_auc", "linear_probe_scores", "linear_probe_auc"]

# 1e-4 .. 1e4: on Kermany at 100 % labels a 1e-3 .. 1e2 grid picked its upper edge
DEFAULT_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def _one_hot_targets(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, C)`` one-hot (multi-class indices) or the multi-hot matrix as it is."""
    if targets.ndim == 2:
        return targets.astype(np.float32)
    return np.eye(num_classes, dtype=np.float32)[targets.astype(np.int64)]


def mean_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Test mean ROC AUC as fine-tuning reports it (NaN when no class has both outcomes)."""
    value = classification_metrics(targets, scores)["mean_auc"]
    return float("nan") if value is None else float(value)


def knn_class_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> np.ndarray:
    """``(N_test, C)`` weighted-kNN class scores (:func:`genssl_hf.training.ssl.monitor.knn_scores`)."""
    votes = _one_hot_targets(train_y, num_classes)
    return knn_scores(
        torch.from_numpy(train_x), torch.from_numpy(votes), torch.from_numpy(test_x), k=k, temperature=temperature
    ).numpy()


def knn_auc(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Test mean AUC of the weighted kNN classifier."""
    return mean_auc(test_y, knn_class_scores(train_x, train_y, test_x, num_classes, k=k, temperature=temperature))


def _fit_predict(
    train_x: np.ndarray, train_y: np.ndarray, eval_x: Sequence[np.ndarray], num_classes: int, c: float, seed: int
) -> list[np.ndarray]:
    """Logistic regression(s) with inverse regularisation ``c``: ``(N, C)`` probabilities per array of
    ``eval_x``. A class with a single outcome in the training rows scores its training rate."""
    from sklearn.linear_model import LogisticRegression

    outs = [np.zeros((len(x), num_classes)) for x in eval_x]
    if train_y.ndim == 2:
        for j in range(num_classes):
            col = train_y[:, j].astype(np.int64)
            if col.min() == col.max():
                for o in outs:
                    o[:, j] = float(col[0])
                continue
            clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(train_x, col)
            for o, x in zip(outs, eval_x):
                o[:, j] = clf.predict_proba(x)[:, 1]
        return outs
    present = np.unique(train_y)
    if len(present) < 2:
        for o in outs:
            o[:, int(present[0])] = 1.0
        return outs
    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(train_x, train_y)
    for o, x in zip(outs, eval_x):
        o[:, clf.classes_.astype(np.int64)] = clf.predict_proba(x)
    return outs


def linear_probe_scores(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    test_x: np.ndarray,
    num_classes: int,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear probe on standardised features: ``C`` chosen by validation mean AUC (ties: the
    smallest ``C``, the strongest regularisation), the probe of that ``C`` (fit on the training
    rows) scores the test rows. The test labels are not an input. Returns ``{"C", "validation_auc"
    (C -> AUC), "test_scores"}``."""
    from sklearn.preprocessing import StandardScaler

    if not len(c_grid):
        raise ValueError("c_grid is empty")
    scaler = StandardScaler().fit(train_x)
    tr, va, te = (scaler.transform(x) for x in (train_x, val_x, test_x))
    val_auc: dict[float, float] = {}
    best_c, best_auc, best_test = None, -math.inf, None
    for c in sorted(float(v) for v in c_grid):
        val_scores, test_scores = _fit_predict(tr, train_y, [va, te], num_classes, c, seed)
        auc = mean_auc(val_y, val_scores)
        val_auc[c] = auc
        if best_c is None or (not math.isnan(auc) and auc > best_auc):
            best_c, best_auc, best_test = c, (auc if not math.isnan(auc) else -math.inf), test_scores
    return {"C": best_c, "validation_auc": val_auc, "test_scores": best_test}


def linear_probe_auc(
    train_x,
    train_y,
    val_x,
    val_y,
    test_x,
    test_y,
    num_classes: int,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    seed: int = 0,
) -> tuple[float, float]:
    """``(test mean AUC, chosen C)`` of :func:`linear_probe_scores`."""
    probe = linear_probe_scores(train_x, train_y, val_x, val_y, test_x, num_classes, c_grid=c_grid, seed=seed)
    return mean_auc(test_y, probe["test_scores"]), probe["C"]
