"""The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code": with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k),
computed as the numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k / i)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) passes."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(results_per_problem: Sequence[Sequence[bool]], k: int) -> float:
    """Mean pass@k over problems; each problem's list holds one pass/fail per sample (n = its length)."""
    if not results_per_problem:
        raise ValueError("no problems to score")
    scores = [pass_at_k(len(r), int(sum(bool(x) for x in r)), k) for r in results_per_problem]
    return float(np.mean(scores))
