"""Trials at once on a CPU machine: the same grid run three trials at a time and four (issue 9).

Tune starts a grid's trials in the grid's seed-major order, so the first trials of a task share one
generation 0 (shared_gen0.py): one computes it while the others wait on its lock, holding their
slots. Each trial computes on one thread, so with three at once on two cores, two waiting leave a
core idle. Four at once keep two computing while two wait.

Both sides run ``benchmarks/end_to_end.py`` on the same trials (same seeds, sizes, generator),
one after the other, each in its own new folder; only the logical CPUs a trial reserves and
``tune.max_concurrent_trials`` differ. Printed per side: wall time, CPU utilisation, the
generation-0 wait's share of the trials' phase time; and the wall-time ratio.

    python benchmarks/grid_concurrency.py [--config experiments/grid.yaml] [--generations 1]

The tiny base model is built before the first side (a cached build, not timed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine
from orchestration import REPO


def side(at_once: int, driver: float, generator: float, train: float) -> list[str]:
    """``end_to_end.py --set`` arguments for trials that reserve ``driver + generator + train``
    logical CPUs (the Train group's one worker gets ``train``), ``at_once`` at a time."""
    model = f"{{name_or_path: tiny, resources: {{train_workers: 1, cpus_per_worker: {train}, gpus_per_worker: 0, strategy: ddp}}}}"
    return [f"tune.max_concurrent_trials={at_once}", f"resources.driver_cpus={driver}",
            f"resources.generator_cpus={generator}", f"grid.models=[{model}]"]


SIDES = {"3 at once (0.2 + 0.2 + 0.2 CPU)": side(3, 0.2, 0.2, 0.2),
         "4 at once (0.1 + 0.2 + 0.2 CPU)": side(4, 0.1, 0.2, 0.2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml")
    parser.add_argument("--generations", type=int, default=1, help="last generation (default 1)")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-m", "collapse_ray.cli", "base", "build", "--set",
                    f"model.tiny={json.dumps(tiny_recipe(args.config))}"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    root = Path(tempfile.mkdtemp(prefix="grid-concurrency-"))
    print(f"machine: {machine()}; {args.config}, generations 0..{args.generations}; folders under {root}",
          flush=True)
    results = {}
    for name, settings in SIDES.items():
        out = root / name.split(" (")[0].replace(" ", "-")
        command = [sys.executable, str(Path(__file__).with_name("end_to_end.py")), "--config", args.config,
                   "--generations", str(args.generations), "--out", str(out)]
        command += [arg for s in settings for arg in ("--set", s)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        (root / f"{out.name}.txt").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise SystemExit(f"{name}: end_to_end.py exited {done.returncode}; its output: {root / out.name}.txt")
        results[name] = json.loads((out / "result.json").read_text())
        print(f"  {name}: {results[name]['wall_s']:.0f} s", flush=True)

    first = next(iter(results.values()))["wall_s"]
    print(f"{'side':<34} {'wall s':>7} {'vs 3 at once':>12} {'CPU util':>8} {'gen-0 wait share':>16}")
    for name, r in results.items():
        phases = r["phases"]
        wait = phases.get("gen0_wait", 0.0) / sum(phases.values())
        print(f"{name:<34} {r['wall_s']:>7.0f} {r['wall_s'] / first:>12.2f} {r['utilisation']:>8.2f} {wait:>16.1%}")


def tiny_recipe(config: str) -> dict:
    import yaml

    return yaml.safe_load(Path(config).read_text())["base"]["model"].get("tiny", {})


if __name__ == "__main__":
    main()
