"""The learning rate the trainers apply is transformers' warm-up + cosine schedule, step by step,
and differs from the schedule runs used before (``old_lr_at``) only by one step in the warm-up."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from collapse_ray.train.core import AdamWStep, run_steps

PEAK = 2e-3


def old_lr_at(step: int, total: int, peak: float) -> float:
    """The hand-written schedule the trainers ran before (train/local.py, until this test)."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class Toy(torch.nn.Module):
    """A one-weight model with a causal LM's call signature."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, labels):
        return SimpleNamespace(loss=((self.w - input_ids.float().mean()) ** 2).sum())


def applied_lrs(total: int) -> list[float]:
    """The learning rate each optimizer step of the trainers' step and loop ran with."""
    step = AdamWStep(Toy(), PEAK, total)
    seen = []
    step.optim.register_step_pre_hook(lambda optim, args, kwargs: seen.append(optim.param_groups[0]["lr"]))
    token_lists = [[i % 7 + 1] * (i % 3 + 1) for i in range(10)]
    run_steps(step, token_lists, 4, 0, random.Random(0), total)
    assert len(seen) == total
    return seen


def transformers_lrs(total: int, warmup: int) -> list[float]:
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    optim = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(optim, warmup, total, min_lr_rate=0.1)
    lrs = []
    for _ in range(total):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        schedule.step()
    return lrs


@pytest.mark.parametrize("total", [500, 40, 20])
def test_the_trainers_apply_transformers_schedule_which_lags_the_old_one_by_one_warm_up_step(total):
    warmup = total // 20
    applied = applied_lrs(total)
    assert applied == transformers_lrs(total, warmup)
    old = [old_lr_at(s, total, PEAK) for s in range(total)]
    assert applied[0] == 0.0
    assert applied[1:warmup] == pytest.approx(old[:warmup - 1], rel=1e-12)   # one step behind
    assert applied[warmup:] == pytest.approx(old[warmup:], rel=1e-12)        # the same from then on
    assert applied[-1] > 0.1 * PEAK and min(applied[warmup:]) == applied[-1]


def test_a_run_under_twenty_steps_has_no_warm_up_so_its_first_step_trains():
    applied = applied_lrs(12)
    assert applied == transformers_lrs(12, 0)
    assert applied[0] == PEAK and applied == sorted(applied, reverse=True)
