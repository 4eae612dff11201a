"""Orchestration: the same trials in process one after another vs through the grid on Ray.

    python benchmarks/orchestration.py [--config experiments/grid.yaml] [--task codegen_embedded]
                                       [--trials 3] [--generations 2] [--max-steps N] [--order inprocess,grid]
                                       [--concurrency N]

The trials are the grid config's first ``--trials`` regimes (seed 0) of ``--task``, or of each of
its tasks with ``--task all`` (``--task all --trials 3 --generations 3`` on experiments/grid.yaml
are `make grid`'s nine trials),
with ``generations`` and, if given, ``training.max_steps`` changed for both sides alike; sizes,
seeds and the generator (vLLM, its CPU build, in a Ray actor) are the same on both sides:

- ``inprocess``: one Python process calls ``loop.run_trial`` for each trial in turn, training in
  that process (training.backend: local), as ``collapse-ray run`` does;
- ``grid``: ``collapse-ray grid`` on a fresh local Ray: Tune runs the trials at once, as many as
  the planner chooses for a grid without ``tune.max_concurrent_trials`` (or ``--concurrency``),
  each with its Ray Train worker group and vLLM actor, logging to MLflow. Not the config's
  setting: that is set for the config's whole grid (experiments/grid.yaml: 2 of its 9 trials),
  and three trials two at a time leave the third training alone on one core at the end while the
  other idles (the planner runs all three at once on 2 CPUs: docs/grid.md).

Each side is a child process with its own MLflow store and output folder; its wall time and its
process tree's CPU-seconds (sampled; Ray's processes are children of the one that started Ray)
are measured. Printed: wall ratio grid / in-process, CPU utilisation (CPU-seconds / (wall x
cores)), per phase the seconds summed over trials and generations (MLflow ``time/*_s``) on both
sides and their ratio, and the grid's Ray Train worker-group start-ups against its trials' wall.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from common import machine, mlflow_phases, print_shares, run_metered, write_relocated

REPO = Path(__file__).resolve().parents[1]


def small_grid(config: str, task: str, trials: int, generations: int, max_steps: int | None, out: Path,
               concurrency: int | None = None) -> Path:
    """The grid config cut to ``trials`` regimes of one task (``task`` "all": of each of its tasks),
    in its own output and MLflow store, ``concurrency`` of them at once (default: the planner's choice)."""
    data = yaml.safe_load(Path(config).read_text())
    regimes = data["grid"]["regimes"][:trials]
    if len(regimes) < trials:
        raise SystemExit(f"--trials {trials}: {config} has only {len(regimes)} regimes")
    data["name"] = "orchestration"
    tasks = data["grid"]["tasks"] if task == "all" else [task]
    data["grid"] = {**data["grid"], "tasks": tasks, "regimes": regimes, "seeds": [0]}
    base = data["base"]
    base["generations"] = generations
    if max_steps is not None:
        base["training"]["max_steps"] = max_steps
    data.setdefault("tune", {})["max_concurrent_trials"] = concurrency
    return write_relocated(data, out)


def run_in_process(grid_path: str) -> None:
    """The in-process side (run in a child process): every trial through ``run_trial``, in turn."""
    import dataclasses

    import ray

    from collapse_ray.console import quiet_libraries
    from collapse_ray.grid import expand, load_grid
    from collapse_ray.loop import run_trial

    quiet_libraries()   # as `collapse-ray run`: its progress lines, not transformers' bars
    ray.init(address="local", include_dashboard=False, log_to_driver=False)   # hosts only the vLLM actor
    for trial in expand(load_grid(grid_path)):
        cfg = dataclasses.replace(trial.config, training=dataclasses.replace(trial.config.training, backend="local"))
        run_trial(cfg, labels=trial.labels)
    ray.shutdown()


def run_side(side: str, grid_path: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RAY_ADDRESS": "local", "HF_HUB_OFFLINE": "1"}
    if side == "grid":
        cmd = [sys.executable, "-m", "collapse_ray.cli", "grid", str(grid_path)]
    else:
        cmd = [sys.executable, __file__, "--run-in-process", str(grid_path)]
    print(f"[orchestration] {side}: running ({machine()})", file=sys.stderr, flush=True)
    log = out / f"{side}.log"
    result = run_metered(cmd, env, log)
    result.update(mlflow_phases(f"sqlite:///{out / 'mlflow.db'}", "bench"))
    print(f"[orchestration] {side}: {result['wall_s']:.0f}s wall, utilisation {result['utilisation']:.2f}",
          file=sys.stderr, flush=True)
    return result


def report(results: dict, args) -> None:
    ip, grid = results["inprocess"], results["grid"]
    cores = os.cpu_count() or 1
    tasks = "each of its tasks" if args.task == "all" else args.task
    print(f"\n{args.trials} regimes of {args.config} ({tasks}, seed 0) x generations 0..{args.generations}, "
          f"max_steps {args.max_steps or 'as configured'}; the grid {args.concurrency or 'as planned'} at once; "
          f"sides run {args.order}; {cores} cores")
    print(f"wall: grid {grid['wall_s']:.0f}s / in-process {ip['wall_s']:.0f}s = {grid['wall_s'] / ip['wall_s']:.2f}")
    print(f"CPU utilisation (CPU-s / (wall x {cores})): in-process {ip['utilisation']:.2f}, grid {grid['utilisation']:.2f}")
    print("per phase, seconds summed over trials and generations (MLflow time/*_s):")
    print(f"  {'phase':<10}{'in-process':>12}{'grid':>10}{'grid/in-process':>17}")
    for phase in sorted(set(ip["phases"]) | set(grid["phases"])):
        a, b = ip["phases"].get(phase, 0.0), grid["phases"].get(phase, 0.0)
        print(f"  {phase:<10}{a:>12.1f}{b:>10.1f}{(b / a if a else float('nan')):>17.2f}")
    for side in ("inprocess", "grid"):
        print_shares(side, results[side]["phases"], results[side]["wall_s"])
    startups, walls = sum(grid["train_startups_s"].values()), sum(grid["trial_walls"].values())
    if walls:
        print(f"grid: Ray Train worker-group start-ups {startups:.0f}s = {startups / walls:.1%} of its trials' "
              f"summed wall ({walls:.0f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml", help="grid YAML the trials come from")
    parser.add_argument("--task", default="codegen_embedded", help="one of the config's tasks, or 'all'")
    parser.add_argument("--trials", type=int, default=3, help="how many of the config's regimes (per task)")
    parser.add_argument("--generations", type=int, default=2, help="last generation (0..N)")
    parser.add_argument("--max-steps", type=int, help="training.max_steps for both sides (default: the config's)")
    parser.add_argument("--order", default="inprocess,grid", help="which side runs first")
    parser.add_argument("--concurrency", type=int, help="the grid's trials at once (default: the planner's choice)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--run-in-process", metavar="GRID_YAML", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_in_process:
        return run_in_process(args.run_in_process)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    sides = args.order.split(",")
    if sorted(sides) != ["grid", "inprocess"]:
        parser.error("--order: 'inprocess,grid' or 'grid,inprocess'")
    results = {}
    tmp = tempfile.mkdtemp(prefix="orchestration-")   # kept: each side's log and MLflow store
    print(f"[orchestration] logs and MLflow stores in {tmp}", file=sys.stderr, flush=True)
    for side in sides:
        out = Path(tmp, side)
        out.mkdir()
        grid_path = small_grid(args.config, args.task, args.trials, args.generations, args.max_steps, out,
                               args.concurrency)
        results[side] = run_side(side, grid_path, out)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()
