"""The grid planner and the dry-run's estimates: the concurrency rule for Train worker groups kept
for a whole trial, vLLM colocated on the Train GPUs, disk, wall time and GPU-hours. No Ray."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from collapse_ray import grid
from collapse_ray.checkpoint_estimate import BYTES_PER_TOKEN
from collapse_ray.cli import main as cli
from collapse_ray.config import ConfigError, ModelConfig, config_from_dict
from collapse_ray.grid import estimate as est
from collapse_ray.model_size import dense_param_count, model_size, safetensors_param_count, tiny_config
from tests.tiny_models import llama_and_qwen3_configs

REPO = Path(__file__).resolve().parents[1]


def trials_of(tmp_path: Path, model: dict, resources: dict | None = None, base: dict | None = None,
              cluster: dict | None = None) -> list[grid.Trial]:
    data = {"name": "g", "base": {"training": {"backend": "ray"}, "generator": {"backend": "vllm"}, **(base or {})},
            "grid": {"models": [model], "tasks": ["codegen"]}, "resources": resources or {}}
    if cluster:
        data["cluster"] = cluster
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return grid.expand(grid.load_grid(path))


def cpu_trial(name: str, held_cpus: float, train_cpus: float) -> grid.Trial:
    res = grid.TrialResources(driver={"CPU": held_cpus}, generator=None, tp_gpus=0, train_workers=1,
                              per_worker={"CPU": train_cpus}, strategy="ddp", zero_stage=None, tensor_parallel=1)
    labels = grid.TrialLabels(model=name, task="codegen", regime="real-only", seed=0, mitigation="none")
    return grid.Trial(config_from_dict({"name": labels.name}), labels, res)


# ---------------------------------------------------------------- the concurrency rule

def test_trials_that_keep_their_train_groups_are_not_admitted_to_take_turns():
    """Each trial holds 0.5 CPU and keeps a 1-CPU Train group. The old rule (n held + one Train run
    <= cluster) admitted 2 on 2 CPUs and 6 on 4: 3 and 9 CPUs kept, more than there are, so some
    Train group would wait forever. The n largest of held + Train group must fit: 1 and 2."""
    trials = [cpu_trial(f"t{i}", 0.5, 1.0) for i in range(8)]
    assert grid.plan(trials, {"CPU": 2.0}, "test").concurrency == 1
    p = grid.plan(trials, {"CPU": 4.0}, "test")
    assert (p.concurrency, p.reason) == (2, "CPU: 2 trial(s) x up to 1.5 (held + Train group) <= 4")


def test_the_smoke_grid_still_runs_its_three_trials_at_once_on_two_cpus():
    trials = grid.expand(grid.load_grid(REPO / "experiments" / "grid_smoke.yaml"))
    assert [t.resources.reserved() for t in trials] == [{"CPU": pytest.approx(0.6)}] * 3
    assert not any(t.resources.colocated for t in trials)   # CPU: nothing to colocate
    assert grid.plan(trials, {"CPU": 2.0, "GPU": 0.0}, "2 cores").concurrency == 3


# ---------------------------------------------------------------- memory

def test_the_plan_starts_no_more_cpu_trials_than_the_memory_holds(tmp_path):
    """Ray packs by logical CPUs only; six study trials on this 24 GiB machine had Ray's memory
    monitor kill their workers. A tiny-model trial with vLLM and a Ray Train group keeps about
    3.5 GB (grid/memory.py; vLLM's KV cache sized for the model, CPU training's kept heap); 8 GB hold two, and a request for
    more is lowered, not obeyed."""
    from collapse_ray.grid.memory import trial_memory_gb

    trials = trials_of(tmp_path, {"name_or_path": "tiny", "resources": {"train_workers": 1, "cpus_per_worker": 0.1}},
                       resources={"driver_cpus": 0.1, "generator_cpus": 0.1},
                       base={"task": {"name": "codegen_embedded"}})
    trials = trials * 4   # the same trial's needs, four times
    assert trial_memory_gb(trials[0]) == pytest.approx(3.46, abs=0.02)
    p = grid.plan(trials, {"CPU": 2.0, "memory_gb": 8.0}, "test")
    assert (p.concurrency, p.reason) == (2, "memory: 2 trial(s) x up to 3.5 GB (estimated) <= 8.0 GB")
    assert grid.plan(trials, {"CPU": 2.0, "memory_gb": 8.0}, "test", requested=4).concurrency == 2
    assert grid.plan(trials, {"CPU": 2.0}, "test").concurrency == 4   # memory unknown: CPUs decide
    too_small = grid.plan(trials, {"CPU": 2.0, "memory_gb": 2.5}, "test")   # the launch refuses it
    assert re.fullmatch(r"trial \S+ needs about 3.5 GB of memory \(grid/memory.py\) but test has 2.5 GB for "
                        r"trials; use a smaller model or a larger machine", too_small.refusal)
    assert p.refusal is None


def test_a_smaller_kv_cache_and_no_train_group_lower_the_estimate(tmp_path):
    from collapse_ray.grid.memory import TRAIN_HELPERS_GB, TRAIN_WORKER_GB, trial_memory_gb

    def memory(base, model_resources=None):
        model = {"name_or_path": "tiny", **({"resources": model_resources} if model_resources else {})}
        return trial_memory_gb(trials_of(tmp_path, model, base={"task": {"name": "codegen_embedded"}, **base})[0])

    default = memory({}, {"train_workers": 1, "cpus_per_worker": 0.1})
    large_kv = memory({"generator": {"backend": "vllm", "kv_cache_gb": 1.0}}, {"train_workers": 1, "cpus_per_worker": 0.1})
    # The default: 257 sequences of the tiny model's 256-token context, 2 layers x 4 heads x 32 x
    # 4 bytes, keys and values: 128.5 MiB instead of the 1 GiB set here.
    assert large_kv - default == pytest.approx((2 ** 30 - 257 * 256 * 2048) / 1e9)
    in_driver = memory({"training": {"backend": "local"}})
    assert default - in_driver == pytest.approx(TRAIN_HELPERS_GB + TRAIN_WORKER_GB, abs=1e-3)


# ---------------------------------------------------------------- GPU colocation

TP2_MODEL = {"name_or_path": "Qwen/Qwen3-14B",
             "resources": {"train_workers": 2, "gpus_per_worker": 1, "cpus_per_worker": 8, "tensor_parallel": 2}}


def test_colocation_halves_the_gpus_a_tp2_trial_holds(tmp_path):
    (colocated,) = trials_of(tmp_path, TP2_MODEL)
    (separate,) = trials_of(tmp_path, TP2_MODEL, {"colocate": False})
    assert colocated.resources.colocated and not separate.resources.colocated
    assert colocated.resources.reserved()["GPU"] == 2 and separate.resources.reserved()["GPU"] == 4
    assert colocated.resources.serving_gpus() == separate.resources.serving_gpus() == 2
    assert colocated.resources.separate() == separate.resources
    eight_gpus = {"CPU": 96.0, "GPU": 8.0}
    assert grid.plan([colocated] * 4, eight_gpus, "test").concurrency == 4
    assert grid.plan([separate] * 4, eight_gpus, "test").concurrency == 2


@pytest.mark.parametrize("resources, cluster, message", [
    ({"train_workers": 2, "gpus_per_worker": 1, "tensor_parallel": 4}, None,
     r"tensor_parallel 4 on its Train workers' GPUs of one node, but its Train run has 2"),
    ({"train_workers": 4, "gpus_per_worker": 1, "tensor_parallel": 4}, {"cpus": 64, "gpus": 8, "gpus_per_node": 2},
     r"tensor_parallel 4 .* but one node \(2 GPUs\) holds 2"),
    ({"train_workers": 2, "gpus_per_worker": 0.5, "tensor_parallel": 1}, None, r"whole GPUs per worker, got .*0.5"),
])
def test_the_planner_refuses_a_colocated_engine_its_train_ranks_cannot_hold(tmp_path, resources, cluster, message):
    (trial,) = trials_of(tmp_path, {"name_or_path": "Qwen/Qwen3-14B", "resources": resources}, cluster=cluster)
    per_node = cluster["gpus_per_node"] if cluster else None
    with pytest.raises(ConfigError, match=message):
        grid.plan([trial], {"CPU": 64.0, "GPU": 8.0}, "test", gpus_per_node=per_node)
    (separate,) = trials_of(tmp_path, {"name_or_path": "Qwen/Qwen3-14B", "resources": resources},
                            {"colocate": False}, cluster=cluster)
    assert grid.plan([separate], {"CPU": 64.0, "GPU": 8.0}, "test", gpus_per_node=per_node).concurrency == 1


def test_a_real_run_starts_colocated_trials_with_vllm_on_gpus_of_its_own(tmp_path, capsys):
    """Colocation is planned but the engine cannot be pinned to rank 0's GPUs yet."""
    from collapse_ray.grid.tune_runner import runnable

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": {"training": {"backend": "ray"}, "generator": {"backend": "vllm"},
                                                          "output_dir": str(tmp_path / "runs")},
                                    "grid": {"models": [TP2_MODEL]}}))
    (trial,) = grid.expand(grid.load_grid(path))
    assert trial.resources.colocated
    (started,) = runnable([trial])
    assert started.resources == trial.resources.separate() and not started.resources.colocated
    assert "gives each vLLM engine GPUs of its own" in capsys.readouterr().out


# ---------------------------------------------------------------- model sizes

def test_parameter_counts_match_the_models_transformers_builds(tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    for config in llama_and_qwen3_configs():
        model = AutoModelForCausalLM.from_config(config)
        built = sum(p.numel() for p in model.parameters())
        fields = {**config.to_dict(), "qk_norm": config.model_type == "qwen3"}
        assert dense_param_count(fields) == built, config.model_type
        d = tmp_path / config.model_type
        d.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or
                   not config.tie_word_embeddings}, str(d / "model.safetensors"))
        (d / "config.json").write_text(config.to_json_string())
        assert safetensors_param_count(d) == built
        assert model_size(ModelConfig(name_or_path=str(d))).n_params == built


def test_the_tiny_models_recipe_gives_its_built_parameter_count():
    from transformers import LlamaConfig, LlamaForCausalLM

    fields = tiny_config(config_from_dict({}).model.tiny)
    built = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in fields.items() if k != "qk_norm"}))
    assert model_size(config_from_dict({}).model).n_params == sum(p.numel() for p in built.parameters())


def test_lora_of_the_moe_models_counts_what_all_linear_reaches_in_this_transformers():
    """The table's hand-derived adapters of the MoE models (model_size.HUB_MOE), checked on small
    models of the same kind: in Qwen3-MoE all-linear adapts attention, the router and every expert
    (gate_up at rank 2r, down at r); in Llama 4 attention, the shared expert and the router."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Llama4TextConfig, Qwen3MoeConfig

    def trainable(config) -> int:
        model = get_peft_model(AutoModelForCausalLM.from_config(config),
                               LoraConfig(r=1, target_modules="all-linear", task_type="CAUSAL_LM"))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    h, layers, heads, kv, head_dim = 64, 2, 4, 2, 16
    attention = (h + heads * head_dim) * 2 + (h + kv * head_dim) * 2
    inter, experts = 32, 4
    qwen = Qwen3MoeConfig(vocab_size=300, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv, head_dim=head_dim, num_experts=experts, num_experts_per_tok=2,
                          moe_intermediate_size=inter, intermediate_size=96)
    gate_up = 2 * experts * h + 2 * inter * 2 * experts      # A: (2r x E) x h, B: 2 inter x (2r x E)
    down = experts * inter + h * experts
    assert trainable(qwen) == layers * (attention + (h + experts) + gate_up + down)
    inter = 48
    llama4 = Llama4TextConfig(vocab_size=300, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv, head_dim=head_dim, num_local_experts=experts,
                              intermediate_size=inter, intermediate_size_mlp=96, interleave_moe_layer_step=1)
    assert trainable(llama4) == layers * (attention + 3 * (h + inter) + (h + experts))


# ---------------------------------------------------------------- disk

def test_disk_of_a_full_fine_tune_and_a_lora_trial_against_hand_counts(tmp_path):
    base = {"generations": 10, "sizes": {"train_examples": 5000, "synthetic_pool": 5000, "max_new_tokens": 384},
            "training": {"backend": "ray", "max_length": 1024}}
    gpu = {"train_workers": 8, "gpus_per_worker": 1, "tensor_parallel": 2}
    (full,) = trials_of(tmp_path, {"name_or_path": "Qwen/Qwen3-14B", "resources": gpu}, base=base)
    # Qwen3-14B: untied 151936 x 5120 embeddings; 40 layers of q/o 5120x5120, k/v 5120x1024,
    # MLP 3 x 5120 x 17408, two norms and a q/k norm of 128 each; a final norm.
    n = 2 * 151936 * 5120 + 40 * (2 * 5120 * 5120 + 2 * 5120 * 1024 + 3 * 5120 * 17408 + 2 * 5120 + 2 * 128) + 5120
    synthetic = 5000 * (1024 + 384) * BYTES_PER_TOKEN   # one generation's synthetic data, never pruned
    e = est.estimate_trial(full, None)
    assert e.on_gpu and e.disk.model_bytes == 2 * n   # bf16
    # Default retention: generation 0 and the last one; a third while the next one is written.
    assert (e.disk.peak_bytes, e.disk.final_bytes) == (3 * 2 * n + 11 * synthetic, 2 * 2 * n + 11 * synthetic)

    lora = {**base, "training": {**base["training"], "method": "lora", "lora_rank": 16}}
    (adapter,) = trials_of(tmp_path, {"name_or_path": "meta-llama/Llama-3.1-70B", "resources": gpu}, base=lora)
    # Per layer: q and o (8192 + 8192), k and v (8192 + 1024), gate and up (8192 + 28672), down
    # (28672 + 8192), x 80 layers x rank 16, in float32.
    per_layer = 2 * (8192 + 8192) + 2 * (8192 + 1024) + 2 * (8192 + 28672) + (28672 + 8192)
    assert est.estimate_trial(adapter, None).disk.model_bytes == per_layer * 80 * 16 * 4

    (cpu,) = trials_of(tmp_path, {"name_or_path": "tiny", "resources": {"cpus_per_worker": 1}}, base=base)
    assert est.estimate_trial(cpu, None).disk.model_bytes == 4 * model_size(cpu.config.model).n_params   # float32


# ---------------------------------------------------------------- wall time

COSTS = est.PhaseCosts(seconds={"train": 40.0, "generate": 10.0, "evaluate": 5.0, "drift": 5.0},
                       work=est.phase_work(config_from_dict({}), model_size(config_from_dict({}).model).n_params),
                       cores=2.0, source="test")


def test_wall_time_scales_linearly_with_generations_and_sizes(tmp_path):
    def trial(**base):
        (t,) = trials_of(tmp_path, {"name_or_path": "tiny"}, base=base)
        return t, est.estimate_trial(t, COSTS)

    t, e = trial()
    assert e.phase_seconds == pytest.approx(COSTS.seconds)   # the reference's own sizes
    assert e.seconds(t.config.generations) == pytest.approx((t.config.generations + 1) * 60.0)
    t2, e2 = trial(generations=2 * t.config.generations + 1)   # twice the generations, 0 included
    assert e2.seconds(t2.config.generations) == pytest.approx(2 * e.seconds(t.config.generations))
    _, more = trial(sizes={"train_examples": 512, "synthetic_pool": 512})
    assert more.phase_seconds == pytest.approx({"train": 80.0, "generate": 20.0, "evaluate": 5.0, "drift": 10.0})
    assert est.gpu_grid_wall_seconds([100.0] * 4, 2) == 200.0   # GPU trials own their GPUs

    gpu = {"resources": {"train_workers": 2, "gpus_per_worker": 1}}
    (g,) = trials_of(tmp_path, {"name_or_path": "Qwen/Qwen3-0.6B", **gpu})
    (g2,) = trials_of(tmp_path, {"name_or_path": "Qwen/Qwen3-0.6B", **gpu},
                      base={"sizes": {"synthetic_pool": 2 * g.config.sizes.synthetic_pool}})
    a, b = est.estimate_trial(g, None).phase_seconds, est.estimate_trial(g2, None).phase_seconds
    assert (b["generate"], b["drift"], b["train"]) == pytest.approx((2 * a["generate"], 2 * a["drift"], a["train"]))


def test_the_phase_costs_file_shipped_reads_and_a_broken_one_says_what_it_expects(tmp_path):
    costs = est.load_phase_costs()
    assert set(costs.seconds) == set(est.PHASES) and all(v > 0 for v in costs.seconds.values())
    (tmp_path / "bad.json").write_text('{"reference": {}}')
    with pytest.raises(ConfigError, match=r"bad.json: cannot read it .*benchmarks/phase_costs.json"):
        est.load_phase_costs(tmp_path / "bad.json")


# ---------------------------------------------------------------- the paper grid's dry-run

def test_the_paper_dry_run_prints_gpu_hours_colocated_and_separate(capsys):
    cli(["grid", str(REPO / "experiments" / "paper.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    colocated = re.search(r"GPU colocated .*max_concurrent_trials (\d+), wall ~ ([\d.]+) h, ([\d.]+) GPU-hours", out)
    separate = re.search(r"GPU separate .*max_concurrent_trials (\d+), wall ~ ([\d.]+) h, ([\d.]+) GPU-hours", out)
    assert colocated and separate, out[-2000:]
    assert (int(colocated[1]), int(separate[1])) == (4, 2)   # 8-GPU Train groups; 8 + 4 serving GPUs
    # The difference is every trial's time on its serving GPUs (its vLLM tensor-parallel size).
    trials = grid.expand(grid.load_grid(REPO / "experiments" / "paper.yaml", missing_tasks_ok=True),
                         missing_tasks_ok=True)
    serving = sum(est.estimate_trial(t, None).seconds(t.config.generations) * t.resources.tensor_parallel
                  for t in trials) / 3600
    assert float(separate[3]) - float(colocated[3]) == pytest.approx(serving, abs=0.11)
    assert all(t.resources.colocated for t in trials)
    assert "disk for the grid: peak" in out and "1.19 GB per model (bf16)" in out   # Qwen3-0.6B
