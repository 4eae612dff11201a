"""synthetic-only (replace): generation g trains only on what generation g-1's model wrote
(Shumailov et al. 2024)."""
from __future__ import annotations

from dataclasses import dataclass

from collapse_ray.regimes import register_regime
from collapse_ray.regimes.base import Regime, sample


@register_regime("synthetic-only")
@dataclass(frozen=True)
class SyntheticOnly(Regime):
    def mix_later(self, real, history, generation, size, rng):
        return sample(history[generation - 1], size, rng)
