import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from collapse_ray.generate.base import ModelRef
from collapse_ray.metrics.lm_scoring import LMScorer

LINES = [
    "def add(a, b):\n    return a + b\n",
    "def sub(a, b):\n    return a - b\n",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    print(i * i)\n",
    '"""Return the sum of two numbers."""\n',
]
SHORT = "def f(x):\n    return x"
LONG = ["class Queue:\n    def put(self, item):\n        self.items.append(item)\n" * 3,
        "for j in range(3):\n    print(j)\n" * 4]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random-init Llama with a byte-level BPE tokenizer trained here, saved in HF format."""
    path = tmp_path_factory.mktemp("tiny_llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(LINES * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    tok.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def scorer(model_dir):
    return LMScorer(ModelRef(str(model_dir)))


def test_nll_is_the_models_own_mean_loss_with_eos_as_first_context(scorer, model_dir):
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    tok = scorer.tokenizer
    for text, score in zip([SHORT] + LONG, scorer.score([SHORT] + LONG)):
        ids = torch.tensor([[tok.eos_token_id] + tok(text)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert score.nll == pytest.approx(loss, abs=1e-5)
        assert score.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
        assert list(score.token_ids) == tok(text)["input_ids"]
        assert score.n_scored == len(score.token_ids)


def test_a_text_scores_the_same_alone_and_padded_in_a_batch_with_longer_texts(scorer):
    alone = scorer.score([SHORT])[0]
    batched = scorer.score(LONG + [SHORT] + LONG, batch_size=8)[2]
    assert batched.token_ids == alone.token_ids
    assert batched.nll == pytest.approx(alone.nll, abs=1e-5)
    assert batched.entropy == pytest.approx(alone.entropy, abs=1e-5)


def test_entropy_is_positive_and_at_most_log_vocab(scorer):
    vocab = scorer.model.config.vocab_size
    for s in scorer.score([SHORT] + LONG):
        assert 0 < s.entropy <= math.log(vocab) + 1e-6


def test_max_length_truncates_what_is_scored(scorer):
    s = scorer.score(LONG, max_length=6)
    assert [len(x.token_ids) for x in s] == [5, 5]  # EOS context + 5 text tokens
    assert scorer.tokenize(LONG, max_length=6) == [list(x.token_ids) for x in s]


def test_a_lora_adapter_changes_the_scores(scorer, model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(LlamaForCausalLM.from_pretrained(model_dir), lora).save_pretrained(tmp_path / "adapter")
    adapted = LMScorer(ModelRef(str(model_dir), adapter=str(tmp_path / "adapter")))
    base, tuned = scorer.score([SHORT])[0], adapted.score([SHORT])[0]
    assert tuned.token_ids == base.token_ids
    assert abs(tuned.nll - base.nll) > 1e-4
