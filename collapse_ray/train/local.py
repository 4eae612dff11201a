"""Fine-tuning in this process with plain torch: the path without Ray (tests, debugging)."""
from __future__ import annotations

import random
import time
from typing import Callable, Sequence

import torch

from collapse_ray.config import TrainingConfig
from collapse_ray.datatypes import ModelRef
from collapse_ray.train.base import TrainResult, total_steps
from collapse_ray.train.cpu_allocator import keep_freed_memory
from collapse_ray.train.core import (AdamWStep, load_tokenizer, load_trainable_model, run_steps, save_trained,
                                     timed_steps, tokenize)


class LocalTrainer:
    def __init__(self, cfg: TrainingConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.progress = progress or (lambda msg: None)

    def close(self) -> None:
        """Nothing outlives a train() call in this process."""

    def train(self, init: ModelRef, texts: Sequence[str], out_dir: str, seed: int,
              cfg: TrainingConfig | None = None) -> TrainResult:
        cfg = cfg or self.cfg
        keep_freed_memory()   # this trainer runs on CPU
        torch.manual_seed(seed)
        start = time.monotonic()
        tokenizer = load_tokenizer(init.path)
        model = load_trainable_model(init, cfg.method, cfg.lora_rank, cfg.lora_alpha)
        model.train()
        token_lists = tokenize(tokenizer, texts, cfg.max_length)
        steps = total_steps(len(token_lists), cfg.batch_size, cfg.epochs, cfg.max_steps)
        last_report = start

        def report(step: int, loss: float) -> None:
            nonlocal last_report
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                self.progress(f"train step {step}/{steps} loss {loss:.3f}")

        with timed_steps() as timing:
            tokens, epoch_losses = run_steps(AdamWStep(model, cfg.lr, steps), token_lists, cfg.batch_size,
                                             tokenizer.pad_token_id, random.Random(seed), steps, on_step=report)
        model.eval()
        ref = save_trained(model, tokenizer, out_dir, base_path=init.path)
        return TrainResult(model=ref, train_loss=sum(epoch_losses) / max(1, len(epoch_losses)),
                           steps=steps, tokens=tokens, seconds=time.monotonic() - start,
                           steps_s=timing.wall_s, steps_cpu_s=timing.cpu_s)
