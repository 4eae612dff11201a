import random
from collections import Counter

import pytest

from collapse_ray.examples import Example
from collapse_ray.regimes import mix, provenance

REAL = [Example(f"p{i}", f"c{i}") for i in range(100)]
HISTORY = [[Example(f"p{i}", f"s{g}_{i}", "synthetic", g) for i in range(40)] for g in range(3)]


def origins(examples):
    return Counter("real" if e.generation is None else e.generation for e in examples)


@pytest.mark.parametrize("regime", ["real-only", "synthetic-only", "hybrid", "accumulate"])
def test_generation_zero_trains_on_real_data_only(regime):
    out = mix(regime, REAL, [], 0, 32, random.Random(0))
    assert len(out) == 32 and origins(out) == {"real": 32}


def test_real_only_never_sees_synthetic_data():
    out = mix("real-only", REAL, HISTORY, 3, 32, random.Random(0))
    assert origins(out) == {"real": 32} and len({e.prompt for e in out}) == 32


def test_synthetic_only_uses_the_previous_generation():
    out = mix("synthetic-only", REAL, HISTORY, 2, 32, random.Random(0))
    assert origins(out) == {1: 32}


def test_synthetic_only_repeats_a_pool_smaller_than_the_set():
    out = mix("synthetic-only", REAL, HISTORY, 1, 50, random.Random(0))
    assert len(out) == 50 and origins(out) == {0: 50}
    assert {e.completion for e in out} == {e.completion for e in HISTORY[0]}


@pytest.mark.parametrize("alpha, n_real", [(0.0, 0), (0.25, 8), (0.5, 16), (1.0, 32)])
def test_hybrid_mixes_alpha_real(alpha, n_real):
    out = mix("hybrid", REAL, HISTORY, 3, 32, random.Random(0), alpha=alpha)
    counts = origins(out)
    assert len(out) == 32 and counts["real"] == n_real and counts[2] == 32 - n_real


def test_accumulate_keeps_all_real_and_every_past_synthetic_set():
    out = mix("accumulate", REAL, HISTORY, 3, 32, random.Random(0))
    assert origins(out) == {"real": 32, 0: 40, 1: 40, 2: 40}


def test_mixing_is_deterministic_in_the_rng():
    a = mix("hybrid", REAL, HISTORY, 2, 32, random.Random(7))
    b = mix("hybrid", REAL, HISTORY, 2, 32, random.Random(7))
    assert a == b


def test_missing_history_is_an_error():
    with pytest.raises(ValueError, match="generation 2 needs"):
        mix("synthetic-only", REAL, HISTORY[:1], 2, 8, random.Random(0))
    with pytest.raises(ValueError, match="no synthetic data"):
        mix("synthetic-only", REAL, [[]], 1, 8, random.Random(0))


def test_provenance_counts():
    out = mix("accumulate", REAL, HISTORY, 2, 10, random.Random(0))
    assert provenance(out) == {"real": 10, "synthetic_g0": 40, "synthetic_g1": 40}
