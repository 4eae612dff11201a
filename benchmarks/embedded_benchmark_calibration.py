"""Calibration of the embedded executable benchmark (task ``codegen_embedded``): pass@1 of the tiny
base model fine-tuned on the real training problems for several step counts, and of the baseline
that answers each family's most common training body, on the same test problems, in one run.

    python benchmarks/embedded_benchmark_calibration.py [--config experiments/smoke_codegen_embedded.yaml]
        [--steps 200,400,600,800,1200] [--seeds 0] [--threads 1]

Each step count is its own generation-0 run of the loop, with the loop's own pieces and seeds:
the config's training set mixed as generation 0 mixes it, ``LocalTrainer`` with
``training.max_steps`` = the step count (its learning-rate schedule spans those steps), the HF
generator, the task's ``evaluate`` (greedy, tests in the sandbox). Steps, not time, set the
amount of training, so the numbers do not depend on the machine's speed; the wall time printed
beside them does (and so does the base model, whose pre-training fills ``train_minutes``).
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from collapse_ray.base_model import resolve_model_path
from collapse_ray.config import load_config
from collapse_ray.datatypes import ModelRef
from collapse_ray.generate.base import Sampling
from collapse_ray.generate.hf import HFGenerator
from collapse_ray.tasks import get_task
from collapse_ray.tasks.codegen_embedded import MostCommonBodyBaseline
from collapse_ray.train.local import LocalTrainer

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "smoke_codegen_embedded.yaml"


def calibrate(cfg, steps: list[int], say=print) -> list[tuple[str, float, dict]]:
    """(label, wall seconds, metrics) for the baseline and each step count."""
    task = get_task(cfg.task.name)
    data = task.load(cfg.task.data_path, cfg.seed, cfg.sizes)
    train_set = cfg.regime.mix(data.train, [], 0, cfg.sizes.train_examples, random.Random(f"{cfg.seed}/0"))
    sampling = Sampling(max_new_tokens=cfg.sizes.max_new_tokens, stop=task.stop, seed=cfg.seed * 1000)
    rows = []
    start = time.monotonic()
    rows.append(("most-common body", time.monotonic() - start,
                 task.evaluate(MostCommonBodyBaseline(data.train), data.test, sampling)))
    base = ModelRef(resolve_model_path(cfg.model, progress=say))
    generator = HFGenerator(batch_size=cfg.generator.batch_size)
    with tempfile.TemporaryDirectory(prefix="embedded_calibration_") as tmp:
        for n in steps:
            start = time.monotonic()
            trainer = LocalTrainer(dataclasses.replace(cfg.training, max_steps=n), progress=say)
            trained = trainer.train(base, [ex.text for ex in train_set], f"{tmp}/steps_{n}", seed=cfg.seed * 1000)
            generator.load(trained.model)
            metrics = task.evaluate(generator, data.test, sampling)
            metrics["train/loss"] = trained.train_loss
            rows.append((f"{n} steps", time.monotonic() - start, metrics))
            say(f"seed {cfg.seed}, {n} steps: pass@1 {metrics['pass_at_1']:.3f}")
    generator.close()
    return rows


def print_table(seed: int, n_test: int, rows) -> None:
    families = sorted(k.split("/", 1)[1] for k in rows[0][2] if k.startswith("pass_at_1/"))
    print(f"\nseed {seed}: pass@1 on {n_test} test problems (greedy), BLEU-4 against the canonical body")
    print(f"{'model':>18} {'pass@1':>7} {'bleu4':>6} {'loss':>6} {'wall_s':>7}  " + " ".join(f[:10].rjust(10) for f in families))
    for label, wall, m in rows:
        loss = f"{m['train/loss']:.3f}" if "train/loss" in m else "-"
        print(f"{label:>18} {m['pass_at_1']:7.3f} {m['bleu4']:6.1f} {loss:>6} {wall:7.0f}  "
              + " ".join(f"{m[f'pass_at_1/{f}']:10.2f}" for f in families))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--steps", default="200,400,600,800,1200", help="comma-separated step counts")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (splits, training order, init)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.steps.split(",")]
    cfg = load_config(args.config)
    print(f"config {args.config}: task {cfg.task.name}, train {cfg.sizes.train_examples}, test "
          f"{cfg.sizes.eval_examples}, batch {cfg.training.batch_size}, lr {cfg.training.lr}, steps {steps}",
          flush=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        seeded = dataclasses.replace(cfg, seed=seed)
        rows = calibrate(seeded, steps, say=lambda msg: print(msg, file=sys.stderr, flush=True))
        print_table(seed, cfg.sizes.eval_examples, rows)


if __name__ == "__main__":
    main()
