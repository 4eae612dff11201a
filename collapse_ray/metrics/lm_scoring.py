"""Score texts under a causal LM (HF transformers): per-text mean NLL and mean next-token entropy.

The loop uses it for the perplexity of generation g's synthetic data under the generation-0
model, and for token entropy. Per text, the scored positions are every token of the text that
has a left context: when the tokenizer adds no BOS of its own, BOS (or, failing that, EOS) is
prepended as context so the first token is scored too (as lm-evaluation-harness does).
Texts longer than ``max_length`` tokens (context token included) are truncated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from collapse_ray.generate.base import ModelRef


@dataclass(frozen=True)
class TextScore:
    """``token_ids``: the text's own tokens (no special tokens) after truncation.
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
        if self.pad_id is None:
            raise ValueError(f"tokenizer at {ref.path} has neither a pad nor an eos token")

    def _encode(self, text: str, max_length: int) -> tuple[list[int], list[int]]:
        """(model input ids, the text's own token ids) for one text, truncated to ``max_length``."""
        tok = self.tokenizer
        enc = tok(text, add_special_tokens=True, return_special_tokens_mask=True)
        ids, special = enc["input_ids"], enc["special_tokens_mask"]
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prefix is not None and not (ids and special[0]):
            ids, special = [prefix] + ids, [1] + special
        ids, special = ids[:max_length], special[:max_length]
        return ids, [t for t, s in zip(ids, special) if not s]

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """The texts' own token ids (no special tokens), e.g. to count real-data tokens."""
        return [self._encode(t, max_length or 10**9)[1] for t in texts]

    @torch.inference_mode()
    def score(self, texts: Sequence[str], batch_size: int = 16, max_length: int = 256) -> list[TextScore]:
        encoded = [self._encode(t, max_length) for t in texts]
        # Batch texts of similar length together; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
        results: list[TextScore | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            for i, (nll, ent, n) in zip(idx, self._score_batch([encoded[i][0] for i in idx])):
                results[i] = TextScore(tuple(encoded[i][1]), nll, ent, n)
        return results  # type: ignore[return-value]

    def _score_batch(self, batch: list[list[int]]) -> list[tuple[float, float, int]]:
        width = max(1, max(len(ids) for ids in batch))
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # right padding
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits
        out = []
        for row in range(len(batch)):  # one row at a time bounds the (T, vocab) float32 buffers
            logp = F.log_softmax(logits[row, :-1].float(), dim=-1)
            target, keep = input_ids[row, 1:], mask[row, 1:].bool()
            n = int(keep.sum())
            if n == 0:
                out.append((float("nan"), float("nan"), 0))
                continue
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            entropy = -(logp.exp() * logp).sum(-1)
            out.append((float(nll[keep].mean()), float(entropy[keep].mean()), n))
        return out
