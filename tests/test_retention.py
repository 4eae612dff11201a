"""Checkpoint retention: models pruned as generations finish, recorded so resume never takes a
pruned generation for a corrupt one; synthetic data always kept; the dry-run's disk estimate."""
import json

import pytest

from collapse_ray.checkpoint_estimate import estimate_checkpoint_bytes, grid_checkpoint_bytes, lora_param_count
from collapse_ray.config import ConfigError, ExperimentConfig, RetentionConfig, config_from_dict
from collapse_ray.loop import config_fingerprint, run_trial
from collapse_ray.retention import apply_retention, models_to_keep
from collapse_ray.trial_state import TrialState
from tests.small_trials import finish, small_config
from tests.tiny_models import llama_and_qwen3_configs


def test_the_default_keeps_generation_zero_the_last_one_and_those_listed():
    assert models_to_keep(RetentionConfig(), 5) == {0, 5}
    assert models_to_keep(RetentionConfig(keep_generations=[2, 9]), 5) == {0, 2, 5}
    assert models_to_keep(RetentionConfig(keep_models="all"), 3) == {0, 1, 2, 3}


def test_retention_changes_neither_the_fingerprint_nor_existing_param_names():
    tight = config_from_dict({"retention": {"keep_models": "all", "keep_generations": [3]}})
    assert config_fingerprint(tight) == config_fingerprint(ExperimentConfig().validate())
    old_names = set(ExperimentConfig().validate().to_flat_params()) - {"retention.keep_models", "retention.keep_generations"}
    assert old_names <= set(tight.to_flat_params())
    assert tight.to_flat_params()["retention.keep_models"] == "all"


def test_a_pruned_generation_stays_finished_and_keeps_its_synthetic_data(tmp_path):
    state = TrialState(tmp_path, "fp")
    for g in range(4):
        finish(state, g)
        apply_retention(state, RetentionConfig(keep_generations=[1]), g)
    done = TrialState(tmp_path, "fp").finished()
    assert [d.generation for d in done] == [0, 1, 2, 3]
    assert [d.model_pruned for d in done] == [False, False, True, False]
    assert not (state.gen_dir(2) / "model").exists() and (state.gen_dir(2) / "synthetic.jsonl").is_file()
    record = json.loads((state.gen_dir(2) / "COMPLETE.json").read_text())
    assert record["pruned"] == ["model"] and list(record["checksums"]) == ["synthetic.jsonl"]


def test_a_pruned_generation_whose_data_is_corrupt_is_still_redone(tmp_path):
    state = TrialState(tmp_path, "fp")
    for g in range(3):
        finish(state, g)
        apply_retention(state, RetentionConfig(), g)
    (state.gen_dir(1) / "synthetic.jsonl").write_text("bit rot\n")
    assert [d.generation for d in state.finished()] == [0]


def test_a_prune_cut_short_leaves_a_valid_record_and_is_finished_later(tmp_path):
    state = TrialState(tmp_path, "fp")
    for g in range(3):
        finish(state, g)
    record_path = state.gen_dir(1) / "COMPLETE.json"
    record = json.loads(record_path.read_text())   # as prune_model leaves it just before rmtree
    record["pruned"] = ["model"]
    record["checksums"] = {k: v for k, v in record["checksums"].items() if not k.startswith("model/")}
    record_path.write_text(json.dumps(record))
    assert [d.generation for d in state.finished()] == [0, 1, 2]   # leftovers are not a mismatch
    assert apply_retention(state, RetentionConfig(), 2) == [1]
    assert not (state.gen_dir(1) / "model").exists()


def test_a_trial_prunes_as_it_goes_and_a_rerun_trains_nothing_again(tmp_path, tiny_cache):
    cfg = small_config(tmp_path, tiny_cache)   # generations 0..2, default retention
    first = run_trial(cfg)
    root = tmp_path / "runs" / cfg.name
    assert [(root / f"gen_{g:02d}" / "model").is_dir() for g in range(3)] == [True, False, True]
    assert all((root / f"gen_{g:02d}" / "synthetic.jsonl").is_file() for g in range(3))
    assert run_trial(cfg) == first   # the pruned generation 1 is finished, not corrupt


def test_the_estimate_counts_the_models_retention_keeps():
    cfg = config_from_dict({"generations": 10})
    needed = estimate_checkpoint_bytes(cfg, n_params=14_000_000_000)
    assert needed.model_bytes == 28_000_000_000
    assert (needed.models_at_peak, needed.models_at_end) == (3, 2)
    kept_all = estimate_checkpoint_bytes(config_from_dict({"generations": 10, "retention": {"keep_models": "all"}}),
                                         n_params=14_000_000_000)
    assert (kept_all.models_at_peak, kept_all.models_at_end) == (11, 11)
    assert kept_all.final_bytes - needed.final_bytes == 9 * 28_000_000_000
    listed = estimate_checkpoint_bytes(config_from_dict({"generations": 10, "retention": {"keep_generations": [5]}}),
                                       n_params=10)
    assert (listed.models_at_peak, listed.models_at_end) == (4, 3)
    peak, final = grid_checkpoint_bytes([needed, kept_all], concurrency=1)
    assert final == needed.final_bytes + kept_all.final_bytes
    assert peak == final + needed.model_bytes   # the one running trial writes one model more


def test_lora_estimate_counts_adapters_as_peft_builds_them():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    for config in llama_and_qwen3_configs():
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_config(config),
                               LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert lora_param_count(config.to_dict(), rank=8) == trainable, type(config).__name__
    cfg = config_from_dict({"training": {"method": "lora"}})
    with pytest.raises(ValueError, match="lora_params"):
        estimate_checkpoint_bytes(cfg, n_params=1000)
    assert estimate_checkpoint_bytes(cfg, n_params=1000, lora_params=10).model_bytes == 40


@pytest.mark.parametrize("fields, message", [
    ({"retention": {"keep_generations": 3}}, "retention.keep_generations: expected a list, got 3"),
    ({"retention": {"keep_generations": [11]}},
     "retention.keep_generations[0]: must be a generation in 0..10 (generations), got 11"),
    ({"retention": {"keep_models": "some"}}, "retention.keep_models: 'some' is not allowed; choose one of needed, all"),
    ({"tracking": {"retry_minutes": -1}}, "tracking.retry_minutes: must be a number of minutes >= 0, got -1.0"),
])
def test_bad_retention_and_retry_settings_name_the_field(fields, message):
    with pytest.raises(ConfigError) as bad:
        config_from_dict(fields)
    assert str(bad.value) == message
