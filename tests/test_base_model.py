import dataclasses
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from collapse_ray import base_model
from collapse_ray.base_model import (EOS_TOKEN, build_base_model, codegen_text, default_corpus,
                                     model_dir_for, resolve_model_path)
from collapse_ray.config import ModelConfig, TinyModelConfig
from collapse_ray.data.codesearchnet import extract_functions, stdlib_roots


def quiet(message):
    pass


@pytest.fixture(scope="module")
def corpus():
    """Real code, kept small: the documented functions of the first standard-library files."""
    return [r["code"] for r in extract_functions(stdlib_roots(), max_files=40)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return TinyModelConfig(vocab_size=512, hidden_size=32, num_layers=1, num_heads=2,
                           context_length=64, train_minutes=0.05,
                           cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def built(tiny, corpus):
    return build_base_model(tiny, progress=quiet, corpus=corpus)


def test_built_model_loads_like_a_hub_model_and_generates(built):
    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    prompt = tokenizer('def add(a, b):\n    """Add a and b."""\n', return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.tie_word_embeddings and model.config.hidden_size == 32


def test_eos_and_pad_are_distinct_special_tokens_set_everywhere(built):
    tokenizer = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    assert model.config.eos_token_id == model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert len(tokenizer) == model.config.vocab_size <= 512


def test_training_text_is_the_source_then_one_eos_token_and_round_trips(built, corpus):
    tokenizer = AutoTokenizer.from_pretrained(built)
    text = codegen_text(corpus[0])
    assert text == corpus[0] + "\n" + EOS_TOKEN
    ids = tokenizer(text)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
    assert tokenizer.decode(ids) == text


def test_build_info_records_the_recipe_and_the_training_run(built, tiny):
    info = json.loads((built / "build_info.json").read_text())
    assert info["recipe"]["hidden_size"] == 32 and "cache_dir" not in info["recipe"]
    assert info["recipe"]["recipe_version"] == base_model.RECIPE_VERSION
    assert info["steps"] >= 1 and info["tokens_seen"] > 0 and info["tokens_per_s"] > 0
    assert info["parameters"] > 0 and info["final_loss"] > 0
    assert not list(built.parent.glob(".*tmp*"))


def test_second_call_reuses_the_cache_without_training(built, tiny, corpus, monkeypatch):
    monkeypatch.setattr(base_model, "_build", lambda *a, **k: pytest.fail("retrained"))
    messages = []
    assert build_base_model(tiny, progress=messages.append, corpus=corpus) == built
    assert messages == []   # found in the cache before any step that would report progress


def test_cache_key_ignores_cache_dir_but_not_the_recipe(tiny):
    moved = dataclasses.replace(tiny, cache_dir="/elsewhere")
    assert model_dir_for(moved).name == model_dir_for(tiny).name
    assert model_dir_for(dataclasses.replace(tiny, seed=1)).name != model_dir_for(tiny).name


def test_changed_recipe_builds_a_new_model(built, tiny, corpus):
    qwen = dataclasses.replace(tiny, architecture="qwen3")
    path = build_base_model(qwen, progress=quiet, corpus=corpus)
    assert path != built and built.is_dir()
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "Qwen3ForCausalLM"


def test_a_failed_build_leaves_no_model_behind(tiny, corpus, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(base_model, "train", killed)
    other = dataclasses.replace(tiny, seed=7)
    with pytest.raises(KeyboardInterrupt):
        build_base_model(other, progress=quiet, corpus=corpus)
    assert not model_dir_for(other, corpus).exists()
    assert not list(model_dir_for(other, corpus).parent.glob(".*tmp*"))


def test_force_rebuilds_in_place(built, tiny, corpus, monkeypatch):
    builds = []
    build = base_model._build
    monkeypatch.setattr(base_model, "_build", lambda t, *rest: builds.append(t) or build(t, *rest))
    messages = []
    assert build_base_model(tiny, force=True, progress=messages.append, corpus=corpus) == built
    assert builds == [tiny]   # trained again, although the cache held this recipe's model
    assert any("tok/s" in m and "loss" in m and "ETA" in m for m in messages)


def test_resolve_model_path_builds_tiny_and_passes_others_through(built, tiny, monkeypatch):
    assert resolve_model_path(ModelConfig(name_or_path="Qwen/Qwen3-0.6B")) == "Qwen/Qwen3-0.6B"
    monkeypatch.setattr(base_model, "build_base_model", lambda t, progress: built if t is tiny else None)
    assert resolve_model_path(ModelConfig(name_or_path="tiny", tiny=tiny), progress=quiet) == str(built)


def test_default_corpus_is_every_documented_standard_library_function():
    corpus = default_corpus()
    assert len(corpus) > 5000
    assert all(code.startswith(("def ", "async def ")) for code in corpus)


def test_pretraining_text_is_exactly_the_codegen_fine_tuning_text(corpus):
    from collapse_ray.tasks.codegen import split_function

    pairs = [(code, split_function(code)) for code in corpus]
    pairs = [(code, split) for code, split in pairs if split is not None]
    assert len(pairs) > 50
    for code, (prompt, body) in pairs:
        assert codegen_text(code) == prompt + body + EOS_TOKEN


def test_cli_base_build_prints_its_own_progress_and_the_path_and_no_library_bars(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tiny = {"model.tiny.vocab_size": 512, "model.tiny.hidden_size": 32, "model.tiny.num_layers": 1,
            "model.tiny.num_heads": 2, "model.tiny.context_length": 64, "model.tiny.cache_dir": str(tmp_path)}
    sets = [arg for k, v in tiny.items() for arg in ("--set", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "HF_HUB_DISABLE", "TRANSFORMERS_"))}
    out = subprocess.run([sys.executable, "-m", "collapse_ray.cli", "base", "build",
                          str(repo / "experiments" / "smoke_codegen_embedded.yaml"), *sets, "--steps", "2"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip().splitlines()[-1]).parent == tmp_path
    console = out.stdout + out.stderr
    assert "base model: step 2/2" in console
    assert "it/s]" not in console and "Writing model shards" not in console, console
