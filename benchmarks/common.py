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


def write_relocated(data: dict, out: Path, filename: str = "grid.yaml") -> Path:
    """A grid config (as a mapping) written to ``out/<filename>`` with its trial state, Tune state
    and MLflow store (experiment "bench") under ``out``: a benchmark never resumes or mixes with
    earlier runs."""
    import yaml

    base = data["base"]
    base["output_dir"] = str(out / "runs")
    base["tracking"] = {"uri": f"sqlite:///{out / 'mlflow.db'}", "experiment": "bench"}
    data["tune"] = {**(data.get("tune") or {}), "storage_path": str(out / "tune")}
    path = out / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def process_start(p) -> float:
    """When ``p`` started, to tell a process from a later one with its pid: on Linux its start in
    clock ticks since boot (/proc/<pid>/stat), which a wall-clock step cannot change. psutil's
    create_time adds the boot time, which the kernel derives from the wall clock: on a VM whose
    clock was being corrected it moved during a run, each move made every process a new one, and
    the meter counted each process's CPU-seconds again (study part 12: utilisation 1.53 of 2 cores)."""
    try:
        stat = Path(f"/proc/{p.pid}/stat").read_text()
    except OSError:
        return p.create_time()
    return float(stat.rsplit(")", 1)[1].split()[19])   # field 22; the command name may hold ")" or spaces


class TreeCpuMeter:
    """CPU-seconds of a process and all its descendants (Ray's raylet, workers and actors are
    children of the process that called ray.init), sampled every ``interval_s``: each process's
    last reading is kept after it exits, so work of short-lived workers counts (up to one
    interval of each is missed). ``by_kind()`` splits them by what each process is."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        import threading

        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.seen: dict[tuple[int, float], float] = {}
        self.kinds: dict[tuple[int, float], str] = {}
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
                    key = (p.pid, process_start(p))
                    t = p.cpu_times()
                    self.remember_kind(key, process_kind(p.cmdline()))
                    self.seen[key] = t.user + t.system
                except self._psutil.Error:
                    continue
            if self._stop.wait(self.interval_s):
                return

    def remember_kind(self, key: tuple[int, float], kind: str) -> None:
        """The last name seen (a Ray worker starts as setup_worker.py, then renames itself), but
        never the empty command line of a process tearing itself down: a Train worker read while
        it exits would otherwise count all its CPU-seconds as unknown."""
        if kind != "?" or key not in self.kinds:
            self.kinds[key] = kind

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=10)
        return sum(self.seen.values())

    def by_kind(self) -> dict[str, float]:
        """CPU-seconds summed per kind of process, largest first."""
        totals: dict[str, float] = {}
        for key, cpu in self.seen.items():
            kind = self.kinds.get(key, "?")
            totals[kind] = totals.get(kind, 0.0) + cpu
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def process_kind(cmdline: list[str]) -> str:
    """What a process is, from its command line: a Ray actor or task by class (``ray::VLLMActor``;
    Ray names its workers so), a Python program by module or script, else the executable."""
    if not cmdline:
        return "?"
    first = cmdline[0]
    if first.startswith("ray::"):
        return first.split(".", 1)[0].split(" ", 1)[0]
    if not Path(first).name.startswith("python"):
        return Path(first).name
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1]
    if "-c" in cmdline[:-1]:   # the sandbox's zygote is started so
        return "sandbox" if "sandbox" in " ".join(cmdline) else "python -c"
    scripts = [a for a in cmdline[1:] if not a.startswith("-")]
    return Path(scripts[0]).name if scripts else "python"


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
    return {"wall_s": wall, "cpu_s": cpu, "utilisation": cpu / (wall * cores), "cpu_by_kind_s": meter.by_kind()}


# MLflow keys of a training job's parts (loop.py), and the result keys they are summed under per trial.
TRAIN_PARTS = {"train/startup_s": "train_startups_s", "train/core_wait_s": "train_core_waits_s",
               "train/steps_s": "train_steps_s", "train/steps_cpu_s": "train_steps_cpu_s"}


def mlflow_phases(uri: str, experiment: str, run_names: set[str] | None = None) -> dict:
    """From the trials' MLflow runs (those named in ``run_names`` when given: a study run in parts
    shares one store): seconds per phase (time/*_s summed over trials and generations), each trial
    run's wall time (start to end), and per trial its training jobs' parts (TRAIN_PARTS): Ray Train
    worker-group start-ups, waits for a free core, and the optimizer steps' wall and CPU-seconds."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} at {uri}")
    phases: dict[str, float] = {}
    trial_walls: dict[str, float] = {}
    parts_of_train: dict[str, dict[str, float]] = {key: {} for key in TRAIN_PARTS}

    def summed(run_id: str, key: str) -> float:
        return sum(m.value for m in client.get_metric_history(run_id, key))

    for run in client.search_runs([exp.experiment_id], max_results=10_000):
        keys = [k for k in run.data.metrics if k.startswith("time/") and k.endswith("_s")]
        if not keys or (run_names is not None and run.info.run_name not in run_names):
            continue   # a grid's parent run, or another part's trial
        for key in keys:
            name = key[len("time/"):-len("_s")]
            phases[name] = phases.get(name, 0.0) + summed(run.info.run_id, key)
        for key, per_trial in parts_of_train.items():
            if key in run.data.metrics:
                per_trial[run.info.run_name] = summed(run.info.run_id, key)
        if run.info.end_time:
            trial_walls[run.info.run_name] = (run.info.end_time - run.info.start_time) / 1000
    return {"phases": phases, "trial_walls": trial_walls,
            **{name: parts_of_train[key] for key, name in TRAIN_PARTS.items()}}


def print_shares(label: str, phases: dict[str, float], wall_s: float) -> None:
    total = sum(phases.values())
    shown = ", ".join(f"{k} {v:.0f}s ({v / total:.0%})" for k, v in sorted(phases.items(), key=lambda kv: -kv[1]))
    print(f"  {label}: phases summed over trials {total:.0f}s: {shown}; wall {wall_s:.0f}s")


def idle_sides_cli(doc: str, default_seconds: float, measure_side, sides, env_for=lambda side: None) -> dict | None:
    """The command line of a benchmark that measures each side idle in a process of its own:
    ``--seconds``, ``--config`` and the hidden ``--side`` a child runs. In a child, prints
    ``measure_side(config, seconds, side)`` as JSON and returns None; in the parent, runs every
    side (``env_for(side)``: its environment, None = this one) and returns {side: result}."""
    import argparse
    import json
    import subprocess

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=default_seconds)
    parser.add_argument("--config", default="experiments/grid.yaml")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure_side(args.config, args.seconds, args.side)))
        return None
    print(f"machine: {machine()}; {args.seconds:.0f} s idle per side", flush=True)
    results = {}
    for side in sides:
        done = subprocess.run([sys.executable, sys.argv[0], "--side", side, "--seconds", str(args.seconds),
                               "--config", args.config], env=env_for(side), capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"side {side!r} failed:\n{done.stderr[-2000:]}")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    return results
