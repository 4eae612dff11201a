"""DriftProbe measures what the model wrote: text metrics of the completions alone, LM metrics of
the completions' tokens with the prompts as context (checked against plain torch), on tiny random
Llamas (conftest) and the real codegen task."""
import json
import math
from collections import Counter

import pytest
from transformers import AutoTokenizer, LlamaForCausalLM

from collapse_ray.datatypes import Example, ModelRef
from collapse_ray.synthetic_drift import DriftProbe
from collapse_ray.tasks import get_task
from tests.tiny_models import reference_score

REAL = [Example('def add(a, b):\n    """Add."""', "\n    return a + b\n"),
        Example('def sub(a, b):\n    """Subtract."""', "\n    return a - b\n")]
COMPLETIONS = ["\n    return a + b\n", "\n    for i in range(10):\n        print(i)\n",
               "\n    return (\n", "\n    self.items.append(x)\n"]
HEADS = ['def f(a, b):\n    """One."""', 'def g(x):\n    """Two."""', 'def h():\n    """Three."""',
         'def k(self, x):\n    """Four."""']
OTHER_HEADS = ['def push(self, x):\n    """Push x onto the stack."""', 'def run(a, b, c=1):\n    """Run."""',
               'async def wait(t):\n    """Wait for t."""', 'def add(a, b):\n    """Add."""']
TEXT_KEYS = ("drift/n_texts", "drift/scored_tokens", "drift/distinct_1", "drift/distinct_2", "drift/distinct_3",
             "drift/self_bleu", "drift/len_mean", "drift/len_std", "drift/len_p10", "drift/len_p50", "drift/len_p90",
             "drift/tail_mass", "drift/parse_rate")


@pytest.fixture(scope="module")
def gen0_dir(tiny_llama):
    return tiny_llama


@pytest.fixture(scope="module")
def writer_dir(tiny_llama_seed1):
    """The model that wrote the completions: gen0's architecture and tokenizer, other weights."""
    return tiny_llama_seed1


@pytest.fixture(scope="module")
def probe(gen0_dir):
    return DriftProbe(get_task("codegen"), REAL, reference=ModelRef(str(gen0_dir)))


def kept(heads):
    return [Example(h, c).as_synthetic(c, 1) for h, c in zip(heads, COMPLETIONS)]


def test_text_drift_of_a_completion_does_not_change_when_only_its_prompt_changes(probe, writer_dir, tmp_path):
    a, _ = probe.measure(kept(HEADS), ModelRef(str(writer_dir)), tmp_path / "a")
    b, _ = probe.measure(kept(OTHER_HEADS), ModelRef(str(writer_dir)), tmp_path / "b")
    for key in TEXT_KEYS:
        assert a[key] == b[key], key
    assert a["drift/parse_rate"] == 3 / 4  # "return (" does not parse, whichever function head it follows
    assert a["drift/nll_gen0_mean"] != b["drift/nll_gen0_mean"]  # the prompt is the context of the LM metrics


def test_tail_mass_compares_with_the_real_completions_tokens_only(probe, gen0_dir):
    tok = AutoTokenizer.from_pretrained(gen0_dir)
    expected = Counter(t for ex in REAL for t in tok(ex.completion, add_special_tokens=False)["input_ids"])
    assert probe.real_counts == expected


def test_lm_drift_equals_a_reference_with_the_prompt_masked(probe, gen0_dir, writer_dir, tmp_path):
    metrics, files = probe.measure(kept(HEADS), ModelRef(str(writer_dir)), tmp_path)
    tok = AutoTokenizer.from_pretrained(gen0_dir)
    special = set(tok.all_special_ids)
    gen0, writer = (LlamaForCausalLM.from_pretrained(d).eval() for d in (gen0_dir, writer_dir))
    nll, entropy, n = [], [], []
    for head, completion in zip(HEADS, COMPLETIONS):
        context, target = (tok(t, add_special_tokens=False)["input_ids"] for t in (head, completion))
        mean_nll, _, scored = reference_score(gen0, context, target, special)
        entropy.append(reference_score(writer, context, target, special)[1])
        nll.append(mean_nll)
        n.append(len(scored))
    ppl = [math.exp(x) for x in nll]
    assert metrics["drift/nll_gen0_mean"] == pytest.approx(sum(nll) / 4, abs=1e-5)
    assert metrics["drift/ppl_gen0_mean"] == pytest.approx(sum(ppl) / 4, rel=1e-5)
    assert metrics["drift/ppl_gen0_corpus"] == pytest.approx(math.exp(sum(x * k for x, k in zip(nll, n)) / sum(n)),
                                                             rel=1e-5)
    assert metrics["drift/entropy_mean"] == pytest.approx(sum(entropy) / 4, abs=1e-5)  # under the writer
    assert metrics["drift/scored_tokens"] == sum(n)
    (histogram,) = files
    data = json.loads(histogram.read_text())
    assert data["perplexities"] == pytest.approx(sorted(ppl), rel=1e-5) and sum(data["counts"]) == 4


def test_no_kept_examples_give_a_count_of_zero_and_no_artifact(probe, writer_dir, tmp_path):
    assert probe.measure([], ModelRef(str(writer_dir)), tmp_path) == ({"drift/n_texts": 0.0}, [])


def test_repeat_previous_counts_a_completion_only_when_the_same_prompt_had_it_before(probe, writer_dir, tmp_path):
    """The fixed point of synthetic-only (docs/RESULTS.md, part 8): 1.0 when every completion is last
    generation's for its prompt; the same completion under another prompt does not count."""
    now = kept(HEADS)
    same, _ = probe.measure(now, ModelRef(str(writer_dir)), tmp_path / "same", previous=now)
    assert same["drift/repeat_previous"] == 1.0
    before = kept(HEADS[:2] + OTHER_HEADS[2:])   # two prompts wrote the same, two prompts are others
    half, _ = probe.measure(now, ModelRef(str(writer_dir)), tmp_path / "half", previous=before)
    assert half["drift/repeat_previous"] == 0.5
    first, _ = probe.measure(now, ModelRef(str(writer_dir)), tmp_path / "first")
    assert "drift/repeat_previous" not in first   # generation 0 has no previous data set
