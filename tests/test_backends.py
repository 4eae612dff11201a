"""backends.py: every training and generator setting reaches the backend it is meant for, on
both paths: `collapse-ray run` (in this process, no trial resources) and a grid trial (the
resources the grid reserved). Specs are compared without starting Ray or vLLM; the backends
that cost nothing to construct are constructed and their settings read back."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import itertools

import pytest

from collapse_ray import backends
from collapse_ray.config import ExperimentConfig, GeneratorConfig, TrainingConfig, config_from_dict
from collapse_ray.grid import expand, load_grid

# A value other than the default for every field; a field added to either config without an
# entry here fails test_every_field_has_an_alternative until it is shown to reach a backend.
ALTERNATIVES = {
    "generator": {"backend": "vllm", "batch_size": 7, "kv_cache_gb": 2.5, "dtype": "bfloat16",
                  "weight_probe": False},
    "training": {"method": "lora", "epochs": 2, "max_steps": 5, "lr": 1e-3, "batch_size": 4, "max_length": 64,
                 "lora_rank": 16, "lora_alpha": 32, "init": "base", "backend": "ray", "gen0_max_steps": 9},
}
SECTIONS = {"generator": GeneratorConfig, "training": TrainingConfig}
BACKEND_CHOICES = list(itertools.product(["local", "ray"], ["hf", "vllm"]))
FIELDS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A local model directory: what max_model_len reads is its config.json (no weights needed)."""
    d = tmp_path_factory.mktemp("model")
    (d / "config.json").write_text('{"max_position_embeddings": 4096, "torch_dtype": "float32"}')
    return str(d)


@pytest.fixture(scope="module")
def grid_resources(tmp_path_factory, model_dir) -> backends.TrialResources:
    """What the grid reserves for a trial on GPUs: 2 Train workers with DeepSpeed ZeRO-3, vLLM TP 2
    on GPUs of its own (resources.colocate: false)."""
    path = tmp_path_factory.mktemp("grid") / "grid.yaml"
    path.write_text(f"""
name: g
base: {{training: {{backend: ray}}, generator: {{backend: vllm}}}}
grid:
  models:
    - name_or_path: {model_dir}
      resources: {{train_workers: 2, cpus_per_worker: 4, gpus_per_worker: 1, strategy: deepspeed,
                  zero_stage: 3, tensor_parallel: 2}}
resources: {{generator_cpus: 3, colocate: false}}
""")
    (trial,) = expand(load_grid(path))
    return trial.resources


def config(model_dir: str, training: dict | None = None, generator: dict | None = None) -> ExperimentConfig:
    return config_from_dict({"model": {"name_or_path": model_dir}, "training": training or {},
                             "generator": generator or {}})


def specs(cfg: ExperimentConfig, resources) -> tuple[backends.BackendSpec, backends.BackendSpec]:
    return backends.trainer_spec(cfg, resources), backends.generator_spec(cfg, resources)


def test_every_field_has_an_alternative():
    for section, cls in SECTIONS.items():
        assert set(ALTERNATIVES[section]) == {f.name for f in dataclasses.fields(cls)}, section
        for name, value in ALTERNATIVES[section].items():
            assert value != getattr(cls(), name), f"{section}.{name}: the alternative is the default"


@pytest.mark.parametrize("on_grid", [False, True], ids=["run", "grid"])
@pytest.mark.parametrize("section, name", FIELDS)
def test_every_field_changes_what_a_backend_is_built_with(model_dir, grid_resources, on_grid, section, name):
    resources = grid_resources if on_grid else None
    changed_under = []
    for train_backend, gen_backend in BACKEND_CHOICES:
        chosen = {"training": {"backend": train_backend}, "generator": {"backend": gen_backend}}
        before = config(model_dir, **chosen)
        chosen[section] = {**chosen[section], name: ALTERNATIVES[section][name]}
        after = config(model_dir, **chosen)
        if specs(before, resources) != specs(after, resources):
            changed_under.append((train_backend, gen_backend))
    assert changed_under, f"{section}.{name} changes neither backend under any backend choice"


def test_a_grid_trial_vllm_gets_the_configured_kv_cache_and_dtype(model_dir, grid_resources):
    """The bug: the grid built its own vLLM generator, with 1 GiB and dtype auto whatever the config said."""
    cfg = config(model_dir, training={"backend": "ray"}, generator={"backend": "vllm", "kv_cache_gb": 2.5,
                                                                       "dtype": "bfloat16"})
    for resources in (None, grid_resources):
        kwargs = backends.generator_spec(cfg, resources).kwargs
        assert (kwargs["kv_cache_bytes"], kwargs["dtype"]) == (int(2.5 * 2**30), "bfloat16")


def test_grid_resources_place_vllm_in_its_bundles_and_shape_the_train_workers(model_dir, grid_resources):
    cfg = config(model_dir, training={"backend": "ray", "method": "lora"}, generator={"backend": "vllm"})
    gen = backends.generator_spec(cfg, grid_resources).kwargs
    assert grid_resources.bundles()[gen["bundle_index"]] == {"CPU": 3.0}
    assert [grid_resources.bundles()[i] for i in gen["bundle_indices"]] == [{"GPU": 1.0}] * 2
    assert (gen["tensor_parallel_size"], gen["num_gpus"], gen["enable_lora"]) == (2, 0, True)
    trainer = backends.trainer_spec(cfg, grid_resources).build(progress=print)   # constructing starts nothing
    assert (trainer.num_workers, trainer.use_gpu, trainer.resources_per_worker, trainer.strategy,
            trainer.zero_stage, trainer.cfg) == (2, True, {"CPU": 4.0, "GPU": 1.0}, "deepspeed", 3, cfg.training)


def test_a_colocated_vllm_takes_no_gpu_or_bundle_of_its_own_and_may_sleep(model_dir, grid_resources):
    colocated = dataclasses.replace(grid_resources, generator={"CPU": 3.0}, tp_gpus=0, colocated=True)
    assert colocated.separate() == grid_resources
    cfg = config(model_dir, training={"backend": "ray"}, generator={"backend": "vllm"})
    gen = backends.generator_spec(cfg, colocated)
    assert (gen.kwargs["num_gpus"], gen.kwargs["num_cpus"], gen.kwargs["tensor_parallel_size"],
            gen.kwargs["enable_sleep_mode"]) == (0, 3.0, 2, True)
    assert "bundle_index" not in gen.kwargs and "bundle_indices" not in gen.kwargs
    assert "enable_sleep_mode" not in backends.generator_spec(cfg, grid_resources).kwargs
    from collapse_ray.generate.vllm_engine import VLLMEngine

    engine_args = set(inspect.signature(target_class(gen)).parameters)
    inspect.signature(VLLMEngine).bind(**{k: v for k, v in gen.kwargs.items() if k not in engine_args})


def test_specs_name_real_constructors_and_arguments(model_dir, grid_resources):
    """Each spec's target imports, and its arguments are ones the constructor takes (the vLLM
    actor passes its engine arguments on to VLLMEngine)."""
    from collapse_ray.generate.vllm_engine import VLLMEngine

    for (train_backend, gen_backend), resources in itertools.product(BACKEND_CHOICES, (None, grid_resources)):
        cfg = config(model_dir, training={"backend": train_backend}, generator={"backend": gen_backend})
        trainer, generator = specs(cfg, resources)
        inspect.signature(target_class(trainer)).bind(**trainer.kwargs, progress=print)
        generator_args = inspect.signature(target_class(generator)).parameters
        inspect.signature(target_class(generator)).bind(**generator.kwargs)
        if gen_backend == "vllm":
            engine_kwargs = {k: v for k, v in generator.kwargs.items() if k not in generator_args}
            assert "kv_cache_bytes" in engine_kwargs
            inspect.signature(VLLMEngine).bind(**engine_kwargs)


def target_class(spec: backends.BackendSpec) -> type:
    module, name = spec.target.split(":")
    return getattr(importlib.import_module(module), name)


def test_in_process_backends_are_built_with_the_config(model_dir):
    cfg = config(model_dir, training={"lr": 1e-3}, generator={"batch_size": 7})
    trainer = backends.build_trainer(cfg, progress=print)
    generator = backends.build_generator(cfg)
    assert (type(trainer).__name__, trainer.cfg) == ("LocalTrainer", cfg.training)
    assert (type(generator).__name__, generator.batch_size) == ("HFGenerator", 7)


def test_vllm_generates_in_the_dtype_the_model_was_saved_in_unless_told_otherwise(model_dir):
    """vLLM's own "auto" runs float32 weights in bfloat16 on CPU: not the precision they were trained in."""
    auto = backends.generator_spec(config(model_dir, generator={"backend": "vllm"}), None)
    told = backends.generator_spec(config(model_dir, generator={"backend": "vllm", "dtype": "bfloat16"}), None)
    assert (auto.kwargs["dtype"], told.kwargs["dtype"]) == ("float32", "bfloat16")
    assert auto.wrapper == "collapse_ray.generate.weight_probe:ProbedGenerator"
