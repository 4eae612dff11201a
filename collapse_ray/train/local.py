"""Fine-tuning in this process with plain torch: the path without Ray (tests, debugging)."""
from __future__ import annotations

import math
import random
import time
from typing import Callable, Sequence

import torch

from collapse_ray.config import TrainingConfig
from collapse_ray.generate.base import ModelRef
from collapse_ray.train.base import TrainResult
from collapse_ray.train.core import (batches, load_tokenizer, load_trainable_model, save_trained,
                                     tokenize, total_steps)


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class LocalTrainer:
    def __init__(self, cfg: TrainingConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.progress = progress or (lambda msg: None)

    def close(self) -> None:
        """Nothing outlives a train() call in this process."""

    def train(self, init: ModelRef, texts: Sequence[str], out_dir: str, seed: int) -> TrainResult:
        cfg = self.cfg
        torch.manual_seed(seed)
        start = time.monotonic()
        tokenizer = load_tokenizer(init.path)
        model = load_trainable_model(init, cfg.method, cfg.lora_rank, cfg.lora_alpha)
        model.train()
        token_lists = tokenize(tokenizer, texts, cfg.max_length)
        steps = total_steps(len(token_lists), cfg.batch_size, cfg.epochs, cfg.max_steps)
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        rng = random.Random(seed)
        step, tokens, epoch_losses, last_report = 0, 0, [], start
        while step < steps:
            epoch_losses = []
            for batch in batches(token_lists, cfg.batch_size, tokenizer.pad_token_id, rng):
                for group in optim.param_groups:
                    group["lr"] = lr_at(step, steps, cfg.lr)
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optim.step()
                optim.zero_grad(set_to_none=True)
                epoch_losses.append(loss.item())
                tokens += int(batch["attention_mask"].sum())
                step += 1
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    self.progress(f"train step {step}/{steps} loss {loss.item():.3f}")
                if step >= steps:
                    break
        model.eval()
        ref = save_trained(model, tokenizer, out_dir, base_path=init.path)
        return TrainResult(model=ref, train_loss=sum(epoch_losses) / max(1, len(epoch_losses)),
                           steps=step, tokens=tokens, seconds=time.monotonic() - start)
