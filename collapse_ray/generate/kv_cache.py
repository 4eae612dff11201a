"""vLLM-CPU's KV cache when ``generator.kv_cache_gb`` is not set: what the model needs, not 1 GiB.

vLLM's CPU build does not size its KV cache itself. It schedules up to 256 sequences at once
there (``max_num_seqs``, vllm/engine/arg_utils.py, the LLM class on CPU), so a cache that holds
257 sequences of ``max_model_len`` tokens (256 and the block vLLM keeps back) never preempts one and generates exactly what a larger
cache would. For the tiny model (256-token context) that is 129 MiB instead of 1 GiB, allocated and touched in
every trial's vLLM actor for the trial's whole life; larger models stay at the 1 GiB this project
used before (vLLM then schedules fewer sequences at once). Pure: no torch, no vLLM; the engine
and the grid's memory plan size it with the same function.
"""
from __future__ import annotations

import math

VLLM_CPU_MAX_NUM_SEQS = 256     # vLLM's default max_num_seqs for the LLM class on CPU
VLLM_BLOCK_TOKENS = 128         # vLLM-CPU's largest KV block: a sequence holds whole blocks
CPU_KV_CACHE_CAP_BYTES = 1 << 30
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


def kv_bytes_per_token(config: dict, dtype_bytes: int) -> int:
    """Keys and values of one token in every layer (LLaMA / Qwen config.json fields)."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * dtype_bytes


def cpu_kv_cache_bytes(config: dict | None, max_model_len: int | None, dtype: str | None) -> int:
    """Room for vLLM-CPU's 256 sequences and one more of ``max_model_len`` tokens (None: the model's context;
    never past it) in whole blocks, at most 1 GiB; ``dtype`` None or "auto" is the saved one. 1 GiB
    where the model's shape or context is unknown (``config`` None or not a decoder's)."""
    if not isinstance(config, dict):
        return CPU_KV_CACHE_CAP_BYTES
    context = config.get("max_position_embeddings")
    length = min(max_model_len, context) if max_model_len and context else max_model_len or context
    if dtype in (None, "auto"):
        dtype = config.get("torch_dtype") or config.get("dtype")
    try:
        per_token = kv_bytes_per_token(config, DTYPE_BYTES.get(dtype if isinstance(dtype, str) else "", 4))
        tokens = math.ceil(int(length) / VLLM_BLOCK_TOKENS) * VLLM_BLOCK_TOKENS
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return CPU_KV_CACHE_CAP_BYTES
    # One sequence more than vLLM runs at once: its block manager keeps a block back (the null block).
    return min(CPU_KV_CACHE_CAP_BYTES, (VLLM_CPU_MAX_NUM_SEQS + 1) * tokens * per_token)
