"""What a regime is: its own parameters (dataclass fields), how it mixes a generation's training
set from real and synthetic data, and its part of a trial's name.

Generation 0 always trains on ``size`` real examples, the same set for every regime of a seed: it
is the reference the later generations drift from. A regime decides generations 1.. only. The
examples keep their provenance, so every training set can be audited afterwards.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

from collapse_ray.datatypes import Example

History = Sequence[Sequence[Example]]  # history[k] = synthetic data written by generation k's model


def sample(pool: Sequence[Example], n: int, rng: random.Random) -> list[Example]:
    """n examples without replacement; when the pool is smaller, all of it and then repeats."""
    if n > 0 and not pool:
        raise ValueError("nothing to sample from: the previous generation left no synthetic data "
                         "(every sample was filtered out?)")
    if n <= len(pool):
        return rng.sample(list(pool), n)
    return list(pool) + [rng.choice(pool) for _ in range(n - len(pool))]


@dataclass(frozen=True)
class Regime:
    """Subclasses are frozen dataclasses registered with ``@register_regime(name)``; their fields
    are the regime's parameters, required when they have no default."""

    # Set on the class by register_regime; a field, so dataclasses.asdict (MLflow params, the
    # grid's trial configs) writes it and the config reads the regime back.
    name: str = field(init=False)

    @property
    def uses_synthetic(self) -> bool:
        """Whether generations >= 1 train on synthetic data (the loop stops a trial whose
        mitigations left nothing for a regime that needs it)."""
        return True

    @classmethod
    def from_config(cls, value, where: str) -> "Regime":
        """The config builder builds a field typed ``Regime`` with this: the name picks the class."""
        from collapse_ray.regimes import parse_regime  # the registry, which imports this module

        return parse_regime(value, where)

    def check(self, where: str) -> None:
        """Raise ConfigError naming ``{where}.<field>`` for a bad parameter value."""

    def check_sizes(self, sizes, where: str) -> None:
        """Raise ConfigError for parameters that do not fit ``sizes`` (a SizesConfig)."""

    def label(self) -> str:
        """The regime's part of a trial's name."""
        return self.name

    def mix(self, real: Sequence[Example], history: History, generation: int, size: int,
            rng: random.Random) -> list[Example]:
        if generation == 0:
            return sample(real, size, rng)
        if len(history) < generation:
            raise ValueError(f"generation {generation} needs the synthetic data of generation {generation - 1}")
        return self.mix_later(real, history, generation, size, rng)

    def mix_later(self, real: Sequence[Example], history: History, generation: int, size: int,
                  rng: random.Random) -> list[Example]:
        """The training set of generation >= 1."""
        raise NotImplementedError


def provenance(examples: Sequence[Example]) -> dict[str, int]:
    """Counts by origin: {"real": n, "synthetic_g0": n, ...}."""
    counts: dict[str, int] = {}
    for ex in examples:
        key = "real" if ex.generation is None else f"synthetic_g{ex.generation}"
        counts[key] = counts.get(key, 0) + 1
    return counts
