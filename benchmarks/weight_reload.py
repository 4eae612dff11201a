"""A new generation's weights into the vLLM engine: rebuilt vs reloaded in place, side by side.

    python benchmarks/weight_reload.py [--config experiments/grid.yaml] [--loads 4]

The trial's generator serves a new model every generation. The tiny model ties its embeddings
(as Qwen3-0.6B and Llama-3.2-1B/3B do); vLLM 0.32's in-place reload left such a model's output
layer on the old weights, so the engine was rebuilt each generation; the worker extension
(collapse_ray/generate/vllm_worker.py) now ties it again after the reload. Both sides serve the
same three perturbed copies of the config's tiny base model in turn (saved alike, as a trial's
trainer saves each generation's model), through the generator a trial of the config builds
(`backends.generator_spec`: vLLM's CPU build in a Ray actor, its dtype, KV cache and context, and
the weight probe after every load, which must pass on both sides), given one CPU. Printed per
side: median seconds per load, probe included, and the ratio. The first load (the engine's
build) is timed apart.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def perturbed_copies(path: str, out: Path, n: int = 2) -> list[str]:
    """``n`` copies of the model at ``path`` with every weight moved by a little noise (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    paths = []
    for i in range(n):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        model.save_pretrained(out / f"copy{i}")
        tok.save_pretrained(out / f"copy{i}")
        paths.append(str(out / f"copy{i}"))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid.yaml")
    parser.add_argument("--loads", type=int, default=4, help="timed loads per side, after the first")
    args = parser.parse_args()

    import ray
    import yaml

    from collapse_ray.backends import generator_spec
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.config import config_from_dict
    from collapse_ray.console import quiet_libraries
    from collapse_ray.datatypes import ModelRef
    from common import machine

    quiet_libraries()

    data = yaml.safe_load(open(args.config))
    cfg = config_from_dict({**data.get("base", data), "name": "bench"})
    base = resolve_model_path(cfg.model)
    models = perturbed_copies(base, Path(tempfile.mkdtemp(prefix="weight-reload-")), n=3)
    spec = generator_spec(cfg)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"machine: {machine()}; {base}; {args.loads} timed loads a side", flush=True)
    results = {}
    for side, in_place in (("rebuild", False), ("reload in place", True)):
        probed = spec.build(num_cpus=1, reload_in_place=in_place,
                            env_vars={"HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR"})
        try:
            start = time.perf_counter()
            probed.load(ModelRef(models[0]))
            build = time.perf_counter() - start
            seconds, worst = [], probed.last_difference
            for i in range(args.loads):
                start = time.perf_counter()
                probed.load(ModelRef(models[1 + i % (len(models) - 1)]))
                seconds.append(time.perf_counter() - start)
                worst = max(worst, probed.last_difference)
            stats = probed.stats()
        finally:
            probed.close()
        results[side] = statistics.median(seconds)
        print(f"{side:<16} first load (engine build) {build:6.1f} s; a later load {results[side]:6.2f} s "
              f"(median of {args.loads}); engine builds {stats['builds']}, in-place reloads {stats['reloads']}; "
              f"probe: largest mean |log-prob difference| {worst:.1e}", flush=True)
    print(f"reload in place / rebuild: {results['reload in place'] / results['rebuild']:.2f} of the time per load")


if __name__ == "__main__":
    main()
