"""The study's numbers from the long table: seed means and spreads, the table at chosen
generations, paired differences against real-only with a t interval, and collapse onset.

Conventions (stated once, printed in report.md): ``sd`` is the sample standard deviation over
seeds (ddof = 1; undefined for one seed); ``change`` is mean(g) - mean(0) and ``rel_change``
is that change over |mean(0)| (undefined when mean(0) is 0).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from collapse_ray.report.collect import GROUP

TABLE_GENERATIONS = (0, 5, 10)
ONSET_FRACTION = 0.10
# Float noise must not decide whether a change of exactly the stated fraction counts.
_EPS = 1e-9


def seed_summary(long: pd.DataFrame) -> pd.DataFrame:
    """n, mean, sd, min, max over seeds per model x task x regime x mitigation x metric x generation."""
    grouped = long.groupby([*GROUP, "metric", "generation"], sort=True)["value"]
    out = grouped.agg(n="count", mean="mean", sd=lambda v: v.std(ddof=1), min="min", max="max")
    return out.reset_index()


def table_generations(last: int) -> list[int]:
    """Generations 0, 5 and 10 as far as the grid reached; the last one when it stopped before 10."""
    chosen = [g for g in TABLE_GENERATIONS if g <= last]
    if last < TABLE_GENERATIONS[-1] and last not in chosen:
        chosen.append(last)
    return chosen


def relative_change(value: float, reference: float) -> float:
    if reference is None or not math.isfinite(reference) or reference == 0:
        return math.nan
    return (value - reference) / abs(reference)


def study_table(summary: pd.DataFrame, metrics_by_task: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """One row per model x task x regime x mitigation x metric x chosen generation: n, mean, sd,
    and the change against generation 0. A generation a group has not reached has n = 0."""
    generations = table_generations(int(summary["generation"].max()))
    rows = []
    for key, block in summary.groupby([*GROUP, "metric"], sort=True):
        model, task, regime, mitigation, metric = key
        if metric not in metrics_by_task.get(task, ()):
            continue
        by_gen = block.set_index("generation")
        m0 = by_gen["mean"].get(0, math.nan)
        for g in generations:
            present = g in by_gen.index
            mean = by_gen.at[g, "mean"] if present else math.nan
            rows.append({"model": model, "task": task, "regime": regime, "mitigation": mitigation,
                         "metric": metric, "generation": g, "n": int(by_gen.at[g, "n"]) if present else 0,
                         "mean": mean, "sd": by_gen.at[g, "sd"] if present else math.nan,
                         "change": mean - m0, "rel_change": relative_change(mean, m0)})
    return pd.DataFrame(rows, columns=[*GROUP, "metric", "generation", "n", "mean", "sd", "change", "rel_change"])


def t_interval(diffs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): Student's t interval for the mean of paired differences
    (scipy.stats.t quantile; low/high are NaN for fewer than two pairs)."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(d.std(ddof=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, d.size - 1)) * sd / math.sqrt(d.size)
    return mean, sd, mean - half, mean + half


def paired_differences(long: pd.DataFrame, metrics_by_task: Mapping[str, Sequence[str]],
                       baseline: str, confidence: float = 0.95) -> pd.DataFrame:
    """Each regime minus ``baseline``, paired on the seed (same model, task, mitigation), at the
    last generation both the regime and the baseline reached (a grid still running, or stopped,
    compares where both are)."""
    rows = []
    for (model, task, mitigation), block in long.groupby(["model", "task", "mitigation"], sort=True):
        base_rows = block[block["regime"] == baseline]
        if base_rows.empty:
            continue
        for (regime, metric), regime_rows in block[block["regime"] != baseline].groupby(["regime", "metric"]):
            if metric not in metrics_by_task.get(task, ()):
                continue
            base_metric = base_rows[base_rows["metric"] == metric]
            if base_metric.empty:
                continue
            last = int(min(regime_rows["generation"].max(), base_metric["generation"].max()))
            values = regime_rows[regime_rows["generation"] == last]
            base = base_metric[base_metric["generation"] == last]
            pairs = values.merge(base, on="seed", suffixes=("", "_base"))
            diffs = (pairs["value"] - pairs["value_base"]).tolist()
            mean, sd, low, high = t_interval(diffs, confidence)
            rows.append({"model": model, "task": task, "regime": regime, "baseline": baseline,
                         "mitigation": mitigation, "metric": metric, "generation": last, "n": len(diffs),
                         "mean_diff": mean, "sd_diff": sd, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["model", "task", "regime", "baseline", "mitigation", "metric",
                                       "generation", "n", "mean_diff", "sd_diff", "ci_low", "ci_high"])


def is_past(value: float, reference: float, direction: str, fraction: float) -> bool:
    """Has ``value`` moved at least ``fraction`` of |reference| in the collapse ``direction``?"""
    change = relative_change(value, reference)
    if math.isnan(change):
        return False
    return change <= -fraction + _EPS if direction == "down" else change >= fraction - _EPS


def onset_generation(means: Mapping[int, float], direction: str, fraction: float = ONSET_FRACTION) -> int | str:
    """The first generation g >= 1 whose seed mean, and the next generation's, are both at least
    ``fraction`` of the generation-0 mean past it in the collapse direction. "n/a" when the
    generation-0 mean is 0 or missing; "none" when no generation qualifies."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    m0 = means.get(0)
    if m0 is None or not math.isfinite(m0) or m0 == 0:
        return "n/a"
    for g in sorted(x for x in means if x >= 1):
        if g + 1 in means and is_past(means[g], m0, direction, fraction) and \
                is_past(means[g + 1], m0, direction, fraction):
            return int(g)
    return "none"


def onset_table(summary: pd.DataFrame, metrics_by_task: Mapping[str, Sequence[str]],
                directions: Mapping[str, str], fraction: float = ONSET_FRACTION) -> pd.DataFrame:
    rows = []
    for key, block in summary.groupby([*GROUP, "metric"], sort=True):
        model, task, regime, mitigation, metric = key
        if metric not in metrics_by_task.get(task, ()) or metric not in directions:
            continue
        means = dict(zip(block["generation"].astype(int), block["mean"]))
        rows.append({"model": model, "task": task, "regime": regime, "mitigation": mitigation, "metric": metric,
                     "direction": directions[metric], "gen0_mean": means.get(0, math.nan), "fraction": fraction,
                     "onset": onset_generation(means, directions[metric], fraction)})
    return pd.DataFrame(rows, columns=[*GROUP, "metric", "direction", "gen0_mean", "fraction", "onset"])
