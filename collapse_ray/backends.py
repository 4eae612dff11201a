"""The one place a trial's trainer and generator are built: from its ExperimentConfig and, when
the grid runs it on Ray, the resources the grid reserved for it. ``collapse-ray run``
(loop.run_trial) and the grid's trial driver (grid/tune_runner.py) both call
:func:`build_trainer` and :func:`build_generator`.

Two steps: :func:`trainer_spec` and :func:`generator_spec` say what will be constructed (the
class, named by import path, and its arguments) without importing Ray, vLLM or torch;
:meth:`BackendSpec.build` constructs it. Tests compare specs: every field of the training and
generator configs must change one of them.

A trial on Ray holds, for its whole life:

    its placement group (:meth:`TrialResources.bundles`, Tune's ``PlacementGroupFactory``)
      bundle 0         the trial driver (a fraction of a CPU when it only orchestrates)
      bundle 1         the vLLM generator actor (generator.backend: vllm), unless colocated
      bundles 2..2+tp  one GPU each for vLLM's tensor-parallel workers (tensor_parallel > 1), unless colocated
    its Ray Train worker group (training.backend: ray; train/worker_group.py): Train V2 places it
      in a placement group of its own, started once per trial and kept until the trial ends

GPU colocation (grid ``resources.colocate``, default true; only where vLLM serves a model whose
Ray Train workers have GPUs). The engine sleeps while the workers train and wakes to load the new
weights, so it needs no GPUs of its own: the vLLM actor reserves 0 GPUs and its CPUs outside the
trial's group, on the node of Train rank 0, with ``CUDA_VISIBLE_DEVICES`` naming the GPUs Ray gave
the first ``tensor_parallel`` ranks on that node (Ray 2.60 leaves that variable alone for an actor
with 0 GPUs). A colocated trial then holds its training GPUs only, not training + serving GPUs.
grid/plan.py checks that the ranks on one node have GPUs enough for the engine's tensor parallel.
The pinning needs the running worker group's node and GPU ids and is not built yet: a grid run
gives a colocated trial's engine GPUs of its own until it is (docs/grid.md, "GPU colocation").
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from collapse_ray.config import ExperimentConfig

GENERATOR_BUNDLE = 1    # the vLLM actor's bundle in the trial's placement group
FIRST_TP_BUNDLE = 2     # the first of the tensor-parallel GPU bundles


@dataclass(frozen=True)
class TrialResources:
    """What a grid trial reserves on Ray (grid/expand.py derives it from the grid YAML)."""

    driver: dict[str, float]               # bundle 0: the trial driver
    generator: dict[str, float] | None     # the vLLM actor (None: HF generate in the driver)
    tp_gpus: int                           # bundles 2..: one GPU each for vLLM's TP workers
    train_workers: int                     # Ray Train workers (0: training in the driver)
    per_worker: dict[str, float]
    strategy: str
    zero_stage: int | None
    tensor_parallel: int
    colocated: bool = False                # vLLM runs on the Train workers' GPUs (module docstring)

    def bundles(self) -> list[dict[str, float]]:
        """The trial's placement group; a colocated vLLM actor is placed beside Train rank 0 instead."""
        extra = [self.generator] if self.generator and not self.colocated else []
        return [self.driver, *extra, *([{"GPU": 1.0}] * self.tp_gpus)]

    def tp_bundle_indices(self) -> list[int] | None:
        return list(range(FIRST_TP_BUNDLE, FIRST_TP_BUNDLE + self.tp_gpus)) if self.tp_gpus else None

    def held(self) -> dict[str, float]:
        """What the trial holds for its whole life outside its Train worker group: its placement
        group, and a colocated vLLM actor's CPUs."""
        return add_resources(self.driver, self.generator or {}, {"GPU": float(self.tp_gpus)})

    def training(self) -> dict[str, float]:
        """What the trial's Train worker group holds (in its own placement group, for the whole trial)."""
        return {k: v * self.train_workers for k, v in self.per_worker.items() if v}

    def reserved(self) -> dict[str, float]:
        """Everything the trial keeps while it runs: what grid/plan.py packs onto the cluster."""
        return add_resources(self.held(), self.training())

    def serving_gpus(self) -> int:
        """GPUs vLLM's engine runs on (its tensor-parallel size); 0 unless vLLM serves on GPU."""
        if self.colocated or self.tp_gpus:
            return self.tensor_parallel
        return int((self.generator or {}).get("GPU", 0))

    def separate(self) -> "TrialResources":
        """The same trial with vLLM on GPUs of its own (``resources.colocate: false``)."""
        if not self.colocated:
            return self
        tp = self.tensor_parallel
        generator = {**(self.generator or {}), **({"GPU": 1.0} if tp == 1 else {})}
        return replace(self, generator=generator, tp_gpus=tp if tp > 1 else 0, colocated=False)


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
                      tensor_parallel_size=resources.tensor_parallel)
        if resources.colocated:   # on the Train workers' GPUs, asleep while they train
            kwargs.update(enable_sleep_mode=True)
        else:
            kwargs.update(bundle_index=GENERATOR_BUNDLE, bundle_indices=resources.tp_bundle_indices())
    return BackendSpec("collapse_ray.generate.vllm_actor:RayVLLMGenerator", kwargs,
                       wrapper="collapse_ray.generate.weight_probe:ProbedGenerator" if gen.weight_probe else None)


def build_trainer(cfg: ExperimentConfig, progress: Callable[[str], None],
                  resources: TrialResources | None = None):
    return trainer_spec(cfg, resources).build(progress=progress)


def build_generator(cfg: ExperimentConfig, resources: TrialResources | None = None, placement_group=None):
    """``placement_group``: the running trial's group, which ``resources`` describes (the vLLM
    actor goes into its bundle)."""
    spec = generator_spec(cfg, resources)
    colocated = resources is not None and resources.colocated
    if placement_group is not None and cfg.generator.backend == "vllm" and not colocated:
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
