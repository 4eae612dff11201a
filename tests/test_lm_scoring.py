"""LMScorer scores a completion's tokens with its prompt as context, checked against a reference
computed here with plain torch (log_softmax over the model's logits), on tiny random Llamas."""
import math

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from collapse_ray.datatypes import ModelRef
from collapse_ray.metrics.lm_scoring import LMScorer
from tests.tiny_models import reference_score, save_tiny_llama, tiny_tokenizer

SHORT = "def f(x):\n    return x"
LONG = ["class Queue:\n    def put(self, item):\n        self.items.append(item)\n" * 3,
        "for j in range(3):\n    print(j)\n" * 4]
PAIRS = [("def add(a, b):", "\n    return a + b\n"),
         ("class Stack:\n    def push(self, x):", "\n        self.items.append(x)\n"),
         ("for i in range(10):", "\n    print(i)"),
         (LONG[0], "\n    return 1\n")]


@pytest.fixture(scope="module")
def scorer(tiny_llama):
    return LMScorer(ModelRef(tiny_llama))


@pytest.fixture(scope="module")
def model(tiny_llama):
    return LlamaForCausalLM.from_pretrained(tiny_llama).eval()


def own_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_completion_scores_equal_a_reference_with_the_prompt_masked(scorer, model):
    tok = scorer.tokenizer
    scores = scorer.score([p for p, _ in PAIRS], [c for _, c in PAIRS], batch_size=3)
    for (prompt, completion), score in zip(PAIRS, scores):
        nll, entropy, scored = reference_score(model, own_ids(tok, prompt), own_ids(tok, completion),
                                               set(tok.all_special_ids))
        assert list(score.token_ids) == scored == own_ids(tok, completion)
        assert score.n_scored == len(scored)
        assert score.nll == pytest.approx(nll, abs=1e-5)
        assert score.entropy == pytest.approx(entropy, abs=1e-5)


def test_scores_of_token_ids_the_model_generated_equal_the_reference(scorer, model):
    tok = scorer.tokenizer
    prompt_ids = own_ids(tok, "def add(a, b):")
    torch.manual_seed(3)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=True, max_new_tokens=12,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    generated = out[0, len(prompt_ids):].tolist() + [tok.eos_token_id]  # the end-of-text a generator emits
    (score,) = scorer.score_ids([prompt_ids], [generated])
    nll, entropy, scored = reference_score(model, prompt_ids, generated, {tok.eos_token_id, tok.pad_token_id})
    assert tok.eos_token_id not in score.token_ids and list(score.token_ids) == scored
    assert score.nll == pytest.approx(nll, abs=1e-5) and score.entropy == pytest.approx(entropy, abs=1e-5)


def test_the_prompt_is_context_only(scorer):
    completion = "\n    return a + b\n"
    a, b = scorer.score(["def add(a, b):", "class Stack:\n    def add(a, b):"], [completion] * 2)
    assert a.token_ids == b.token_ids and a.n_scored == b.n_scored == len(own_ids(scorer.tokenizer, completion))
    assert abs(a.nll - b.nll) > 1e-6  # the context conditions the scores


def test_an_empty_prompt_gives_eos_as_context_so_the_first_token_is_scored(scorer, model):
    tok = scorer.tokenizer
    for text, score in zip([SHORT] + LONG, scorer.score(["", "", ""], [SHORT] + LONG)):
        ids = torch.tensor([[tok.eos_token_id] + own_ids(tok, text)])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()  # HF's own mean loss over tokens 1..n
        assert score.nll == pytest.approx(loss, abs=1e-5)
        assert score.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
        assert score.n_scored == len(own_ids(tok, text))


def test_special_tokens_the_tokenizer_adds_are_never_scored(tmp_path):
    path = save_tiny_llama(tmp_path / "bos_eos", tiny_tokenizer(adds_bos_and_eos=True))
    scorer = LMScorer(ModelRef(str(path)))
    model = LlamaForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    prompt, completion = PAIRS[0]
    added = tok(completion)["input_ids"]
    assert added[0] == bos and added[-1] == eos  # the tokenizer does add them by default
    with_literal_eos = completion + "<eos>"
    plain, literal, empty_prompt = scorer.score([prompt, prompt, ""], [completion, with_literal_eos, completion])
    assert list(plain.token_ids) == own_ids(tok, completion) == added[1:-1]
    assert plain.token_ids == literal.token_ids  # a special token inside the text is context, not scored
    nll, entropy, _ = reference_score(model, own_ids(tok, prompt), own_ids(tok, completion), {bos, eos})
    assert plain.nll == pytest.approx(nll, abs=1e-5) and plain.entropy == pytest.approx(entropy, abs=1e-5)
    nll, _, _ = reference_score(model, [bos], own_ids(tok, completion), {bos, eos})
    assert empty_prompt.nll == pytest.approx(nll, abs=1e-5) and empty_prompt.n_scored == len(added) - 2


def test_a_text_scores_the_same_alone_and_padded_in_a_batch_with_longer_texts(scorer):
    alone = scorer.score(["def f(x):"], ["\n    return x"])[0]
    batched = scorer.score(["", "def f(x):", ""], [LONG[0], "\n    return x", LONG[1]], batch_size=8)[1]
    assert batched.token_ids == alone.token_ids
    assert batched.nll == pytest.approx(alone.nll, abs=1e-5)
    assert batched.entropy == pytest.approx(alone.entropy, abs=1e-5)


def test_entropy_is_positive_and_at_most_log_vocab(scorer):
    vocab = scorer.model.config.vocab_size
    for s in scorer.score([p for p, _ in PAIRS], [c for _, c in PAIRS]):
        assert 0 < s.entropy <= math.log(vocab) + 1e-6


def test_max_length_keeps_the_completions_start_and_the_prompts_end(scorer, model):
    tok = scorer.tokenizer
    prompt, completion = LONG[0], LONG[1]
    (s,) = scorer.score([prompt], [completion], max_length=6)
    assert list(s.token_ids) == own_ids(tok, completion)[:5]  # one context token + 5 scored
    nll, _, _ = reference_score(model, own_ids(tok, prompt)[-1:], own_ids(tok, completion)[:5], set())
    assert s.nll == pytest.approx(nll, abs=1e-5)
    (s,) = scorer.score([prompt], ["\n    return 1"], max_length=6)
    assert s.n_scored == len(own_ids(tok, "\n    return 1")) < 5
    assert scorer.tokenize(LONG, max_length=5) == [own_ids(tok, t)[:5] for t in LONG]


def test_a_lora_adapter_changes_the_scores(scorer, tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(LlamaForCausalLM.from_pretrained(tiny_llama), lora).save_pretrained(tmp_path / "adapter")
    adapted = LMScorer(ModelRef(tiny_llama, adapter=str(tmp_path / "adapter")))
    base, tuned = scorer.score(["def f(x):"], [SHORT])[0], adapted.score(["def f(x):"], [SHORT])[0]
    assert tuned.token_ids == base.token_ids
    assert abs(tuned.nll - base.nll) > 1e-4
