"""The order Tune starts a grid's trials in (collapse_ray/grid/start_order.py), on the grids
`make grid` and `make study` run: no trial starts beside the trial computing its generation 0,
the longest (model, task) starts first, and the dry-run lists the trials in that order. No Ray."""
from __future__ import annotations

from pathlib import Path

import pytest

from collapse_ray.cli import main as cli
from collapse_ray.grid import expand, load_grid
from collapse_ray.grid import estimate as est
from collapse_ray.grid.start_order import start_order

REPO = Path(__file__).resolve().parents[1]


def trials_of(config: str):
    return expand(load_grid(REPO / "experiments" / config), cwd="/s")


def start_positions_of_keys(order):
    first = {}
    for i, t in enumerate(order):
        first.setdefault(est.generation0_key_of(t.config), i)
    return first


@pytest.mark.parametrize("config, concurrency", [("grid.yaml", 3), ("study.yaml", 3), ("study.yaml", 5)])
def test_no_trial_starts_beside_the_trial_computing_its_generation_0(config, concurrency):
    trials = trials_of(config)
    order = start_order(trials, concurrency, est.load_costs())
    assert sorted(t.name for t in order) == sorted(t.name for t in trials)
    first = start_positions_of_keys(order)
    keys = [est.generation0_key_of(t.config) for t in order]
    waits = [i for i, k in enumerate(keys) if i - concurrency < first[k] < i]
    if concurrency == 3:   # the configs' own concurrency: no trial waits
        assert waits == []
    for i in waits:   # a trial waits only where every trial left would
        assert all(i - concurrency < first[k] < i for k in keys[i:]), (order[i].name, i)
    assert len(waits) <= 2
    # The grid's order started the regimes of one seed side by side (the waits this removes).
    grid_first = start_positions_of_keys(trials)
    assert any(0 < i - grid_first[est.generation0_key_of(t.config)] < concurrency for i, t in enumerate(trials))


def test_the_longest_task_starts_first_and_the_shortest_last():
    trials, costs = trials_of("grid.yaml"), est.load_costs()
    by_task: dict[str, float] = {}
    for t in trials:
        seconds = est.estimate_trial(t, costs).seconds(t.config.generations)
        by_task[t.labels.task] = max(seconds, by_task.get(t.labels.task, 0.0))
    order = start_order(trials, 3, costs)
    assert order[0].labels.task == max(by_task, key=by_task.get)
    assert order[-1].labels.task == min(by_task, key=by_task.get)
    # Within a task the grid's (seed-major) order stays.
    for task in by_task:
        assert [t.name for t in order if t.labels.task == task] == [t.name for t in trials if t.labels.task == task]


def test_without_estimates_or_other_keys_the_grid_order_stays():
    one_key = [t for t in trials_of("grid.yaml") if t.labels.task == "codegen_embedded"]
    assert [t.name for t in start_order(one_key, 3, None)] == [t.name for t in one_key]
    # Without costs the tasks keep the grid's order; only the generation-0 rule moves trials.
    trials = trials_of("grid.yaml")
    order = start_order(trials, 3, None)
    assert [t.labels.task for t in order[:3]] == [t.labels.task for t in trials[::3]]


def test_the_dry_run_lists_the_trials_in_the_order_they_start(capsys):
    cli(["grid", str(REPO / "experiments" / "grid.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("tiny_")]
    assert listed == [t.name for t in start_order(trials_of("grid.yaml"), 3, est.load_costs())]
