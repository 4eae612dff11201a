"""The weight probe on real HF models: a server of the right weights passes, a stale one fails.
(The vLLM side runs in tests/test_vllm_generator.py, slow.)"""
import pytest

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
def two_models(tiny_llama, tiny_llama_seed1):
    """One architecture and tokenizer, two sets of weights."""
    return [ModelRef(tiny_llama), ModelRef(tiny_llama_seed1)]


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
