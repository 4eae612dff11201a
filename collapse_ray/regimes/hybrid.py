"""hybrid: a fixed share ``alpha`` of real data, the rest from generation g-1's synthetic data."""
from __future__ import annotations

from dataclasses import dataclass

from collapse_ray.regimes import register_regime
from collapse_ray.regimes.base import Regime, sample
from collapse_ray.typed import require


@register_regime("hybrid")
@dataclass(frozen=True)
class Hybrid(Regime):
    # The real share of each training set: round(alpha * sizes.train_examples) real examples.
    # Optional: 0.5 (an even mix) when not given.
    alpha: float = 0.5

    def check(self, where: str) -> None:
        require(0.0 <= self.alpha <= 1.0, f"{where}.alpha", f"must be in [0, 1], got {self.alpha}")

    @property
    def uses_synthetic(self) -> bool:
        return self.alpha < 1.0

    def label(self) -> str:
        return f"{self.name}{self.alpha:g}"

    def mix_later(self, real, history, generation, size, rng):
        n_real = round(self.alpha * size)
        return sample(real, n_real, rng) + sample(history[generation - 1], size - n_real, rng)
