"""The compute floor: each phase of a generation measured in process at the embedded sizes.

    python benchmarks/compute_floor.py [--config experiments/grid.yaml] [--train-steps N]
                                       [--floor-of experiments/study.yaml ...] [--out benchmarks/compute_floor.json]

For each task of the grid config, generation 0 of its first trial runs in this process with the
loop's own pieces and the grid's sizes: ``train`` (LocalTrainer on generation 0's training set),
``generate`` (the trained weights loaded into vLLM, the pool answered, mitigations), ``evaluate``
(the task's test set) and ``drift`` (scoring the kept completions under generation 0 and under
the model itself). vLLM is the grid's generator: its CPU build in a Ray actor of 1 CPU; its
engine is built on the base model before anything is timed (start-up, not compute: prefetch hides
it behind generation 0's training in a trial). This process trains on one torch thread and the
actor is given one CPU, so a phase's wall time is the core-seconds it needs.

``--train-steps N`` trains N steps and scales the steps' time to the config's
``training.max_steps`` (each step is one batch of the same size, so the time per step is flat;
the JSON says N); loading, tokenising and saving happen once a job at any step count, so they
are counted once, not scaled.

Writes ``--out`` (read by the dry-run's wall-time estimate; keep its shape):
``{"machine", "cpus", "sizes": {...sizes, training, model recipe, measured steps}, "tasks":
{task: {"train_s", "generate_s", "evaluate_s", "drift_s"}}}``, seconds per generation. Prints
the per-task costs and the floor of each grid config named: sum over its trials of
(generations + 1) x the task's per-generation seconds, generation 0's train and evaluate once per
generation-0 key, divided by this machine's cores (collapse_ray/grid/estimate.py
``compute_floor_seconds``, scaled by each trial's work as the dry-run does).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from common import PHASE_COSTS, PHASES, grid_trials, machine


def measure_task(cfg, train_steps: int | None, workdir: Path, say) -> dict[str, float]:
    """Seconds of each phase of generation 0 of the trial ``cfg`` (an ExperimentConfig)."""
    from collapse_ray.backends import build_generator
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.datatypes import ModelRef
    from collapse_ray.generate.base import Sampling
    from collapse_ray.mitigations import apply_mitigations
    from collapse_ray.synthetic_drift import DriftProbe
    from collapse_ray.tasks import get_task
    from collapse_ray.train.local import LocalTrainer

    task = get_task(cfg.task.name, cfg.task.options)
    data = task.load(cfg.task.data_path, cfg.seed, cfg.sizes)
    base = ModelRef(str(Path(resolve_model_path(cfg.model, progress=say)).resolve()))
    full_steps = cfg.training.max_steps
    steps = train_steps or full_steps
    if full_steps is None:
        raise SystemExit(f"{cfg.name}: training.max_steps is not set; the floor needs a fixed step count")
    training = dataclasses.replace(cfg.training, backend="local", max_steps=min(steps, full_steps))
    sampling = Sampling(max_new_tokens=cfg.sizes.max_new_tokens, temperature=cfg.sampling.temperature,
                        top_p=cfg.sampling.top_p, stop=task.stop)   # as the loop builds it
    generator = build_generator(dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, backend="vllm")))
    t0 = time.monotonic()
    generator.load(base)   # the engine build: start-up, kept out of the phases
    say(f"{cfg.task.name}: vLLM engine built in {time.monotonic() - t0:.1f}s (start-up, not counted)")
    seconds: dict[str, float] = {}
    try:
        rng = random.Random(f"{cfg.seed}/0")
        train_set = cfg.regime.mix(data.train, [], 0, cfg.sizes.train_examples, rng)
        t0 = time.monotonic()
        trained = LocalTrainer(training, progress=say).train(base, [ex.text for ex in train_set],
                                                             str(workdir / cfg.task.name / "model"), seed=cfg.seed * 1000)
        once = time.monotonic() - t0 - trained.steps_s   # loading, tokenising, saving: once per job at any steps
        seconds["train"] = once + trained.steps_s * full_steps / trained.steps
        say(f"{cfg.task.name}: trained {trained.steps} steps in {trained.steps_s:.1f}s (+{once:.1f}s loading, "
            f"tokenising, saving) -> {seconds['train']:.1f}s for {full_steps}")

        t0 = time.monotonic()
        generator.load(trained.model)
        prompts = [data.pool[i % len(data.pool)] for i in range(round(len(data.pool) * cfg.mitigation.oversample))]
        synthetic = task.synthesize(generator, prompts, dataclasses.replace(sampling, seed=cfg.seed * 1000), 0)
        kept, _ = apply_mitigations(synthetic, task, cfg.mitigation, len(data.pool), rng)
        seconds["generate"] = time.monotonic() - t0

        t0 = time.monotonic()
        task.evaluate(generator, data.test, sampling)
        seconds["evaluate"] = time.monotonic() - t0

        t0 = time.monotonic()
        drift = DriftProbe(task, data.train, reference=None)
        drift.set_reference(trained.model)
        drift.measure(kept, current=trained.model, out_dir=workdir / cfg.task.name / "drift")
        seconds["drift"] = time.monotonic() - t0
    finally:
        generator.close()
    say(f"{cfg.task.name}: " + ", ".join(f"{p} {seconds[p]:.1f}s" for p in PHASES))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml", help="grid YAML whose sizes and tasks are measured")
    parser.add_argument("--tasks", help="comma-separated subset of the grid's tasks (default: all)")
    parser.add_argument("--train-steps", type=int, help="train this many steps and scale to training.max_steps")
    parser.add_argument("--floor-of", nargs="*", default=["experiments/grid.yaml", "experiments/study.yaml",
                                                          "experiments/study_mitigations.yaml"],
                        help="grid YAMLs whose compute floor to print")
    parser.add_argument("--out", default=str(PHASE_COSTS), help="where to write the phase costs (JSON)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    import torch

    torch.set_num_threads(1)   # one core per phase: wall seconds are core-seconds
    say = lambda msg: print(f"[compute_floor] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    _, trials = grid_trials(args.config)
    first = {}
    for t in trials:
        first.setdefault(t.config.task.name, t.config)   # generation 0 is the same in every regime
    wanted = args.tasks.split(",") if args.tasks else list(first)
    unknown = sorted(set(wanted) - set(first))
    if unknown:
        raise SystemExit(f"--tasks: {', '.join(unknown)} not in {args.config} (its tasks: {', '.join(first)})")

    cpus = os.cpu_count() or 1
    started_on = machine()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    costs: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="compute-floor-") as tmp:
            for name in wanted:
                seconds = measure_task(first[name], args.train_steps, Path(tmp), say)
                costs[name] = {f"{p}_s": round(seconds[p], 2) for p in PHASES}
    finally:
        ray.shutdown()

    cfg = first[wanted[0]]
    out = {
        "machine": f"{started_on}; at the end: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "cpus": cpus,
        "sizes": {**dataclasses.asdict(cfg.sizes),
                  "training": {k: v for k, v in dataclasses.asdict(cfg.training).items() if k != "backend"},
                  "generator": "vllm (CPU build, 1 CPU actor)",
                  "model": {"name_or_path": cfg.model.name_or_path,
                            **{k: v for k, v in dataclasses.asdict(cfg.model.tiny).items() if k != "cache_dir"}},
                  "train_steps_measured": args.train_steps or cfg.training.max_steps,
                  "config": args.config},
        "tasks": costs,
    }
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    if previous.get("sizes") == out["sizes"]:   # a run of some tasks keeps the others' figures
        out["tasks"] = {**previous.get("tasks", {}), **costs}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

    print(f"\nphase seconds per generation (in process, one core each; {out['machine']}):")
    print(f"{'task':<20}" + "".join(f"{p:>10}" for p in PHASES) + f"{'total':>10}  train share")
    for name, c in out["tasks"].items():
        total = sum(c.values())
        print(f"{name:<20}" + "".join(f"{c[f'{p}_s']:>10.1f}" for p in PHASES) + f"{total:>10.1f}  {c['train_s'] / total:.2f}")
    from collapse_ray.grid import estimate as est

    measured = est.load_costs(compute_floor=args.out, phase_costs="")
    for path in args.floor_of:
        _, grid = grid_trials(path)
        missing = sorted({t.config.task.name for t in grid} - set(out["tasks"]))
        if missing:
            print(f"{path}: no floor (tasks not measured: {', '.join(missing)})")
            continue
        floor = est.compute_floor_seconds(grid, measured, cpus)
        print(f"{path}: {len(grid)} trials; compute floor {floor:.0f}s = {floor / 3600:.2f} h on {cpus} cores")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
