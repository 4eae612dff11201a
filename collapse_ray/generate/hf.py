"""The HF ``generate`` backend: the reference every other backend is checked against."""
from __future__ import annotations

from typing import Sequence

import torch

from collapse_ray.datatypes import ModelRef
from collapse_ray.generate.base import Sampling


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text


def first_token_ids(tokenizer, options: Sequence[str]) -> list[int]:
    ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    if any(not i for i in ids):
        raise ValueError(f"every option must encode to at least one token: {list(options)}")
    firsts = [i[0] for i in ids]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"options share a first token and cannot be told apart: {list(options)}")
    return firsts


class HFGenerator:
    def __init__(self, batch_size: int = 32):
        self.batch_size = batch_size
        self.model = None
        self.tokenizer = None

    def load(self, model: ModelRef) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.close()
        tok = AutoTokenizer.from_pretrained(model.path)
        tok.padding_side = "left"  # generation continues from the right edge
        tok.truncation_side = "left"  # keep the end of a long prompt: the part being completed
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        lm = AutoModelForCausalLM.from_pretrained(model.path)
        if model.adapter is not None:
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, model.adapter).merge_and_unload()
        self.model, self.tokenizer = lm.eval(), tok

    def _batches(self, prompts: Sequence[str], room: int = 0):
        """Left-padded batches; prompts longer than the context minus ``room`` lose their start."""
        max_len = self.model.config.max_position_embeddings - room
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False,
                                 truncation=True, max_length=max_len)
            yield start, enc

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        out: list[str] = []
        for start, enc in self._batches(prompts, room=sampling.max_new_tokens):
            torch.manual_seed(sampling.seed * 1_000_003 + start)  # reproducible per batch
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                          eos_token_id=self.tokenizer.eos_token_id)
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False)
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
            seqs = self.model.generate(**enc, **kwargs)
            new = seqs[:, enc["input_ids"].shape[1]:]
            for text in self.tokenizer.batch_decode(new, skip_special_tokens=True):
                out.append(cut_at_stop(text, sampling.stop))
        return out

    @torch.inference_mode()
    def option_probs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        ids = torch.tensor(first_token_ids(self.tokenizer, options))
        out: list[list[float]] = []
        for _, enc in self._batches(prompts):
            logits = self.model(**enc).logits[:, -1, :]  # left padding: the last column is real
            probs = torch.softmax(logits.float(), dim=-1)[:, ids]
            probs = probs / probs.sum(dim=-1, keepdim=True)
            out.extend(probs.tolist())
        return out

    def prefetch(self, model: ModelRef) -> None:
        """Nothing to overlap: HF loads in this process, in ``load``."""

    def sleep(self) -> None:
        """Nothing to free: the model lives in this process and is replaced by the next ``load``."""

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
