"""What a task is: its real data, how the model's outputs become synthetic data, its evaluation.

The loop only talks to this interface and never branches on a task's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from collapse_ray.examples import Example
from collapse_ray.generate.base import Generator, Sampling


@dataclass(frozen=True)
class TaskData:
    """A task's real data, split deterministically from the seed.

    ``train``: real training examples. ``pool``: examples whose *prompts* the model answers to make
    synthetic data (their real completions are never trained on). ``test``: evaluation items.
    """

    train: list[Example]
    pool: list[Example]
    test: list


def complete_prompts(generator: Generator, prompts: Sequence[Example], sampling: Sampling,
                     generation: int, finish=lambda text: text) -> list[Example]:
    """Synthetic examples whose completions the model sampled for the prompts."""
    outputs = generator.generate([p.prompt for p in prompts], sampling)
    return [p.as_synthetic(finish(out), generation) for p, out in zip(prompts, outputs)]


class Task(Protocol):
    name: str
    # Stop strings for sampling this task's completions.
    stop: tuple[str, ...]
    # Whether synthetic texts are programs (drift then also reports the share that parses).
    is_code: bool
    # What task.data_path may be, each kind ("file", "dir", "hf") with how to describe it.
    data_sources: dict[str, str]

    def load(self, data_path: str | None, seed: int, sizes) -> TaskData:
        """Read and split the real data; raise a clear error naming a missing/empty/bad file."""

    def synthesize(self, generator: Generator, prompts: Sequence[Example], sampling: Sampling,
                   generation: int) -> list[Example]:
        """The model's own answers to the pool's prompts, as synthetic training examples."""

    def quality_ok(self, example: Example) -> bool:
        """The task's quality filter (a mitigation): keep this synthetic example?"""

    def evaluate(self, generator: Generator, test: Sequence, sampling: Sampling) -> dict[str, float]:
        """Task metrics of the model the generator serves, on the test items."""
