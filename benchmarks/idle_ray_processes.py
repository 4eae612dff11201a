"""What a trial's idle Ray processes cost: Ray Train's helpers with and without the preemption
watcher and the helpers lean_trainer.py leaves out, side by side in one run.

    python benchmarks/idle_ray_processes.py [--seconds 60] [--config experiments/grid.yaml]

Each side starts a local Ray (``collapse_ray.ray_here.init_ray``, as the grid's launch does) in a
process of its own, runs one two-step training job on a persistent Train worker group (the
config's base model and first task, one worker), then measures for ``--seconds`` the CPU of every
process of that Ray while the group waits for its next job (as it does while its trial generates
and evaluates). Sides: "train default" sets RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1 (Train's own
default) and starts all of Train's helpers; "watcher off" leaves the watcher to init_ray (off for a
Ray started here) and still starts all helpers; "this project" is the grid's group: watcher off,
and no DatasetManager or (where Ray's state API does not answer) PlacementGroupCleaner.

Why: an idle Ray worker's core worker wakes every 10 ms to check for signals; on 2 cores every
process a trial keeps alive costs its generations time (docs/BENCHMARKS.md, "Idle Ray workers").
"""
from __future__ import annotations

import dataclasses
import os
import time

WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# side: (the watcher's env value, None: unset; whether lean_trainer.py leaves idle helpers out)
SIDES = {"train default": ("1", False), "watcher off": (None, False), "this project": (None, True)}


def measure_side(config: str, seconds: float, lean: bool) -> dict:
    """In this process: start Ray, train one job, measure the idle processes."""
    from pathlib import Path
    from tempfile import TemporaryDirectory

    import psutil

    from common import process_kind
    from training_throughput import load_setup

    from collapse_ray.ray_here import init_ray
    from collapse_ray.train import lean_trainer
    from collapse_ray.train.ray_trainer import RayTrainer

    if not lean:   # Train's full set of helpers
        lean_trainer.idle_helpers = lambda **_: frozenset()

    cfg, model, texts = load_setup(config, None)
    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    training = dataclasses.replace(cfg.training, max_steps=2)
    with TemporaryDirectory() as out, RayTrainer(training, num_workers=1, resources_per_worker={"CPU": 1}) as trainer:
        trainer.train(model, texts[:32], str(Path(out, "model")), seed=0)
        time.sleep(5)   # let the job's own work finish
        me = os.getpid()

        def snapshot() -> dict:
            seen = {}
            for p in psutil.process_iter(["cmdline"]):
                try:
                    kind = process_kind(p.info["cmdline"] or [])
                    if p.pid == me or not (kind.startswith("ray::") or kind in ("raylet", "gcs_server")):
                        continue
                    t = p.cpu_times()
                    seen[p.pid] = (kind, t.user + t.system)
                except psutil.Error:
                    continue
            return seen

        before, start = snapshot(), time.monotonic()
        time.sleep(seconds)
        after, wall = snapshot(), time.monotonic() - start
    per_kind: dict[str, float] = {}
    for pid, (kind, cpu) in after.items():
        if pid in before:
            per_kind[kind] = per_kind.get(kind, 0.0) + 100 * (cpu - before[pid][1]) / wall
    actors = [k for k in per_kind if k.startswith("ray::") and k != "ray::IDLE"]
    return {"per_kind": per_kind, "actor_processes": sum(1 for k, _ in after.values() if k in actors),
            "total_pct_core": sum(per_kind.values())}


def side_env(side: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != WATCHER_ENV}
    if SIDES[side][0] is not None:
        env[WATCHER_ENV] = SIDES[side][0]
    return env


def main() -> None:
    from common import idle_sides_cli

    results = idle_sides_cli(__doc__, 60.0, lambda config, seconds, side: measure_side(config, seconds, SIDES[side][1]),
                         SIDES, side_env)
    if results is None:
        return
    base = results["train default"]["total_pct_core"]
    print(f"{'side':<14} {'actor procs':>11} {'idle CPU % of a core':>21} {'vs train default':>17}")
    for side, r in results.items():
        print(f"{side:<14} {r['actor_processes']:>11} {r['total_pct_core']:>21.2f} {r['total_pct_core'] / base:>17.2f}")
    for side, r in results.items():
        top = sorted(r["per_kind"].items(), key=lambda kv: -kv[1])
        print(f"  {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in top))


if __name__ == "__main__":
    main()
