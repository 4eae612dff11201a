"""Mitigations applied to a generation's synthetic data before it is trained on: the task's
quality filter, the execution filter (each completion run against its prompt's tests),
duplicate removal (exact or MinHash near-duplicates) and, when the model was asked for more
samples than needed (oversampling), selection down to the pool size."""
from __future__ import annotations

import random
import re
from typing import Callable, Sequence

from collapse_ray.config import MitigationConfig
from collapse_ray.datatypes import Example

_TOKEN = re.compile(r"\w+|[^\w\s]")


def _normalised(text: str) -> str:
    return " ".join(text.split())


def drop_exact_duplicates(examples: Sequence[Example]) -> list[Example]:
    seen, kept = set(), []
    for ex in examples:
        key = (ex.prompt, _normalised(ex.completion))
        if key not in seen:
            seen.add(key)
            kept.append(ex)
    return kept


def drop_near_duplicates(examples: Sequence[Example], threshold: float, text: Callable[[Example], str],
                         num_perm: int = 64) -> list[Example]:
    """Keep the first of each group of examples whose ``text`` (the task's ``dedup_text``) have a
    token-trigram Jaccard similarity (estimated by MinHash LSH) of at least ``threshold``."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept = []
    for i, ex in enumerate(examples):
        tokens = _TOKEN.findall(text(ex))
        shingles = {" ".join(tokens[j:j + 3]) for j in range(max(1, len(tokens) - 2))}
        mh = MinHash(num_perm=num_perm, seed=1)
        for s in shingles:
            mh.update(s.encode())
        if lsh.query(mh):
            continue
        lsh.insert(str(i), mh)
        kept.append(ex)
    return kept


def apply_mitigations(examples: Sequence[Example], task, cfg: MitigationConfig, target_size: int,
                      rng: random.Random) -> tuple[list[Example], dict[str, int]]:
    """Returns the kept examples and how many each step removed (logged per generation)."""
    removed: dict[str, int] = {}
    kept = list(examples)
    if cfg.quality_filter:
        before = len(kept)
        kept = [ex for ex in kept if task.quality_ok(ex)]
        removed["quality_filter"] = before - len(kept)
    if cfg.execution_filter:
        before = len(kept)
        kept = [ex for ex, passed in zip(kept, task.passes_tests(kept)) if passed]
        removed["execution_filter"] = before - len(kept)
    if cfg.dedup != "none":
        before = len(kept)
        kept = drop_exact_duplicates(kept)
        if cfg.dedup == "minhash":
            kept = drop_near_duplicates(kept, cfg.minhash_threshold, task.dedup_text)
        removed["dedup"] = before - len(kept)
    if len(kept) > target_size:  # oversampled: keep a random subset of the survivors
        removed["selection"] = len(kept) - target_size
        kept = rng.sample(kept, target_size)
    return kept, removed
