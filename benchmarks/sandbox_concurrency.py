"""The sandbox's wall time against the runs it has at once, on an idle machine and beside busy
processes (a grid's trials training and generating), in one run.

    python benchmarks/sandbox_concurrency.py [--workers 2 8 16] [--busy 0 8] [--kind torch|python] [--repeats 3]

Programs: the embedded benchmark's test set as the study evaluates it (experiments/grid.yaml's
sizes: 256 problems, each canonical solution with its hidden tests; all must pass). For each
number of busy processes (``--kind``: torch matrix products on two threads each, as a grid's
trials compute, or a pure-Python loop; at this process's niceness, started before and stopped
after their rows), every worker count is run in turn, ``--repeats`` times alternating,
and the median wall time printed with its ratio to the first worker count's.

Why: a sandboxed run costs ~10 ms of CPU but hops through four processes and makes and tears down
namespaces; beside busy processes each hop waits for the scheduler, so the evaluation phase of a
grid's trial took 12-195 s against 1.8 s idle (docs/BENCHMARKS.md, "Sandbox concurrency").
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

from common import grid_trials, machine


def test_programs(config: str) -> list[str]:
    from collapse_ray.data.humaneval import program_for
    from collapse_ray.tasks import get_task

    cfg = next(t.config for t in grid_trials(config)[1] if t.config.task.name == "codegen_embedded")
    task = get_task(cfg.task.name, cfg.task.options)
    test = task.load(cfg.task.data_path, cfg.seed, cfg.sizes).test
    return [program_for(p, p["prompt"] + p["canonical_solution"]) for p in test]


# What busies the CPUs: a pure-Python loop, or torch matrix products on two threads each (as a
# grid's Train workers and vLLM engines compute: OpenMP threads that spin between products).
BUSY = {"python": "while True: pass",
        "torch": "import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\nwhile True: a @ a"}


@contextmanager
def busy_processes(n: int, kind: str):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY[kind]]) for _ in range(n)]
    try:
        time.sleep(1.0 if n else 0.0)   # let them take the CPUs
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml", help="grid whose codegen_embedded test set runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1, 8, 16])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 8], help="busy processes beside the sandbox")
    parser.add_argument("--kind", choices=sorted(BUSY), default="torch", help="what the busy processes run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="per program (the evaluation's)")
    args = parser.parse_args()
    from collapse_ray.sandbox import run_many

    programs = test_programs(args.config)
    run_many(programs[:4], timeout_s=args.timeout)   # the zygote's start-up out of the figures
    print(f"[sandbox_concurrency] {len(programs)} programs, {machine()}", flush=True)
    for busy in args.busy:
        seconds: dict[int, list[float]] = {w: [] for w in args.workers}
        with busy_processes(busy, args.kind):
            for _ in range(args.repeats):
                for workers in args.workers:
                    t0 = time.monotonic()
                    results = run_many(programs, timeout_s=args.timeout, max_workers=workers)
                    seconds[workers].append(time.monotonic() - t0)
                    failed = [r.status for r in results if not r.passed]
                    if failed:
                        raise SystemExit(f"{len(failed)} canonical programs did not pass ({sorted(set(failed))}): "
                                         "the figures would not be of the evaluation's work")
        first = statistics.median(seconds[args.workers[0]])
        for workers in args.workers:
            median = statistics.median(seconds[workers])
            runs = ", ".join(f"{s:.1f}" for s in seconds[workers])
            print(f"busy {busy:2d} ({args.kind})  workers {workers:2d}: {median:6.1f} s median ({runs}); "
                  f"{first / median:5.2f}x the speed of {args.workers[0]} workers", flush=True)


if __name__ == "__main__":
    main()
