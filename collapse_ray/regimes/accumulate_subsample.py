"""accumulate-subsample: a training set of fixed size (sizes.train_examples) drawn from all the real
data and every earlier generation's synthetic data (Kazdan et al. 2024, "Collapse or Thrive?"):
the data accumulates, the compute per generation does not grow.

The draw is stratified: each source (the real data, each generation's synthetic set) gives a number
of examples proportional to its size, apportioned by largest remainder (ties to the earlier source),
and sampled without replacement inside it. The expected shares equal a uniform draw's, but they
are exact instead of varying by chance from seed to seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from collapse_ray.regimes import register_regime
from collapse_ray.regimes.base import Regime, sample


def proportional_counts(source_sizes: Sequence[int], total: int) -> list[int]:
    """``total`` apportioned over sources in proportion to their sizes (largest remainder, in
    integers, so the counts always sum to ``total``)."""
    pool = sum(source_sizes)
    counts = [total * n // pool for n in source_sizes]
    by_remainder = sorted(range(len(source_sizes)), key=lambda i: (-(total * source_sizes[i] % pool), i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


@register_regime("accumulate-subsample")
@dataclass(frozen=True)
class AccumulateSubsample(Regime):
    def mix_later(self, real, history, generation, size, rng):
        sources = [real, *history[:generation]]
        counts = proportional_counts([len(s) for s in sources], size)
        return [ex for source, n in zip(sources, counts) for ex in sample(source, n, rng)]
