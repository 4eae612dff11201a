"""Data-distribution drift of a generation's synthetic data: pure functions over the completions
the model wrote (texts, token ids) and their per-text scores (from ``lm_scoring.LMScorer``, which
scores each completion with its prompt as context). Prompts never enter these metrics, except the
parse rate of code, which is judged on prompt + completion (a function body alone is not a program).

Undefined values are NaN (e.g. self-BLEU of fewer than two texts, statistics of an empty list),
except distinct-n, which is 0.0 when there are no n-grams at all (nothing diverse was produced).

Rare tokens (for ``tail_mass``): sort the tokens seen in the real data by their real count; the
rare tokens are those whose count is at most the largest count c* such that all tokens with
count <= c* together hold at most ``rare_mass`` of the real token mass, plus every token never
seen in the real data. Tokens with equal counts are thus always on the same side. By
construction the real data's own tail mass is <= ``rare_mass``; a generation whose value falls
below the real data's has lost the tails of the distribution (Shumailov et al.'s early collapse).
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from collapse_ray.metrics.label_drift import LABEL_DRIFT_SETTINGS
from collapse_ray.metrics.text import sentence_bleu4
from collapse_ray.python_source import parses

DISTINCT_ORDERS = (1, 2, 3)
SELF_BLEU_MAX_SAMPLES = 100  # cost is quadratic: ~1.5 s for 100 texts of 80 words on one CPU core
RARE_MASS = 0.1
PPL_QUANTILES = (0.5, 0.9, 0.99)
LENGTH_QUANTILES = (0.1, 0.5, 0.9)
# Fixed histogram bins for per-text perplexity, the same every generation so they compare:
# 10 per decade from 1 to 1e5 (a per-text perplexity is >= 1: its mean NLL is >= 0).
PPL_HISTOGRAM_EDGES = tuple(10 ** (k / 10) for k in range(51))

DRIFT_SETTINGS: dict = {
    "drift_text": "the completion only (the prompt is the real data's); code parse rate: prompt + completion",
    "drift_lm_tokens": "prompt ids + completion ids, each tokenised without special tokens; only "
                       "completion tokens that are not special are scored",
    "drift_ppl_aggregation": "per-text exp(mean NLL), then mean and quantiles over texts; corpus: "
                             "exp(total NLL / total scored tokens)",
    "drift_distinct_unit": "model tokens (ids from the generation-0 tokenizer)",
    "drift_self_bleu": "mean sentence BLEU-4 of each sampled completion against the other sampled completions",
    "drift_self_bleu_max_samples": SELF_BLEU_MAX_SAMPLES,
    "drift_rare_mass": RARE_MASS,
    "drift_rare_definition": "real count <= c*, the largest count whose tokens (with all rarer) hold "
                             "<= rare_mass of real token mass; unseen tokens are rare",
    "drift_length_unit": "model tokens",
    "drift_repeat_previous": "share of the kept completions identical to the previous generation's "
                             "kept completion of the same prompt (generation >= 1)",
    **LABEL_DRIFT_SETTINGS,
}

TokenCounts = Union[Mapping[int, int], Sequence[int], np.ndarray]

_tok13a = Tokenizer13a()


def _as_tokens(item: str | Sequence[int]) -> list:
    """A text is split into words with sacrebleu's 13a tokenizer (as BLEU sees it); ids pass through."""
    return _tok13a(item).split() if isinstance(item, str) else list(item)


def distinct_n(items: Sequence[str] | Sequence[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams, pooled over all items.

    Items are texts (13a words) or token-id lists. N-grams never span two items.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams: list[tuple] = []
    for item in items:
        toks = _as_tokens(item)
        grams.extend(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str], max_samples: int = SELF_BLEU_MAX_SAMPLES, seed: int = 0) -> float:
    """Mean sentence BLEU-4 (0-100) of each text against all the others as references.

    With more than ``max_samples`` texts, a seeded random subset of that size is used (both as
    hypotheses and references): the cost is quadratic. Higher means less diverse.
    """
    texts = list(texts)
    if len(texts) > max_samples:
        texts = random.Random(seed).sample(texts, max_samples)
    if len(texts) < 2:
        return float("nan")
    scores = [sentence_bleu4(hyp, texts[:i] + texts[i + 1:]) for i, hyp in enumerate(texts)]
    return float(np.mean(scores))


def quantiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` (numpy's linear interpolation); NaN when empty."""
    values = np.asarray(values, dtype=float)
    return {f"p{q * 100:g}": float(np.quantile(values, q)) if values.size else float("nan") for q in qs}


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Mean, population std, p10, p50, p90 of the lengths."""
    arr = np.asarray(lengths, dtype=float)
    if not arr.size:
        return {k: float("nan") for k in ("mean", "std", "p10", "p50", "p90")}
    return {"mean": float(arr.mean()), "std": float(arr.std()), **quantiles(arr, LENGTH_QUANTILES)}


def count_tokens(token_ids_lists: Iterable[Sequence[int]]) -> Counter:
    """Token-id counts of a corpus: the ``real_token_counts`` that ``tail_mass`` compares against."""
    counts: Counter = Counter()
    for ids in token_ids_lists:
        counts.update(int(t) for t in ids)
    return counts


def _count_array(real_token_counts: TokenCounts, size: int) -> np.ndarray:
    """Counts indexed by token id, at least ``size`` long (absent ids count 0)."""
    if isinstance(real_token_counts, Mapping):
        arr = np.zeros(max(size, max(real_token_counts, default=-1) + 1), dtype=np.int64)
        for tok, c in real_token_counts.items():
            arr[int(tok)] = c
        return arr
    arr = np.asarray(real_token_counts, dtype=np.int64)
    return np.pad(arr, (0, max(0, size - arr.size)))


def rare_count_threshold(real_token_counts: TokenCounts, rare_mass: float = RARE_MASS) -> int:
    """c*: tokens with real count <= c* are rare (see the module docstring); 0 if only unseen are."""
    if not 0.0 <= rare_mass < 1.0:
        raise ValueError(f"rare_mass must be in [0, 1), got {rare_mass}")
    counts = _count_array(real_token_counts, 0)
    counts = counts[counts > 0]
    if not counts.size:
        raise ValueError("real_token_counts is empty")
    levels, n_tokens = np.unique(counts, return_counts=True)  # ascending counts
    mass_at_or_below = np.cumsum(levels * n_tokens)
    ok = mass_at_or_below <= rare_mass * counts.sum()
    return int(levels[ok][-1]) if ok.any() else 0


def tail_mass(token_ids_lists: Sequence[Sequence[int]], real_token_counts: TokenCounts,
              rare_mass: float = RARE_MASS) -> float:
    """Share of generated tokens that are rare in the real data (see the module docstring)."""
    ids = np.fromiter((int(t) for seq in token_ids_lists for t in seq), dtype=np.int64)
    if not ids.size:
        return float("nan")
    threshold = rare_count_threshold(real_token_counts, rare_mass)
    counts = _count_array(real_token_counts, int(ids.max()) + 1)
    return float(np.mean(counts[ids] <= threshold))


def repeat_previous(prompts: Sequence[str], completions: Sequence[str],
                    previous: Iterable[tuple[str, str]]) -> float:
    """The share of completions the previous generation also wrote, word for word, for the same
    prompt (``previous``: its (prompt, completion) pairs). 1.0 is a fixed point: the model only
    repeats its own last data set. NaN without completions."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    if not completions:
        return float("nan")
    before = set(previous)
    return sum((p, c) in before for p, c in zip(prompts, completions)) / len(completions)


def parse_rate(code_texts: Sequence[str]) -> float:
    """Share of the texts that parse as Python; NaN when there are none."""
    return float(np.mean([parses(c) for c in code_texts])) if code_texts else float("nan")


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def corpus_perplexity(nll_per_text: Sequence[float], scored_per_text: Sequence[int]) -> float:
    """exp(total NLL / total scored tokens): every token weighs the same, whatever its text's length.
    Texts with no scored token (or a NaN NLL) are left out; NaN when nothing is left."""
    pairs = [(nll * n, n) for nll, n in zip(nll_per_text, scored_per_text) if n > 0 and np.isfinite(nll)]
    tokens = sum(n for _, n in pairs)
    return float(np.exp(sum(total for total, _ in pairs) / tokens)) if tokens else float("nan")


def perplexity_histogram(perplexities: Sequence[float]) -> dict:
    """Counts of per-text perplexities in the fixed bins ``PPL_HISTOGRAM_EDGES`` (a value on an
    inner edge falls in the bin to its right; the last bin holds its right edge), the count above
    the last edge, and the sorted values themselves. NaN values are left out."""
    values = np.sort(_finite(perplexities))
    counts, edges = np.histogram(values, bins=np.asarray(PPL_HISTOGRAM_EDGES))
    return {"edges": edges.tolist(), "counts": counts.tolist(),
            "below_first_edge": int((values < edges[0]).sum()), "above_last_edge": int((values > edges[-1]).sum()),
            "n_texts": int(values.size), "perplexities": values.tolist()}


def drift_metrics(completions: Sequence[str], token_ids: Sequence[Sequence[int]], real_token_counts: TokenCounts,
                  nll_per_text: Sequence[float], entropy_per_text: Sequence[float],
                  scored_per_text: Sequence[int], programs: Sequence[str] | None = None,
                  *, rare_mass: float = RARE_MASS, self_bleu_samples: int = SELF_BLEU_MAX_SAMPLES,
                  seed: int = 0) -> dict[str, float]:
    """All drift metrics of one generation's synthetic completions, under stable ``drift/...`` names.

    ``token_ids`` (each completion's scored tokens), ``nll_per_text`` (mean NLL per scored token,
    nats) and ``scored_per_text`` come from scoring the completions under the generation-0 model,
    ``entropy_per_text`` under the model that wrote them; ``real_token_counts`` counts the real
    training completions' tokens under the same tokenizer. Texts with no scored token (NaN NLL)
    are left out of the NLL, perplexity and entropy statistics. ``drift/parse_rate`` is present
    only when ``programs`` (the texts to parse, one per completion) is given.
    """
    n = len(completions)
    for name, seq in (("token_ids", token_ids), ("nll_per_text", nll_per_text),
                      ("entropy_per_text", entropy_per_text), ("scored_per_text", scored_per_text),
                      ("programs", programs if programs is not None else completions)):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries for {n} completions")
    nll = _finite(nll_per_text)
    ppl = np.exp(nll)
    ent = _finite(entropy_per_text)
    nan = float("nan")
    out = {
        "drift/n_texts": float(n),
        "drift/scored_tokens": float(sum(scored_per_text)),
        "drift/nll_gen0_mean": float(nll.mean()) if nll.size else nan,
        "drift/ppl_gen0_mean": float(ppl.mean()) if ppl.size else nan,
        **{f"drift/ppl_gen0_{k}": v for k, v in quantiles(ppl, PPL_QUANTILES).items()},
        "drift/ppl_gen0_corpus": corpus_perplexity(nll_per_text, scored_per_text),
        "drift/entropy_mean": float(ent.mean()) if ent.size else nan,
        **{f"drift/entropy_{k}": v for k, v in quantiles(ent, (0.1, 0.5)).items()},
        **{f"drift/distinct_{k}": distinct_n(token_ids, k) for k in DISTINCT_ORDERS},
        "drift/self_bleu": self_bleu(completions, self_bleu_samples, seed),
        **{f"drift/len_{k}": v for k, v in length_stats([len(t) for t in token_ids]).items()},
        "drift/tail_mass": tail_mass(token_ids, real_token_counts, rare_mass),
    }
    if programs is not None:
        out["drift/parse_rate"] = parse_rate(programs)
    return out
