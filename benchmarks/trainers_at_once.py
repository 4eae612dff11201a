"""One-thread trainers side by side: does this machine train k at once as fast as one alone?

    python benchmarks/trainers_at_once.py [--config experiments/grid.yaml] [--task codegen_embedded]
                                          [--steps 150] [--at-once 1 2 3]

The compute floor (compute_floor.py) divides one-core, in-process seconds by the machine's cores:
it assumes that k trainers on k cores each run as fast as one alone. A grid runs several trials'
one-thread trainers at once (`make grid`: three on two cores), so this measures what they get:
for each k, k processes (spawned, one torch thread each, started together behind a barrier)
train the same generation-0 texts from the base model for ``--steps`` steps with the grid's
training settings (LocalTrainer, as compute_floor.py). Printed per k: the mean wall time of a
trainer, its slowdown against k = 1, and the machine's throughput (trainers' work done per
second, in units of one trainer alone) against its cores, i.e. how much of the floor's
"divide by the cores" the machine delivers.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine
from training_throughput import load_setup


def train_one(training, model, texts, out: str, seed: int, barrier, results) -> None:
    import torch

    from collapse_ray.train.local import LocalTrainer

    torch.set_num_threads(1)
    trainer = LocalTrainer(training)
    barrier.wait(timeout=600)   # a sibling that died before it breaks the barrier instead of hanging us
    start = time.monotonic()
    trainer.train(model, texts, out, seed=seed)
    results.put(time.monotonic() - start)


def side(k: int, training, model, texts, tmp: Path) -> list[float]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=train_one, args=(training, model, texts, str(tmp / f"k{k}-{i}"), i, barrier, results))
             for i in range(k)]
    for p in procs:
        p.start()
    for p in procs:   # before reading the queue: a trainer that died would leave a read waiting forever
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a trainer of k={k} exited with {p.exitcode}")
    return [results.get(timeout=60) for _ in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml")
    parser.add_argument("--task", default="codegen_embedded", help="the grid's task whose texts are trained on")
    parser.add_argument("--steps", type=int, default=150, help="training steps per trainer")
    parser.add_argument("--at-once", type=int, nargs="+", default=[1, 2, 3], help="trainers side by side (k)")
    args = parser.parse_args()
    if 1 not in args.at_once:
        parser.error("--at-once must include 1 (the reference)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    cfg, model, texts = load_setup(args.config, args.task)
    training = dataclasses.replace(cfg.training, backend="local", max_steps=args.steps)
    cores = os.cpu_count() or 1
    print(f"[trainers_at_once] {args.task}: {len(texts)} texts, {args.steps} steps of batch {training.batch_size}; "
          f"{machine()}", file=sys.stderr, flush=True)
    walls: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="trainers-at-once-") as tmp:
        for k in sorted(set(args.at_once)):
            walls[k] = side(k, training, model, texts, Path(tmp))
            print(f"[trainers_at_once] k={k}: " + ", ".join(f"{w:.1f}s" for w in walls[k]), file=sys.stderr, flush=True)

    alone = statistics.mean(walls[1])
    print(f"\n{args.task}, {args.steps} steps per trainer, one torch thread each; {cores} cores; {machine()}")
    print(f"{'k at once':>9} {'mean trainer s':>14} {'slowdown vs alone':>17} {'throughput (trainers alone)':>27} "
          f"{'throughput / min(k, cores)':>26}")
    for k, w in walls.items():
        mean = statistics.mean(w)
        throughput = k * alone / mean
        print(f"{k:>9} {mean:>14.1f} {mean / alone:>17.2f} {throughput:>27.2f} {throughput / min(k, cores):>26.2f}")


if __name__ == "__main__":
    main()
