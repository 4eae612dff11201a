"""A model's parameter count (and its LoRA adapter's), without loading it: what the dry-run's
disk and time estimates are made of. Pure: no torch, no hub.

    the tiny model       from its recipe: the shapes base_model.new_model builds
    a local directory    its safetensors headers (exact), else its config.json (dense decoders)
    a hub id             a small table of the study's models (approximate: shapes from their
                         config.json, published totals for the mixture-of-experts ones)
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from collapse_ray.checkpoint_estimate import lora_param_count
from collapse_ray.config import TINY_MODEL, ModelConfig, TinyModelConfig


@dataclass(frozen=True)
class ModelSize:
    n_params: int
    lora_params_per_rank: int | None   # what PEFT's all-linear LoRA adds per unit of rank; None: unknown
    source: str                        # where the figure comes from (printed by the dry-run)
    active_params: int | None = None   # a mixture of experts' parameters per token; None: all of them

    @property
    def compute_params(self) -> int:
        """The parameters each token's compute goes through."""
        return self.active_params or self.n_params

    def lora_params(self, rank: int) -> int | None:
        return None if self.lora_params_per_rank is None else self.lora_params_per_rank * rank


def _dense(hidden: int, inter: int, layers: int, heads: int, kv_heads: int, head_dim: int, vocab: int,
           tied: bool, qk_norm: bool = False) -> dict:
    """A dense decoder's config.json fields (LLaMA / Qwen3 names)."""
    return dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab, tie_word_embeddings=tied,
                qk_norm=qk_norm)


# The study's dense models (experiments/paper.yaml), from their config.json.
HUB_DENSE = {
    "Qwen/Qwen3-0.6B": _dense(1024, 3072, 28, 16, 8, 128, 151936, tied=True, qk_norm=True),
    "Qwen/Qwen3-1.7B": _dense(2048, 6144, 28, 16, 8, 128, 151936, tied=True, qk_norm=True),
    "Qwen/Qwen3-8B": _dense(4096, 12288, 36, 32, 8, 128, 151936, tied=False, qk_norm=True),
    "Qwen/Qwen3-14B": _dense(5120, 17408, 40, 40, 8, 128, 151936, tied=False, qk_norm=True),
    "meta-llama/Llama-3.2-1B": _dense(2048, 8192, 16, 32, 8, 64, 128256, tied=True),
    "meta-llama/Llama-3.2-3B": _dense(3072, 8192, 28, 24, 8, 128, 128256, tied=True),
    "meta-llama/Llama-3.1-8B": _dense(4096, 14336, 32, 32, 8, 128, 128256, tied=False),
    "meta-llama/Llama-3.1-70B": _dense(8192, 28672, 80, 64, 8, 128, 128256, tied=False),
}
# Mixture-of-experts models: (published total and active parameters, LoRA parameters per unit of
# rank). What all-linear LoRA reaches per layer, as transformers 5.19 and PEFT 0.21 build it (the
# experts are fused parameters there; tests/test_grid_plan.py checks this on small models):
#   Qwen3-30B-A3B (h 2048, 32 q / 4 kv heads of 128, 128 experts of 768, 48 layers): attention
#     q 2048+4096, k and v 2048+512, o 4096+2048 = 17,408; the router 2048+128 = 2,176; the
#     experts, which PEFT adapts per expert at rank 2r for gate_up and r for down,
#     128 x (3 x 2048 + 5 x 768) = 1,277,952 -> 1,297,536 x 48 = 62,281,728
#   Llama-4-Scout-17B-16E (h 5120, 40 q / 8 kv heads of 128, 16 experts, 48 layers): attention
#     32,768, the shared expert's gate/up/down 3 x (5120+8192) = 39,936, the router 5120+16
#     (its routed experts are not adapted) -> 77,840 x 48 = 3,736,320
HUB_MOE = {
    "Qwen/Qwen3-30B-A3B": (30_500_000_000, 3_300_000_000, 62_281_728),
    "meta-llama/Llama-4-Scout-17B-16E": (109_000_000_000, 17_000_000_000, 3_736_320),
}


def dense_param_count(config: dict) -> int:
    """Parameters of a dense LLaMA/Qwen-style decoder from its config.json fields (biases left out)."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h + (2 * head_dim if config.get("qk_norm") else 0)
    embeddings = config["vocab_size"] * h * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * per_layer + h


def tiny_config(tiny: TinyModelConfig) -> dict:
    """The config base_model.new_model gives the tiny model (its tokenizer has vocab_size tokens)."""
    return {**_dense(tiny.hidden_size, 32 * math.ceil(tiny.hidden_size * 8 / 3 / 32), tiny.num_layers,
                     tiny.num_heads, tiny.num_heads, tiny.hidden_size // tiny.num_heads, tiny.vocab_size,
                     tied=True, qk_norm=tiny.architecture == "qwen3"),
            "max_position_embeddings": tiny.context_length, "torch_dtype": "float32"}


def decoder_config(model: ModelConfig) -> dict | None:
    """The model's config.json fields without loading it or reaching the hub: the tiny recipe's,
    the built-in table's, or a local directory's (its text model's); None for a mixture of
    experts, a hub id outside the table, or an unreadable file."""
    ref = model.name_or_path
    if ref == TINY_MODEL:
        return tiny_config(model.tiny)
    if ref in HUB_DENSE:
        return HUB_DENSE[ref]
    if ref in HUB_MOE:
        return None
    return local_config(Path(ref).expanduser())


def local_config(directory: Path) -> dict | None:
    """A model directory's config.json (its text model's, for a multimodal one); None if unreadable."""
    try:
        config = json.loads((directory / "config.json").read_text())
        config = config.get("text_config", config)
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def safetensors_param_count(directory: Path) -> int | None:
    """The exact parameter count from the headers of a directory's ``*.safetensors`` files."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with f.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total


def model_size(model: ModelConfig) -> ModelSize | None:
    """The model's size (module docstring); None for a hub id outside the table or a directory
    without a readable config.json."""
    ref = model.name_or_path
    if ref in HUB_MOE:
        n, active, lora = HUB_MOE[ref]
        return ModelSize(n, lora, "built-in table, approximate", active)
    config = decoder_config(model)   # unreadable files leave the size unknown; the pre-flight names them
    if config is None:
        return None
    if ref == TINY_MODEL or ref in HUB_DENSE:
        source = "its recipe" if ref == TINY_MODEL else "built-in table, approximate"
        return ModelSize(dense_param_count(config), lora_param_count(config, 1), source)
    try:
        exact = safetensors_param_count(Path(ref).expanduser())
    except (OSError, ValueError, AttributeError, TypeError, struct.error):
        return None
    try:
        lora = lora_param_count(config, 1)
        counted = dense_param_count(config)
    except (KeyError, ValueError, TypeError):   # not a dense decoder this formula knows
        lora = counted = None
    if exact is not None:
        return ModelSize(exact, lora, "its safetensors headers")
    return ModelSize(counted, lora, "its config.json") if counted is not None else None
