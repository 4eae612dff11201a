import pytest

from collapse_ray.config import ConfigError, ExperimentConfig, config_from_dict, load_config, set_dotted

REPO_EXPERIMENTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "experiments"


def test_smoke_config_loads_typed():
    cfg = load_config(REPO_EXPERIMENTS / "smoke.yaml")
    assert cfg.generations == 10
    assert cfg.training.lr == pytest.approx(3e-4) and isinstance(cfg.training.lr, float)
    assert cfg.regime.name == "synthetic-only"


def test_defaults_are_valid():
    assert ExperimentConfig().validate().generations == 10


@pytest.mark.parametrize("data, field, hint", [
    ({"trainng": {}}, "trainng", "unknown field"),
    ({"training": {"lrr": 1e-4}}, "training.lrr", "allowed fields"),
    ({"training": {"lr": "fast"}}, "training.lr", "expected a number"),
    ({"training": {"lr": 3.0}}, "training.lr", "must be in (0, 1)"),
    ({"training": {"epochs": 1.5}}, "training.epochs", "expected an integer"),
    ({"training": {"method": "qlora"}}, "training.method", "full, lora"),
    ({"regime": {"name": "hybrid", "alpha": 1.5}}, "regime.alpha", "[0, 1]"),
    ({"regime": {"name": "mixed"}}, "regime.name", "known regimes: accumulate, accumulate-subsample, fixed-real"),
    ({"regime": {"name": "accumulate", "alpha": 0.5}}, "regime.alpha", "only applies to regime hybrid"),
    ({"task": {"name": "vulnerability", "options": {"min_confidence": 2}}}, "task.options.min_confidence", "[0, 1]"),
    ({"task": {"name": "vulnerability", "options": {"max_code_chars": "long"}}}, "task.options.max_code_chars",
     "expected an integer"),
    ({"task": {"name": "codegen", "options": {"min_confidence": 0.5}}}, "task.options.min_confidence",
     "unknown field; allowed fields: max_function_chars"),
    ({"task": {"name": "summarization", "options": {"max_summary_words": 2}}}, "task.options.max_summary_words",
     "at least min_summary_words (3)"),
    ({"task": {"options": [1]}}, "task.options", "expected a mapping"),
    ({"task": {"name": "translation"}}, "task.name", "known tasks"),
    ({"task": {"data_path": "/no/such/file.jsonl"}}, "task.data_path", "does not exist"),
    ({"sizes": {"eval_examples": 0}}, "sizes.eval_examples", "must be positive"),
    ({"sampling": {"top_p": 0}}, "sampling.top_p", "(0, 1]"),
    ({"model": {"name_or_path": "./no-such-model"}}, "model.name_or_path", "does not exist"),
    ({"model": {"name_or_path": "not a model id"}}, "model.name_or_path", "hub id"),
    ({"model": {"tiny": {"hidden_size": 130, "num_heads": 4}}}, "model.tiny.hidden_size", "divisible"),
    ({"mitigation": {"dedup": True}}, "mitigation.dedup", "none, exact, minhash"),
    ({"task": {"name": "summarization"}, "mitigation": {"execution_filter": True}}, "mitigation.execution_filter",
     "task summarization has no tests for its pool's prompts to run; it applies to codegen_embedded"),
    ({"generations": -1}, "generations", "between 0 and 100"),
    ({"training": {"gen0_max_steps": 0}}, "training.gen0_max_steps", "must be positive"),
    ({"training": []}, "training", "expected a mapping"),
])
def test_bad_config_names_the_field(data, field, hint):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(field + ":")
    assert hint in str(err.value)


def test_hub_id_and_local_model_dir_are_accepted(tmp_path):
    assert config_from_dict({"model": {"name_or_path": "Qwen/Qwen3-0.6B"}}).model.name_or_path == "Qwen/Qwen3-0.6B"
    (tmp_path / "config.json").write_text("{}")
    assert config_from_dict({"model": {"name_or_path": str(tmp_path)}}).model.name_or_path == str(tmp_path)


def test_missing_and_invalid_yaml_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)


def test_overrides_use_dotted_fields(tmp_path):
    cfg = load_config(REPO_EXPERIMENTS / "smoke.yaml", {"generations": 2, "training.method": "lora"})
    assert cfg.generations == 2 and cfg.training.method == "lora"


def test_every_choice_becomes_a_flat_param():
    params = config_from_dict({"regime": {"name": "hybrid", "alpha": 0.25}}).to_flat_params()
    assert params["regime.alpha"] == 0.25 and params["training.lora_rank"] == 8
    assert params["model.tiny.hidden_size"] == 128
    assert params["task.options.max_function_chars"] == 1200


def test_a_regime_logs_only_its_own_parameters():
    params = config_from_dict({"regime": {"name": "accumulate"}}).to_flat_params()
    assert params["regime.name"] == "accumulate" and not any(k.startswith("regime.") and k != "regime.name"
                                                              for k in params)


def test_task_options_are_typed_with_the_tasks_defaults():
    cfg = config_from_dict({"task": {"name": "vulnerability", "options": {"min_confidence": 0.9}}})
    assert (cfg.task.options.min_confidence, cfg.task.options.max_code_chars) == (0.9, 320)
    from collapse_ray.tasks import get_task

    assert get_task(cfg.task.name, cfg.task.options).options is cfg.task.options


def test_a_changed_task_option_changes_the_fingerprint_and_a_default_one_does_not():
    from collapse_ray.loop import config_fingerprint

    base = config_from_dict({"task": {"name": "vulnerability"}})
    same = config_from_dict({"task": {"name": "vulnerability", "options": {"min_confidence": 0.75}}})
    other = config_from_dict({"task": {"name": "vulnerability", "options": {"min_confidence": 0.9}}})
    assert config_fingerprint(base) == config_fingerprint(same) != config_fingerprint(other)


def test_the_execution_filter_changes_the_fingerprint_only_when_on():
    """Trials started before the field existed keep their identity (tests/test_golden_configs.py)."""
    from collapse_ray.loop import config_fingerprint

    task = {"name": "codegen_embedded"}
    off = config_from_dict({"task": task})
    also_off = config_from_dict({"task": task, "mitigation": {"execution_filter": False}})
    on = config_from_dict({"task": task, "mitigation": {"execution_filter": True}})
    assert config_fingerprint(off) == config_fingerprint(also_off) != config_fingerprint(on)


def test_generation_0_steps_change_the_fingerprint_and_the_generation_0_key_only_when_set():
    """Trials started before the field existed keep their identity; a longer generation 0 is
    another generation 0, so trials with it never reuse one trained with max_steps."""
    from collapse_ray.grid.estimate import generation0_key_of
    from collapse_ray.loop import config_fingerprint

    off = config_from_dict({"training": {"max_steps": 500}})
    also_off = config_from_dict({"training": {"max_steps": 500, "gen0_max_steps": None}})
    on = config_from_dict({"training": {"max_steps": 500, "gen0_max_steps": 1500}})
    assert config_fingerprint(off) == config_fingerprint(also_off) != config_fingerprint(on)
    assert generation0_key_of(off) != generation0_key_of(on)
    assert on.training.for_generation(0).max_steps == 1500
    assert on.training.for_generation(1) == on.training and off.training.for_generation(0) == off.training


def test_a_regime_parameter_changes_the_fingerprint():
    from collapse_ray.loop import config_fingerprint

    fingerprints = {config_fingerprint(config_from_dict({"regime": r})) for r in (
        "accumulate", "accumulate-subsample", {"name": "hybrid", "alpha": 0.5}, {"name": "hybrid", "alpha": 0.25},
        {"name": "fixed-real", "real_examples": 10, "real_share": 0.5},
        {"name": "fixed-real", "real_examples": 20, "real_share": 0.5})}
    assert len(fingerprints) == 6


def test_vllm_backend_rejects_a_tiny_model_head_size_its_cpu_kernels_lack():
    with pytest.raises(ConfigError, match="model.tiny.hidden_size: vLLM's CPU attention"):
        config_from_dict({"generator": {"backend": "vllm"}, "model": {"tiny": {"hidden_size": 64, "num_heads": 4}}})


def _numeric_fields(cls, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if dataclasses.is_dataclass(args[0]):
            yield from _numeric_fields(args[0], f"{prefix}{f.name}.")
        elif args[0] in (int, float) and len(args) == 1:
            yield f"{prefix}{f.name}", args[0]


@pytest.mark.parametrize("dotted, kind", list(_numeric_fields(ExperimentConfig)))
def test_every_numeric_field_refuses_a_huge_value_naming_the_field(dotted, kind):
    """Every range has an upper end too: a typo of extra zeros fails here, not hours into a run."""
    data: dict = {}
    set_dotted(data, dotted, 10**15 if kind is int else 1e300)
    with pytest.raises(ConfigError) as refused:
        config_from_dict(data)
    assert str(refused.value).startswith(dotted.rsplit(".", 1)[0] if dotted.startswith("model.tiny.") else dotted)
