"""Vulnerability-detection metrics (scikit-learn). Positive class: 1 = vulnerable."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

POSITIVE = 1


def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """F1, precision and recall of the positive class (0 where undefined), accuracy, and the
    share of items predicted positive (a collapsed classifier drifts to 0 or 1 here)."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal-length 1-D")
    if len(y_true) == 0:
        raise ValueError("no labels to score")
    kw = dict(pos_label=POSITIVE, average="binary", labels=[0, 1], zero_division=0)
    return {
        "f1": float(f1_score(y_true, y_pred, **kw)),
        "precision": float(precision_score(y_true, y_pred, **kw)),
        "recall": float(recall_score(y_true, y_pred, **kw)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "predicted_positive_rate": float(np.mean(y_pred == POSITIVE)),
    }


def ranking_metrics(y_true: Sequence[int], positive_scores: Sequence[float]) -> dict[str, float]:
    """ROC-AUC and average precision of the scores given to the positive class: whether the model
    ranks vulnerable code above the rest at all, whatever threshold F1's argmax uses (a model that
    learned the 13% base rate says "no" to everything: F1 0, yet it may still rank). And
    ``f1_at_prevalence``: F1 when the items with the k highest scores are called positive, k the
    number of positives (the threshold a classifier calibrated to the base rate would use;
    precision = recall = F1 there, i.e. R-precision); tied scores keep the items' order. Empty when
    the labels hold one class only (all three are undefined then)."""
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(positive_scores, dtype=float)
    if y_true.shape != scores.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and scores {scores.shape} must be equal-length 1-D")
    if len(set(y_true.tolist())) < 2:
        return {}
    top_k = np.argsort(-scores, kind="stable")[:int(np.sum(y_true == POSITIVE))]
    flagged = np.zeros_like(y_true)
    flagged[top_k] = POSITIVE
    return {"roc_auc": float(roc_auc_score(y_true, scores)),
            "average_precision": float(average_precision_score(y_true, scores, pos_label=POSITIVE)),
            "f1_at_prevalence": float(f1_score(y_true, flagged, pos_label=POSITIVE, zero_division=0))}
