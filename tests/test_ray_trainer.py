"""Fine-tuning on Ray Train: DDP on gloo, LoRA, and DeepSpeed ZeRO on CPU, with a tiny random
Llama (conftest's ``train_llama``) trained for a few steps on a local two-CPU Ray."""
from __future__ import annotations

import json

import pytest

from collapse_ray.datatypes import ModelRef
from collapse_ray.train.deepspeed_config import ZERO3_MIN_PARAMS, deepspeed_config
from tests.ray_training import TEXTS, mean_loss, training


def tensor_names(model_dir: str) -> set[str]:
    from safetensors import safe_open

    with safe_open(f"{model_dir}/model.safetensors", "pt") as f:
        return set(f.keys())


# ---------------------------------------------------------------- the DeepSpeed config

def test_zero3_only_for_models_of_ten_billion_parameters_on_gpu():
    big = deepspeed_config(n_params=ZERO3_MIN_PARAMS, world_size=8, micro_batch=4, use_gpu=True)
    small = deepspeed_config(n_params=ZERO3_MIN_PARAMS - 1, world_size=8, micro_batch=4, use_gpu=True)
    cpu = deepspeed_config(n_params=ZERO3_MIN_PARAMS, world_size=2, micro_batch=4, use_gpu=False)
    assert (big["zero_optimization"]["stage"], small["zero_optimization"]["stage"],
            cpu["zero_optimization"]["stage"]) == (3, 2, 2)


def test_deepspeed_config_is_bf16_on_gpu_and_fp32_on_cpu_with_global_batch_of_all_workers():
    gpu = deepspeed_config(n_params=10**9, world_size=8, micro_batch=4, use_gpu=True)
    cpu = deepspeed_config(n_params=10**6, world_size=2, micro_batch=4, use_gpu=False)
    assert (gpu["bf16"]["enabled"], cpu["bf16"]["enabled"]) == (True, False)
    assert (gpu["train_batch_size"], cpu["train_batch_size"]) == (32, 8)
    assert gpu["gradient_clipping"] == cpu["gradient_clipping"] == 1.0


# ---------------------------------------------------------------- training on Ray Train
# Each test closes its trainer (``with``): a trainer's worker group holds its CPUs until closed.

def test_ddp_on_two_gloo_workers_lowers_the_loss_and_saves_a_loadable_model(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=2, resources_per_worker={"CPU": 1}, strategy="ddp") as trainer:
        result = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "model"), seed=0)

    assert result.model == ModelRef(str(tmp_path / "model"))
    assert result.steps == 12 and result.tokens > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]   # Ray Train's run state is cleaned up
    # The bare model's tensors, not DDP's "module."-prefixed ones (from_pretrained would quietly
    # re-initialise those, so loading the model alone proves nothing).
    assert tensor_names(result.model.path) == tensor_names(train_llama)
    assert mean_loss(result.model) < mean_loss(ModelRef(train_llama)) - 0.5


@pytest.mark.slow  # ~30 s quiet, minutes under load: each pays a worker-group start-up
def test_one_ray_worker_trains_exactly_like_the_in_process_trainer(train_llama, local_ray, tmp_path):
    from collapse_ray.train.local import LocalTrainer
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=1) as trainer:
        on_ray = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "ray"), seed=3)
    local = LocalTrainer(training()).train(ModelRef(train_llama), TEXTS, str(tmp_path / "local"), seed=3)

    assert (on_ray.steps, on_ray.tokens) == (local.steps, local.tokens)
    assert on_ray.train_loss == pytest.approx(local.train_loss, abs=1e-4)


@pytest.mark.slow  # ~30 s quiet, minutes under load: each pays a worker-group start-up
def test_lora_through_ray_train_saves_an_adapter_that_peft_loads(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(method="lora", lr=1e-2), num_workers=2, resources_per_worker={"CPU": 1}) as trainer:
        result = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "adapter"), seed=0)

    assert result.model == ModelRef(path=train_llama, adapter=str(tmp_path / "adapter"))
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert mean_loss(result.model) < mean_loss(ModelRef(train_llama))


@pytest.mark.slow
def test_deepspeed_zero2_on_cpu_trains_for_real_and_saves_a_loadable_model(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=2, resources_per_worker={"CPU": 1},
                    strategy="deepspeed", zero_stage=2) as trainer:
        result = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "model"), seed=0)

    assert result.model == ModelRef(str(tmp_path / "model"))
    assert result.steps == 12
    assert mean_loss(result.model) < mean_loss(ModelRef(train_llama)) - 0.5


@pytest.mark.slow
def test_deepspeed_zero3_gathers_the_partitioned_weights_into_a_loadable_model(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=2, resources_per_worker={"CPU": 1},
                    strategy="deepspeed", zero_stage=3) as trainer:
        result = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "model"), seed=0)

    assert mean_loss(result.model) < mean_loss(ModelRef(train_llama)) - 0.5


@pytest.mark.slow
def test_deepspeed_zero3_with_lora_saves_the_gathered_adapter(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(method="lora", lr=1e-2), num_workers=2, resources_per_worker={"CPU": 1},
                    strategy="deepspeed", zero_stage=3) as trainer:
        result = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "adapter"), seed=0)

    assert result.model.adapter == str(tmp_path / "adapter")
    assert mean_loss(result.model) < mean_loss(ModelRef(train_llama))


def test_a_tune_trial_that_reserves_only_its_driver_cpu_runs_a_train_run(train_llama, local_ray, tmp_path):
    """Train V2 places its workers in its own placement group, so the trial reserves 1 CPU for
    the driver and the one Train worker takes the cluster's other CPU."""
    from ray import tune

    def trial(config, cfg, init, texts):   # runs in the trial's actor: imports, no test-module globals
        from collapse_ray.train.ray_trainer import RayTrainer

        trainer = RayTrainer(cfg, num_workers=1, resources_per_worker={"CPU": 1})
        result = trainer.train(init, texts, config["out_dir"], seed=0)
        tune.report({"train_loss": result.train_loss})

    trainable = tune.with_parameters(trial, cfg=training(max_steps=4), init=ModelRef(train_llama), texts=TEXTS)
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"out_dir": str(tmp_path / "model")},
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "tune")))
    results = tuner.fit()

    assert not results.errors
    assert results[0].metrics["train_loss"] > 0
    assert (tmp_path / "model" / "config.json").is_file()
