"""The report's statistics on small hand-made tables: seed summaries, the study table's
generations and changes, paired t intervals, collapse onset."""
from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest

from collapse_ray.report import stats
from collapse_ray.report.collect import COLUMNS
from collapse_ray.report.definitions import COLLAPSE_DIRECTION, control_regime, headline_metrics
from collapse_ray.tasks import registered_tasks

# Student's t quantiles from a printed table (two-sided 95%): t(0.975; df).
T975 = {1: 12.7062047, 2: 4.30265273, 3: 3.18244631}


def long_table(values: dict[tuple[str, int], list[float]], metric="pass_at_1", task="codegen") -> pd.DataFrame:
    """values[(regime, seed)] = the metric at generations 0, 1, ..."""
    rows = [(f"{regime}_s{seed}", "m", task, regime, "none", seed, g, metric, v)
            for (regime, seed), series in values.items() for g, v in enumerate(series)]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_seed_summary_gives_mean_sample_sd_and_n_per_generation():
    long = long_table({("real-only", 0): [1.0, 2.0], ("real-only", 1): [3.0, 6.0], ("real-only", 2): [5.0, 7.0]})
    summary = stats.seed_summary(long).set_index("generation")
    assert summary.at[1, "n"] == 3
    assert summary.at[1, "mean"] == pytest.approx(5.0)
    assert summary.at[1, "sd"] == pytest.approx(statistics.stdev([2.0, 6.0, 7.0]))


def test_table_generations_are_0_5_10_or_the_last():
    assert stats.table_generations(10) == [0, 5, 10]
    assert stats.table_generations(12) == [0, 5, 10]
    assert stats.table_generations(7) == [0, 5, 7]
    assert stats.table_generations(2) == [0, 2]
    assert stats.table_generations(0) == [0]


def test_study_table_shows_the_n_a_partial_group_has_and_change_against_generation_0():
    long = long_table({("hybrid", 0): [0.5, 0.4, 0.2], ("hybrid", 1): [0.5, 0.3]})   # seed 1 stopped at gen 1
    table = stats.study_table(stats.seed_summary(long), {"codegen": ["pass_at_1"]}).set_index("generation")
    assert list(table.index) == [0, 2]
    assert table.at[2, "n"] == 1 and table.at[2, "mean"] == pytest.approx(0.2)
    assert math.isnan(table.at[2, "sd"])
    assert table.at[2, "change"] == pytest.approx(-0.3)
    assert table.at[2, "rel_change"] == pytest.approx(-0.6)


def test_t_interval_matches_a_hand_computation():
    diffs = [-0.2, -0.09, -0.16]
    mean, sd, low, high = stats.t_interval(diffs)
    hand_mean = sum(diffs) / 3
    hand_sd = math.sqrt(sum((d - hand_mean) ** 2 for d in diffs) / 2)
    half = T975[2] * hand_sd / math.sqrt(3)
    assert (mean, sd) == (pytest.approx(hand_mean), pytest.approx(hand_sd))
    assert (low, high) == (pytest.approx(hand_mean - half), pytest.approx(hand_mean + half))


def test_t_interval_is_undefined_for_one_pair():
    mean, sd, low, high = stats.t_interval([0.3])
    assert mean == 0.3 and all(math.isnan(x) for x in (sd, low, high))


def test_paired_differences_pair_on_the_seed_at_the_last_generation():
    long = long_table({("real-only", 0): [0.5, 0.5, 0.5], ("real-only", 1): [0.5, 0.52, 0.49],
                       ("synthetic-only", 0): [0.5, 0.4, 0.3], ("synthetic-only", 1): [0.5, 0.46, 0.4],
                       ("synthetic-only", 2): [0.5, 0.1, 0.0]})   # seed 2 has no real-only partner
    paired = stats.paired_differences(long, {"codegen": ["pass_at_1"]}, "real-only")
    assert len(paired) == 1
    row = paired.iloc[0]
    assert (row["regime"], row["generation"], row["n"]) == ("synthetic-only", 2, 2)
    hand = [0.3 - 0.5, 0.4 - 0.49]
    half = T975[1] * statistics.stdev(hand) / math.sqrt(2)
    assert row["mean_diff"] == pytest.approx(statistics.mean(hand))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(statistics.mean(hand) - half),
                                               pytest.approx(statistics.mean(hand) + half))


@pytest.mark.parametrize("means, direction, expected", [
    ({0: 0.5, 1: 0.43, 2: 0.35}, "down", 1),                  # -14%, -30%
    ({0: 0.5, 1: 0.40, 2: 0.47, 3: 0.44, 4: 0.40}, "down", 3),  # gen 1 past but gen 2 back within 10%
    ({0: 0.5, 1: 0.45, 2: 0.45}, "down", 1),                  # exactly 10% counts
    ({0: 40.0, 1: 42.5, 2: 51.0}, "up", "none"),              # only the last generation is past
    ({0: 40.0, 1: 45.0, 2: 51.0}, "up", 1),
    ({0: 0.5, 1: 0.6, 2: 0.7}, "down", "none"),               # moved the other way
    ({0: 0.0, 1: 0.2, 2: 0.3}, "down", "n/a"),                # no relative change from 0
    ({1: 0.2, 2: 0.3}, "down", "n/a"),                        # no generation 0
])
def test_onset_generation(means, direction, expected):
    assert stats.onset_generation(means, direction, 0.10) == expected


def test_onset_generation_uses_the_stated_fraction():
    assert stats.onset_generation({0: 1.0, 1: 0.85, 2: 0.8}, "down", 0.10) == 1
    assert stats.onset_generation({0: 1.0, 1: 0.85, 2: 0.8}, "down", 0.20) == "none"


def test_onset_table_covers_only_metrics_with_a_direction():
    long = pd.concat([long_table({("synthetic-only", 0): [0.5, 0.4, 0.3]}),
                      long_table({("synthetic-only", 0): [1.0, 2.0, 3.0]}, metric="train/loss")])
    onset = stats.onset_table(stats.seed_summary(long), {"codegen": ["pass_at_1", "train/loss"]}, COLLAPSE_DIRECTION)
    assert list(onset["metric"]) == ["pass_at_1"] and onset.iloc[0]["onset"] == 1


def test_every_headline_metric_has_a_collapse_direction():
    for task in registered_tasks():
        assert headline_metrics(task) and set(headline_metrics(task)) <= set(COLLAPSE_DIRECTION), task


def test_the_control_regime_is_real_only():
    assert control_regime() == "real-only"
