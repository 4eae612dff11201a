"""BLEU-4 and ROUGE-L: thin wrappers over sacrebleu and rouge-score with the settings fixed here.

The settings are module constants, exposed as ``BLEU_SETTINGS`` / ``ROUGE_SETTINGS`` so the loop
logs them as MLflow params. Scales are the libraries' own: BLEU in [0, 100], ROUGE-L in [0, 1].
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

# sacrebleu's standard "13a" tokenisation splits punctuation off words, so code such as
# ``foo(x):`` is compared as ``foo ( x ) :`` rather than as one whitespace-delimited blob.
BLEU_TOKENIZE = "13a"
# Exponential-decay smoothing (sacrebleu's default, Chen & Cherry 2014 method 3): an n-gram order
# with no match does not zero the score of a short or poor hypothesis.
BLEU_SMOOTH_METHOD = "exp"
BLEU_MAX_NGRAM_ORDER = 4
BLEU_LOWERCASE = False
# Sentence-level BLEU uses sacrebleu's recommended effective order (orders longer than the
# hypothesis are left out); corpus-level BLEU always uses all four orders.
BLEU_SENTENCE_EFFECTIVE_ORDER = True

BLEU_SETTINGS: dict = {
    "bleu_tokenize": BLEU_TOKENIZE,
    "bleu_smooth_method": BLEU_SMOOTH_METHOD,
    "bleu_max_ngram_order": BLEU_MAX_NGRAM_ORDER,
    "bleu_lowercase": BLEU_LOWERCASE,
    "bleu_sentence_effective_order": BLEU_SENTENCE_EFFECTIVE_ORDER,
    "bleu_scale": 100,
}

# Porter stemming, as in the ROUGE reference implementation's common ``-m`` setting.
# rouge-score's default tokenizer lowercases and keeps only [a-z0-9] runs: right for docstrings.
ROUGE_USE_STEMMER = True
ROUGE_TYPE = "rougeL"  # sentence-level LCS, not the newline-split "rougeLsum"

ROUGE_SETTINGS: dict = {
    "rouge_type": ROUGE_TYPE,
    "rouge_use_stemmer": ROUGE_USE_STEMMER,
    "rouge_measure": "fmeasure",
    "rouge_scale": 1,
}


@lru_cache(maxsize=None)
def _bleu(sentence: bool) -> BLEU:
    return BLEU(
        lowercase=BLEU_LOWERCASE,
        force=True,  # code often "looks tokenised" to sacrebleu; score it as given, without warning
        tokenize=BLEU_TOKENIZE,
        smooth_method=BLEU_SMOOTH_METHOD,
        max_ngram_order=BLEU_MAX_NGRAM_ORDER,
        effective_order=BLEU_SENTENCE_EFFECTIVE_ORDER if sentence else False,
    )


@lru_cache(maxsize=None)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer([ROUGE_TYPE], use_stemmer=ROUGE_USE_STEMMER)


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no hypotheses to score")


def bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 (0-100) of ``hypotheses`` against one reference each."""
    _check_pairs(hypotheses, references)
    return float(_bleu(False).corpus_score(list(hypotheses), [list(references)]).score)


def sentence_bleu4(hypothesis: str, reference: str | Sequence[str]) -> float:
    """Sentence BLEU-4 (0-100) of one hypothesis against one reference (or several)."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    return float(_bleu(True).sentence_score(hypothesis, refs).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (0-1) over (hypothesis, reference) pairs."""
    _check_pairs(hypotheses, references)
    scorer = _rouge()
    # rouge-score's argument order is (target, prediction).
    scores = [scorer.score(ref, hyp)[ROUGE_TYPE].fmeasure for hyp, ref in zip(hypotheses, references)]
    return float(sum(scores) / len(scores))
