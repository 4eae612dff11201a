"""One interface for every generation backend (HF ``generate``, vLLM in a Ray actor)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from collapse_ray.datatypes import ModelRef


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    # Stop generating at any of these strings; the returned text is cut before the stop string.
    stop: tuple[str, ...] = ()


class Generator(Protocol):
    def load(self, model: ModelRef) -> None:
        """Serve ``model`` from now on (the backend may keep the base weights and swap adapters)."""

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        """One completion per prompt, without the prompt, cut at the first stop string."""

    def option_probs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """For each prompt, the probabilities of each option's first token as the next token,
        renormalised over the options (used for classification and its confidence)."""

    def prefetch(self, model: ModelRef) -> None:
        """Start loading ``model`` in the background, if the backend can (vLLM builds its engine
        while generation 0 trains); the next ``load`` waits for it."""

    def sleep(self) -> None:
        """Free the accelerator memory the backend holds while training shares it; the next
        ``load`` wakes it. A no-op where nothing is shared."""

    def close(self) -> None:
        """Free the backend's memory."""
