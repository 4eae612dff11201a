"""A test double for the model: answers from scripts instead of weights, deterministically."""
from __future__ import annotations


class ScriptedGenerator:
    """``generate`` returns ``outputs[prompt]`` (default ""); ``option_probs`` returns
    ``probs[prompt]`` (default ``default_probs``, else an even split over the options). Every call
    is recorded in ``calls``."""

    def __init__(self, outputs=None, probs=None, default_probs=None):
        self.outputs, self.probs = dict(outputs or {}), dict(probs or {})
        self.default_probs = list(default_probs) if default_probs is not None else None
        self.calls = []

    def generate(self, prompts, sampling):
        self.calls.append(("generate", list(prompts), sampling))
        return [self.outputs.get(p, "") for p in prompts]

    def option_probs(self, prompts, options):
        self.calls.append(("option_probs", list(prompts), tuple(options)))
        default = self.default_probs or [1 / len(options)] * len(options)
        return [list(self.probs.get(p, default)) for p in prompts]
