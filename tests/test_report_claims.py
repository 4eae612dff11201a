"""Claims on small hand-made long tables: the paired sum per seed, its t interval and verdict, the
last common generation, a difference of differences across models, and bad claims files."""
from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest

from collapse_ray.errors import ConfigError
from collapse_ray.report import claims, stats
from collapse_ray.report.collect import COLUMNS

T975_DF2 = 4.30265273   # Student's t, two-sided 95%, 2 degrees of freedom (printed table)


def long_table(values: dict[tuple[str, str, str, int], list[float]], metric="pass_at_1") -> pd.DataFrame:
    """values[(model, regime, mitigation, seed)] = the metric at generations 0, 1, ..."""
    rows = [(f"{model}_{regime}_{mitigation}_s{seed}", model, "t", regime, mitigation, seed, g, metric, v)
            for (model, regime, mitigation, seed), series in values.items() for g, v in enumerate(series)]
    return pd.DataFrame(rows, columns=COLUMNS)


def claim(terms, expect="below", metric="pass_at_1") -> claims.Claim:
    return claims.Claim("x", "", tuple(claims.Term(**t) for t in terms), expect, metric)


def test_a_contrast_pairs_on_the_seed_at_the_last_generation_every_term_reached():
    long = long_table({("m", "syn", "none", 0): [0.5, 0.4, 0.3, 0.2], ("m", "syn", "none", 1): [0.5, 0.3, 0.2],
                       ("m", "syn", "none", 2): [0.6, 0.5, 0.25],
                       ("m", "real", "none", 0): [0.5, 0.6, 0.7], ("m", "real", "none", 1): [0.5, 0.55, 0.6],
                       ("m", "real", "none", 2): [0.6, 0.6, 0.65]})
    row = claims.evaluate_claim(long, claim([{"regime": "syn"}, {"regime": "real", "sign": -1}]))
    hand = [0.3 - 0.7, 0.2 - 0.6, 0.25 - 0.65]      # generation 2: the last all seeds of both reached
    half = T975_DF2 * statistics.stdev(hand) / math.sqrt(3)
    assert (row["generation"], row["n"]) == (2, 3)
    assert row["mean"] == pytest.approx(statistics.mean(hand))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(statistics.mean(hand) - half),
                                               pytest.approx(statistics.mean(hand) + half))
    assert row["reproduces"] == "yes"
    assert claims.evaluate_claim(long, claim([{"regime": "syn"}, {"regime": "real", "sign": -1}],
                                             expect="above"))["reproduces"] == "no"


def test_a_term_can_name_generation_0_and_a_difference_of_differences_spans_models():
    long = long_table({("small", "syn", "none", s): [0.5, 0.1 + 0.01 * s] for s in range(3)}
                      | {("small", "real", "none", s): [0.5, 0.5] for s in range(3)}
                      | {("big", "syn", "none", s): [0.6, 0.4 + 0.02 * s] for s in range(3)}
                      | {("big", "real", "none", s): [0.6, 0.6] for s in range(3)})
    own = claims.evaluate_claim(long, claim([{"model": "small", "regime": "syn"},
                                             {"model": "small", "regime": "syn", "generation": 0, "sign": -1}]))
    assert own["mean"] == pytest.approx(statistics.mean([0.1 - 0.5, 0.11 - 0.5, 0.12 - 0.5]))
    dd = claims.evaluate_claim(long, claim([
        {"model": "small", "regime": "syn"}, {"model": "small", "regime": "real", "sign": -1},
        {"model": "big", "regime": "syn", "sign": -1}, {"model": "big", "regime": "real"}]))
    hand = [(0.1 + 0.01 * s - 0.5) - (0.4 + 0.02 * s - 0.6) for s in range(3)]
    assert dd["mean"] == pytest.approx(statistics.mean(hand))
    assert dd["reproduces"] == "yes"


def test_over_last_averages_each_seed_over_the_last_generations_before_pairing():
    syn = {0: [0.5, 0.30, 0.20, 0.25, 0.10], 1: [0.5, 0.35, 0.30, 0.20, 0.30], 2: [0.6, 0.40, 0.35, 0.30, 0.45]}
    real = {0: [0.5, 0.60, 0.70, 0.65, 0.60], 1: [0.5, 0.55, 0.60, 0.62], 2: [0.6, 0.60, 0.65, 0.70, 0.72]}
    long = long_table({("m", "syn", "none", s): v for s, v in syn.items()}
                      | {("m", "real", "none", s): v for s, v in real.items()})
    terms = [{"regime": "syn"}, {"regime": "real", "sign": -1}]
    late = claims.Claim("x", "", tuple(claims.Term(**t) for t in terms), "below", "pass_at_1", over_last=3)
    row = claims.evaluate_claim(long, late)
    # generation 3 is the last every seed of both reached (real's seed 1 stops there): the window is 1..3
    hand = [statistics.mean(syn[s][1:4]) - statistics.mean(real[s][1:4]) for s in range(3)]
    assert (row["first_generation"], row["generation"], row["n"]) == (1, 3, 3)
    assert row["mean"] == pytest.approx(statistics.mean(hand))
    assert row["sd"] == pytest.approx(statistics.stdev(hand))
    assert "| 1..3 |" in claims.claims_md(pd.DataFrame([row]))
    # a term naming its generation keeps it; a window longer than the run stops at generation 1
    own = claims.evaluate_claim(long, claims.Claim("y", "", (claims.Term("syn"), claims.Term("syn", generation=0, sign=-1)),
                                                   "below", "pass_at_1", over_last=10))
    assert (own["first_generation"], own["generation"]) == (1, 4)     # synthetic-only alone reaches 4
    assert own["mean"] == pytest.approx(statistics.mean(statistics.mean(syn[s][1:]) - syn[s][0] for s in range(3)))
    only_gen0 = claims.evaluate_claim(long[long["generation"] == 0], late)
    assert (only_gen0["first_generation"], only_gen0["generation"]) == (0, 0)


def test_a_seed_missing_a_generation_of_the_window_drops_out():
    long = long_table({("m", "syn", "none", s): [0.5, 0.3, 0.2] for s in range(3)}
                      | {("m", "real", "none", s): [0.5, 0.6, 0.7] for s in range(3)})
    long = long[~((long["seed"] == 1) & (long["generation"] == 1) & (long["regime"] == "real"))]
    late = claims.Claim("x", "", (claims.Term("syn"), claims.Term("real", sign=-1)), "below", "pass_at_1", over_last=2)
    row = claims.evaluate_claim(long, late)
    assert (row["n"], row["seeds"]) == (2, "0,2")


def test_missing_cells_and_one_seed_leave_a_claim_undecided():
    long = long_table({("m", "syn", "none", 0): [0.5, 0.3], ("m", "real", "none", 0): [0.5, 0.6]})
    one = claims.evaluate_claim(long, claim([{"regime": "syn"}, {"regime": "real", "sign": -1}]))
    assert (one["n"], one["reproduces"]) == (1, "undecided")
    absent = claims.evaluate_claim(long, claim([{"regime": "syn", "mitigation": "quality"},
                                                {"regime": "syn", "sign": -1}]))
    assert (absent["n"], absent["reproduces"]) == (0, "undecided")


def test_a_regime_with_several_models_must_name_one():
    long = long_table({("a", "syn", "none", 0): [0.5], ("b", "syn", "none", 0): [0.4]})
    with pytest.raises(ConfigError, match="name one with `model`"):
        claims.evaluate_claim(long, claim([{"regime": "syn"}]))


@pytest.mark.parametrize("text, field", [
    ("task: t\nclaims: [{id: a, terms: [{regime: r}], expect: sideways}]\nmetric: m\n", "expect"),
    ("task: t\nclaims: [{id: a, terms: [{regime: r, sign: 2}], expect: below}]\nmetric: m\n", "terms[0]"),
    ("task: t\nclaims: [{id: a, terms: [{regime: r}], expect: below}]\n", "metric"),
    ("claims: [{id: a, terms: [{regime: r}], expect: below}]\nmetric: m\n", "task"),
    ("task: t\nclaims: {a: 1}\n", "claims: expected a list"),
    ("task: t\nmetric: m\n", "claims: is required"),
    ("task: t\nmetric: m\nclaims: [{id: a, terms: [{regime: [r]}], expect: below}]\n", "claims[0].terms[0].regime"),
    ("task: t\nmetric: m\nclaims: [{id: a, terms: [{regime: r, generation: 10000}], expect: below}]\n",
     "claims[0].terms[0].generation"),
    ("task: t\nmetric: [m]\nclaims: [{id: a, terms: [{regime: r}], expect: below}]\n", "metric"),
    ("task: t\nmetric: m\nclaims: [{id: a, terms: [{regime: r}], expect: [below]}]\n", "claims[0].expect"),
    ("task: t\nmetric: m\nclaims: [{id: a, terms: [], expect: below}]\n", "claims[0].terms"),
    ("task: t\nmetric: m\nclaims: [{id: a, over_last: 0, terms: [{regime: r}], expect: below}]\n", "claims[0].over_last"),
    ("task: t\nmetric: m\nover_last: 2.5\nclaims: [{id: a, terms: [{regime: r}], expect: below}]\n",
     "claims.yaml: over_last: expected an integer"),
    ("task: t\nmetric: m\nclaims: [{id: a, over_last: true, terms: [{regime: r}], expect: below}]\n", "over_last"),
    ("task: t\nmetric: m\nclaims: [{id: a, over_last: 100000, terms: [{regime: r}], expect: below}]\n", "over_last"),
    ("task: t\nmetric: m\nclaims: [{id: a, terms: [{regime: r}], expect: below},\n"
     "         {id: a, terms: [{regime: s}], expect: above}]\n", "claims[1].id"),
])
def test_a_bad_claims_file_is_one_config_error_naming_the_field(tmp_path, text, field):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        claims.load_claims(path)


def test_the_study_claims_file_loads():
    from pathlib import Path

    loaded = claims.load_claims(Path(__file__).resolve().parents[1] / "experiments" / "claims" / "study.yaml")
    assert {c.id for c in loaded} >= {"a", "b", "d-bounded", "a-summarization", "a-vulnerability"}
    assert {c.task for c in loaded} == {"codegen_embedded", "summarization", "vulnerability"}


def test_each_claim_reads_its_own_task_and_a_task_without_trials_is_undecided(tmp_path):
    codegen = long_table({("m", "syn", "none", s): [0.5, 0.2 + 0.01 * s] for s in range(3)}
                         | {("m", "real", "none", s): [0.5, 0.6] for s in range(3)})
    codegen["task"] = "codegen"
    summaries = long_table({("m", "syn", "none", s): [0.3, 0.35 + 0.01 * s] for s in range(3)}
                           | {("m", "real", "none", s): [0.3, 0.3] for s in range(3)})
    summaries["task"] = "summarization"
    path = tmp_path / "claims.yaml"
    path.write_text("task: codegen\nmetric: pass_at_1\nclaims:\n"
                    "  - {id: c, terms: [{regime: syn}, {regime: real, sign: -1}], expect: below}\n"
                    "  - {id: s, task: summarization, terms: [{regime: syn}, {regime: real, sign: -1}], expect: below}\n"
                    "  - {id: v, task: vulnerability, metric: f1, terms: [{regime: syn}], expect: below}\n")
    table = claims.claims_table(pd.concat([codegen, summaries]), claims.load_claims(path)).set_index("id")
    assert table.loc["c", "mean"] == pytest.approx(statistics.mean([0.2 + 0.01 * s - 0.6 for s in range(3)]))
    assert table.loc["s", "mean"] == pytest.approx(statistics.mean([0.35 + 0.01 * s - 0.3 for s in range(3)]))
    assert list(table["reproduces"]) == ["yes", "no", "undecided"]
    assert table.loc["v", "n"] == 0
    with pytest.raises(ConfigError, match="no trials of task"):
        claims.claims_table(codegen, [c for c in claims.load_claims(path) if c.id == "v"])


def test_paired_differences_compare_where_both_regimes_are_while_a_grid_runs():
    long = long_table({("m", "real-only", "none", 0): [0.5, 0.6], ("m", "syn", "none", 0): [0.5, 0.4, 0.3]})
    long["task"] = "codegen"
    paired = stats.paired_differences(long, {"codegen": ["pass_at_1"]}, "real-only")
    assert paired.iloc[0]["generation"] == 1
    assert paired.iloc[0]["mean_diff"] == pytest.approx(0.4 - 0.6)
