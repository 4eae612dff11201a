"""Drift of each generation's synthetic data, measured on what the model wrote.

By default that is the completions: scored under the generation-0 model with their prompts as
context (perplexity, tokens, tail mass against the real training completions) and under the model
that wrote them (next-token entropy: a collapsing model grows over-confident), plus text diversity.
A task whose synthetic data are pseudo-labels declares ``label_drift(kept)``; its drift is that,
and no language model is loaded for it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from collapse_ray.datatypes import Example, ModelRef
from collapse_ray.metrics.drift import count_tokens, drift_metrics, perplexity_histogram, repeat_previous
from collapse_ray.metrics.lm_scoring import LMScorer

SCORE_MAX_LENGTH = 512
PPL_HISTOGRAM_FILE = "ppl_gen0_histogram.json"


class DriftProbe:
    def __init__(self, task, real: Sequence[Example], reference: ModelRef | None):
        self.label_drift = getattr(task, "label_drift", None)
        self.is_code = task.is_code
        self.real_completions = [ex.completion for ex in real]
        self.reference: LMScorer | None = None
        self.real_counts = None
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, model: ModelRef) -> None:
        """The generation-0 model every later generation's completions are scored under."""
        if self.label_drift is not None:
            return
        self.reference = LMScorer(model)
        self.real_counts = count_tokens(self.reference.tokenize(self.real_completions, SCORE_MAX_LENGTH))

    def measure(self, kept: Sequence[Example], current: ModelRef, out_dir: Path,
                previous: Sequence[Example] | None = None) -> tuple[dict[str, float], list[Path]]:
        """(drift metrics, files to log as artifacts) of one generation's kept synthetic examples;
        the files (the per-text perplexity histogram under generation 0) are written to ``out_dir``.
        ``previous``: the previous generation's kept examples (none at generation 0)."""
        if self.label_drift is not None:
            return self.label_drift(kept), []
        if self.reference is None:
            raise RuntimeError("set_reference(generation-0 model) must come before measure()")
        if not kept:
            return {"drift/n_texts": 0.0}, []
        prompts, completions = [ex.prompt for ex in kept], [ex.completion for ex in kept]
        under_gen0 = self.reference.score(prompts, completions, max_length=SCORE_MAX_LENGTH)
        under_self = LMScorer(current).score(prompts, completions, max_length=SCORE_MAX_LENGTH)
        metrics = drift_metrics(completions, [s.token_ids for s in under_gen0], self.real_counts,
                                nll_per_text=[s.nll for s in under_gen0],
                                entropy_per_text=[s.entropy for s in under_self],
                                scored_per_text=[s.n_scored for s in under_gen0],
                                programs=[ex.text for ex in kept] if self.is_code else None)
        if previous is not None:
            metrics["drift/repeat_previous"] = repeat_previous(
                prompts, completions, ((ex.prompt, ex.completion) for ex in previous))
        histogram = Path(out_dir) / PPL_HISTOGRAM_FILE
        histogram.parent.mkdir(parents=True, exist_ok=True)
        what = "per-text perplexity of the kept completions under the generation-0 model"
        histogram.write_text(json.dumps({"what": what, **perplexity_histogram([s.perplexity for s in under_gen0])}))
        return metrics, [histogram]
