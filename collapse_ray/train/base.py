"""One interface for every fine-tuning backend (in process, Ray Train)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from collapse_ray.datatypes import ModelRef


@dataclass(frozen=True)
class TrainResult:
    model: ModelRef          # what the generator should load next
    train_loss: float        # mean loss over the last epoch
    steps: int
    tokens: int
    seconds: float


class Trainer(Protocol):
    def train(self, init: ModelRef, texts: Sequence[str], out_dir: str, seed: int) -> TrainResult:
        """Fine-tune ``init`` on ``texts`` (causal LM loss), save to ``out_dir``; the training
        settings come from the TrainingConfig the trainer was built with."""

    def close(self) -> None:
        """Free what the trainer holds for the trial (Ray Train's worker group)."""
