"""Generation: vLLM (its CPU build, in a Ray actor) against HF ``generate``, tokens/s on the same
model, prompts and sampling, measured side by side in one run.

    python benchmarks/generation_throughput.py [--config experiments/grid_smoke.yaml] [--repeats 3]

The model is the config's tiny base model (built and cached if needed); the prompts are the
codegen task's synthetic pool for seed 0; sampling is the config's (temperature, top_p,
max_new_tokens, one seed). Generated tokens are counted by re-tokenising each side's completions
with the model's tokenizer, so both sides are counted alike. vLLM's engine build is timed apart
(paid once per trial) and left out of its rate; repeats alternate between the two sides so that
a change in the machine's load hits both alike. Printed: tokens/s per side (median) and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/grid_smoke.yaml",
                        help="an experiment or grid YAML (its base) naming the model, sizes and sampling")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray
    import yaml
    from transformers import AutoTokenizer

    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.config import config_from_dict
    from collapse_ray.datatypes import ModelRef
    from collapse_ray.generate.base import Sampling
    from collapse_ray.generate.hf import HFGenerator
    from collapse_ray.generate.vllm_actor import RayVLLMGenerator
    from collapse_ray.tasks import get_task

    data = yaml.safe_load(open(args.config))
    cfg = config_from_dict({**data.get("base", data), "name": "bench"})
    model = ModelRef(resolve_model_path(cfg.model))
    task = get_task(cfg.task.name)
    prompts = [ex.prompt for ex in task.load(cfg.task.data_path, 0, cfg.sizes).pool]
    sampling = Sampling(max_new_tokens=cfg.sizes.max_new_tokens, temperature=cfg.sampling.temperature,
                        top_p=cfg.sampling.top_p, seed=0, stop=task.stop)
    tok = AutoTokenizer.from_pretrained(model.path)

    def tokens(texts: list[str]) -> int:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    hf = HFGenerator(batch_size=cfg.generator.batch_size)
    hf.load(model)
    vllm = RayVLLMGenerator(num_cpus=1, kv_cache_bytes=int(cfg.generator.kv_cache_gb * 2**30), dtype="float32",
                            max_model_len=min(cfg.training.max_length + cfg.sizes.max_new_tokens, cfg.model.tiny.context_length),
                            env_vars={"HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR"})
    start = time.perf_counter()
    vllm.load(model)
    build_s = time.perf_counter() - start
    rates: dict[str, list[float]] = {"hf": [], "vllm": []}
    for _ in range(args.repeats):
        for name, gen in (("hf", hf), ("vllm", vllm)):
            start = time.perf_counter()
            out = gen.generate(prompts, sampling)
            rates[name].append(tokens(out) / (time.perf_counter() - start))
    vllm.close()
    ray.shutdown()
    hf_rate, vllm_rate = statistics.median(rates["hf"]), statistics.median(rates["vllm"])
    print(f"model {model.path}; {len(prompts)} prompts, max_new_tokens {sampling.max_new_tokens}, "
          f"temperature {sampling.temperature}, top_p {sampling.top_p}; {os.cpu_count()} CPUs; "
          f"repeats {args.repeats} (median)")
    print(f"HF generate   {hf_rate:9.1f} tokens/s")
    print(f"vLLM (actor)  {vllm_rate:9.1f} tokens/s   (engine build, once per trial: {build_s:.1f} s)")
    print(f"vLLM / HF     {vllm_rate / hf_rate:9.2f}")


if __name__ == "__main__":
    main()
