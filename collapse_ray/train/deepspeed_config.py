"""The DeepSpeed config the Ray Train workers run with, chosen from the model's size and device.

Choices (each one a keyword here, written down so a run's settings can be read back):
- ZeRO stage: the one configured (0 means ZeRO off: DeepSpeed's engine without partitioning),
  else 3 (parameters partitioned too) from ``ZERO3_MIN_PARAMS`` parameters up, since a
  replica of the weights no longer fits beside activations on one GPU; 2 (optimizer state and
  gradients partitioned) below it. ZeRO-1 and ZeRO-2 also run on CPU (DeepSpeed's CPU
  accelerator over gloo), which is how this path is tested without a GPU.
- Precision: bf16 on GPU (DeepSpeed keeps fp32 master weights in the optimizer partitions),
  fp32 on CPU.
- Optimizer: not configured here. The worker hands DeepSpeed a ``torch.optim.AdamW`` (a
  ZeRO-supported optimizer that runs on every device, unlike FusedAdam / DeepSpeedCPUAdam which
  need compiled ops) and steps the in-process trainer's warm-up + cosine schedule
  (core.lr_schedule) on it, so both backends train the same way.
- Gradient clipping at 1.0 (as in the in-process trainer), one micro batch per step, no
  gradient accumulation: the global batch is ``micro_batch * world_size``.
"""
from __future__ import annotations

from typing import Any

ZERO3_MIN_PARAMS = 10_000_000_000
GRAD_CLIP = 1.0


def count_parameters(model_path: str) -> int:
    """Parameters of the model at ``model_path``, counted on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def zero_stage_for(n_params: int, use_gpu: bool) -> int:
    if use_gpu and n_params >= ZERO3_MIN_PARAMS:
        return 3
    return 2


def resolve_zero_stage(requested: int | None, n_params: int, use_gpu: bool) -> int:
    """The stage asked for (0 included: ZeRO off, DeepSpeed's engine only), else the size rule."""
    return requested if requested is not None else zero_stage_for(n_params, use_gpu)


def deepspeed_config(*, n_params: int, world_size: int, micro_batch: int, use_gpu: bool,
                     zero_stage: int | None = None) -> dict[str, Any]:
    stage = resolve_zero_stage(zero_stage, n_params, use_gpu)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {stage}")
    zero: dict[str, Any] = {"stage": stage, "contiguous_gradients": True, "overlap_comm": use_gpu}
    if stage == 3:
        # Lets rank 0 gather full 16-bit weights to save a HF checkpoint at the end.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": micro_batch * world_size,
        "gradient_clipping": GRAD_CLIP,
        "bf16": {"enabled": use_gpu},
        "zero_optimization": zero,
        "steps_per_print": 10**9,   # the worker reports progress itself
        "wall_clock_breakdown": False,
    }
