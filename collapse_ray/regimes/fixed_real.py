"""fixed-real: the amount of real data and its share of the training set, set independently.

Every generation >= 1 trains on exactly ``real_examples`` real examples (the same ones each
generation: the first ``real_examples`` of the task's seed-shuffled real training set) plus
``real_examples * (1 - real_share) / real_share`` examples of generation g-1's synthetic data, so
real data is exactly ``real_share`` of the set. Recent work finds the absolute amount of real data,
not only its proportion, decides whether synthetic data helps or hurts (Kazdan et al. 2024); a
grid over both fields separates the two. The training set's size follows from the two fields
(sizes.train_examples is the size of generation 0's set and of the real data the task loads).
"""
from __future__ import annotations

from dataclasses import dataclass

from collapse_ray.regimes import register_regime
from collapse_ray.regimes.base import Regime, sample
from collapse_ray.typed import require


@register_regime("fixed-real")
@dataclass(frozen=True)
class FixedReal(Regime):
    real_examples: int    # required: real examples in each training set
    real_share: float     # required: their share of the training set, in (0, 1]

    def check(self, where: str) -> None:
        require(self.real_examples >= 1, f"{where}.real_examples", f"must be at least 1, got {self.real_examples}")
        require(0.0 < self.real_share <= 1.0, f"{where}.real_share", f"must be in (0, 1], got {self.real_share}")
        exact = self.real_examples * (1.0 - self.real_share) / self.real_share
        require(abs(exact - round(exact)) < 1e-6 * max(1.0, exact), f"{where}.real_share",
                f"{self.real_examples} real examples at a share of {self.real_share:g} would need "
                f"{exact:.2f} synthetic examples; choose a share that makes that a whole number "
                f"(e.g. 0.5, 0.25 or 0.2)")

    def check_sizes(self, sizes, where: str) -> None:
        require(self.real_examples <= sizes.train_examples, f"{where}.real_examples",
                f"{self.real_examples} is more than the task's real training set "
                f"(sizes.train_examples = {sizes.train_examples})")

    @property
    def synthetic_examples(self) -> int:
        return round(self.real_examples * (1.0 - self.real_share) / self.real_share)

    @property
    def uses_synthetic(self) -> bool:
        return self.synthetic_examples > 0

    def label(self) -> str:
        return f"{self.name}{self.real_examples}-share{self.real_share:g}"

    def mix_later(self, real, history, generation, size, rng):
        if len(real) < self.real_examples:
            raise ValueError(f"regime {self.name} needs {self.real_examples} real examples, the task has {len(real)}")
        anchor = list(real[:self.real_examples])
        return sample(anchor, len(anchor), rng) + sample(history[generation - 1], self.synthetic_examples, rng)
