"""What a task is: its real data, how the model's outputs become synthetic data, its evaluation,
its headline metrics and its options.

The loop only talks to this interface and never branches on a task's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from collapse_ray.datatypes import Example
from collapse_ray.generate.base import Generator, Sampling
from collapse_ray.typed import build


@dataclass(frozen=True)
class TaskData:
    """A task's real data, split deterministically from the seed.

    ``train``: real training examples, in an order shuffled by the seed (a regime that keeps a
    fixed part of the real data takes a prefix). ``pool``: examples whose *prompts* the model answers to make
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


@dataclass(frozen=True)
class NoOptions:
    """The options of a task that has none."""


class Task:
    """Base of every task. A task module subclasses it, registers the class with
    ``@register_task(name)``, and gives ``Options``: a frozen dataclass of the task's settings
    (``task.options`` in the config; defaults apply to fields left out), which may check its own
    values in ``check(where)`` (raise ConfigError naming ``{where}.<field>``)."""

    name: ClassVar[str]
    # Stop strings for sampling this task's completions.
    stop: ClassVar[tuple[str, ...]]
    # Whether synthetic texts are programs (drift then also reports the share that parses).
    is_code: ClassVar[bool]
    # What task.data_path may be, each kind ("file", "dir", "hf") with how to describe it.
    data_sources: ClassVar[dict[str, str]] = {"file": "a file", "dir": "a directory"}
    # Optional: ``label_drift(kept: Sequence[Example]) -> dict[str, float]``. A task whose synthetic
    # data are pseudo-labels defines it; its drift is then measured on the labels, not on the text.
    # The metrics of evaluate() that summarise the task (progress lines, reports), most important first.
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    # Whether the pool's prompts come with tests (then passes_tests() runs them: mitigation.execution_filter).
    pool_has_tests: ClassVar[bool] = False
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def parse_options(cls, value: Any, where: str = "task.options"):
        """The typed options from the config's mapping (None: all defaults; already typed: as they are,
        so validating a config twice is harmless)."""
        if isinstance(value, cls.Options):
            return value
        return build(cls.Options, {} if value is None else value, where)

    def load(self, data_path: str | None, seed: int, sizes) -> TaskData:
        """Read and split the real data; raise a clear error naming a missing/empty/bad file."""
        raise NotImplementedError

    def synthesize(self, generator: Generator, prompts: Sequence[Example], sampling: Sampling,
                   generation: int) -> list[Example]:
        """The model's own answers to the pool's prompts, as synthetic training examples."""
        raise NotImplementedError

    def quality_ok(self, example: Example) -> bool:
        """The task's quality filter (a mitigation): keep this synthetic example?"""
        raise NotImplementedError

    def dedup_text(self, example: Example) -> str:
        """What near-duplicate removal (a mitigation) compares: the model's completion, where the
        model wrote text."""
        return example.completion

    def passes_tests(self, examples: Sequence[Example]) -> list[bool]:
        """Whether each synthetic example (a pool prompt and the model's completion) passes the
        prompt's tests, run in the sandbox. Only tasks with ``pool_has_tests``."""
        raise NotImplementedError(f"task {self.name} has no tests for its pool's prompts")

    def evaluate(self, generator: Generator, test: Sequence, sampling: Sampling) -> dict[str, float]:
        """Task metrics of the model the generator serves, on the test items."""
        raise NotImplementedError
