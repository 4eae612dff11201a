"""Pieces every fine-tuning backend shares: model loading (full or LoRA), tokenising, batching,
the learning-rate schedule, the optimizer step and the epoch loop, saving. The in-process trainer
and the Ray Train worker both call these, so both train the same way."""
from __future__ import annotations

import os
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from collapse_ray.datatypes import ModelRef
from collapse_ray.train.deepspeed_config import GRAD_CLIP

MIN_LR_RATE = 0.1   # the cosine decays to 10% of the peak learning rate


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


def lr_schedule(optimizer: torch.optim.Optimizer, total: int):
    """transformers' linear warm-up + cosine schedule, stepped after each optimizer step as HF's
    Trainer does: warm-up over the first 5% of ``total`` steps, then cosine decay to 10% of the
    peak. Its warm-up starts at lr 0, so a run under 20 steps gets none (a 1-step run would
    otherwise not train at all)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps=total // 20,
                                                        num_training_steps=total, min_lr_rate=MIN_LR_RATE)


class AdamWStep:
    """One training step of the torch trainers (in process, Ray DDP; DeepSpeed steps its own
    engine on the same schedule): forward (bf16 autocast where asked), backward, gradient norm
    clipped at 1.0, AdamW without weight decay, then the schedule. Called with a batch, returns
    its loss. ``forward`` is the model to call when it differs from the one trained (DDP's wrapper)."""

    def __init__(self, model, lr: float, total: int, forward=None, device: torch.device = torch.device("cpu"),
                 bf16: bool = False):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.schedule = lr_schedule(self.optim, total)
        self.forward = forward or model
        self.device, self.bf16 = device, bf16

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.forward(**{k: v.to(self.device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.optim.step()
        self.schedule.step()
        self.optim.zero_grad(set_to_none=True)
        return loss.item()


def run_steps(step: Callable[[dict[str, torch.Tensor]], float], token_lists: Sequence[list[int]],
              batch_size: int, pad_id: int, rng: random.Random, total: int,
              on_step: Callable[[int, float], None] = lambda step, loss: None) -> tuple[int, list[float]]:
    """``total`` calls of ``step``, over as many shuffled epochs of ``token_lists`` as that takes
    (the last one cut short), with ``on_step(steps done, loss)`` after each. Returns the tokens
    trained on and the losses of the last epoch."""
    done, tokens, epoch_losses = 0, 0, []
    while done < total:
        epoch_losses = []
        for batch in batches(token_lists, batch_size, pad_id, rng):
            epoch_losses.append(step(batch))
            tokens += int(batch["attention_mask"].sum())
            done += 1
            on_step(done, epoch_losses[-1])
            if done >= total:
                break
    return tokens, epoch_losses


@dataclass
class StepsTiming:
    wall_s: float = 0.0
    cpu_s: float = 0.0   # this process's, every thread's: what the steps cost, however much of a core they got


@contextmanager
def timed_steps() -> Iterator[StepsTiming]:
    """Time the optimizer steps alone, apart from loading, tokenising and saving (which a floor
    measured on fewer steps must not scale) and from waiting for a core: their wall time says how
    long they took, their CPU-seconds what they cost."""
    timing = StepsTiming()
    wall, cpu = time.monotonic(), time.process_time()
    try:
        yield timing
    finally:
        timing.wall_s, timing.cpu_s = time.monotonic() - wall, time.process_time() - cpu


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
