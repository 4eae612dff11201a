"""Vulnerability-detection metrics (scikit-learn). Positive class: 1 = vulnerable."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

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
