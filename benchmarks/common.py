"""What the grid benchmarks share: the machine they ran on, a grid's trials, the compute floor."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("train", "generate", "evaluate", "drift")
# The compute floor measured per task (compute_floor.py); the dry-run's estimate reads it too.
PHASE_COSTS = Path(__file__).resolve().parent / "compute_floor.json"


def machine() -> str:
    """CPU model, cores and the load average now: the context every absolute time needs."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, no GPU; load average {load} (shared with other jobs)"


def grid_trials(path: str):
    """The grid config and its trials, validated as `collapse-ray grid` does."""
    from collapse_ray.grid import expand, load_grid

    grid = load_grid(path)
    return grid, expand(grid)


def write_relocated(data: dict, out: Path) -> Path:
    """A grid config (as a mapping) written to ``out/grid.yaml`` with its trial state, Tune state
    and MLflow store (experiment "bench") under ``out``: a benchmark never resumes or mixes with
    earlier runs."""
    import yaml

    base = data["base"]
    base["output_dir"] = str(out / "runs")
    base["tracking"] = {"uri": f"sqlite:///{out / 'mlflow.db'}", "experiment": "bench"}
    data["tune"] = {**(data.get("tune") or {}), "storage_path": str(out / "tune")}
    path = out / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def compute_floor_s(trials, costs: dict, cpus: int) -> float:
    """Every phase of every generation of every trial, from measured per-generation costs
    (compute_floor.json's format, one core each), summed and spread over ``cpus`` cores: no grid
    can finish faster on this machine. Generation 0's train and evaluate count once per
    generation-0 key (trials that differ only in regime or mitigation share it:
    collapse_ray/shared_gen0.py); its generate and drift, and later generations, once per trial.
    The dry-run's wall time for the same trials at the same sizes is this figure."""
    from collapse_ray.grid.estimate import with_shared_generation0

    per_generation = [(t.config, {p: costs["tasks"][t.config.task.name][f"{p}_s"] for p in PHASES}) for t in trials]
    return sum(with_shared_generation0(per_generation)) / cpus


class TreeCpuMeter:
    """CPU-seconds of a process and all its descendants (Ray's raylet, workers and actors are
    children of the process that called ray.init), sampled every ``interval_s``: each process's
    last reading is kept after it exits, so work of short-lived workers counts (up to one
    interval of each is missed)."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        import threading

        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.seen: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while True:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except self._psutil.Error:
                procs = []
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.seen[(p.pid, p.create_time())] = t.user + t.system
                except self._psutil.Error:
                    continue
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=10)
        return sum(self.seen.values())


def run_metered(cmd: list[str], env: dict, log_path: Path) -> dict:
    """Run ``cmd`` (its output to ``log_path``); its wall seconds and its process tree's CPU-seconds."""
    import subprocess
    import time

    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        meter = TreeCpuMeter(proc.pid)
        rc = proc.wait()
    wall = time.monotonic() - start
    cpu = meter.stop()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); its output: {log_path}")
    cores = os.cpu_count() or 1
    return {"wall_s": wall, "cpu_s": cpu, "utilisation": cpu / (wall * cores)}


def mlflow_phases(uri: str, experiment: str) -> dict:
    """From the trials' MLflow runs: seconds per phase (time/*_s summed over trials and
    generations) and each trial run's wall time (start to end)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} at {uri}")
    phases: dict[str, float] = {}
    trial_walls = {}
    for run in client.search_runs([exp.experiment_id], max_results=10_000):
        keys = [k for k in run.data.metrics if k.startswith("time/") and k.endswith("_s")]
        if not keys:   # a grid's parent run
            continue
        for key in keys:
            name = key[len("time/"):-len("_s")]
            phases[name] = phases.get(name, 0.0) + sum(m.value for m in client.get_metric_history(run.info.run_id, key))
        if run.info.end_time:
            trial_walls[run.info.run_name] = (run.info.end_time - run.info.start_time) / 1000
    return {"phases": phases, "trial_walls": trial_walls}


def print_shares(label: str, phases: dict[str, float], wall_s: float) -> None:
    total = sum(phases.values())
    shown = ", ".join(f"{k} {v:.0f}s ({v / total:.0%})" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]))
    print(f"  {label}: phases summed over trials {total:.0f}s: {shown}; wall {wall_s:.0f}s")
