"""Drift of each generation's synthetic data: scored under the generation-0 model (perplexity,
tokens, tail mass against the real data) and under the model that wrote it (next-token entropy:
a collapsing model grows over-confident)."""
from __future__ import annotations

from typing import Sequence

from collapse_ray.generate.base import ModelRef
from collapse_ray.metrics.drift import count_tokens, drift_metrics
from collapse_ray.metrics.lm_scoring import LMScorer

SCORE_MAX_LENGTH = 512


class DriftProbe:
    def __init__(self, real_texts: Sequence[str], reference: ModelRef | None, is_code: bool):
        self.real_texts = list(real_texts)
        self.is_code = is_code
        self.reference: LMScorer | None = None
        self.real_counts = None
        if reference is not None:
            self.set_reference(reference)

    def set_reference(self, model: ModelRef) -> None:
        """The generation-0 model every later generation's data is scored under."""
        self.reference = LMScorer(model)
        self.real_counts = count_tokens(self.reference.tokenize(self.real_texts, SCORE_MAX_LENGTH))

    def measure(self, texts: Sequence[str], current: ModelRef) -> dict[str, float]:
        if self.reference is None:
            raise RuntimeError("set_reference(generation-0 model) must come before measure()")
        if not texts:
            return {"drift/n_texts": 0.0}
        under_gen0 = self.reference.score(texts, max_length=SCORE_MAX_LENGTH)
        under_self = LMScorer(current).score(texts, max_length=SCORE_MAX_LENGTH)
        return drift_metrics(texts, [s.token_ids for s in under_gen0], self.real_counts,
                             nll_per_text=[s.nll for s in under_gen0],
                             entropy_per_text=[s.entropy for s in under_self], is_code=self.is_code)
