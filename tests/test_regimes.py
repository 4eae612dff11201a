import random
from collections import Counter

import pytest

from collapse_ray.config import ConfigError, config_from_dict
from collapse_ray.datatypes import Example
from collapse_ray.regimes import parse_regime, provenance, regime_names
from collapse_ray.regimes.accumulate_subsample import proportional_counts

REAL = [Example(f"p{i}", f"c{i}") for i in range(100)]
HISTORY = [[Example(f"p{i}", f"s{g}_{i}", "synthetic", g) for i in range(40)] for g in range(3)]


def regime(name, **params):
    return parse_regime({"name": name, **params})


def origins(examples):
    return Counter("real" if e.generation is None else e.generation for e in examples)


@pytest.mark.parametrize("name, params", [("real-only", {}), ("synthetic-only", {}), ("hybrid", {}),
                                          ("accumulate", {}), ("accumulate-subsample", {}),
                                          ("fixed-real", {"real_examples": 10, "real_share": 0.5})])
def test_generation_zero_trains_on_the_same_real_data_in_every_regime(name, params):
    out = regime(name, **params).mix(REAL, [], 0, 32, random.Random(0))
    assert out == regime("real-only").mix(REAL, [], 0, 32, random.Random(0))
    assert len(out) == 32 and origins(out) == {"real": 32}


def test_every_regime_has_a_mixing_test_here():
    assert set(regime_names()) == {"real-only", "synthetic-only", "hybrid", "accumulate",
                                   "accumulate-subsample", "fixed-real"}


def test_real_only_never_sees_synthetic_data():
    out = regime("real-only").mix(REAL, HISTORY, 3, 32, random.Random(0))
    assert origins(out) == {"real": 32} and len({e.prompt for e in out}) == 32


def test_synthetic_only_uses_the_previous_generation():
    out = regime("synthetic-only").mix(REAL, HISTORY, 2, 32, random.Random(0))
    assert origins(out) == {1: 32}


def test_synthetic_only_repeats_a_pool_smaller_than_the_set():
    out = regime("synthetic-only").mix(REAL, HISTORY, 1, 50, random.Random(0))
    assert len(out) == 50 and origins(out) == {0: 50}
    assert {e.completion for e in out} == {e.completion for e in HISTORY[0]}


@pytest.mark.parametrize("alpha, n_real", [(0.0, 0), (0.25, 8), (0.5, 16), (1.0, 32)])
def test_hybrid_mixes_alpha_real(alpha, n_real):
    out = regime("hybrid", alpha=alpha).mix(REAL, HISTORY, 3, 32, random.Random(0))
    counts = origins(out)
    assert len(out) == 32 and counts["real"] == n_real and counts[2] == 32 - n_real


def test_accumulate_keeps_all_real_and_every_past_synthetic_set():
    out = regime("accumulate").mix(REAL, HISTORY, 3, 32, random.Random(0))
    assert origins(out) == {"real": 32, 0: 40, 1: 40, 2: 40}


def test_accumulate_subsample_draws_a_fixed_size_in_proportion_to_each_source():
    # Pool at generation 3: 100 real + 3 x 40 synthetic = 220; 110 of them is exactly half of each.
    out = regime("accumulate-subsample").mix(REAL, HISTORY, 3, 110, random.Random(0))
    assert origins(out) == {"real": 50, 0: 20, 1: 20, 2: 20}
    texts = [ex.text for ex in out]
    assert len(set(texts)) == 110   # without replacement
    assert set(texts) <= {ex.text for ex in REAL + [ex for past in HISTORY for ex in past]}


def test_accumulate_subsample_only_draws_from_generations_before_this_one():
    out = regime("accumulate-subsample").mix(REAL, HISTORY, 1, 70, random.Random(0))
    assert origins(out) == {"real": 50, 0: 20}   # 100 : 40 of 140, scaled to 70


@pytest.mark.parametrize("sizes, total, counts", [
    ([100, 40, 40, 40], 32, [14, 6, 6, 6]),   # quotas 14.55, 5.82, 5.82, 5.82: the largest remainders win
    ([3, 3, 3], 10, [4, 3, 3]),               # a tie goes to the earlier source (the real data)
    ([5, 0], 3, [3, 0]),
])
def test_proportional_counts_sum_to_the_total_by_largest_remainder(sizes, total, counts):
    assert proportional_counts(sizes, total) == counts


@pytest.mark.parametrize("real_examples, real_share, n_synthetic", [(10, 0.5, 10), (10, 0.2, 40), (30, 0.75, 10),
                                                                    (20, 1.0, 0)])
def test_fixed_real_trains_on_an_exact_amount_and_share_of_real_data(real_examples, real_share, n_synthetic):
    r = regime("fixed-real", real_examples=real_examples, real_share=real_share)
    out = r.mix(REAL, HISTORY, 2, 32, random.Random(0))
    assert origins(out) == {"real": real_examples, **({1: n_synthetic} if n_synthetic else {})}
    assert origins(out)["real"] / len(out) == pytest.approx(real_share)
    assert r.uses_synthetic is (n_synthetic > 0)


def test_fixed_real_keeps_the_same_real_examples_every_generation():
    r = regime("fixed-real", real_examples=10, real_share=0.5)
    real_of = [{e.text for e in r.mix(REAL, HISTORY, g, 32, random.Random(g)) if e.generation is None}
               for g in (1, 2, 3)]
    assert real_of[0] == real_of[1] == real_of[2] == {e.text for e in REAL[:10]}


def test_mixing_is_deterministic_in_the_rng():
    a = regime("hybrid").mix(REAL, HISTORY, 2, 32, random.Random(7))
    b = regime("hybrid").mix(REAL, HISTORY, 2, 32, random.Random(7))
    assert a == b


def test_missing_history_is_an_error():
    with pytest.raises(ValueError, match="generation 2 needs"):
        regime("synthetic-only").mix(REAL, HISTORY[:1], 2, 8, random.Random(0))
    with pytest.raises(ValueError, match="no synthetic data"):
        regime("synthetic-only").mix(REAL, [[]], 1, 8, random.Random(0))


def test_provenance_counts():
    out = regime("accumulate").mix(REAL, HISTORY, 2, 10, random.Random(0))
    assert provenance(out) == {"real": 10, "synthetic_g0": 40, "synthetic_g1": 40}


@pytest.mark.parametrize("value, label", [("real-only", "real-only"), ({"name": "hybrid", "alpha": 0.25}, "hybrid0.25"),
                                          ({"name": "fixed-real", "real_examples": 64, "real_share": 0.25},
                                           "fixed-real64-share0.25")])
def test_each_regime_labels_its_trials(value, label):
    assert parse_regime(value).label() == label


def test_uses_synthetic_data_is_the_regimes_answer():
    assert not regime("real-only").uses_synthetic and not regime("hybrid", alpha=1.0).uses_synthetic
    assert regime("hybrid", alpha=0.5).uses_synthetic and regime("accumulate-subsample").uses_synthetic


def test_hybrid_alpha_defaults_to_an_even_mix():
    assert regime("hybrid").alpha == 0.5


@pytest.mark.parametrize("value, message", [
    ({"name": "accumulate", "alpha": 0.5}, "regime.alpha: only applies to regime hybrid"),
    ({"name": "hybrid", "real_share": 0.5}, "regime.real_share: only applies to regime fixed-real"),
    ({"name": "hybrid", "alpha": 1.5}, "regime.alpha: must be in [0, 1], got 1.5"),
    ({"name": "hybrid", "alpha": "half"}, "regime.alpha: expected a number"),
    ({"name": "real-only", "beta": 1}, "regime.beta: unknown field; regime real-only takes no parameters"),
    ({"name": "fixed-real", "real_share": 0.5}, "regime.real_examples: is required"),
    ({"name": "fixed-real", "real_examples": 10}, "regime.real_share: is required"),
    ({"name": "fixed-real", "real_examples": 10, "real_share": 0.3}, "regime.real_share: 10 real examples at a share"),
    ({"name": "fixed-real", "real_examples": 0, "real_share": 0.5}, "regime.real_examples: must be at least 1"),
    ({"name": "fixed-real", "real_examples": 10, "real_share": 0.0}, "regime.real_share: must be in (0, 1]"),
    ({"name": "mixed"}, "regime.name: unknown regime 'mixed'; known regimes: accumulate, accumulate-subsample"),
    (["hybrid"], "regime: expected a regime name or a mapping"),
])
def test_bad_regime_parameters_name_the_field(value, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"regime": value})
    assert str(err.value).startswith(message)


def test_fixed_real_cannot_ask_for_more_real_data_than_the_task_loads():
    with pytest.raises(ConfigError, match=r"regime.real_examples: 300 is more than .* \(sizes.train_examples = 256\)"):
        config_from_dict({"regime": {"name": "fixed-real", "real_examples": 300, "real_share": 0.5},
                          "sizes": {"train_examples": 256}})


def test_a_regime_round_trips_through_its_config_mapping():
    import dataclasses

    cfg = config_from_dict({"regime": {"name": "fixed-real", "real_examples": 64, "real_share": 0.25}})
    assert config_from_dict(dataclasses.asdict(cfg)).regime == cfg.regime
    assert cfg.to_flat_params()["regime.real_examples"] == 64
