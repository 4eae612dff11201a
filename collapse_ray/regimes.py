"""How each generation's training set is mixed from real and synthetic data.

Each regime is a pure function of (real pool, synthetic history, generation, size, rng); the
examples keep their provenance, so every training set can be audited afterwards.
Generation 0 always trains on real data: it is the reference the later generations drift from.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

from collapse_ray.examples import Example

History = Sequence[Sequence[Example]]  # history[k] = synthetic data written by generation k's model


def _sample(pool: Sequence[Example], n: int, rng: random.Random) -> list[Example]:
    """n examples without replacement; when the pool is smaller, all of it and then repeats."""
    if n > 0 and not pool:
        raise ValueError("nothing to sample from: the previous generation left no synthetic data "
                         "(every sample was filtered out?)")
    if n <= len(pool):
        return rng.sample(list(pool), n)
    return list(pool) + [rng.choice(pool) for _ in range(n - len(pool))]


def real_only(real, history, generation, size, rng):
    return _sample(real, size, rng)


def synthetic_only(real, history, generation, size, rng):
    if generation == 0:
        return _sample(real, size, rng)
    return _sample(history[generation - 1], size, rng)


def hybrid(real, history, generation, size, rng, alpha: float = 0.5):
    """A fraction alpha of real data, the rest from the previous generation's synthetic data."""
    if generation == 0:
        return _sample(real, size, rng)
    n_real = round(alpha * size)
    return _sample(real, n_real, rng) + _sample(history[generation - 1], size - n_real, rng)


def accumulate(real, history, generation, size, rng):
    """All the real data plus every earlier generation's synthetic data (Gerstgrasser et al. 2024):
    the training set grows by one synthetic set per generation."""
    out = _sample(real, size, rng)
    for past in history[:generation]:
        out.extend(past)
    return out


REGIMES: dict[str, Callable] = {
    "real-only": real_only,
    "synthetic-only": synthetic_only,
    "hybrid": hybrid,
    "accumulate": accumulate,
}


def mix(regime: str, real: Sequence[Example], history: History, generation: int, size: int,
        rng: random.Random, alpha: float = 0.5) -> list[Example]:
    if generation > 0 and len(history) < generation:
        raise ValueError(f"generation {generation} needs the synthetic data of generation {generation - 1}")
    if regime == "hybrid":
        return hybrid(real, history, generation, size, rng, alpha=alpha)
    return REGIMES[regime](real, history, generation, size, rng)


def provenance(examples: Sequence[Example]) -> dict[str, int]:
    """Counts by origin: {"real": n, "synthetic_g0": n, ...}."""
    counts: dict[str, int] = {}
    for ex in examples:
        key = "real" if ex.generation is None else f"synthetic_g{ex.generation}"
        counts[key] = counts.get(key, 0) + 1
    return counts
