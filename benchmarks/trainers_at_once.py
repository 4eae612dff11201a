"""One-thread trainers side by side: does this machine train k at once as fast as one alone?

    python benchmarks/trainers_at_once.py [--config experiments/grid.yaml] [--task codegen_embedded]
                                          [--steps 150] [--at-once 1 2 4]

The compute floor (compute_floor.py) divides one-core, in-process seconds by the machine's cores:
it assumes that k trainers on k cores each run as fast as one alone. A grid runs several trials'
one-thread trainers at once (`make grid`: four on two cores), so this measures what they get:
for each k, k processes (spawned, one torch thread each, started together behind a barrier)
train the same generation-0 texts from the base model for ``--steps`` steps with the grid's
training settings (LocalTrainer, as compute_floor.py). Where k exceeds the cores, a second,
gated side runs the same k trainers, each first taking one of the cores' slots
(collapse_ray/train/core_slots.py, what a grid's CPU Train workers do), so that at most one
trainer runs per core. Printed per side: its wall (the last trainer's end), the slowdown against
k = 1, and the machine's throughput (trainers' work done per second, in units of one trainer
alone) against its cores, i.e. how much of the floor's "divide by the cores" the machine
delivers; for a gated side, the ungated side's wall over its own.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine
from training_throughput import load_setup   # puts the repository on sys.path

from collapse_ray.cores import available_cores  # noqa: E402


def train_one(training, model, texts, out: str, seed: int, barrier, results, slots: str | None) -> None:
    import torch

    from collapse_ray.train.core_slots import core_slots
    from collapse_ray.train.local import LocalTrainer

    torch.set_num_threads(1)
    trainer = LocalTrainer(training)
    barrier.wait(timeout=600)   # a sibling that died before it breaks the barrier instead of hanging us
    start = time.monotonic()
    with core_slots(1, directory=Path(slots)) if slots else contextlib.nullcontext():
        trainer.train(model, texts, out, seed=seed)
    results.put(time.monotonic() - start)


def side(k: int, training, model, texts, tmp: Path, gated: bool) -> list[float]:
    """Each trainer's seconds from the common start to its end (a gated one's wait for a core included)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(k), ctx.Queue()
    slots = str(tmp / f"slots-k{k}") if gated else None   # this side's own, not the node's (a grid may run)
    procs = [ctx.Process(target=train_one,
                         args=(training, model, texts, str(tmp / f"k{k}-{i}-{gated}"), i, barrier, results, slots))
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
    parser.add_argument("--at-once", type=int, nargs="+", default=[1, 2, 4], help="trainers side by side (k)")
    args = parser.parse_args()
    if 1 not in args.at_once:
        parser.error("--at-once must include 1 (the reference)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    cfg, model, texts = load_setup(args.config, args.task)
    training = dataclasses.replace(cfg.training, backend="local", max_steps=args.steps)
    cores = available_cores()
    print(f"[trainers_at_once] {args.task}: {len(texts)} texts, {args.steps} steps of batch {training.batch_size}; "
          f"{machine()}", file=sys.stderr, flush=True)
    sides: dict[tuple[int, bool], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="trainers-at-once-") as tmp:
        for k in sorted(set(args.at_once)):
            for gated in (False, True) if k > cores else (False,):
                sides[k, gated] = side(k, training, model, texts, Path(tmp), gated)
                print(f"[trainers_at_once] k={k}{' gated' if gated else ''}: "
                      + ", ".join(f"{w:.1f}s" for w in sides[k, gated]), file=sys.stderr, flush=True)

    alone = statistics.mean(sides[1, False])
    print(f"\n{args.task}, {args.steps} steps per trainer, one torch thread each; {cores} cores; {machine()}")
    print("gated: each trainer first takes one of the cores' slots (collapse_ray/train/core_slots.py), so at most "
          f"{cores} train at once; throughput = k trainers' work / the side's wall (its last trainer's end)")
    print(f"{'k at once':>9} {'gated':>5} {'side wall s':>11} {'slowdown vs alone':>17} "
          f"{'throughput (trainers alone)':>27} {'throughput / min(k, cores)':>26} {'vs ungated':>10}")
    for (k, gated), walls in sides.items():
        wall = max(walls)
        throughput = k * alone / wall
        versus = f"{max(sides[k, False]) / wall:>10.2f}" if gated else f"{'':>10}"
        print(f"{k:>9} {'yes' if gated else 'no':>5} {wall:>11.1f} {wall / alone:>17.2f} {throughput:>27.2f} "
              f"{throughput / min(k, cores):>26.2f} {versus}")


if __name__ == "__main__":
    main()
