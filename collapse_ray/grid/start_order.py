"""The order Tune starts a grid's trials in: the dry-run lists them in it.

The grid's own order (expand.py) is seed-major within each model and task, so two things cost
wall time on a shared machine, both measured in `make grid` (3 trials at once on 2 cores, one
task after another; 8% of the cores idle):
- the regimes of one seed start side by side and share one generation 0 (shared_gen0.py): the
  first computes it while the others hold their slots and wait on its lock (869 trial-seconds);
- the longest task's trials can start last and run on alone at the end.
So the (model, task) groups start longest first, by the dry-run's estimate (grid/estimate.py;
the grid's order where a trial has none), each keeping the grid's order within it; and a trial
starts only once the trial computing its generation 0 has had ``concurrency`` starts' head start
(a slot has turned over by then: that trial is past generation 0): the next trial that may start
takes its place, and where none may (a short wait), the one whose generation 0 has been
computing longest.
"""
from __future__ import annotations

from collapse_ray.grid.estimate import CostTable, PhaseCosts, estimate_trial, generation0_key_of
from collapse_ray.grid.expand import Trial


def start_order(trials: list[Trial], concurrency: int, costs: PhaseCosts | CostTable | None = None) -> list[Trial]:
    return _generation0_apart(_longest_groups_first(trials, costs), concurrency)


def _longest_groups_first(trials: list[Trial], costs: PhaseCosts | CostTable | None) -> list[Trial]:
    seconds = {}
    for t in trials:
        e = estimate_trial(t, costs)
        s = None if e is None else e.seconds(t.config.generations)
        if s is None:
            return list(trials)
        seconds[t.name] = s
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.labels.model, t.labels.task), []).append(t)
    ranked = sorted(groups.values(), key=lambda group: -max(seconds[t.name] for t in group))   # stable
    return [t for group in ranked for t in group]


def _generation0_apart(trials: list[Trial], concurrency: int) -> list[Trial]:
    key = {t.name: generation0_key_of(t.config) for t in trials}
    computed_at: dict[str, int] = {}   # key -> start position of the trial that computes it
    remaining, order = list(trials), []
    while remaining:
        position = len(order)

        def may_start(t: Trial) -> bool:
            first = computed_at.get(key[t.name])
            return first is None or first <= position - concurrency

        # Where every trial would wait: the one whose generation 0 has been computing longest.
        chosen = next((t for t in remaining if may_start(t)), None) or min(
            remaining, key=lambda t: computed_at[key[t.name]])
        remaining.remove(chosen)
        computed_at.setdefault(key[chosen.name], position)
        order.append(chosen)
    return order
