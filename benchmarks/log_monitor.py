"""What Ray's log monitor costs while a grid's workers wait, and how late a new worker's first line
reaches the driver: Ray's defaults vs this project's setting, side by side in one run.

    python benchmarks/log_monitor.py [--seconds 60] [--workers 60]

Each side starts a local Ray (``collapse_ray.ray_here.init_ray`` with the grid's own init options:
workers' output sent to the driver) in a process of its own, starts and ends ``--workers`` actors
one after another (each leaves its worker's .out/.err files in the session's log folder, as a
grid's trials, Train groups and vLLM actors do), keeps ten actors alive, then measures for
``--seconds`` the log monitor's CPU. Then, three times, a new actor prints a line and the side
times how long the line takes to reach the driver's output. Sides: "ray default" sets Ray's own
defaults (RAY_LOG_MONITOR_MANY_FILES_THRESHOLD=1000, LOG_NAME_UPDATE_INTERVAL_S=0.5: below 1,000
files the folder is listed on every 0.1 s poll); "this project" leaves them to init_ray.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

RAY_DEFAULTS = {"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "1000", "LOG_NAME_UPDATE_INTERVAL_S": "0.5"}
SIDES = {"ray default": RAY_DEFAULTS, "this project": None}
LATENCY_PROBES = 3
IDLE_ACTORS = 10


def measure_side(seconds: float, workers: int) -> dict:
    """In this process: start Ray, leave ``workers`` workers' log files, measure the log monitor."""
    import psutil
    import ray

    from collapse_ray.console import ray_init_options
    from collapse_ray.ray_here import init_ray

    init_ray(num_cpus=2, include_dashboard=False, **ray_init_options(False, log_to_driver=True))

    @ray.remote(num_cpus=0)
    class Worker:
        def hello(self, token: str = "") -> int:
            if token:
                print(token, flush=True)
            return os.getpid()

    for _ in range(workers):
        actor = Worker.remote()
        ray.get(actor.hello.remote())
        ray.kill(actor)
    alive = [Worker.remote() for _ in range(IDLE_ACTORS)]
    ray.get([a.hello.remote() for a in alive])
    # This side's own (another Ray on the machine has one too).
    monitor = next(p for p in psutil.Process().children(recursive=True)
                   if any("log_monitor.py" in part for part in _command(p)))
    log_dir = ray._private.worker.global_worker.node.get_logs_dir_path()
    time.sleep(5)   # let the churn's last lines be published
    files = len(os.listdir(log_dir))
    before, start = sum(monitor.cpu_times()[:2]), time.monotonic()
    time.sleep(seconds)
    cpu_pct = 100 * (sum(monitor.cpu_times()[:2]) - before) / (time.monotonic() - start)
    for i in range(LATENCY_PROBES):
        # The driver prints the worker's line on its stdout; the parent reads it there and times it.
        print(f"PROBE-START {i} {time.time():.3f}", flush=True)
        ray.get(Worker.remote().hello.remote(f"PROBE-LINE {i}"))
        time.sleep(8)
    return {"files": files, "monitor_pct_core": cpu_pct}


def _command(p) -> list[str]:
    import psutil

    try:
        return p.cmdline()
    except psutil.Error:   # a worker that just exited
        return []


def run_side(side: str, env_values: dict | None, seconds: float, workers: int) -> dict:
    """The side in a child process; its stdout is read line by line to time the probes."""
    env = {k: v for k, v in os.environ.items() if k not in RAY_DEFAULTS}
    env.update(env_values or {}, PYTHONUNBUFFERED="1")   # the driver prints workers' lines as they come
    child = subprocess.Popen([sys.executable, __file__, "--side", side, "--seconds", str(seconds),
                              "--workers", str(workers)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    starts, latencies, last = {}, [], ""
    stderr = []
    drain = threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True)
    drain.start()
    for line in child.stdout:
        if line.startswith("PROBE-START"):
            _, i, t = line.split()
            starts[i] = float(t)
        elif "PROBE-LINE" in line:
            i = line.split("PROBE-LINE")[1].split()[0]
            latencies.append(time.time() - starts[i])
        elif line.strip():
            last = line
    if child.wait():
        drain.join(5)
        sys.exit(f"side {side!r} failed:\n{''.join(stderr)[-2000:]}")
    result = json.loads(last)
    result["latency_s"] = latencies
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=60, help="actors started and ended before measuring")
    parser.add_argument("--side", help=argparse.SUPPRESS)   # run one side (the child process)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure_side(args.seconds, args.workers)), flush=True)
        return
    from common import machine

    print(f"machine: {machine()}; {args.workers} workers' logs, {args.seconds:.0f} s measured per side", flush=True)
    results = {side: run_side(side, values, args.seconds, args.workers) for side, values in SIDES.items()}
    base = results["ray default"]["monitor_pct_core"]
    print(f"{'side':<14} {'log files':>9} {'log monitor % of a core':>24} {'vs ray default':>15} "
          f"{'first line to driver, s (median; max)':>38}")
    for side, r in results.items():
        lat = r["latency_s"]
        shown = f"{statistics.median(lat):.2f}; {max(lat):.2f}" if len(lat) == LATENCY_PROBES else f"{len(lat)} of {LATENCY_PROBES} lines arrived"
        print(f"{side:<14} {r['files']:>9} {r['monitor_pct_core']:>24.2f} {r['monitor_pct_core'] / base:>15.2f} {shown:>38}")


if __name__ == "__main__":
    main()
