"""Disk a trial's checkpoints take under its retention policy, estimated before anything runs.

Pure arithmetic for the grid's dry-run: the caller supplies the model's parameter count (and,
for LoRA, the adapter's, see ``lora_param_count``); nothing is loaded or imported here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from collapse_ray.config import ExperimentConfig
from collapse_ray.retention import models_to_keep

ADAPTER_BYTES_PER_PARAM = 4   # PEFT keeps LoRA weights in float32 even on a bf16 base
BYTES_PER_TOKEN = 4           # synthetic JSONL: ~4 characters per token (a rough upper figure)


@dataclass(frozen=True)
class CheckpointEstimate:
    model_bytes: int          # one generation's model: full weights, or the LoRA adapter
    synthetic_bytes: int      # one generation's synthetic data (upper figure from the token budget)
    models_at_peak: int       # models on disk at once, the one being written included
    models_at_end: int
    peak_bytes: int           # the most the trial directory holds at any time
    final_bytes: int          # what it holds once the trial has finished


def estimate_checkpoint_bytes(cfg: ExperimentConfig, n_params: int, *, bytes_per_param: int = 2,
                              lora_params: int | None = None) -> CheckpointEstimate:
    """``n_params``: the model's parameter count; ``bytes_per_param``: the dtype the trainer saves
    (2 for bf16 on GPU and DeepSpeed's gathered 16-bit weights, 4 for float32 on CPU). With
    ``training.method: lora`` only adapters are saved (the base model lives outside the trial):
    pass ``lora_params``."""
    if cfg.training.method == "lora":
        if lora_params is None:
            raise ValueError("training.method is lora: pass lora_params (lora_param_count of the model's "
                             "config.json and training.lora_rank)")
        model_bytes = lora_params * ADAPTER_BYTES_PER_PARAM
    else:
        model_bytes = n_params * bytes_per_param
    samples = round(cfg.sizes.synthetic_pool * cfg.mitigation.oversample)
    synthetic_bytes = samples * (cfg.training.max_length + cfg.sizes.max_new_tokens) * BYTES_PER_TOKEN
    last = cfg.generations
    # While generation g trains, what generation g-1 kept is on disk next to the model being written.
    at_peak = max(len((models_to_keep(cfg.retention, g - 1) if g else set()) | {g}) for g in range(last + 1))
    at_end = len(models_to_keep(cfg.retention, last))
    all_synthetic = (last + 1) * synthetic_bytes   # never pruned
    return CheckpointEstimate(model_bytes, synthetic_bytes, at_peak, at_end,
                              at_peak * model_bytes + all_synthetic, at_end * model_bytes + all_synthetic)


def grid_checkpoint_bytes(estimates: Sequence[CheckpointEstimate], concurrency: int) -> tuple[int, int]:
    """(peak, final) bytes for a grid whose trials run ``concurrency`` at a time: every trial may
    end up finished while the ``concurrency`` largest are at their peak."""
    final = sum(e.final_bytes for e in estimates)
    extra = sorted((e.peak_bytes - e.final_bytes for e in estimates), reverse=True)
    return final + sum(extra[:max(1, concurrency)]), final


def lora_param_count(model_config: dict, rank: int) -> int:
    """LoRA parameters PEFT's ``target_modules="all-linear"`` adds to a dense LLaMA/Qwen-style
    decoder (``model_config``: its config.json): rank x (fan-in + fan-out) for the q, k, v, o,
    gate, up and down projections of every layer (the LM head is left out)."""
    if any(k in model_config for k in ("num_experts", "num_local_experts")):
        raise ValueError("lora_param_count covers dense decoders; this config has experts "
                         "(count the adapter of a mixture-of-experts model from its own modules)")
    h, inter = model_config["hidden_size"], model_config["intermediate_size"]
    heads = model_config["num_attention_heads"]
    kv_heads = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or h // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)
    return rank * per_layer * model_config["num_hidden_layers"]
