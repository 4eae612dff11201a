"""A trial's labels: the parts of its name, and the MLflow tags that let the UI and the report
group runs. A grid trial takes them from the grid YAML (grid/expand.py); a single
``collapse-ray run`` makes them from its config the same way, so both kinds of run line up."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from collapse_ray.config import ExperimentConfig


@dataclass(frozen=True)
class TrialLabels:
    model: str
    task: str
    regime: str
    seed: int
    mitigation: str          # the grid's key for the trial's mitigation settings

    @property
    def name(self) -> str:
        return f"{self.model}_{self.task}_{self.regime}_s{self.seed}_{self.mitigation}"

    def tags(self) -> dict[str, str]:
        return {"model": self.model, "task": self.task, "regime": self.regime, "seed": str(self.seed),
                "mitigation": self.mitigation}


def labels_of(cfg: ExperimentConfig) -> TrialLabels:
    """The labels a grid would give this config's trial without labels of its own."""
    return TrialLabels(short_model_name(cfg.model.name_or_path), cfg.task.name, cfg.regime.label(), cfg.seed,
                       mitigation_label(cfg))


def short_model_name(name_or_path: str) -> str:
    """'meta-llama/Llama-3.2-1B' -> 'llama-3.2-1b'; a local directory -> its name."""
    tail = Path(name_or_path.rstrip("/")).name or name_or_path
    return re.sub(r"[^a-z0-9.-]+", "-", tail.lower()).strip("-") or "model"


def mitigation_label(cfg: ExperimentConfig) -> str:
    m = cfg.mitigation
    parts = (["quality"] if m.quality_filter else []) + (["executes"] if m.execution_filter else [])
    parts += [m.dedup] if m.dedup != "none" else []
    parts += [f"oversample{m.oversample:g}"] if m.oversample > 1 else []
    return "+".join(parts) or "none"
