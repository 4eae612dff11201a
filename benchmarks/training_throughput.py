"""Training throughput in process vs on Ray Train, on this machine, in one run.

    python benchmarks/training_throughput.py [--config experiments/grid_smoke.yaml] [--jobs 4]
                                             [--workers 1 2] [--no-per-fit]

Every side trains the same model (the config's base model, the embedded tiny one by default) on
the same texts (generation 0's training set of the config's task and seed) with the same
settings (the config's ``training``) for ``--jobs`` jobs, each from the base model, as a trial's
generations would. Sides, one after another:

- ``in-process``: LocalTrainer in this process.
- ``ray N worker(s)``: one RayTrainer (one persistent Train worker group, DDP) sent every job;
  its first job pays the group's start-up, the later ones are the steady state.
- ``ray 1 worker, group per job`` (unless ``--no-per-fit``): a fresh RayTrainer per job, closed
  after it: a new Train controller and worker group at every job, as the per-fit path before the
  persistent group did.

Printed per side: the first job's wall time, the group's start-up, the median steady-state job
(jobs 2..N) and its training tokens/s (tokens trained / job wall time: loading, training and
saving the model included on every side), and ratios of each Ray side to in-process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collapse_ray.base_model import resolve_model_path  # noqa: E402
from collapse_ray.config import config_from_dict, read_yaml_mapping  # noqa: E402
from collapse_ray.datatypes import ModelRef  # noqa: E402
from collapse_ray.tasks import get_task  # noqa: E402


def load_setup(config_path: str, tasks: str | None):
    """The experiment config (a grid's ``base`` with its first task), the base model, the texts."""
    data = read_yaml_mapping(config_path)
    if "grid" in data:   # a grid file: its base config and its first task
        base = dict(data["base"])
        base.setdefault("task", {"name": (tasks or data["grid"]["tasks"][0])})
        data = base
    cfg = config_from_dict(data)
    # Absolute: Ray Train workers do not run in this directory.
    model = ModelRef(str(Path(resolve_model_path(cfg.model, progress=lambda msg: print(msg, file=sys.stderr))).resolve()))
    texts = [ex.text for ex in get_task(cfg.task.name).load(cfg.task.data_path, cfg.seed, cfg.sizes).train]
    return cfg, model, texts[:cfg.sizes.train_examples]


def run_side(name, make_trainer, per_job_trainer: bool, model, texts, jobs: int, out: Path) -> dict:
    """Run ``jobs`` jobs; per job: wall s, tokens, start-up s (0 when no group started)."""
    rows, trainer = [], None
    for job in range(jobs):
        if trainer is None or per_job_trainer:
            trainer = make_trainer()
        start = time.monotonic()
        result = trainer.train(model, texts, str(out / name.replace(" ", "_") / f"job{job}" / "model"), seed=job)
        wall = time.monotonic() - start
        startup = result.startup_s
        rows.append({"wall_s": wall, "tokens": result.tokens, "startup_s": startup, "steps": result.steps})
        print(f"  {name}: job {job}: {wall:.1f}s, {result.steps} steps, {result.tokens} tokens"
              + (f", start-up {startup:.1f}s" if startup else ""), file=sys.stderr, flush=True)
        if per_job_trainer and hasattr(trainer, "close"):
            trainer.close()
    if trainer is not None and hasattr(trainer, "close"):
        trainer.close()
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    steady = rows[1:] or rows
    median_wall = statistics.median(r["wall_s"] for r in steady)
    return {"first_s": rows[0]["wall_s"], "startup_s": rows[0]["startup_s"], "steady_s": median_wall,
            "tokens_per_s": statistics.median(r["tokens"] / r["wall_s"] for r in steady),
            "tokens": rows[0]["tokens"], "steps": rows[0]["steps"],
            "mean_job_s": statistics.mean(r["wall_s"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/grid_smoke.yaml")
    parser.add_argument("--task", default=None, help="for a grid config: the task (default: its first)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs per side (the first includes start-up)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-per-fit", action="store_true", help="skip the fresh-group-per-job side")
    args = parser.parse_args()
    if args.jobs < 2:
        parser.error("--jobs must be at least 2 (the first job includes start-up)")

    import ray

    from collapse_ray.train.local import LocalTrainer
    from collapse_ray.train.ray_trainer import RayTrainer

    cfg, model, texts = load_setup(args.config, args.task)
    training = cfg.training
    print(f"model {model.path}; {len(texts)} texts; training {training}; {os.cpu_count()} CPUs", file=sys.stderr)
    ray.init(address="local", num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="training-throughput-") as tmp:
        out = Path(tmp)
        results["in-process"] = run_side("in-process", lambda: LocalTrainer(training), False, model, texts,
                                         args.jobs, out)
        for n in args.workers:
            results[f"ray {n} worker(s)"] = run_side(
                f"ray {n} worker(s)", lambda n=n: RayTrainer(training, num_workers=n,
                                                             resources_per_worker={"CPU": 1}),
                False, model, texts, args.jobs, out)
        if not args.no_per_fit:
            results["ray 1 worker, group per job"] = run_side(
                "ray 1 worker, group per job", lambda: RayTrainer(training, num_workers=1,
                                                                  resources_per_worker={"CPU": 1}),
                True, model, texts, args.jobs, out)
    ray.shutdown()
    print_table(results, args.jobs)


def print_table(results: dict[str, dict], jobs: int) -> None:
    local = results["in-process"]
    steps = local["steps"]
    print(f"\n{jobs} jobs per side, {steps} steps and {local['tokens']} tokens per job; "
          f"steady state = median of jobs 2..{jobs}")
    print(f"{'side':<30} {'first job s':>11} {'start-up s':>10} {'steady job s':>12} {'tokens/s':>9} "
          f"{'tokens/s vs local':>17} {'mean job s vs local':>19}")
    for name, r in results.items():
        print(f"{name:<30} {r['first_s']:>11.1f} {r['startup_s']:>10.1f} {r['steady_s']:>12.1f} "
              f"{r['tokens_per_s']:>9.0f} {r['tokens_per_s'] / local['tokens_per_s']:>17.2f} "
              f"{r['mean_job_s'] / local['mean_job_s']:>19.2f}")


if __name__ == "__main__":
    main()
