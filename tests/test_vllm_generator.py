"""The vLLM backend, hosted in a Ray actor, checked against Hugging Face ``generate`` on a tiny model.

vLLM runs only inside the Ray actor (never in the pytest process, whose threads and memory
policy vLLM would otherwise change); the reference outputs come from transformers + peft here.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import os
import string
import textwrap
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from collapse_ray.datatypes import ModelRef  # noqa: E402
from collapse_ray.generate.base import Sampling  # noqa: E402
from collapse_ray.generate.vllm_engine import model_fingerprint, request_seed  # noqa: E402
from tests.tiny_models import save_tiny_llama, tiny_tokenizer  # noqa: E402

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

PROMPTS = ["def add(a, b):\n", "import os\n\nclass Reader:", "    return self."]
GREEDY = Sampling(max_new_tokens=24, temperature=0.0)
# No kv_cache_bytes: every engine here has the KV cache the CPU default sizes for the model.
ENGINE_KWARGS = dict(max_model_len=256, dtype="float32", max_lora_rank=8, seed=0)
ACTOR_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


# ---------------------------------------------------------------------------- tiny model fixtures
def _corpus() -> list[str]:
    """Real Python source (ASCII only), so every token of the tokenizer decodes to valid text."""
    sources = [inspect.getsource(m) for m in (textwrap, string, json.encoder, json.decoder)]
    return [s.encode("ascii", "ignore").decode() for s in sources]


def _tokenizer():
    """Without the byte alphabet: only the corpus's bytes, so no token is a stray byte."""
    return tiny_tokenizer(_corpus(), vocab_size=512, byte_alphabet=False)


def _save_llama(path, tokenizer, seed: int, layers: int = 2, tied: bool = False) -> str:
    # head_dim 32: vLLM's CPU attention needs it; 0.16: no near-ties to flip greedy decoding.
    return save_tiny_llama(path, tokenizer, seed=seed, hidden_size=64, layers=layers, head_dim=32, tied=tied,
                           initializer_range=0.16)


def _save_lora(path, base_dir) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(2)
    targets = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir), LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft initialises B to zero, which would leave outputs unchanged
                p.normal_(0.0, 0.5)
    model.save_pretrained(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root, tok = tmp_path_factory.mktemp("tiny"), _tokenizer()
    _save_llama(root / "m0", tok, seed=0)
    _save_llama(root / "m1", tok, seed=1)
    _save_llama(root / "deeper", tok, seed=0, layers=3)
    return {name: str(root / name) for name in ("m0", "m1", "deeper")}


@pytest.fixture(scope="module")
def lora(models) -> str:
    path = os.path.join(os.path.dirname(models["m0"]), "lora")
    _save_lora(path, models["m0"])
    return path


# ---------------------------------------------------------------------------- HF references
def _hf_model(models, name, adapter=None):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(models[name], dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def _hf_greedy(models, name, adapter=None) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models[name])
    model = _hf_model(models, name, adapter)
    out = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt").input_ids
            gen = model.generate(ids, max_new_tokens=GREEDY.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(gen[0, ids.shape[1]:].tolist())
    return out


@pytest.fixture(scope="module")
def hf_greedy(models):
    """``hf_greedy(name, adapter=None)``: HF greedy completions of PROMPTS, computed once per model."""
    cache: dict = {}

    def run(name, adapter=None):
        if (name, adapter) not in cache:
            cache[name, adapter] = _hf_greedy(models, name, adapter)
        return cache[name, adapter]

    return run


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def generator(local_ray, models):
    from collapse_ray.generate.vllm_actor import RayVLLMGenerator

    gen = RayVLLMGenerator(num_cpus=1, env_vars=ACTOR_ENV, **ENGINE_KWARGS)
    start = time.perf_counter()
    gen.load(ModelRef(models["m0"]))
    print(f"\nengine build in actor (incl. actor start): {time.perf_counter() - start:.1f} s")
    yield gen
    gen.close()


# ---------------------------------------------------------------------------- fast unit tests
def test_weights_of_the_same_architecture_and_tokenizer_share_a_fingerprint(models):
    assert model_fingerprint(models["m0"]) == model_fingerprint(models["m1"])


def test_another_architecture_has_another_fingerprint(models):
    assert model_fingerprint(models["m0"]) != model_fingerprint(models["deeper"])


def test_a_hub_id_has_no_fingerprint_so_it_is_never_reloaded_in_place():
    assert model_fingerprint("Qwen/Qwen3-0.6B") is None


def test_request_seeds_differ_where_seed_plus_index_would_collide():
    assert request_seed(0, 1) != request_seed(1, 0)


# ---------------------------------------------------------------------------- vLLM in a Ray actor
@pytest.mark.slow
@needs_vllm
def test_greedy_generation_matches_hf_generate_token_for_token(generator, models, hf_greedy):
    generator.load(ModelRef(models["m0"]))
    assert generator.generate_token_ids(PROMPTS, GREEDY) == hf_greedy("m0")


@pytest.mark.slow
@needs_vllm
def test_generate_returns_the_decoded_completion_without_the_prompt(generator, models, hf_greedy):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["m0"])
    generator.load(ModelRef(models["m0"]))
    expected = [tok.decode(ids, skip_special_tokens=True) for ids in hf_greedy("m0")]
    assert generator.generate(PROMPTS, GREEDY) == expected


@pytest.mark.slow
@needs_vllm
@needs_vllm
def test_the_cpu_kv_cache_holds_vllms_256_sequences_of_the_model_and_one_more(models):
    from collapse_ray.generate.vllm_engine import VLLMEngine

    engine = VLLMEngine(**ENGINE_KWARGS)   # m0: 2 layers, 4 heads of 32 (tiny_models' recipe), float32: 2 KiB a token
    assert engine._engine_args(models["m0"])["kv_cache_memory_bytes"] == 257 * 256 * 2048
    assert VLLMEngine(**{**ENGINE_KWARGS, "max_model_len": 200})._engine_args(models["m0"])[
        "kv_cache_memory_bytes"] == 257 * 256 * 2048   # whole 128-token blocks
    assert VLLMEngine(**{**ENGINE_KWARGS, "kv_cache_bytes": 5 << 20})._engine_args(models["m0"])[
        "kv_cache_memory_bytes"] == 5 << 20
    assert VLLMEngine()._engine_args("Qwen/Qwen3-0.6B")["kv_cache_memory_bytes"] == 1 << 30   # a hub id: 1 GiB


@pytest.mark.slow
@needs_vllm
def test_the_default_kv_cache_samples_a_full_batch_as_a_1_gib_one_does(generator, models):
    """300 seeded prompts of ~200 tokens: vLLM runs 256 at once, each in two blocks, the cache
    sized for them is full; the samples equal those of an engine with 1 GiB (nothing preempted)."""
    from collapse_ray.generate.vllm_actor import RayVLLMGenerator

    prompts = [f"# case {i}\n" + "def add(a, b):\n    return a + b\n" * 16 for i in range(300)]
    sampling = Sampling(max_new_tokens=40, temperature=1.0, top_p=0.95, seed=3)
    generator.load(ModelRef(models["m0"]))
    sized = generator.generate(prompts, sampling)
    with RayVLLMGenerator(num_cpus=1, env_vars=ACTOR_ENV, **{**ENGINE_KWARGS, "kv_cache_bytes": 1 << 30}) as large:
        large.load(ModelRef(models["m0"]))
        assert sized == large.generate(prompts, sampling)


def test_seeded_sampling_is_reproducible(generator, models):
    generator.load(ModelRef(models["m0"]))
    sampling = Sampling(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=7)
    assert generator.generate(PROMPTS, sampling) == generator.generate(PROMPTS, sampling)


@needs_vllm
def test_the_engines_one_member_gloo_groups_share_one_polling_thread(generator, models):
    """vLLM's 13 one-member gloo groups would each poll every 10 ms (gloo_groups.py)."""
    generator.load(ModelRef(models["m0"]))
    pid = generator._call("pid")
    threads = [(task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()]
    assert threads.count("gloo_tcp_loop") == 1


@pytest.mark.slow
@needs_vllm
def test_seeded_sampling_of_a_batch_past_the_token_budget_works_and_is_reproducible(generator, models):
    # About 13k prompt tokens: more than one scheduler step holds, so prompts queue across steps
    # (the embedded grid's 256-prompt pools do); split prompts crashed seeded requests on CPU.
    prompts = [f"# case {i}\n" + "def add(a, b):\n    return a + b\n" * 8 for i in range(160)]
    generator.load(ModelRef(models["m0"]))
    sampling = Sampling(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=7)
    first = generator.generate(prompts, sampling)
    assert len(first) == 160 and first == generator.generate(prompts, sampling)


@pytest.mark.slow
@needs_vllm
def test_the_same_prompt_twice_in_a_batch_gets_two_different_samples(generator, models):
    generator.load(ModelRef(models["m0"]))
    first, second = generator.generate([PROMPTS[0]] * 2, Sampling(max_new_tokens=24, temperature=1.0, seed=7))
    assert first != second


@pytest.mark.slow
@needs_vllm
def test_generation_stops_before_the_first_stop_string(generator, models):
    generator.load(ModelRef(models["m0"]))
    full = generator.generate(PROMPTS[:1], GREEDY)[0]
    stop = full[6:9]
    cut = generator.generate(PROMPTS[:1], Sampling(max_new_tokens=24, temperature=0.0, stop=(stop,)))[0]
    assert cut == full[: full.index(stop)]


@pytest.mark.slow
@needs_vllm
def test_option_probs_are_the_hf_softmax_renormalised_over_the_options(generator, models):
    from transformers import AutoTokenizer

    # Options a tiny random model would rank anywhere in its vocabulary, far outside any top-k.
    options = ["yes", "no", " return", "(", "class", "0"]
    tok = AutoTokenizer.from_pretrained(models["m0"])
    first = [tok.encode(o, add_special_tokens=False)[0] for o in options]
    model = _hf_model(models, "m0")
    expected = []
    with torch.no_grad():
        for prompt in PROMPTS:
            probs = torch.softmax(model(**tok(prompt, return_tensors="pt")).logits[0, -1].double(), -1)[first]
            expected.append((probs / probs.sum()).tolist())
    generator.load(ModelRef(models["m0"]))
    got = generator.option_probs(PROMPTS, options)
    assert sum(got, []) == pytest.approx(sum(expected, []), abs=1e-3)
    assert [sum(row) for row in got] == pytest.approx([1.0] * len(PROMPTS), abs=1e-6)


@pytest.mark.slow
@needs_vllm
def test_lora_adapter_is_served_by_the_same_engine_and_matches_hf_peft(generator, models, lora, hf_greedy):
    generator.load(ModelRef(models["m0"]))
    builds = generator.stats()["builds"]
    generator.load(ModelRef(models["m0"], adapter=lora))
    got = generator.generate_token_ids(PROMPTS, GREEDY)
    assert (got, generator.stats()["builds"]) == (hf_greedy("m0", adapter=lora), builds)
    assert got != hf_greedy("m0")  # the adapter really changes the outputs


@pytest.mark.slow
@needs_vllm
def test_new_full_weights_are_reloaded_in_place_and_match_hf(generator, models, hf_greedy):
    generator.load(ModelRef(models["m0"]))
    before = generator.stats()
    generator.load(ModelRef(models["m1"]))
    after = generator.stats()
    assert generator.generate_token_ids(PROMPTS, GREEDY) == hf_greedy("m1")
    assert (after["builds"], after["reloads"]) == (before["builds"], before["reloads"] + 1)


@pytest.mark.slow
@needs_vllm
def test_a_model_of_another_architecture_rebuilds_the_engine(generator, models, hf_greedy):
    generator.load(ModelRef(models["m0"]))
    builds = generator.stats()["builds"]
    generator.load(ModelRef(models["deeper"]))
    got = generator.generate_token_ids(PROMPTS, GREEDY)
    assert (got, generator.stats()["builds"]) == (hf_greedy("deeper"), builds + 1)


@pytest.mark.slow
@needs_vllm
def test_generation_after_sleep_and_wake_up_is_unchanged(generator, models, hf_greedy):
    generator.load(ModelRef(models["m0"]))
    generator.sleep()
    generator.wake_up()
    assert generator.generate_token_ids(PROMPTS, GREEDY) == hf_greedy("m0")


@pytest.mark.slow
@needs_vllm
def test_closing_kills_the_actor_placed_in_a_reserved_bundle(local_ray, models, hf_greedy):
    from ray.util.placement_group import placement_group, remove_placement_group

    from collapse_ray.generate.vllm_actor import RayVLLMGenerator

    pg = placement_group([{"CPU": 1}])
    local_ray.get(pg.ready(), timeout=60)
    try:
        gen = RayVLLMGenerator(placement_group=pg, bundle_index=0, env_vars=ACTOR_ENV, **ENGINE_KWARGS)
        gen.load(ModelRef(models["m0"]))
        assert gen.generate_token_ids(PROMPTS[:1], GREEDY) == hf_greedy("m0")[:1]
        pid = gen.pid()
        gen.close()
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid), f"actor process {pid} still alive 30 s after close()"
    finally:
        remove_placement_group(pg)


# ---------------------------------------------------------------------------- the weight probe
@pytest.mark.slow
@needs_vllm
def test_probe_passes_after_a_fresh_build_an_in_place_reload_and_an_adapter(generator, models, lora):
    from collapse_ray.generate.weight_probe import ProbedGenerator

    probed = ProbedGenerator(generator)
    for ref in (ModelRef(models["m0"]), ModelRef(models["m1"]), ModelRef(models["m0"], lora)):
        probed.load(ref)
        assert probed.last_difference <= 1e-3, ref
    assert generator.served_dtype() == "float32"


@pytest.mark.slow
@needs_vllm
def test_probe_fails_an_engine_still_serving_the_previous_weights(generator, models):
    from collapse_ray.generate.weight_probe import StaleWeightsError, check_served_weights

    generator.load(ModelRef(models["m0"]))
    with pytest.raises(StaleWeightsError, match="stale or wrong weights"):
        check_served_weights(generator, ModelRef(models["m1"]))


@pytest.mark.slow
@needs_vllm
def test_prefetched_engine_serves_the_next_load_by_reloading_in_place(local_ray, models, hf_greedy):
    """What a trial does: build the engine on the base model while generation 0 trains, then
    load the trained weights into it."""
    from collapse_ray.generate.vllm_actor import RayVLLMGenerator

    with RayVLLMGenerator(num_cpus=1, env_vars=ACTOR_ENV, **ENGINE_KWARGS) as gen:
        gen.prefetch(ModelRef(models["m0"]))
        gen.load(ModelRef(models["m1"]))
        assert gen.generate_token_ids(PROMPTS, GREEDY) == hf_greedy("m1")
        assert (gen.stats()["builds"], gen.stats()["reloads"]) == (1, 1)


@pytest.mark.slow
@needs_vllm
def test_new_weights_of_a_model_with_tied_embeddings_are_served_not_the_old_ones(local_ray, tmp_path):
    """vLLM 0.32's in-place reload leaves tied embeddings' output layer on the old weights (found by
    the weight probe in a grid at generation 1); the worker extension ties it again, so the new
    weights are reloaded into the running engine, not served by a rebuilt one."""
    from collapse_ray.generate.vllm_actor import RayVLLMGenerator
    from collapse_ray.generate.weight_probe import ProbedGenerator

    tok = _tokenizer()
    for seed in (0, 1):
        _save_llama(tmp_path / f"t{seed}", tok, seed=seed, tied=True)
    with RayVLLMGenerator(num_cpus=1, env_vars=ACTOR_ENV, **{**ENGINE_KWARGS, "enable_lora": False}) as gen:
        probed = ProbedGenerator(gen)
        for seed in (0, 1):
            probed.load(ModelRef(str(tmp_path / f"t{seed}")))
            assert probed.last_difference <= 1e-3
        assert (gen.stats()["builds"], gen.stats()["reloads"]) == (1, 1)
