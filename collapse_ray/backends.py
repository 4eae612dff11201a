"""The one place a trial's trainer and generator are built: from its ExperimentConfig and, when
the grid runs it on Ray, the resources the grid reserved for it. ``collapse-ray run``
(loop.run_trial) and the grid's trial driver (grid/tune_runner.py) both call
:func:`build_trainer` and :func:`build_generator`.

Two steps: :func:`trainer_spec` and :func:`generator_spec` say what will be constructed (the
class, named by import path, and its arguments) without importing Ray, vLLM or torch;
:meth:`BackendSpec.build` constructs it. Tests compare specs: every field of the training and
generator configs must change one of them.

A trial's placement group on Ray (:meth:`TrialResources.bundles`):

    bundle 0         the trial driver (a fraction of a CPU when it only orchestrates)
    bundle 1         the vLLM generator actor (generator.backend: vllm)
    bundles 2..2+tp  one GPU each for vLLM's tensor-parallel workers (tensor_parallel > 1)

Ray Train V2 places its workers in a placement group of its own, created by each
``TorchTrainer.fit``, so they are *not* in the trial's group (grid/plan.py counts them apart).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from collapse_ray.config import ExperimentConfig

GENERATOR_BUNDLE = 1    # the vLLM actor's bundle in the trial's placement group
FIRST_TP_BUNDLE = 2     # the first of the tensor-parallel GPU bundles


@dataclass(frozen=True)
class TrialResources:
    """What a grid trial reserves on Ray (grid/expand.py derives it from the grid YAML)."""

    driver: dict[str, float]               # bundle 0: the trial driver
    generator: dict[str, float] | None     # bundle 1: the vLLM actor (None: HF generate in the driver)
    tp_gpus: int                           # bundles 2..: one GPU each for vLLM's TP workers
    train_workers: int                     # Ray Train workers (0: training in the driver)
    per_worker: dict[str, float]
    strategy: str
    zero_stage: int | None
    tensor_parallel: int

    def bundles(self) -> list[dict[str, float]]:
        extra = [self.generator] if self.generator else []
        return [self.driver, *extra, *([{"GPU": 1.0}] * self.tp_gpus)]

    def tp_bundle_indices(self) -> list[int] | None:
        return list(range(FIRST_TP_BUNDLE, FIRST_TP_BUNDLE + self.tp_gpus)) if self.tp_gpus else None

    def held(self) -> dict[str, float]:
        """What the trial's placement group keeps reserved while the trial runs."""
        return add_resources(*self.bundles())

    def training(self) -> dict[str, float]:
        """What one Train run reserves (in its own placement group) while it trains."""
        return {k: v * self.train_workers for k, v in self.per_worker.items() if v}


def add_resources(*dicts: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            if v:
                out[k] = out.get(k, 0.0) + v
    return out


@dataclass(frozen=True)
class BackendSpec:
    """A backend to construct: ``target`` ("module:Class", imported only by :meth:`build`) and
    the constructor arguments that come from the config and the trial's resources."""

    target: str
    kwargs: dict[str, Any]
    wrapper: str | None = None    # "module:Class" taking the built backend (the weight probe)

    def build(self, **runtime: Any):
        """Construct it; ``runtime`` adds what exists only in the running process (a progress
        callback, the trial's placement group)."""
        backend = _imported(self.target)(**self.kwargs, **runtime)
        return _imported(self.wrapper)(backend) if self.wrapper else backend


def _imported(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def trainer_spec(cfg: ExperimentConfig, resources: TrialResources | None = None) -> BackendSpec:
    """In this process (training.backend: local), or Ray Train workers: of the shape the grid
    reserved (``resources``), else RayTrainer's defaults (one CPU worker)."""
    if cfg.training.backend == "local":
        return BackendSpec("collapse_ray.train.local:LocalTrainer", {"cfg": cfg.training})
    kwargs: dict[str, Any] = {"cfg": cfg.training}
    if resources is not None:
        per_worker = {k: v for k, v in resources.per_worker.items() if v}
        kwargs.update(num_workers=resources.train_workers, use_gpu=per_worker.get("GPU", 0) > 0,
                      resources_per_worker=per_worker, strategy=resources.strategy,
                      zero_stage=resources.zero_stage)
    return BackendSpec("collapse_ray.train.ray_trainer:RayTrainer", kwargs)


def generator_spec(cfg: ExperimentConfig, resources: TrialResources | None = None) -> BackendSpec:
    """HF generate in this process, or a vLLM actor: in the bundles the grid reserved
    (``resources``), else wherever Ray places it."""
    gen = cfg.generator
    if gen.backend == "hf":
        return BackendSpec("collapse_ray.generate.hf:HFGenerator", {"batch_size": gen.batch_size})
    kwargs: dict[str, Any] = {
        "kv_cache_bytes": None if gen.kv_cache_gb is None else int(gen.kv_cache_gb * 2**30),
        "dtype": served_dtype(cfg),
        "max_model_len": max_model_len(cfg),
        "enable_lora": cfg.training.method == "lora",
    }
    if resources is not None:
        actor = resources.generator or {}
        kwargs.update(num_cpus=actor.get("CPU", 0), num_gpus=actor.get("GPU", 0),
                      bundle_index=GENERATOR_BUNDLE, bundle_indices=resources.tp_bundle_indices(),
                      tensor_parallel_size=resources.tensor_parallel)
    return BackendSpec("collapse_ray.generate.vllm_actor:RayVLLMGenerator", kwargs,
                       wrapper="collapse_ray.generate.weight_probe:ProbedGenerator" if gen.weight_probe else None)


def build_trainer(cfg: ExperimentConfig, progress: Callable[[str], None],
                  resources: TrialResources | None = None):
    return trainer_spec(cfg, resources).build(progress=progress)


def build_generator(cfg: ExperimentConfig, resources: TrialResources | None = None, placement_group=None):
    """``placement_group``: the running trial's group, which ``resources`` describes (the vLLM
    actor goes into its bundle)."""
    spec = generator_spec(cfg, resources)
    if placement_group is not None and cfg.generator.backend == "vllm":
        return spec.build(placement_group=placement_group)
    return spec.build()


def served_dtype(cfg: ExperimentConfig) -> str:
    """``generator.dtype``, with "auto" read as the dtype the local model was saved in, so that
    vLLM generates in training's precision (its own "auto" runs float32 weights in bfloat16 on
    CPU); a hub id is left to vLLM."""
    if cfg.generator.dtype != "auto":
        return cfg.generator.dtype
    saved = _local_model_config(cfg)
    dtype = saved.get("torch_dtype") or saved.get("dtype")
    return dtype if isinstance(dtype, str) else "auto"


def _local_model_config(cfg: ExperimentConfig) -> dict:
    """The model's config.json where it is a local directory (the tiny one included), else {}."""
    from collapse_ray.base_model import resolve_model_path

    config = Path(resolve_model_path(cfg.model, progress=lambda msg: None)) / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


def max_model_len(cfg: ExperimentConfig) -> int:
    """Room for a training-length prompt and the completion, within the model's own context
    (vLLM refuses a longer one; the actor cuts longer prompts from the left)."""
    need = cfg.training.max_length + cfg.sizes.max_new_tokens
    limit = _local_model_config(cfg).get("max_position_embeddings")   # a hub id's is read by vLLM itself
    return min(need, int(limit)) if limit else need
