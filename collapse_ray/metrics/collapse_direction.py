"""Which way each metric moves as a model collapses: "down" or "up". The report's collapse onset
is computed for the metrics listed here, and only for them."""
from __future__ import annotations

COLLAPSE_DIRECTION: dict[str, str] = {
    "pass_at_1": "down",            # fewer HumanEval problems solved
    "bleu4": "down",                # further from the reference solution / docstring
    "rougeL": "down",
    "f1": "down",
    "precision": "down",
    "recall": "down",
    "roc_auc": "down",              # vulnerable code no longer ranked above the rest
    "average_precision": "down",
    "f1_at_prevalence": "down",     # fewer vulnerable ones among the k it ranks first
    "drift/self_bleu": "up",        # samples grow alike
    "drift/distinct_2": "down",     # fewer distinct bigrams
    "drift/entropy_mean": "down",   # the model grows over-confident
    "drift/tail_mass": "down",      # tokens rare in the real data vanish
    "drift/ppl_gen0_mean": "down",  # the data keeps gen 0's modes and loses its tails (README's smoke run)
}
