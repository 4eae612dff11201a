"""What the Ray Train tests share: the texts a tiny Llama learns in a few steps, the training
settings, and the loss that says it did."""
from __future__ import annotations

import random

import torch

from collapse_ray.config import TrainingConfig
from collapse_ray.datatypes import ModelRef
from collapse_ray.train.core import batches, load_tokenizer, tokenize

TEXTS = [
    f"def {name}(x):\n    return x {op} {n}\n"
    for name, op in [("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/")]
    for n in range(1, 9)
]  # 32 short, repetitive functions: a few steps visibly lower the loss


def training(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"epochs": 1, "max_steps": 12, "lr": 3e-3, "batch_size": 8,
                             "max_length": 64, "backend": "ray", **overrides})


def mean_loss(ref: ModelRef, texts=TEXTS) -> float:
    """The mean causal-LM loss of ``ref`` on ``texts``, in this process."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(ref.path)
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    if ref.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ref.adapter)
    model.eval()
    token_lists = tokenize(tokenizer, texts, 64)
    with torch.no_grad():
        losses = [model(**b).loss.item() for b in batches(token_lists, 8, tokenizer.pad_token_id, random.Random(0))]
    return sum(losses) / len(losses)
