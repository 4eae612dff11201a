"""accumulate: all the real data plus every earlier generation's synthetic data (Gerstgrasser et
al. 2024); the training set grows by one synthetic set per generation."""
from __future__ import annotations

from dataclasses import dataclass

from collapse_ray.regimes import register_regime
from collapse_ray.regimes.base import Regime, sample


@register_regime("accumulate")
@dataclass(frozen=True)
class Accumulate(Regime):
    def mix_later(self, real, history, generation, size, rng):
        out = sample(real, size, rng)
        for past in history[:generation]:
            out.extend(past)
        return out
