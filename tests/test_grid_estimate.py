"""The dry-run's time estimate for CPU trials (collapse_ray/grid/estimate.py): training work from
the trainer's own step count, compute_floor.json's per-task one-core costs preferred over
phase_costs.json, generation 0 counted once per generation-0 key, and benchmarks/common.py's
compute floor giving the same figure. No Ray, no torch."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from collapse_ray import grid
from collapse_ray.config import ConfigError, ModelConfig
from collapse_ray.grid import estimate as est
from collapse_ray.model_size import model_size

REPO = Path(__file__).resolve().parents[1]

SIZES = {"train_examples": 2000, "synthetic_pool": 256, "eval_examples": 256, "max_new_tokens": 64}
TRAINING = {"method": "full", "epochs": 1, "max_steps": 500, "batch_size": 16, "max_length": 256}
SECONDS = {"train_s": 80.0, "generate_s": 8.0, "evaluate_s": 4.0, "drift_s": 2.0}
REGIMES = [{"name": "real-only"}, {"name": "synthetic-only"}, {"name": "hybrid", "alpha": 0.5}, {"name": "accumulate"}]


def trials_of(tmp_path: Path, sizes: dict | None = None, training: dict | None = None,
              regimes: list | None = None, task: str = "codegen", seeds: tuple = (0,),
              generations: int = 7, tasks: list[str] | None = None) -> list[grid.Trial]:
    """CPU trials of the tiny model (0.4 CPU each), at the compute floor's sizes unless told."""
    data = {"name": "g",
            "base": {"generations": generations, "sizes": {**SIZES, **(sizes or {})},
                     "training": {**TRAINING, **(training or {}), "backend": "ray"}, "generator": {"backend": "vllm"}},
            "grid": {"models": [{"name_or_path": "tiny", "resources": {"cpus_per_worker": 0.2}}], "tasks": tasks or [task],
                     "regimes": regimes or REGIMES[:1], "seeds": list(seeds)},
            "resources": {"driver_cpus": 0.1, "generator_cpus": 0.1},
            "tune": {"max_concurrent_trials": 4}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return grid.expand(grid.load_grid(path))


def compute_floor_file(tmp_path: Path, tasks: dict | None = None) -> Path:
    """A costs file in benchmarks/compute_floor.json's format, measured at SIZES on the tiny model."""
    tiny = {"name_or_path": "tiny", "architecture": "llama", "vocab_size": 4096, "hidden_size": 128,
            "num_layers": 2, "num_heads": 4, "context_length": 256, "train_minutes": 3.0, "seed": 0}
    data = {"machine": "test machine; load average 0", "cpus": 2,
            "sizes": {**SIZES, "training": TRAINING, "model": tiny}, "tasks": tasks or {"codegen": SECONDS}}
    path = tmp_path / "compute_floor.json"
    path.write_text(json.dumps(data))
    return path


def phase_costs_file(tmp_path: Path) -> Path:
    """A costs file in benchmarks/phase_costs.json's format, measured with 2 cores."""
    n = model_size(ModelConfig()).n_params   # the tiny model, as compute_floor_file's
    data = {"machine": "reference machine", "cores": 2,
            "reference": {"n_params": n, "sizes": SIZES, "training": TRAINING},
            "seconds_per_generation": {"train": 40.0, "generate": 4.0, "evaluate": 2.0, "drift": 1.0}}
    path = tmp_path / "phase_costs.json"
    path.write_text(json.dumps(data))
    return path


def test_max_steps_decides_the_training_work_as_the_trainer_counts_it(tmp_path):
    costs = est.load_costs(compute_floor_file(tmp_path), tmp_path / "none.json")

    def train_s(**training) -> float:
        (t,) = trials_of(tmp_path, training=training)
        return est.estimate_trial(t, costs).phase_seconds["train"]

    assert train_s() == pytest.approx(80.0)
    assert train_s(max_steps=1000) == pytest.approx(160.0)
    assert train_s(epochs=5) == pytest.approx(80.0)            # max_steps set: epochs say nothing
    assert train_s(batch_size=32) == pytest.approx(160.0)      # a step is batch_size sequences
    # Without max_steps, epochs over train_examples: 2000 / 16 = 125 steps an epoch.
    assert train_s(max_steps=None, epochs=2) == pytest.approx(80.0 * 250 / 500)
    assert train_s(max_steps=None, epochs=4) == pytest.approx(2 * train_s(max_steps=None, epochs=2))


def test_a_longer_generation_0_is_counted_once_per_generation_0_key(tmp_path):
    """training.gen0_max_steps 1500 against max_steps 500: generation 0 trains 3 x 80 s, once."""
    costs = est.load_costs(compute_floor_file(tmp_path), tmp_path / "none.json")
    trials = trials_of(tmp_path, regimes=REGIMES[:2], training={"gen0_max_steps": 1500})
    estimates = [est.estimate_trial(t, costs) for t in trials]
    assert all(e.seconds(7) == pytest.approx(8 * 94.0 + 2 * 80.0) for e in estimates)
    seconds = est.with_shared_generation0([(t.config, e.phase_seconds) for t, e in zip(trials, estimates)])
    assert seconds == pytest.approx([8 * 94.0 + 2 * 80.0, 8 * 94.0 - 80.0 - 4.0])


def test_a_compute_floor_file_gives_its_own_seconds_at_its_sizes_and_phase_costs_the_rest(tmp_path):
    costs = est.load_costs(compute_floor_file(tmp_path), phase_costs_file(tmp_path))
    (t,) = trials_of(tmp_path)
    e = est.estimate_trial(t, costs)
    assert e.phase_seconds == pytest.approx({"train": 80.0, "generate": 8.0, "evaluate": 4.0, "drift": 2.0})
    assert e.costs.cores == 1.0 and e.costs.source.startswith("compute_floor.json")
    (other,) = trials_of(tmp_path, task="summarization")   # not in compute_floor.json: phase_costs.json
    e = est.estimate_trial(other, costs)
    assert e.phase_seconds == pytest.approx({"train": 40.0, "generate": 4.0, "evaluate": 2.0, "drift": 1.0})
    assert e.costs.cores == 2.0 and e.costs.source.startswith("phase_costs.json")
    # Scaled by the work: twice the pool, twice generate and drift.
    (bigger,) = trials_of(tmp_path, sizes={"synthetic_pool": 512})
    assert est.estimate_trial(bigger, costs).phase_seconds == pytest.approx(
        {"train": 80.0, "generate": 16.0, "evaluate": 4.0, "drift": 4.0})

    bad = tmp_path / "bad.json"
    bad.write_text('{"sizes": {}}')
    with pytest.raises(ConfigError, match=r"bad.json: cannot read it .*benchmarks/compute_floor.json"):
        est.load_compute_floor(bad)


def test_trials_that_differ_only_in_regime_share_generation_0(tmp_path):
    costs = est.load_costs(compute_floor_file(tmp_path), tmp_path / "none.json")
    trials = trials_of(tmp_path, regimes=REGIMES)
    assert len(trials) == 4 and len({est.generation0_key_of(t.config) for t in trials}) == 1
    estimates = [est.estimate_trial(t, costs) for t in trials]
    per_trial = 8 * 94.0                                        # generations 0..7
    assert all(e.seconds(7) == pytest.approx(per_trial) for e in estimates)
    seconds = est.with_shared_generation0([(t.config, e.phase_seconds) for t, e in zip(trials, estimates)])
    assert sum(seconds) == pytest.approx(4 * per_trial - 3 * (80.0 + 4.0))
    # One core a trial, 4 at once on 2 CPUs: three wait while the first computes generation 0
    # (94 s: one core idle), then all four share the cores.
    works = [(t.config, e.phase_seconds) for t, e in zip(trials, estimates)]
    schedule = est.cpu_grid_schedule(works, 4, 2.0, estimates[0].costs)
    assert schedule.wall_s == pytest.approx(94.0 + (sum(seconds) - 94.0) / 2)
    assert schedule.waiting_s == pytest.approx(3 * 94.0)

    p = grid.plan(trials, {"CPU": 2.0, "GPU": 0.0}, "test", None, None)
    out = grid.describe(grid.load_grid(tmp_path / "grid.yaml"), trials, p, [], None, costs)
    assert f"~{est.fmt_seconds(per_trial)} per trial of generations 0..7 (approximate; compute_floor.json" in out
    # Four at once on 2 CPUs, as plan() allows here: 10% more for each of the two beyond the CPUs.
    assert est.expected_wall_s(schedule, 4, 2.0) == pytest.approx(1.2 * schedule.wall_s)
    assert f"grid wall time ~ {est.fmt_seconds(1.2 * schedule.wall_s)} (approximate; from compute_floor.json;" in out
    assert (f"the compute floor {est.fmt_seconds(sum(seconds) / 2)} and {schedule.idle_share:.0%} of the cores idle"
            in out)

    # Each seed trains its own generation 0.
    seeded = trials_of(tmp_path, regimes=REGIMES[:2], seeds=(0, 1))
    assert len({est.generation0_key_of(t.config) for t in seeded}) == 2
    seconds = est.with_shared_generation0([(t.config, est.estimate_trial(t, costs).phase_seconds) for t in seeded])
    assert sum(seconds) == pytest.approx(4 * per_trial - 2 * (80.0 + 4.0))


def test_the_benchmarks_compute_floor_is_the_dry_runs_wall_time_when_no_trial_waits(tmp_path):
    costs_file = compute_floor_file(tmp_path)
    costs = est.load_costs(costs_file, tmp_path / "none.json")
    trials = trials_of(tmp_path, seeds=(0, 1, 2, 3))   # four generation-0 keys: nobody waits
    works = [(t.config, est.estimate_trial(t, costs).phase_seconds) for t in trials]
    schedule = est.cpu_grid_schedule(works, 4, 2.0, costs.for_task("codegen"))
    floor = est.compute_floor_seconds(trials, costs, 2)
    assert floor == pytest.approx(schedule.wall_s) and schedule.idle_share == pytest.approx(0.0)
    assert floor == pytest.approx(4 * 8 * 94.0 / 2)


def test_the_dry_run_says_when_one_more_trial_at_once_would_end_sooner_its_processes_counted(tmp_path):
    costs = est.load_costs(compute_floor_file(tmp_path), tmp_path / "none.json")
    # Three trials of one generation-0 key, generations 0..2. Two at once: the third runs alone on
    # one core at the end (480 s); three: 425 s with the 10% for the one beyond the CPUs; four
    # would add nothing but that 10%.
    trials = trials_of(tmp_path, regimes=REGIMES[:3], generations=2)
    out_of = {}
    for at_once in (2, 3):
        p = grid.plan(trials, {"CPU": 2.0, "GPU": 0.0}, "test", at_once, None)
        out_of[at_once] = grid.describe(grid.load_grid(tmp_path / "grid.yaml"), trials, p, [], None, costs)
    assert f"3 trials at once would take ~{est.fmt_seconds((94.0 + 584.0 / 2) * 1.1)} " in out_of[2]
    assert "trials at once would take" not in out_of[3]
    # make grid's shape, 3 trials of one key twice, generations 0..3: at three at once a fourth
    # keeps both cores busy while two trials wait for generation 0 (5% sooner as compute alone), but
    # not once its processes are counted.
    six = trials_of(tmp_path, regimes=REGIMES[:3], seeds=(0, 1), generations=3)
    p = grid.plan(six, {"CPU": 2.0, "GPU": 0.0}, "test", 3, None)
    works = [(t.config, est.estimate_trial(t, costs).phase_seconds) for t in six]
    three, four = (est.cpu_grid_schedule(works, n, 2.0, costs.for_task("codegen")).wall_s for n in (3, 4))
    assert four < 0.95 * three and 1.2 * four > 0.95 * 1.1 * three
    assert "trials at once would take" not in grid.describe(grid.load_grid(tmp_path / "grid.yaml"), six, p, [],
                                                            None, costs)


def test_the_dry_run_shows_where_each_trial_resumes_and_what_is_left_to_compute(tmp_path):
    from collapse_ray.grid.dry_run import finished_on_disk
    from collapse_ray.trial_state import TrialState, trial_dir
    from tests.small_trials import finish

    costs = est.load_costs(compute_floor_file(tmp_path), tmp_path / "none.json")
    trials_of(tmp_path, regimes=REGIMES)   # four trials of one generation-0 key, generations 0..7
    trials = grid.expand(grid.load_grid(tmp_path / "grid.yaml"), cwd=str(tmp_path))
    for trial, finished in ((trials[0], 8), (trials[1], 3)):   # all eight generations; 0..2
        state = TrialState(trial_dir(trial.config.output_dir, trial.name), "fp")
        for g in range(finished):
            finish(state, g)
    done = finished_on_disk(trials)
    assert [(t.name, t.config.generations) for t in done] == [(trials[0].name, 7), (trials[1].name, 2)]

    p = grid.plan(trials, {"CPU": 2.0, "GPU": 0.0}, "test", None, None)
    out = grid.describe(grid.load_grid(tmp_path / "grid.yaml"), trials, p, [], None, costs, done)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(tuple(t.name for t in trials))}
    assert "0..7 done" in rows[trials[0].name] and "0..7, resumes at 3" in rows[trials[1].name]
    assert "0..7  " in rows[trials[2].name]
    assert "on disk: 1 trial(s) finished, 1 resume at a later generation" in out
    # The whole grid's floor less what is on disk, generation 0 once on both sides: 94 s a
    # generation, 84 s of it generation 0's training and evaluation, shared by all four.
    whole, on_disk = (4 * 8 * 94.0 - 3 * 84.0) / 2, (8 * 94.0 + 3 * 94.0 - 84.0) / 2
    assert (f"left to compute: ~{est.fmt_seconds(whole - on_disk)} of the whole grid's compute floor "
            f"{est.fmt_seconds(whole)}") in out
    assert "on disk" not in grid.describe(grid.load_grid(tmp_path / "grid.yaml"), trials, p, [], None, costs)


def test_the_launch_starts_a_long_tasks_trials_first_where_the_configs_order_leaves_them_alone_at_the_end(tmp_path):
    long = {"train_s": 400.0, "generate_s": 8.0, "evaluate_s": 4.0, "drift_s": 2.0}
    costs = est.load_costs(compute_floor_file(tmp_path, {"codegen": SECONDS, "summarization": long}),
                           tmp_path / "none.json")
    trials = trials_of(tmp_path, regimes=REGIMES[:3], generations=3, tasks=["codegen", "summarization"])
    # Two at once on 2 CPUs: in the config's order the long trials start after the short ones and
    # the last runs alone while its sibling waits for their generation 0 (schedule.py; 12% longer).
    started = est.start_order(trials, costs, 2, 2.0)
    assert [t.config.task.name for t in started] == ["summarization"] * 3 + ["codegen"] * 3
    assert [t.name for t in started[:3]] == [t.name for t in trials[3:]]   # a key's trials in their own order
    p = grid.plan(trials, {"CPU": 2.0, "GPU": 0.0}, "test", 2, None)
    said = grid.describe(grid.load_grid(tmp_path / "grid.yaml"), trials, p, [], None, costs)
    assert "started in the order whose schedule ends soonest" in said and "(the config's order: ~" in said
    # Alike tasks, no costs, or no CPUs to share: the config's order.
    alike = est.load_costs(compute_floor_file(tmp_path, {"codegen": SECONDS, "summarization": SECONDS}),
                           tmp_path / "none.json")
    for c, cpus in ((alike, 2.0), (None, 2.0), (costs, 0.0)):
        assert est.start_order(trials, c, 2, cpus) == trials
    assert "started in the grid's order" in grid.describe(grid.load_grid(tmp_path / "grid.yaml"), trials, p, [],
                                                          None, alike)


def test_without_a_setting_a_cpu_grid_runs_the_number_of_trials_at_once_expected_to_end_soonest(tmp_path):
    costs = est.load_costs(compute_floor_file(tmp_path), tmp_path / "none.json")
    cluster = {"CPU": 2.0, "GPU": 0.0}

    def chosen(trials: list, requested: int | None = None, with_costs=costs) -> grid.Plan:
        return est.with_fastest_concurrency(grid.plan(trials, cluster, "test", requested, None), trials, with_costs,
                                            requested)

    # Three trials of one generation-0 key, generations 0..2 (94 s each on one core). Two at once:
    # the first computes generation 0 (94 s) while the second waits, both go on (188 and 198 s of
    # work), the third starts at 282 s and runs alone on one core to 480 s. Three at once: 94 s,
    # then 584 s of work over two cores, x1.1 for the trial beyond them (OVERHEAD_BEYOND_CORES): 425 s.
    three = trials_of(tmp_path, regimes=REGIMES[:3], generations=2)
    works = [(t.config, est.estimate_trial(t, costs).phase_seconds) for t in three]
    walls = {n: est.expected_wall_s(est.cpu_grid_schedule(works, n, 2.0, costs.for_task("codegen")), n, 2.0)
             for n in (2, 3)}
    assert walls == pytest.approx({2: 480.0, 3: (94.0 + 584.0 / 2) * 1.1})
    p = chosen(three)
    assert p.concurrency == 3 and p.reason.startswith("the estimated fastest on 2 CPUs")
    # make grid's shape, nine trials of three keys: the extra trials cost more than the cores they
    # keep busy, so two at once, of a resource bound of five.
    nine = trials_of(tmp_path, regimes=REGIMES[:3], seeds=(0, 1, 2), generations=3)
    assert grid.plan(nine, cluster, "test", None, None).concurrency == 5
    assert chosen(nine).concurrency == 2
    said = grid.describe(grid.load_grid(tmp_path / "grid.yaml"), nine, chosen(nine), [], None, costs)
    assert "max_concurrent_trials = 2 (the estimated fastest on 2 CPUs" in said
    # Four at once, where a config asks for it: the schedule's wall and 20% for two trials beyond the CPUs.
    asked = chosen(nine, requested=4)
    assert asked.concurrency == 4 and asked.reason.startswith("tune.max_concurrent_trials")
    assert "and 20% for the 2 trial(s) at once beyond the CPUs" in grid.describe(
        grid.load_grid(tmp_path / "grid.yaml"), nine, asked, [], None, costs)
    # Costs measured on two threads (phase_costs.json) say nothing of a one-thread grid trial: the bound.
    two_thread = est.load_costs(tmp_path / "none.json", phase_costs_file(tmp_path))
    assert chosen(nine, with_costs=two_thread).concurrency == 5
    assert chosen(nine, with_costs=None).concurrency == 5
