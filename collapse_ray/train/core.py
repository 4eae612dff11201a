"""Pieces every fine-tuning backend shares: model loading (full or LoRA), tokenising, batching,
saving. The in-process trainer and the Ray Train worker both call these, so both train the
same way."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import torch

from collapse_ray.generate.base import ModelRef
from collapse_ray.train.base import total_steps  # noqa: F401  (its torch-free home)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_trainable_model(init: ModelRef, method: str, lora_rank: int, lora_alpha: int,
                         dtype: torch.dtype = torch.float32):
    """Full weights, a fresh LoRA adapter on ``init.path``, or ``init.adapter`` trained further."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(init.path, dtype=dtype)
    if init.adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, init.adapter, is_trainable=True)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        return get_peft_model(model, lora)
    return model


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text + EOS, truncated: the model learns where a completion ends."""
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        out.append((ids + [eos])[:max_length])
    return out


def batches(token_lists: Sequence[list[int]], batch_size: int, pad_id: int,
            rng: random.Random) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of shuffled, right-padded batches; padding never counts in the loss."""
    order = list(range(len(token_lists)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [token_lists[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        yield {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def save_trained(model, tokenizer, out_dir: str | os.PathLike, base_path: str) -> ModelRef:
    """Save atomically (temp dir, then rename); LoRA saves only the adapter."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    is_adapter = (tmp / "adapter_config.json").is_file()
    if not is_adapter:
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return ModelRef(path=base_path, adapter=str(out)) if is_adapter else ModelRef(path=str(out))


def base_of(ref: ModelRef) -> str:
    """The full-weights directory a ModelRef builds on (where its tokenizer lives)."""
    return ref.path
