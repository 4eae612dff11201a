"""One interface for every fine-tuning backend (in process, Ray Train)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

from collapse_ray.datatypes import ModelRef

if TYPE_CHECKING:   # config imports the regimes; the trainers' workers need neither
    from collapse_ray.config import TrainingConfig


@dataclass(frozen=True)
class TrainResult:
    model: ModelRef          # what the generator should load next
    train_loss: float        # mean loss over the last epoch
    steps: int
    tokens: int
    seconds: float
    startup_s: float = 0.0   # of ``seconds``: starting a worker group (Ray Train), when this job started one
    core_wait_s: float = 0.0   # of ``seconds``: waiting for a free core of the node (train/core_slots.py)
    steps_s: float = 0.0       # of ``seconds``: the optimizer steps alone (train/core.py, timed_steps)
    steps_cpu_s: float = 0.0   # the trainer process's CPU-seconds over those steps


def total_steps(n_texts: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """The optimizer steps of one training run: ``max_steps`` when set, whatever ``epochs`` says
    (HF Trainer's rule), else ``epochs`` passes over the texts in batches. Here, without torch, so
    the dry-run's estimate counts the steps the trainers take."""
    per_epoch = max(1, -(-n_texts // batch_size))
    return max_steps if max_steps is not None else per_epoch * epochs


class Trainer(Protocol):
    def train(self, init: ModelRef, texts: Sequence[str], out_dir: str, seed: int,
              cfg: TrainingConfig | None = None) -> TrainResult:
        """Fine-tune ``init`` on ``texts`` (causal LM loss), save to ``out_dir``; the training
        settings are ``cfg``, else the TrainingConfig the trainer was built with (a Ray Train
        worker group keeps its strategy and workers whatever a job's settings say)."""

    def close(self) -> None:
        """Free what the trainer holds for the trial (Ray Train's worker group)."""
