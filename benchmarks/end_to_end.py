"""A grid end to end (``make grid`` by default): wall time, each phase's share, CPU utilisation,
and the wall time against the compute floor.

    python benchmarks/end_to_end.py [--config experiments/grid.yaml] [--generations N] [--max-steps N]
                                    [--set grid.regimes='[real-only, synthetic-only]'] [--into DIR | --out DIR]

Runs ``collapse-ray grid CONFIG`` as a child process on a fresh local Ray, with its trial state,
Tune state and MLflow store in a new folder (``--out``, or a temporary one; it never resumes an
earlier run). Measured: wall
time; the child's process tree's CPU-seconds (sampled; Ray's processes are its children) over
wall x cores; each phase's seconds summed over trials and generations (MLflow ``time/*_s``) and
its share; the Ray Train worker-group start-ups against the trials' wall. The compute floor is
computed from ``benchmarks/compute_floor.json`` (benchmarks/compute_floor.py) for the grid as run,
as the dry-run computes it (each phase scaled by the trial's work: steps, pool, test set), and
for the generations this launch ran (an ``--into`` launch's resumed trials' earlier ones are left
out); ``--generations`` / ``--max-steps`` shrink the run (the floor follows);
``--set PATH=VALUE`` sets any field of the grid YAML (VALUE is YAML), e.g. a part's controls only.

``--floor-steps N`` measures the floor in the same run instead: ``compute_floor.py --train-steps N``
on the grid as run, once before the grid and once after it (this machine's speed drifts by up to
1.6x within a day, so a floor from another hour can be off by that much); the wall is compared with
each and with their mean, and the two floors' spread is printed beside it.

``--into DIR`` runs the grid in an earlier run's folder instead (its trial state and MLflow store):
a study in parts, e.g. the quality filter after experiments/study_codegen.yaml, whose trials share
part 1's generation 0 and land in one store for ``collapse-ray report``. Everything measured is
this config's trials only; its files are ``DIR/grid-<config name>.*``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from common import PHASE_COSTS, grid_trials, machine, mlflow_phases, print_shares, run_metered, write_relocated
from orchestration import REPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml", help="grid YAML to run")
    parser.add_argument("--generations", type=int, help="last generation (default: the config's)")
    parser.add_argument("--max-steps", type=int, help="training.max_steps (default: the config's)")
    parser.add_argument("--costs", default=str(PHASE_COSTS), help="phase costs for the floor (compute_floor.py)")
    parser.add_argument("--floor-steps", type=int, metavar="N",
                        help="measure the floor before and after the grid (compute_floor.py --train-steps N) "
                             "instead of reading --costs")
    parser.add_argument("--into", type=Path, help="an earlier run's folder to add this grid's trials to")
    parser.add_argument("--out", type=Path, help="a new folder to run in (default: a new temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="settings",
                        help="set a field of the grid YAML, e.g. --set grid.regimes='[real-only]'")
    args = parser.parse_args()
    if args.floor_steps is not None and args.floor_steps < 1:
        parser.error(f"--floor-steps {args.floor_steps}: must be at least 1")

    data = yaml.safe_load(Path(args.config).read_text())
    if args.generations is not None:
        data["base"]["generations"] = args.generations
    if args.max_steps is not None:
        data["base"]["training"]["max_steps"] = args.max_steps
    apply_settings(data, args.settings)
    if args.into is not None and not (args.into / "mlflow.db").is_file():
        raise SystemExit(f"--into {args.into}: no earlier run there (no mlflow.db)")
    if args.out is not None and (args.into is not None or (args.out.exists() and any(args.out.iterdir()))):
        raise SystemExit(f"--out {args.out}: must be a new or empty folder, and not given with --into")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    out = (args.into or args.out or Path(tempfile.mkdtemp(prefix="end-to-end-"))).resolve()
    stem = f"grid-{Path(args.config).stem}" if args.into else "grid"
    grid_path = write_relocated(data, out, f"{stem}.yaml")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "RAY_ADDRESS": "local", "HF_HUB_OFFLINE": "1"}
    print(f"[end_to_end] {args.config} in {out} ({machine()})", file=sys.stderr, flush=True)
    log = out / f"{stem}.log"
    _, trials = grid_trials(str(grid_path))
    from collapse_ray.grid.dry_run import finished_on_disk

    ran_before = finished_on_disk(trials)   # --into: what an earlier launch computed is not this one's work
    floors = [measure_floor(grid_path, args.floor_steps, out / f"{stem}-floor-before", env)] if args.floor_steps else []
    result = run_metered([sys.executable, "-m", "collapse_ray.cli", "grid", str(grid_path)], env, log)
    if args.floor_steps:
        floors.append(measure_floor(grid_path, args.floor_steps, out / f"{stem}-floor-after", env))
    result.update(mlflow_phases(f"sqlite:///{out / 'mlflow.db'}", "bench", {t.config.name for t in trials}))

    cores = os.cpu_count() or 1
    print(f"\n{args.config}: {len(trials)} trials x generations 0..{trials[0].config.generations}, "
          f"max_steps {trials[0].config.training.max_steps}; {cores} cores; {machine()}")
    print(f"wall {result['wall_s']:.0f}s; CPU utilisation {result['utilisation']:.2f} "
          f"({result['cpu_s']:.0f} CPU-s / ({result['wall_s']:.0f}s x {cores}))")
    print_shares("grid", result["phases"], result["wall_s"])
    print("  CPU-seconds by process: " + ", ".join(
        f"{kind} {cpu:.0f}s ({cpu / result['cpu_s']:.0%})" for kind, cpu in result["cpu_by_kind_s"].items()
        if cpu >= 0.01 * result["cpu_s"]))
    walls, startups = sum(result["trial_walls"].values()), sum(result["train_startups_s"].values())
    if walls:
        print(f"Ray Train worker-group start-ups: {startups:.0f}s = {startups / walls:.1%} of the trials' "
              f"summed wall ({walls:.0f}s)")
        waits = sum(result["train_core_waits_s"].values())
        print(f"CPU training jobs waiting for a free core (train/core_slots.py): {waits:.0f}s = {waits / walls:.1%} "
              f"of the trials' summed wall")
        steps_s, steps_cpu = sum(result["train_steps_s"].values()), sum(result["train_steps_cpu_s"].values())
        if steps_s:
            print(f"training jobs' optimizer steps (train/steps_s): {steps_s:.0f}s wall, {steps_cpu:.0f} CPU-s of "
                  f"their workers ({steps_cpu / steps_s:.2f} of a core while stepping)")
    resumed = f"; {len(ran_before)} trial(s) resumed, their earlier generations left out" if ran_before else ""
    if floors:
        by_phase = [floor_by_phase(path, trials, ran_before) for path in floors]
        result["floor_s"] = {which: sum(f.values()) / cores for which, f in zip(("before", "after"), by_phase)}
        result["floor_cpu_by_phase_s"] = {p: sum(f[p] for f in by_phase) / len(by_phase) for p in by_phase[0]}
        before, after = result["floor_s"]["before"], result["floor_s"]["after"]
        mean = (before + after) / 2
        print(f"compute floor of the generations this launch ran, measured in this run (compute_floor.py "
              f"--train-steps {args.floor_steps}{resumed}): {before:.0f}s before the grid, {after:.0f}s after "
              f"(after / before {after / before:.2f}); wall / floor = {result['wall_s'] / before:.2f} before, "
              f"{result['wall_s'] / after:.2f} after, {result['wall_s'] / mean:.2f} against their mean (goal: <= 1.25)")
    elif Path(args.costs).is_file():
        machine_measured = json.loads(Path(args.costs).read_text())["machine"]
        result["floor_cpu_by_phase_s"] = floor_by_phase(Path(args.costs), trials, ran_before)
        floor = sum(result["floor_cpu_by_phase_s"].values()) / cores
        print(f"compute floor {floor:.0f}s of the generations this launch ran ({args.costs}, measured on: "
              f"{machine_measured}, scaled by each trial's work as the dry-run does{resumed}); "
              f"wall / floor = {result['wall_s'] / floor:.2f} (goal: <= 1.25)")
    if "floor_cpu_by_phase_s" in result:
        print_against_floor(result["cpu_by_kind_s"], result["floor_cpu_by_phase_s"], result["cpu_s"],
                            result["wall_s"] * cores)
    Path(out, f"result-{Path(args.config).stem}.json" if args.into else "result.json").write_text(
        json.dumps(result, indent=2))


def measure_floor(grid_path: Path, train_steps: int, stem: Path, env: dict) -> Path:
    """compute_floor.py's phase costs for this grid, measured now (``stem``.json and .log beside
    the run)."""
    import subprocess

    # Appended, not with_suffix: a config stem may hold a dot, and before/after must not collide.
    costs, log_path = (stem.parent / f"{stem.name}{ext}" for ext in (".json", ".log"))
    print(f"[end_to_end] measuring the compute floor ({stem.name}, --train-steps {train_steps})",
          file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        rc = subprocess.call([sys.executable, str(Path(__file__).with_name("compute_floor.py")), "--config",
                              str(grid_path), "--train-steps", str(train_steps), "--floor-of", str(grid_path),
                              "--out", str(costs)], env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"compute_floor.py failed (exit {rc}); its output: {log_path}")
    return costs


def floor_by_phase(costs_path: Path, trials: list, ran_before: list) -> dict[str, float]:
    """The CPU-seconds of each phase in the floor of the generations this launch ran, from a
    compute_floor.py JSON, scaled by each trial's work as the dry-run does; over the cores they
    are the floor (estimate.compute_floor_seconds)."""
    from collapse_ray.grid import estimate as est

    costs = est.load_costs(compute_floor=str(costs_path), phase_costs="")
    done = est.floor_phase_seconds(ran_before, costs)
    return {p: cpu - done[p] for p, cpu in est.floor_phase_seconds(trials, costs).items()}


# Which processes do which phase's work on the grid. Trial drivers train too where there are no
# Train workers (training.backend local).
WORKERS_OF_PHASES = (("Train workers", "ray::RayTrainWorker", ("train",)),
                     ("vLLM actors", "ray::VLLMActor", ("generate",)),
                     ("trial drivers", "ray::TrialDriver", ("evaluate", "drift")))


def print_against_floor(cpu_by_kind: dict[str, float], floor_by_phase: dict[str, float], cpu_s: float,
                        core_seconds: float) -> None:
    """Each kind of process's CPU-seconds against the floor's for the phases it computes; what is
    left is orchestration (Ray's and Ray Train's other processes, the grid's driver) and idle cores."""
    parts, counted = [], 0.0
    for label, kind, phases in WORKERS_OF_PHASES:
        if kind == "ray::TrialDriver" and not cpu_by_kind.get("ray::RayTrainWorker"):
            phases = ("train", *phases)
        cpu, floor = cpu_by_kind.get(kind, 0.0), sum(floor_by_phase[p] for p in phases)
        counted += cpu
        parts.append(f"{label} {cpu:.0f} vs {'+'.join(phases)} {floor:.0f}"
                     + (f" (x{cpu / floor:.2f})" if floor else ""))
    parts.append(f"every other process {cpu_s - counted:.0f}")
    parts.append(f"idle cores {core_seconds - cpu_s:.0f}")
    print(f"  CPU-seconds against the floor's phases (floor {sum(floor_by_phase.values()):.0f} CPU-s): "
          + "; ".join(parts))


def apply_settings(data: dict, settings: list[str]) -> None:
    """``--set PATH=VALUE`` on the grid YAML's mapping, as ``collapse-ray run --set`` parses and
    applies them; the grid's own validation judges the result."""
    from collapse_ray.cli import parse_overrides
    from collapse_ray.config import set_dotted
    from collapse_ray.errors import ConfigError

    try:
        for dotted, value in parse_overrides(settings).items():
            set_dotted(data, dotted, value)
    except ConfigError as e:
        raise SystemExit(f"--set: {e}") from None


if __name__ == "__main__":
    main()
