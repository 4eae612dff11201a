"""CPU training with glibc's default malloc thresholds vs with freed memory kept
(collapse_ray/train/cpu_allocator.py), side by side in one run.

    python benchmarks/cpu_allocator.py [--config experiments/grid.yaml] [--steps 60] [--repeats 2]
                                       [--at-once 1] [--thresholds-mb MMAP TRIM]

Each measurement is a fresh process that trains the config's base model on generation 0's
training set of one task (the config's ``training`` with ``max_steps = --steps``, one torch
thread, LocalTrainer as the floor and the in-process path use it); the sides alternate, task by
task, ``--repeats`` times. ``--at-once N`` starts N such processes together per measurement (a
grid trains several trials at once on one machine). Printed per task and side: median wall
seconds of a job, its user and system CPU-seconds, minor page faults and peak RSS, and the
ratio of the kept side's wall to the default side's.
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIDES = ("glibc default", "freed memory kept")


def measure(config: str, task: str, steps: int, keep: bool, thresholds: list[int] | None) -> dict:
    """In this process: one training job; its wall, CPU, faults and peak RSS."""
    import dataclasses

    import torch

    import collapse_ray.train.local as local
    from training_throughput import load_setup

    torch.set_num_threads(1)
    if keep and thresholds:   # other thresholds than the defaults, to compare settings
        local.keep_freed_memory = functools.partial(local.keep_freed_memory, *(mb * 2**20 for mb in thresholds))
    if not keep:
        local.keep_freed_memory = lambda: False
    cfg, model, texts = load_setup(config, task)
    training = dataclasses.replace(cfg.training, backend="local", max_steps=steps)
    with tempfile.TemporaryDirectory() as out:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        local.LocalTrainer(training).train(model, texts, str(Path(out, "model")), seed=0)
        wall, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, "max_rss_mb": after.ru_maxrss / 1024}


def run_children(args, task: str, keep: bool) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", task, "--config", args.config, "--steps", str(args.steps)]
    if args.thresholds_mb:
        cmd += ["--thresholds-mb", *map(str, args.thresholds_mb)]
    procs = [subprocess.Popen(cmd + (["--keep"] if keep else []), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(args.at_once)]
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            sys.exit(f"{task} ({SIDES[keep]}) failed:\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/grid.yaml")
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task of the grid")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--at-once", type=int, default=1)
    parser.add_argument("--thresholds-mb", type=int, nargs=2, metavar=("MMAP", "TRIM"),
                        help="the kept side's mmap and trim thresholds (default: cpu_allocator.py's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.config, args.child, args.steps, args.keep, args.thresholds_mb)))
        return
    from common import machine
    from collapse_ray.config import read_yaml_mapping

    tasks = args.tasks or read_yaml_mapping(args.config)["grid"]["tasks"]
    print(f"machine: {machine()}; {args.steps} steps a job, {args.at_once} job(s) at once, "
          f"{args.repeats} repeat(s)", flush=True)
    rows: dict[tuple[str, bool], list[dict]] = {}
    for repeat in range(args.repeats):
        for task in tasks:
            for keep in (False, True) if repeat % 2 == 0 else (True, False):
                got = run_children(args, task, keep)
                rows.setdefault((task, keep), []).extend(got)
                print(f"  {task} / {SIDES[keep]}: " + ", ".join(f"{r['wall_s']:.1f}s" for r in got), flush=True)
    print(f"{'task':<18} {'side':<18} {'wall s':>7} {'user s':>7} {'sys s':>6} {'faults':>9} {'RSS MB':>7} {'vs default':>10}")
    for task in tasks:
        medians = {keep: {k: statistics.median(r[k] for r in rows[(task, keep)]) for k in rows[(task, keep)][0]}
                   for keep in (False, True)}
        for keep in (False, True):
            m = medians[keep]
            print(f"{task:<18} {SIDES[keep]:<18} {m['wall_s']:>7.1f} {m['user_s']:>7.1f} {m['sys_s']:>6.1f} "
                  f"{m['minor_faults']:>9.0f} {m['max_rss_mb']:>7.0f} {m['wall_s'] / medians[False]['wall_s']:>10.2f}")


if __name__ == "__main__":
    main()
