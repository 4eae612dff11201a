"""The values every layer passes around: a model to load (``ModelRef``: training makes one,
generators load it, trial state records it) and one training example with its provenance
(``Example``, with its JSON-lines file). Imports nothing of the project but atomic_io."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from collapse_ray.atomic_io import replacing

REAL = "real"
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class ModelRef:
    """What a backend loads: full weights at ``path``, or a LoRA ``adapter`` on top of ``path``."""

    path: str
    adapter: str | None = None


@dataclass(frozen=True)
class Example:
    """A prompt and the text that completes it.

    ``origin`` is ``"real"`` or ``"synthetic"``; ``generation`` is the generation whose model
    wrote the completion (``None`` for real data). Training text is ``prompt + completion``.
    """

    prompt: str
    completion: str
    origin: str = REAL
    generation: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    def as_synthetic(self, completion: str, generation: int, **meta) -> "Example":
        return Example(self.prompt, completion, SYNTHETIC, generation, {**self.meta, **meta})


def write_jsonl(path: Path, examples: Iterable[Example]) -> None:
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex)) + "\n")


def read_jsonl(path: Path) -> list[Example]:
    with open(path) as f:
        return [Example(**json.loads(line)) for line in f if line.strip()]
