"""Claims tested on the long table: each claim is a signed sum of cells (model, regime,
mitigation, generation of one task), paired on the seed, with a Student's t interval over seeds.

The claims are data, not code (e.g. ``experiments/claims/study.yaml``)::

    task: codegen_embedded     # every claim's task and metric unless it names its own
    metric: pass_at_1
    claims:
      - id: a
        claim: synthetic-only degrades sharply
        terms: [{regime: synthetic-only}, {regime: real-only, sign: -1}]
        expect: below          # below | above | not_below | not_above (0, by the interval)
      - id: a-summarization
        task: summarization
        metric: rougeL
        terms: [{regime: synthetic-only}, {regime: real-only, sign: -1}]
        expect: below
      - id: d-late
        over_last: 3           # each seed's mean over the last 3 generations every term reached
        terms: [{regime: accumulate}, {regime: synthetic-only, sign: -1}]
        expect: above

A term selects one cell per seed: ``model`` (optional when the table has one), ``regime``,
``mitigation`` (default ``none``) and ``generation`` (default: the last generation every term's
cells reached, the same for all terms). ``over_last: k`` (on a claim, or at the top for every
claim; default 1) replaces that one generation by the mean of the last k, per seed, for the terms
that name no generation: a claim about where a regime *ends* then rests on its last k generations,
not on one seed's one-generation dip. The window never reaches back to generation 0 (where every
regime starts) unless that is all there is; a seed missing any of its generations drops out. A claim reproduces when its 95% interval lies where
``expect`` says: ``below`` 0 (high < 0), ``above`` (low > 0), ``not_below`` (high >= 0),
``not_above`` (low <= 0); with fewer than two seeds it is undecided.
"""
from __future__ import annotations

import math
from typing import Literal
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from collapse_ray.config import MAX_GENERATIONS
from collapse_ray.errors import ConfigError
from collapse_ray.report.markdown import fmt, markdown_table
from collapse_ray.report.stats import t_interval
from collapse_ray.typed import build, join, require
from collapse_ray.yaml_io import read_yaml_mapping

EXPECTATIONS = {
    "below": lambda low, high: high < 0,
    "above": lambda low, high: low > 0,
    "not_below": lambda low, high: high >= 0,
    "not_above": lambda low, high: low <= 0,
}
Expectation = Literal[tuple(EXPECTATIONS)]   # the claims file's `expect`, read from the table above


@dataclass(frozen=True)
class Term:
    regime: str
    mitigation: str = "none"
    model: str | None = None
    generation: int | None = None
    sign: int = 1

    def check(self, where: str) -> None:
        require(self.sign in (1, -1), join(where, "sign"), f"must be 1 or -1, got {self.sign}")
        require(self.generation is None or 0 <= self.generation <= MAX_GENERATIONS, join(where, "generation"),
                f"must be from 0 to {MAX_GENERATIONS}, got {self.generation}")


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    terms: tuple[Term, ...]
    expect: str
    metric: str
    task: str | None = None   # None: the table holds one task's rows already
    over_last: int = 1        # generations averaged per seed, ending at the last every term reached


# The claims file's shapes, read by typed.build (unknown and missing fields, and every value's
# type, name themselves); a claim's task, metric and over_last default to the file's.
@dataclass
class _ClaimItem:
    id: str
    terms: list[Term]
    expect: Expectation
    claim: str = ""
    task: str | None = None
    metric: str | None = None
    over_last: int | None = None

    def check(self, where: str) -> None:
        require(self.id.strip() != "", join(where, "id"), "must not be empty")
        require(len(self.terms) > 0, join(where, "terms"), "needs at least one term")
        _check_over_last(self.over_last, join(where, "over_last"))


@dataclass
class _ClaimsFile:
    claims: list[_ClaimItem]
    task: str | None = None
    metric: str | None = None
    over_last: int = 1

    def check(self, where: str) -> None:
        _check_over_last(self.over_last, join(where, "over_last"))


def _check_over_last(value: int | None, where: str) -> None:
    require(value is None or 1 <= value <= MAX_GENERATIONS, where,
            f"a whole number of generations from 1 to {MAX_GENERATIONS}, got {value!r}")


def load_claims(path: str | Path) -> list[Claim]:
    """The claims of a claims YAML; ConfigError naming the file and the field for a malformed one."""
    data = read_yaml_mapping(path, "claims file")
    try:
        return _claims(build(_ClaimsFile, data, ""))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _claims(file: _ClaimsFile) -> list[Claim]:
    claims: list[Claim] = []
    for i, item in enumerate(file.claims):
        at = f"claims[{i}]"
        require(item.id not in {c.id for c in claims}, f"{at}.id",
                f"{item.id!r} names an earlier claim too (each row of the table needs its own)")
        metric, task = item.metric or file.metric, item.task or file.task
        for name, value in (("metric", metric), ("task", task)):
            require(bool(value), f"{at}.{name}", f"no {name} (set it on the claim or at the top)")
        over_last = item.over_last if item.over_last is not None else file.over_last
        claims.append(Claim(item.id, item.claim, tuple(item.terms), item.expect, metric, task, over_last))
    return claims


def _cells(long: pd.DataFrame, term: Term, metric: str) -> pd.DataFrame:
    rows = long[(long["metric"] == metric) & (long["regime"] == term.regime) & (long["mitigation"] == term.mitigation)]
    if term.model is not None:
        rows = rows[rows["model"] == term.model]
    elif rows["model"].nunique() > 1:
        raise ConfigError(f"claims: regime {term.regime} has several models ({sorted(rows['model'].unique())}); "
                          f"name one with `model`")
    return rows


def evaluate_claim(long: pd.DataFrame, claim: Claim, confidence: float = 0.95) -> dict:
    """The claim's paired sum per seed, its mean and interval, and whether it reproduces."""
    if claim.task is not None:
        long = long[long["task"] == claim.task]
    cells = [_cells(long, t, claim.metric) for t in claim.terms]
    reached = [c.groupby("seed")["generation"].max() for c in cells]
    if any(r.empty for r in reached):
        last = None
    else:
        last = int(min(r.min() for r in reached))
    # a window stops at generation 1: generation 0 is where every regime starts, not where one ends
    first = None if last is None else min(last, max(last - claim.over_last + 1, 1))
    ending = [] if last is None else list(range(first, last + 1))
    per_seed = None
    for term, rows in zip(claim.terms, cells):
        window = ending if term.generation is None else [term.generation]
        by_seed = rows[rows["generation"].isin(window)].groupby("seed")["value"]
        complete = by_seed.count() == len(window)    # a seed missing a generation of the window drops out
        at = by_seed.mean()[complete] * term.sign
        per_seed = at if per_seed is None else per_seed + at   # seeds missing from any term drop out (NaN)
    diffs = per_seed.dropna() if per_seed is not None else pd.Series(dtype=float)
    mean, sd, low, high = t_interval(diffs.tolist(), confidence)
    decided = not math.isnan(low)
    return {"id": claim.id, "claim": claim.claim, "task": claim.task, "metric": claim.metric, "generation": last,
            "first_generation": first, "n": int(diffs.size), "mean": mean, "sd": sd, "ci_low": low, "ci_high": high, "expect": claim.expect,
            "reproduces": ("yes" if EXPECTATIONS[claim.expect](low, high) else "no") if decided else "undecided",
            "seeds": ",".join(str(s) for s in sorted(diffs.index))}


def claims_table(long: pd.DataFrame, claims: list[Claim]) -> pd.DataFrame:
    """Every claim's verdict; a claim whose task has no trials yet (a study run in parts) is undecided."""
    tasks = sorted({c.task for c in claims})
    if not long["task"].isin(tasks).any():
        raise ConfigError(f"claims: the report has no trials of task(s) {', '.join(tasks)}")
    return pd.DataFrame([evaluate_claim(long, c) for c in claims])


def claims_md(table: pd.DataFrame) -> str:
    header = ["claim", "what", "task", "metric", "gen", "n seeds", "mean", "95% CI", "expected", "reproduces"]
    body = [[r.id, r.claim, r.task, r.metric, _generations(r.first_generation, r.generation), str(r.n), fmt(r.mean),
             f"[{fmt(r.ci_low)}, {fmt(r.ci_high)}]", f"CI {r.expect.replace('_', ' ')} 0", r.reproduces]
            for r in table.itertuples()]
    return markdown_table(header, body)


def _generations(first, last) -> str:
    """"7", or "8..10" for a claim averaged over its last generations, or "–" when no cell exists."""
    if pd.isna(last):
        return "–"
    return str(int(last)) if int(first) == int(last) else f"{int(first)}..{int(last)}"
