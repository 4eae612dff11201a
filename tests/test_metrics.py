import math
from collections import Counter

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from collapse_ray.metrics import drift
from collapse_ray.metrics.classification import binary_metrics, ranking_metrics
from collapse_ray.metrics.label_drift import label_drift
from collapse_ray.metrics.text import BLEU_SETTINGS, ROUGE_SETTINGS, bleu4, rouge_l, sentence_bleu4

HYPS = ["def add(a, b):\n    return a + b", "Return the sum of two numbers.", "x = [i for i in range(10)]"]
REFS = ["def add(x, y):\n    return x + y", "Returns the sum of the two numbers given.", "x = list(range(10))"]


def test_bleu4_equals_sacrebleu_corpus_bleu_with_the_stated_settings():
    expected = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a", smooth_method="exp").score
    assert bleu4(HYPS, REFS) == pytest.approx(expected, abs=1e-12)
    assert BLEU_SETTINGS["bleu_tokenize"] == "13a" and BLEU_SETTINGS["bleu_smooth_method"] == "exp"


def test_sentence_bleu4_equals_sacrebleu_sentence_bleu():
    expected = sacrebleu.sentence_bleu(HYPS[0], [REFS[0]], tokenize="13a", smooth_method="exp").score
    assert sentence_bleu4(HYPS[0], REFS[0]) == pytest.approx(expected, abs=1e-12)


def test_identical_texts_have_bleu_100():
    assert bleu4(REFS, REFS) == pytest.approx(100.0)


def test_rouge_l_is_the_mean_rouge_score_fmeasure():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPS, REFS)])
    assert rouge_l(HYPS, REFS) == pytest.approx(expected, abs=1e-12)
    assert ROUGE_SETTINGS["rouge_use_stemmer"] is True


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        bleu4(HYPS, REFS[:2])


def test_binary_metrics_equal_scikit_learn_for_the_vulnerable_class():
    y_true = [1, 0, 1, 1, 0, 0, 1, 0]
    y_pred = [1, 0, 0, 1, 1, 0, 0, 0]
    m = binary_metrics(y_true, y_pred)
    assert m["f1"] == f1_score(y_true, y_pred, pos_label=1)
    assert m["precision"] == precision_score(y_true, y_pred, pos_label=1)
    assert m["recall"] == recall_score(y_true, y_pred, pos_label=1)
    assert m["accuracy"] == 5 / 8
    assert m["predicted_positive_rate"] == 3 / 8


def test_binary_metrics_of_an_all_negative_classifier_are_zero_not_errors():
    m = binary_metrics([1, 0, 1], [0, 0, 0])
    assert (m["f1"], m["precision"], m["recall"], m["predicted_positive_rate"]) == (0.0, 0.0, 0.0, 0.0)


def test_ranking_metrics_equal_scikit_learn_and_are_left_out_for_one_class():
    y_true, scores = [1, 0, 1, 1, 0, 0, 1, 0], [0.9, 0.2, 0.4, 0.6, 0.5, 0.1, 0.3, 0.35]
    m = ranking_metrics(y_true, scores)
    assert m == {"roc_auc": roc_auc_score(y_true, scores), "average_precision": average_precision_score(y_true, scores),
                 "f1_at_prevalence": 0.75}   # the 4 highest (0.9, 0.6, 0.5, 0.4) hold 3 of the 4 positives
    assert 0.5 < m["roc_auc"] < 1.0
    # Ties keep the items' order: all scores equal flags the first k items.
    assert ranking_metrics([0, 1, 1, 0], [0.2] * 4)["f1_at_prevalence"] == 0.5
    assert ranking_metrics([0, 0, 0], [0.1, 0.2, 0.3]) == {}


def test_distinct_n_counts_unique_ngrams_over_all_ngrams():
    ids = [[1, 2, 1, 2], [1, 2, 3]]
    assert drift.distinct_n(ids, 1) == 3 / 7
    assert drift.distinct_n(ids, 2) == 3 / 5  # (1,2) (2,1) (1,2) | (1,2) (2,3): no n-gram spans items
    assert drift.distinct_n(ids, 3) == 3 / 3


def test_distinct_n_on_texts_uses_13a_words():
    assert drift.distinct_n(["f(x) f(x)"], 1) == 4 / 8  # f ( x ) f ( x )
    assert drift.distinct_n(["a"], 2) == 0.0


def test_self_bleu_is_100_for_copies_and_low_for_unrelated_texts():
    assert drift.self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(100.0)
    assert drift.self_bleu(["alpha beta gamma delta", "one two three four"]) < 5
    assert math.isnan(drift.self_bleu(["only one"]))


def test_self_bleu_subsamples_reproducibly():
    texts = [f"text number {i} with words {i % 7}" for i in range(30)]
    assert drift.self_bleu(texts, max_samples=10, seed=1) == drift.self_bleu(texts, max_samples=10, seed=1)


def test_length_stats_and_quantiles():
    s = drift.length_stats(list(range(1, 12)))  # 1..11
    assert s == {"mean": 6.0, "std": pytest.approx(np.std(range(1, 12))), "p10": 2.0, "p50": 6.0, "p90": 10.0}
    assert drift.quantiles([0, 100], (0.5, 0.99)) == {"p50": 50.0, "p99": 99.0}


# Real counts: total 100; tokens with counts 2, 3, 5 hold 10% of the mass, so c* = 5.
REAL_COUNTS = {0: 50, 1: 30, 2: 10, 3: 5, 4: 3, 5: 2}


def test_rare_threshold_is_the_largest_count_whose_tail_holds_at_most_rare_mass():
    assert drift.rare_count_threshold(REAL_COUNTS, 0.1) == 5
    assert drift.rare_count_threshold(REAL_COUNTS, 0.09) == 3
    assert drift.rare_count_threshold(REAL_COUNTS, 0.01) == 0  # only unseen tokens are rare


def test_tail_mass_is_the_share_of_generated_tokens_rare_or_unseen_in_real_data():
    generated = [[0, 3, 4], [5, 9, 1]]  # 3, 4, 5 are rare; 9 was never seen
    assert drift.tail_mass(generated, REAL_COUNTS, 0.1) == 4 / 6
    as_array = [REAL_COUNTS[i] for i in range(6)]
    assert drift.tail_mass(generated, as_array, 0.1) == 4 / 6


def test_tail_mass_of_the_real_data_itself_is_at_most_rare_mass():
    rng = np.random.default_rng(0)
    real = [list(rng.zipf(1.5, size=50) % 500) for _ in range(40)]
    counts = drift.count_tokens(real)
    for q in (0.05, 0.1, 0.3):
        assert drift.tail_mass(real, counts, q) <= q


def test_parse_rate_counts_texts_that_ast_parse():
    codes = ["def f(x):\n    return x\n", "def f(x:\n", "x = '\\d'\n", "\x00", "    indented = 1\n"]
    assert drift.parse_rate(codes) == 2 / 5


def test_drift_metrics_gathers_every_metric_under_stable_names():
    completions = ["\n    return 1\n", "\n    return (\n"]
    programs = ["def f():\n    return 1\n", "def g():\n    return (\n"]
    ids = [[0, 1, 2], [0, 3, 9]]
    m = drift.drift_metrics(completions, ids, REAL_COUNTS, [1.0, float("nan")], [2.0, 3.0], [3, 0], programs)
    assert set(m) == {
        "drift/n_texts", "drift/scored_tokens", "drift/nll_gen0_mean", "drift/ppl_gen0_mean", "drift/ppl_gen0_p50",
        "drift/ppl_gen0_p90", "drift/ppl_gen0_p99", "drift/ppl_gen0_corpus", "drift/entropy_mean",
        "drift/entropy_p10", "drift/entropy_p50", "drift/distinct_1", "drift/distinct_2", "drift/distinct_3",
        "drift/self_bleu", "drift/len_mean", "drift/len_std", "drift/len_p10", "drift/len_p50",
        "drift/len_p90", "drift/tail_mass", "drift/parse_rate",
    }
    assert m["drift/ppl_gen0_mean"] == pytest.approx(math.e)  # the NaN text is left out
    assert m["drift/entropy_mean"] == 2.5
    assert m["drift/parse_rate"] == 0.5
    assert m["drift/tail_mass"] == 2 / 6
    assert "drift/parse_rate" not in drift.drift_metrics(completions, ids, Counter(REAL_COUNTS), [1, 1], [1, 1], [3, 3])
    with pytest.raises(ValueError, match="programs has 1 entries for 2 completions"):
        drift.drift_metrics(completions, ids, REAL_COUNTS, [1, 1], [1, 1], [3, 3], programs[:1])


def test_corpus_perplexity_weighs_every_token_the_same():
    # Text A: 1 token of NLL 3; text B: 3 tokens of mean NLL 1. Per-text mean of exp: (e^3 + e) / 2.
    assert drift.corpus_perplexity([3.0, 1.0], [1, 3]) == pytest.approx(math.exp((3 + 3) / 4))
    assert drift.corpus_perplexity([3.0, float("nan")], [1, 0]) == pytest.approx(math.exp(3))
    assert math.isnan(drift.corpus_perplexity([float("nan")], [0]))
    m = drift.drift_metrics(["a", "b c d"], [[1], [2, 3, 4]], REAL_COUNTS, [3.0, 1.0], [1, 1], [1, 3])
    assert m["drift/ppl_gen0_corpus"] == pytest.approx(math.exp(1.5))
    assert m["drift/ppl_gen0_mean"] == pytest.approx((math.exp(3) + math.e) / 2)


def test_perplexity_histogram_uses_fixed_log_bins_and_keeps_the_values():
    h = drift.perplexity_histogram([1.0, 1.2, 10.0, 99.0, 2e5, float("nan")])
    edges = np.asarray(h["edges"])
    assert edges[0] == 1.0 and edges[-1] == pytest.approx(1e5) and len(h["counts"]) == 50
    assert np.allclose(np.diff(np.log10(edges)), 0.1)
    assert sum(h["counts"]) == 4 and h["above_last_edge"] == 1 and h["n_texts"] == 5
    assert h["counts"][0] == 2 and h["counts"][10] == 1 and h["counts"][19] == 1  # [1, 1.26), [10, 12.6), [79, 100)
    assert h["perplexities"] == [1.0, 1.2, 10.0, 99.0, 2e5]


def test_label_drift_equals_a_hand_computation():
    pseudo, confidence, truth = [1, 1, 0, 1, 0], [0.9, 0.8, 0.6, 0.7, 1.0], [1, 0, 0, 0, 0]
    m = label_drift(pseudo, confidence, truth)
    assert m["drift/n_labels"] == 5
    assert m["drift/label_positive_rate"] == pytest.approx(3 / 5)
    assert m["drift/label_dataset_positive_rate"] == pytest.approx(1 / 5)
    assert m["drift/label_confidence_mean"] == pytest.approx(4.0 / 5)
    # deviations from 0.8: .1, 0, -.2, -.1, .2 -> squares sum to .10, over n = 5
    assert m["drift/label_confidence_sd"] == pytest.approx(math.sqrt(0.10 / 5))
    assert m["drift/label_agreement"] == pytest.approx(3 / 5)  # items 1, 3, 5
    assert m["drift/label_entropy"] == pytest.approx(-(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4)))
    assert label_drift([1, 1], [0.9, 0.9], [0, 1])["drift/label_entropy"] == 0.0
    empty = label_drift([], [], [])
    assert empty["drift/n_labels"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "drift/n_labels")
    with pytest.raises(ValueError, match="must match one to one"):
        label_drift([1], [0.5, 0.5], [1])
