"""What an idle vLLM actor costs: torch's gloo groups vs one shared gloo device (gloo_groups.py),
side by side in one run.

    python benchmarks/idle_vllm_actor.py [--seconds 30] [--config experiments/grid.yaml]

Each side starts a local Ray (``collapse_ray.ray_here.init_ray``, as the grid's launch does) in a
process of its own, builds the vLLM actor of the config's first trial as the grid does (``build_generator``, its
base model), samples one batch, then measures for ``--seconds`` the actor process's CPU and counts its
``gloo_tcp_loop`` threads while it waits for the next generation (as it does while its trial
trains: most of a trial's life). Sides: "torch's groups" is the same actor without
``share_one_gloo_device()`` (every one of vLLM's one-member groups gets its own gloo device and
polling thread); "this project" is ``VLLMActor`` as the grid runs it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

SIDES = ("torch's groups", "this project")


def measure_side(config: str, seconds: float, side: str) -> dict:
    """In this process: start Ray, build the actor, sample once, measure it idle."""
    import psutil

    from common import grid_trials

    from collapse_ray.backends import build_generator
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.datatypes import ModelRef
    from collapse_ray.generate import vllm_actor
    from collapse_ray.generate.base import Sampling
    from collapse_ray.generate.vllm_engine import VLLMEngine
    from collapse_ray.ray_here import init_ray

    if side == "torch's groups":
        class TorchGroupsActor(vllm_actor.VLLMActor):   # VLLMActor less the shared device
            def __init__(self, env_vars: dict, **engine_kwargs):
                os.environ.update(env_vars)
                VLLMEngine.__init__(self, **engine_kwargs)

        import ray
        vllm_actor.VLLMGeneratorActor = ray.remote(TorchGroupsActor)

    _, trials = grid_trials(config)
    cfg = trials[0].config
    model = ModelRef(str(Path(resolve_model_path(cfg.model, progress=lambda _: None)).resolve()))
    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    generator = build_generator(dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, backend="vllm")))
    try:
        generator.load(model)
        generator.generate(["def add(a, b):\n"] * 16, Sampling(max_new_tokens=16, temperature=1.0, seed=0))
        actor = psutil.Process(generator._call("pid"))
        time.sleep(5)   # let the batch's own work finish
        before, start = sum(actor.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        cpu, wall = sum(actor.cpu_times()[:2]) - before, time.monotonic() - start
        loops = sum(1 for t in Path(f"/proc/{actor.pid}/task").iterdir()
                    if (t / "comm").read_text().strip() == "gloo_tcp_loop")
    finally:
        generator.close()
    return {"pct_core": 100 * cpu / wall, "gloo_loops": loops}


def main() -> None:
    from common import idle_sides_cli

    results = idle_sides_cli(__doc__, 30.0, measure_side, SIDES)
    if results is None:
        return
    base = results[SIDES[0]]["pct_core"]
    print(f"{'side':<16} {'gloo polling threads':>20} {'idle CPU % of a core':>21} {'vs torch groups':>16}")
    for side, r in results.items():
        print(f"{side:<16} {r['gloo_loops']:>20} {r['pct_core']:>21.2f} {r['pct_core'] / base:>16.2f}")


if __name__ == "__main__":
    main()
