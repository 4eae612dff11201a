"""The weight probe on real HF models: a server of the right weights passes, a stale one fails.
(The vLLM side runs in tests/test_vllm_generator.py, slow.)"""
import pytest
import torch

from collapse_ray.datatypes import ModelRef
from collapse_ray.generate.weight_probe import (ProbedGenerator, StaleWeightsError, probe_token_ids,
                                                reference_logprobs)


class HFLogprobServer:
    """Serves log-probs from whatever HF model it loaded; ``stale=True`` ignores every load after
    the first, as an engine that failed to swap its weights would."""

    def __init__(self, stale: bool = False):
        self.stale, self.model = stale, None

    def load(self, model: ModelRef) -> None:
        if self.model is None or not self.stale:
            self.model = model

    def served_dtype(self) -> str:
        return "float32"

    def prompt_logprobs(self, token_ids):
        return reference_logprobs(self.model, token_ids)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("probe")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["def add(a, b):\n    return a + b\n"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, max_position_embeddings=128)
        path = root / f"m{seed}"
        LlamaForCausalLM(config).save_pretrained(path)
        fast.save_pretrained(path)
        paths.append(ModelRef(str(path)))
    return paths


def test_probe_batch_is_fixed_and_long_enough_to_tell_models_apart(two_models):
    ids = probe_token_ids(two_models[0].path)
    assert ids == probe_token_ids(two_models[0].path) and all(len(i) > 10 for i in ids)


def test_a_server_of_the_loaded_weights_passes_the_probe(two_models):
    probed = ProbedGenerator(HFLogprobServer())
    for model in two_models:
        probed.load(model)
        assert probed.last_difference == 0.0


def test_a_server_still_holding_the_previous_weights_fails_the_probe(two_models):
    probed = ProbedGenerator(HFLogprobServer(stale=True))
    probed.load(two_models[0])
    with pytest.raises(StaleWeightsError, match="stale or wrong weights"):
        probed.load(two_models[1])
