"""Drift of pseudo-labels: for a classification task whose synthetic data are the model's own
labels on the pool, what drifts is the labels, not the text (which is the real input plus a
label word).

Every statistic is over the synthetic examples kept that generation (after the mitigations), each
counting once; NaN when there are none. ``confidence`` is the probability the model gave the label
it chose.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

LABEL_DRIFT_SETTINGS: dict = {
    "label_drift_denominator": "kept synthetic examples of the generation",
    "label_drift_confidence_sd": "population standard deviation (ddof = 0)",
    "label_drift_entropy": "Shannon entropy of the pseudo-labels' empirical distribution, bits, 0 log 0 = 0",
}


def label_entropy_bits(labels: Sequence[int]) -> float:
    """Entropy (bits) of the labels' empirical distribution: 0 when all agree, 1 for a 50/50 split
    of two labels; NaN for no labels."""
    if not labels:
        return float("nan")
    n = len(labels)
    return float(-sum(c / n * math.log2(c / n) for c in Counter(labels).values()) + 0.0)


def label_drift(pseudo_labels: Sequence[int], confidences: Sequence[float], true_labels: Sequence[int],
                positive: int = 1) -> dict[str, float]:
    """Drift metrics of one generation's pseudo-labels, under stable ``drift/label_...`` names.

    ``true_labels[i]`` is the dataset's label of the example ``pseudo_labels[i]`` was given to.
    """
    n = len(pseudo_labels)
    if not len(confidences) == len(true_labels) == n:
        raise ValueError(f"label_drift: {n} pseudo-labels, {len(confidences)} confidences, "
                         f"{len(true_labels)} true labels; they must match one to one")
    nan = float("nan")
    pseudo, truth = np.asarray(pseudo_labels), np.asarray(true_labels)
    conf = np.asarray(confidences, dtype=float)
    return {
        "drift/n_labels": float(n),
        "drift/label_positive_rate": float(np.mean(pseudo == positive)) if n else nan,
        "drift/label_dataset_positive_rate": float(np.mean(truth == positive)) if n else nan,
        "drift/label_confidence_mean": float(conf.mean()) if n else nan,
        "drift/label_confidence_sd": float(conf.std()) if n else nan,
        "drift/label_agreement": float(np.mean(pseudo == truth)) if n else nan,
        "drift/label_entropy": label_entropy_bits(list(pseudo_labels)),
    }
