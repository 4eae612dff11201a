"""real-only: every generation trains on real data; the control that never sees synthetic data."""
from __future__ import annotations

from dataclasses import dataclass

from collapse_ray.regimes import register_regime
from collapse_ray.regimes.base import Regime, sample


@register_regime("real-only")
@dataclass(frozen=True)
class RealOnly(Regime):
    @property
    def uses_synthetic(self) -> bool:
        return False

    def mix_later(self, real, history, generation, size, rng):
        return sample(real, size, rng)
