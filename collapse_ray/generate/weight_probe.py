"""After every weight load, check that the engine serves the weights the trainer saved.

An engine that reloads weights in place, or wakes from sleep, can keep serving the old ones
(stale weights after wake-up are a known failure in hybrid-engine projects); every later
generation would then be sampled from the wrong model without any error. The probe scores a
fixed batch of token ids under the engine (``prompt_logprobs``) and under the saved checkpoint
with transformers, and fails the generation when the mean absolute difference of the per-token
log-probabilities exceeds the tolerance of the dtype the engine computes in.
"""
from __future__ import annotations

from typing import Sequence

from collapse_ray.datatypes import ModelRef
from collapse_ray.errors import TrialError
from collapse_ray.generate.base import Sampling

# Mean absolute log-prob difference allowed between engine and trainer, per engine dtype.
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.1}
# The fixed batch: ordinary code, so every tokenizer splits it into many tokens.
PROBE_TEXTS = (
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    "import os\n\npath = os.path.join(root, name)\nwith open(path) as f:\n    data = f.read()\n",
)
PROBE_MAX_TOKENS = 24


class StaleWeightsError(TrialError):
    """The engine's log-probabilities are not those of the model it was asked to load."""


def probe_token_ids(tokenizer_path: str, texts: Sequence[str] = PROBE_TEXTS,
                    max_tokens: int = PROBE_MAX_TOKENS) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    return [tok(t, add_special_tokens=True)["input_ids"][:max_tokens] for t in texts]


def reference_logprobs(model: ModelRef, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
    """log p(t_i | t_<i), i >= 1, under the checkpoint (and adapter) in float32 with transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    if model.adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, model.adapter)
    lm.eval()
    out = []
    with torch.no_grad():
        for ids in token_ids:
            x = torch.tensor([list(ids)])
            logp = torch.log_softmax(lm(x).logits[0, :-1].float(), dim=-1)
            out.append(logp.gather(1, x[0, 1:, None])[:, 0].tolist())
    return out


def mean_abs_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    pairs = [(x, y) for xs, ys in zip(a, b, strict=True) for x, y in zip(xs, ys, strict=True)]
    return sum(abs(x - y) for x, y in pairs) / len(pairs)


def check_served_weights(generator, model: ModelRef) -> float:
    """Raise :class:`StaleWeightsError` unless ``generator`` serves ``model``; returns the difference."""
    ids = probe_token_ids(model.path)
    dtype = generator.served_dtype()
    tolerance = TOLERANCE.get(dtype, TOLERANCE["bfloat16"])
    diff = mean_abs_difference(generator.prompt_logprobs(ids), reference_logprobs(model, ids))
    if not diff <= tolerance:   # NaN fails too
        raise StaleWeightsError(
            f"the generator's log-probabilities differ from those of {model.adapter or model.path} by "
            f"{diff:.3g} (mean absolute, {sum(len(i) - 1 for i in ids)} tokens), more than the {tolerance:g} "
            f"allowed in {dtype}: the engine serves stale or wrong weights")
    return diff


class ProbedGenerator:
    """A generator whose every ``load`` is followed by :func:`check_served_weights`."""

    def __init__(self, inner):
        self.inner = inner
        self.last_difference: float | None = None

    def load(self, model: ModelRef) -> None:
        self.inner.load(model)
        self.last_difference = check_served_weights(self.inner, model)

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        return self.inner.generate(prompts, sampling)

    def __getattr__(self, name):   # option_probs, sleep, close, stats, ...
        return getattr(self.inner, name)
