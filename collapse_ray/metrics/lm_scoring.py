"""Score completions under a causal LM (HF transformers), with their prompts as context: per
completion, the mean NLL and the mean next-token entropy over the completion's own tokens.

The loop uses it for the perplexity of generation g's synthetic data under the generation-0
model, and for token entropy under the model that wrote it.

Tokenisation (the boundary is exact by construction): the model input is the prompt's token ids
followed by the completion's token ids, each tokenised on its own with ``add_special_tokens=False``
-- the prompt exactly as the trainer and the HF generator tokenise it, the completion as the
tokens that continue it. Only completion positions are scored; the prompt is context. Special
tokens are never scored: a tokenizer adds none here (no BOS, no appended end-of-text), and a
special token inside the completion (e.g. a literal ``<|endoftext|>``) stays as context but is not
scored. An empty prompt is replaced by one BOS token (EOS if there is no BOS) so that the first
completion token has a left context (as lm-evaluation-harness does). Inputs longer than
``max_length`` tokens keep the completion's first ``max_length - 1`` tokens and as much of the
end of the prompt as still fits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from collapse_ray.datatypes import ModelRef


@dataclass(frozen=True)
class TextScore:
    """``token_ids``: the completion's scored tokens (no special tokens), after truncation.
    ``nll``: mean negative log-likelihood per scored token (nats); NaN when none was scored.
    ``entropy``: mean entropy (nats) of the model's next-token distribution at those positions.
    """

    token_ids: tuple[int, ...]
    nll: float
    entropy: float
    n_scored: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


class LMScorer:
    def __init__(self, ref: ModelRef, device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(ref.path)
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype)
        if ref.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, ref.adapter)
        self.model = model.to(self.device).eval()
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.empty_context_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if self.pad_id is None:
            raise ValueError(f"tokenizer at {ref.path} has neither a pad nor an eos token")
        self.special_ids = frozenset(tok.all_special_ids)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """The texts' own token ids (no special tokens added or kept), e.g. to count real tokens."""
        out = []
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            out.append([t for t in ids if t not in self.special_ids][:max_length])
        return out

    def _input(self, prompt: str, completion: str, max_length: int) -> tuple[list[int], list[int]]:
        """(context ids, completion ids) of one pair, truncated to ``max_length`` tokens together."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one context and one scored token), got {max_length}")
        tok = self.tokenizer
        context = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        if not context:
            if self.empty_context_id is None:
                raise ValueError("an empty prompt needs a BOS or EOS token as context; the tokenizer has neither")
            context = [self.empty_context_id]
        target = tok(completion, add_special_tokens=False)["input_ids"][:max_length - 1]
        return context[-(max_length - len(target)):], target

    def score(self, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 16,
              max_length: int = 256) -> list[TextScore]:
        """Score each completion with its prompt as context (see the module docstring)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        pairs = [self._input(p, c, max_length) for p, c in zip(prompts, completions)]
        return self.score_ids([c for c, _ in pairs], [t for _, t in pairs], batch_size)

    @torch.inference_mode()
    def score_ids(self, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                  batch_size: int = 16) -> list[TextScore]:
        """Score token ids directly: ``targets[i]`` (minus special tokens) given ``contexts[i]``,
        which must be non-empty. No truncation here."""
        if any(not c for c in contexts):
            raise ValueError("every context needs at least one token")
        rows = [(list(c) + list(t), len(c)) for c, t in zip(contexts, targets)]
        # Batch inputs of similar length together; results go back in input order.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        results: list[TextScore | None] = [None] * len(rows)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, score in zip(idx, self._score_batch([rows[i] for i in idx])):
                results[i] = score
        return results  # type: ignore[return-value]

    def _score_batch(self, batch: list[tuple[list[int], int]]) -> list[TextScore]:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):  # right padding
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        out = []
        for row, (ids, n_context) in enumerate(batch):
            # Token j is predicted by the logits at j - 1; score completion tokens that are not special.
            positions = [j for j in range(n_context, len(ids)) if ids[j] not in self.special_ids]
            scored = tuple(ids[j] for j in positions)
            if not positions:
                out.append(TextScore(scored, float("nan"), float("nan"), 0))
                continue
            # Only the scored rows go through log_softmax: bounds the (T, vocab) float32 buffers.
            logp = F.log_softmax(logits[row, [j - 1 for j in positions]].float(), dim=-1)
            target = torch.tensor(scored, device=logp.device)
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            entropy = -(logp.exp() * logp).sum(-1)
            out.append(TextScore(scored, float(nll.mean()), float(entropy.mean()), len(positions)))
        return out
