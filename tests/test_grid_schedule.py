"""The dry-run's schedule of a CPU grid (collapse_ray/grid/schedule.py): trials started in order,
sharing the cores, waiting for a shared generation 0. Worked by hand. No Ray."""
from __future__ import annotations

import pytest

from collapse_ray.grid.schedule import EXHAUSTIVE_GROUPS, TrialWork, shortest_order, simulate


def test_trials_that_never_wait_fill_the_cores_and_finish_at_the_compute_floor():
    trials = [TrialWork(f"key{i}", 10.0, 20.0) for i in range(4)]   # 4 x 30 s on 2 cores
    s = simulate(trials, concurrency=4, cores=2.0)
    assert s.wall_s == pytest.approx(60.0) and s.idle_share == pytest.approx(0.0) and s.waiting_s == 0.0


def test_trials_waiting_for_a_shared_generation_0_leave_a_core_idle():
    # One key: the first computes generation 0 (10 s) alone while the other two wait on its lock,
    # then the three share 2 cores for their 20 s each: 10 + 60 / 2 = 40 s, one core idle for 10 s.
    trials = [TrialWork("a", 10.0, 20.0), TrialWork("a", 0.0, 20.0), TrialWork("a", 0.0, 20.0)]
    s = simulate(trials, concurrency=3, cores=2.0)
    assert s.wall_s == pytest.approx(40.0)
    assert s.idle_share == pytest.approx(10.0 / (2 * 40.0))
    assert s.waiting_s == pytest.approx(2 * 10.0)
    # A fourth slot for a trial of another key keeps both cores busy while two wait: the floor.
    s4 = simulate(trials + [TrialWork("b", 10.0, 20.0)], concurrency=4, cores=2.0)
    assert s4.wall_s == pytest.approx((30 + 20 + 20 + 30) / 2.0) and s4.idle_share == pytest.approx(0.0)


def test_the_tail_runs_alone_and_a_trial_started_after_generation_0_does_not_wait():
    # Two slots, one core each: a (30 s) and b (10 s) start; c (key b, 10 s after b's generation 0)
    # takes b's slot at 10 s without waiting and ends at 20 s; a runs on alone to 30 s.
    trials = [TrialWork("a", 10.0, 20.0), TrialWork("b", 5.0, 5.0), TrialWork("b", 5.0, 5.0)]
    s = simulate(trials, concurrency=2, cores=2.0)
    assert s.wall_s == pytest.approx(30.0) and s.waiting_s == 0.0
    assert s.idle_share == pytest.approx(10.0 / (2 * 30.0))


def test_a_trial_measured_on_two_cores_runs_at_half_speed_beside_another():
    s = simulate([TrialWork("a", 10.0, 0.0), TrialWork("b", 10.0, 0.0)], concurrency=2, cores=2.0, cores_per_trial=2.0)
    assert s.wall_s == pytest.approx(20.0) and s.idle_share == pytest.approx(0.0)
    alone = simulate([TrialWork("a", 10.0, 0.0)], concurrency=2, cores=4.0, cores_per_trial=2.0)
    assert alone.wall_s == pytest.approx(10.0) and alone.idle_share == pytest.approx(0.5)


def test_generation_0_only_trials_and_zero_work_end():
    s = simulate([TrialWork("a", 0.0, 0.0), TrialWork("a", 0.0, 0.0)], concurrency=1, cores=2.0)
    assert s.wall_s == 0.0 and s.idle_share == 0.0


def test_a_long_group_started_last_runs_alone_at_the_end_so_it_starts_earlier():
    # Two slots, two cores: short groups a, b (10 s each) then long c (40 s): c starts at 10 s and
    # runs alone from 20 to 50 s. Started at once, it ends at 40 s beside a then b.
    groups = [[TrialWork("a", 5.0, 5.0)], [TrialWork("b", 5.0, 5.0)], [TrialWork("c", 10.0, 30.0)]]
    assert simulate([w for g in groups for w in g], concurrency=2, cores=2.0).wall_s == pytest.approx(50.0)
    order = shortest_order(groups, concurrency=2, cores=2.0)
    assert order[-1] != 2
    assert simulate([w for i in order for w in groups[i]], concurrency=2, cores=2.0).wall_s == pytest.approx(40.0)


def test_orders_that_end_alike_keep_the_given_order():
    groups = [[TrialWork(k, 5.0, 5.0), TrialWork(k, 1.0, 5.0)] for k in "abc"]
    assert shortest_order(groups, concurrency=4, cores=2.0) == [0, 1, 2]
    # 1% sooner is not enough to reorder: 0.2 s of a 60 s grid.
    nearly = [[TrialWork("a", 10.0, 20.0)], [TrialWork("b", 10.0, 20.0)], [TrialWork("c", 10.0, 20.2)],
              [TrialWork("d", 10.0, 20.0)]]
    assert shortest_order(nearly, concurrency=4, cores=2.0) == [0, 1, 2, 3]


def test_many_groups_go_longest_first_and_never_end_later_than_given():
    lengths = [3, 5, 8, 13, 21, 34, 55, 89]
    assert len(lengths) > EXHAUSTIVE_GROUPS
    groups = [[TrialWork(f"k{i}", 1.0, float(n))] for i, n in enumerate(lengths)]
    order = shortest_order(groups, concurrency=2, cores=2.0)
    wall = simulate([w for i in order for w in groups[i]], concurrency=2, cores=2.0).wall_s
    given = simulate([w for g in groups for w in g], concurrency=2, cores=2.0).wall_s
    assert order[0] == len(lengths) - 1 and wall < given
    assert sorted(order) == list(range(len(lengths)))
