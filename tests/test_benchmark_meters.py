"""What the end-to-end benchmark reads: CPU-seconds of a process tree split by what each process
is, and phase seconds and Ray Train start-ups from the trials' MLflow runs, one part of a study at
a time (parts share one store)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import TreeCpuMeter, mlflow_phases, process_kind  # noqa: E402


@pytest.mark.parametrize("cmdline, kind", [
    (["ray::VLLMActor.generate"], "ray::VLLMActor"),
    (["ray::RayTrainWorker"], "ray::RayTrainWorker"),
    (["/v/bin/python", "-m", "collapse_ray.cli", "grid", "g.yaml"], "collapse_ray.cli"),
    (["/v/bin/python3.11", "-I", "-S", "-B", "-c", "from collapse_ray.sandbox.child.zygote import main", "/r", "5"],
     "sandbox"),
    (["/v/bin/python", "-u", "/v/ray/_private/log_monitor.py", "--x=1"], "log_monitor.py"),
    (["/v/ray/core/src/ray/raylet/raylet", "--raylet_socket_name=/tmp/s"], "raylet"),
    ([], "?"),
])
def test_process_kind_names_ray_actors_python_modules_and_executables(cmdline, kind):
    assert process_kind(cmdline) == kind


def test_tree_cpu_meter_counts_a_grandchild_that_exits_under_its_kind(tmp_path):
    (tmp_path / "this_is_busy.py").write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n")
    # The parent spawns a grandchild that becomes the busy program (as a Ray worker starts as
    # setup_worker.py and renames itself) and exits; the parent outlives it: its CPU must still
    # count, under the name it ended with.
    become_busy = "import os, sys, time; time.sleep(0.3); os.execv(sys.executable, [sys.executable, '-m', 'this_is_busy'])"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {become_busy!r}]); "
                               "time.sleep(0.5)"],
                              cwd=tmp_path)
    meter = TreeCpuMeter(parent.pid, interval_s=0.05)
    parent.wait(timeout=60)
    total = meter.stop()
    kinds = meter.by_kind()
    assert kinds.get("this_is_busy", 0.0) >= 0.8, kinds
    assert total == pytest.approx(sum(kinds.values()))


def test_tree_cpu_meter_counts_each_process_once_when_the_wall_clock_moves(tmp_path, monkeypatch):
    """psutil's create_time follows the wall clock (boot time + ticks since boot); a clock being
    corrected made each process look new at every move and counted it again."""
    import itertools

    import psutil

    clock = itertools.count(1_800_000_000, 1.0)   # a create_time that moves at every read
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: next(clock))
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"])
    meter = TreeCpuMeter(busy.pid, interval_s=0.05)
    busy.wait(timeout=60)
    total = meter.stop()
    assert 0.8 <= total <= 1.5, meter.by_kind()


def test_mlflow_phases_sum_one_part_s_trials_and_their_training_jobs_parts(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("bench")
    logged = {"part2_a": [(10.0, 4.0), (20.0, 0.0)], "part2_b": [(5.0, 2.0)], "part1_a": [(100.0, 50.0)]}
    for name, gens in logged.items():
        run = client.create_run(exp, run_name=name)
        for g, (train, startup) in enumerate(gens):
            client.log_metric(run.info.run_id, "time/train_s", train, step=g)
            client.log_metric(run.info.run_id, "time/evaluate_s", 1.0, step=g)
            client.log_metric(run.info.run_id, "train/startup_s", startup, step=g)
            client.log_metric(run.info.run_id, "train/core_wait_s", startup / 2, step=g)
            client.log_metric(run.info.run_id, "train/steps_s", train / 2, step=g)
            client.log_metric(run.info.run_id, "train/steps_cpu_s", train / 4, step=g)
        client.set_terminated(run.info.run_id)
    client.create_run(exp, run_name="grid parent")   # no time/ metrics: not a trial

    part2 = mlflow_phases(uri, "bench", {"part2_a", "part2_b"})
    assert part2["phases"] == {"train": 35.0, "evaluate": 3.0}
    assert part2["train_startups_s"] == {"part2_a": 4.0, "part2_b": 2.0}
    assert part2["train_core_waits_s"] == {"part2_a": 2.0, "part2_b": 1.0}
    assert part2["train_steps_s"] == {"part2_a": 15.0, "part2_b": 2.5}
    assert part2["train_steps_cpu_s"] == {"part2_a": 7.5, "part2_b": 1.25}
    assert set(part2["trial_walls"]) == {"part2_a", "part2_b"}
    everything = mlflow_phases(uri, "bench")
    assert everything["phases"]["train"] == 135.0


def test_a_process_read_while_it_exits_keeps_the_name_it_had():
    # An exiting process's command line reads empty ("?"); its CPU-seconds stay under its name.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    meter = TreeCpuMeter(child.pid, interval_s=60)
    child.wait(timeout=60)
    meter.stop()
    key = (1, 0.0)
    meter.remember_kind(key, "ray::RayTrainWorker")
    meter.remember_kind(key, "?")
    meter.seen[key] = 5.0
    assert meter.by_kind()["ray::RayTrainWorker"] == 5.0
    meter.remember_kind((2, 0.0), "?")   # never named: unknown
    meter.seen[(2, 0.0)] = 1.0
    assert meter.by_kind()["?"] == 1.0


def test_end_to_end_set_replaces_one_field_of_the_grid_yaml():
    """A study part's controls alone: --set grid.regimes=[...] keeps every other axis and field."""
    from end_to_end import apply_settings

    data = {"base": {"generations": 7}, "grid": {"regimes": [{"name": "accumulate"}], "seeds": [0, 1, 2]}}
    apply_settings(data, ["grid.regimes=[{name: real-only}, {name: synthetic-only}]", "tune.max_concurrent_trials=2"])
    assert data == {"base": {"generations": 7}, "tune": {"max_concurrent_trials": 2},
                    "grid": {"regimes": [{"name": "real-only"}, {"name": "synthetic-only"}], "seeds": [0, 1, 2]}}
    for bad in ("grid.regimes", "=3", "base.generations.x=1"):
        with pytest.raises(SystemExit, match="--set"):
            apply_settings(data, [bad])


def test_the_compute_floor_at_the_measured_sizes_is_the_measured_costs_and_follows_the_trials_sizes():
    """The floor the benchmarks divide by (estimate.compute_floor_seconds): at compute_floor.json's
    own sizes its per-generation costs unscaled; a four times larger pool adds generation and drift
    work, which the floor counts."""
    import dataclasses
    import json

    from common import PHASE_COSTS, grid_trials

    from collapse_ray.grid import estimate as est

    costs = est.load_costs(compute_floor=PHASE_COSTS, phase_costs="")
    measured = json.loads(PHASE_COSTS.read_text())["tasks"]
    _, trials = grid_trials(str(REPO / "experiments" / "grid.yaml"))
    unscaled = [(t.config, {p: measured[t.config.task.name][f"{p}_s"] for p in est.PHASES}) for t in trials]
    assert est.compute_floor_seconds(trials, costs, 2) == pytest.approx(sum(est.with_shared_generation0(unscaled)) / 2)
    _, small_pool = grid_trials(str(REPO / "experiments" / "study_codegen.yaml"))
    _, large_pool = grid_trials(str(REPO / "experiments" / "study_codegen_pool.yaml"))
    def synthetic_only_to_generation_10(trials):
        return [dataclasses.replace(t, config=dataclasses.replace(t.config, generations=10)) for t in trials
                if t.labels.regime == "synthetic-only" and t.labels.seed == 0]

    one, four = map(synthetic_only_to_generation_10, (small_pool, large_pool))
    assert est.compute_floor_seconds(four, costs, 2) > est.compute_floor_seconds(one, costs, 2) * 1.1


def test_the_floor_by_phase_adds_up_to_the_floor_and_counts_a_shared_generation_0_once():
    """estimate.floor_phase_seconds (end_to_end.py sets each kind of process against it): make
    grid's 9 trials x generations 0..3, one generation 0 per task: each task trains and evaluates
    1 + 3 x 3 times and generates and measures drift 3 x 4 times."""
    import json

    from common import PHASE_COSTS, grid_trials

    from collapse_ray.grid import estimate as est

    costs = est.load_costs(compute_floor=PHASE_COSTS, phase_costs="")
    measured = json.loads(PHASE_COSTS.read_text())["tasks"]
    _, trials = grid_trials(str(REPO / "experiments" / "grid.yaml"))
    by_phase = est.floor_phase_seconds(trials, costs)
    assert sum(by_phase.values()) / 2 == pytest.approx(est.compute_floor_seconds(trials, costs, 2))
    tasks = {t.config.task.name for t in trials}
    assert {t.config.generations for t in trials} == {3} and len(trials) == 3 * len(tasks)
    runs = {"train": 10, "evaluate": 10, "generate": 12, "drift": 12}
    assert by_phase == pytest.approx({p: runs[p] * sum(measured[task][f"{p}_s"] for task in tasks) for p in est.PHASES})


def test_each_kind_of_process_is_set_against_the_floor_of_the_phases_it_computes(capsys):
    from end_to_end import print_against_floor

    floor = {"train": 100.0, "generate": 10.0, "evaluate": 3.0, "drift": 2.0}
    on_ray = {"ray::RayTrainWorker": 120.0, "ray::VLLMActor": 20.0, "ray::TrialDriver": 10.0, "raylet": 5.0}
    print_against_floor(on_ray, floor, cpu_s=155.0, core_seconds=200.0)
    out = capsys.readouterr().out
    assert "Train workers 120 vs train 100 (x1.20)" in out and "vLLM actors 20 vs generate 10 (x2.00)" in out
    assert "trial drivers 10 vs evaluate+drift 5 (x2.00)" in out
    assert "every other process 5" in out and "idle cores 45" in out
    # training.backend local: the trial drivers train
    print_against_floor({"ray::TrialDriver": 110.0}, floor, cpu_s=110.0, core_seconds=200.0)
    assert "trial drivers 110 vs train+evaluate+drift 105" in capsys.readouterr().out
