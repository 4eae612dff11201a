"""The grid without running it: config validation, trial expansion, resource planning, and
refusals before Ray starts. Real grids on Ray Tune are in test_grid_slow.py."""
from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest

from collapse_ray import grid
from collapse_ray.cli import main as cli
from collapse_ray.config import ConfigError, ExperimentConfig
from collapse_ray.errors import DataError, GridError, ModelError
from tests.grids import SMALL_GRID, grid_args, with_change, write

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- dry-run and planning

def test_paper_grid_dry_run_plans_90_trials_and_their_gpus_without_ray(capsys):
    import ray

    cli(["grid", str(REPO / "experiments" / "paper.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert "90 trials = 10 models x 3 tasks x 3 regimes x 1 seeds x 1 mitigations" in out
    assert len([line for line in out.splitlines() if "_s0_none " in line]) == 90
    # vLLM colocated on the Train GPUs: per trial its Train GPUs, x 9 trials per model:
    # 0.6B 1, 1B 1, 1.7B 2, 3B 4, and 8 for the six others = 56 x 9; CPUs 0.25 + 4 + 8 per worker.
    assert "one trial needs at most 68.25 CPUs and 8 GPUs" in out
    assert "summed over all trials 4414.5 CPUs and 504 GPUs" in out
    # Every running trial keeps its 8-GPU Train group: 4 x 8 <= 32.
    assert "784 CPUs, 32 GPUs -> max_concurrent_trials = 4" in out
    assert not ray.is_initialized()


def test_smoke_grid_is_the_tiny_model_times_three_regimes_on_ray_train_and_vllm():
    g = grid.load_grid(REPO / "experiments" / "grid_smoke.yaml")
    trials = grid.expand(g)
    assert [t.name for t in trials] == ["tiny_codegen_real-only_s0_none", "tiny_codegen_synthetic-only_s0_none",
                                        "tiny_codegen_hybrid0.5_s0_none"]
    assert {(t.config.generations, t.config.training.backend, t.config.generator.backend)
            for t in trials} == {(10, "ray", "vllm")}
    assert grid.plan(trials, {"CPU": 2.0, "GPU": 0.0}, "2 cores").concurrency == 3


def test_trials_are_named_from_their_axes_and_share_output_dir_and_mlflow_experiment(tmp_path):
    model_dir = tmp_path / "My_Model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    data = copy.deepcopy(SMALL_GRID)
    data["base"].update(output_dir="out", tracking={"uri": "sqlite:///m.db"})
    data["grid"].update(models=["Qwen/Qwen3-0.6B", {"name_or_path": str(model_dir), "label": "mine"}],
                        seeds=[0, 1],
                        mitigations={"none": {}, "quality+exact": {"quality_filter": True, "dedup": "exact"}})
    trials = grid.expand(grid.load_grid(write(tmp_path, data)), cwd=tmp_path)
    names = [t.name for t in trials]
    assert len(names) == 16 == len(set(names))
    assert names[0] == "qwen3-0.6b_codegen_real-only_s0_none"
    assert names[-1] == "mine_codegen_hybrid0.5_s1_quality+exact"
    assert {t.config.output_dir for t in trials} == {str(tmp_path / "out")}
    assert {(t.config.tracking.uri, t.config.tracking.experiment) for t in trials} == \
        {(f"sqlite:///{tmp_path / 'm.db'}", "small")}
    last = trials[-1].config
    assert (last.seed, last.regime.name, last.regime.alpha, last.mitigation.dedup) == (1, "hybrid", 0.5, "exact")


@pytest.mark.parametrize("dotted, value, field", [
    ("grid.regimes.1.alpha", 1.5, "grid.regimes[1].alpha"),
    ("grid.regimes.0.name", "mixed", "grid.regimes[0].name"),
    ("grid.models.0.resources", {"gpus_per_worker": "two"}, "grid.models[0].resources.gpus_per_worker"),
    ("grid.models.0.resources", {"strategy": "ddp", "zero_stage": 3}, "grid.models[0].resources.zero_stage"),
    ("grid.models.0.resources", {"train_workers": 0}, "grid.models[0].resources.train_workers"),
    ("grid.models.0.name_or_path", "not a hub id", "grid.models[0].model.name_or_path"),
    ("grid.models.0.overrides", {"training": {"lr": 5}}, "trial qwen3-0.6b_codegen_real-only_s0_none.training.lr"),
    ("grid.tasks", ["codegen", "poetry"], "grid.tasks[1].name"),
    ("grid.seeds", [0, -1], "grid.seeds[1]"),
    ("grid.seeds", [], "grid.seeds"),
    ("grid.mitigations", {"q": {"dedup": "fuzzy"}}, "grid.mitigations.q.dedup"),
    ("grid.axis", [1], "grid.axis"),
    ("base.training.lr", 5, "base.training.lr"),
    ("resources.driver_cpus", 0, "resources.driver_cpus"),
    ("resources.colocate", "yes", "resources.colocate"),
    ("cluster", {"cpus": 8, "gpus": 8, "gpus_per_node": 16}, "cluster.gpus_per_node"),
    ("tune.max_concurent_trials", 2, "tune.max_concurent_trials"),
    ("tune.max_failures", -1, "tune.max_failures"),
    ("tune.storage_path", "s" * 300, "tune.storage_path"),
    ("base.output_dir", "runs\n", "base.output_dir"),
    ("name", "two words", "name"),
])
def test_grid_config_errors_name_the_field(tmp_path, capsys, dotted, value, field):
    path = write(tmp_path, with_change(dotted, value))
    assert cli(["grid", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and err.count("\n") == 1, err


@pytest.mark.parametrize("dotted, value, field", [
    ("grid.models.0.overrides", 0, "grid.models[0].overrides"),
    ("grid.models.0.overrides", "", "grid.models[0].overrides"),
    ("grid.models.0.overrides", [], "grid.models[0].overrides"),
    ("grid.models.0.tiny", "", "grid.models[0].tiny"),
    ("grid.mitigations", {"q": 0}, "grid.mitigations.q"),
    ("grid.mitigations", {"q": ""}, "grid.mitigations.q"),
    ("grid.mitigations", {"q": []}, "grid.mitigations.q"),
    ("base.task", "codegen", "base.task"),
    ("base.tracking", 0, "base.tracking"),
    ("base.tracking", None, "base.tracking"),
    ("base.mitigation", [], "base.mitigation"),
    ("grid.models.0.overrides", {"output_dir": 0}, "grid.models[0].overrides.output_dir"),
    ("grid.models.0.overrides", {"tracking": None}, "grid.models[0].overrides.tracking"),
    # what the grid's axes set per trial would be overridden silently
    ("grid.models.0.overrides", {"seed": 3}, "grid.models[0].overrides.seed"),
    ("grid.models.0.overrides", {"task": {"name": "summarization"}}, "grid.models[0].overrides.task"),
    ("grid.models.0.overrides", {"mitigation": {"quality_filter": True}}, "grid.models[0].overrides.mitigation"),
])
def test_a_section_of_the_wrong_shape_or_one_the_axes_set_is_refused_before_the_grid_reads_it(
        tmp_path, capsys, dotted, value, field):
    path = write(tmp_path, with_change(dotted, value))
    assert cli(["grid", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and err.count("\n") == 1, err


def test_a_base_section_in_its_short_form_is_still_read(tmp_path):
    loaded = grid.load_grid(write(tmp_path, with_change("base.regime", "synthetic-only") | {"grid": {"seeds": [0]}}))
    assert [r.name for r in loaded.regimes] == ["synthetic-only"]


def _grid_numeric_fields():
    import dataclasses
    import typing

    sections = {grid.spec.ModelResources: ("grid.models.0.resources", "grid.models[0].resources"),
                grid.spec.GridResources: ("resources", "resources"), grid.spec.TuneSettings: ("tune", "tune"),
                grid.spec.ClusterSize: ("cluster", "cluster")}
    for cls, (dotted, named) in sections.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
            if kinds[0] in (int, float):
                yield f"{dotted}.{f.name}", kinds[0], f"{named}.{f.name}"


@pytest.mark.parametrize("dotted, kind, field", list(_grid_numeric_fields()))
def test_every_numeric_grid_field_refuses_a_huge_value_naming_the_field(tmp_path, capsys, dotted, kind, field):
    """As the experiment config's fields (test_config.py): a typo of extra zeros fails in the dry-run."""
    path = write(tmp_path, with_change(dotted, 10**15 if kind is int else 1e300))
    assert cli(["grid", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {field}:")


@pytest.mark.parametrize("axis, values", [
    ("regimes", [{"name": "hybrid", "alpha": 0.5}, {"name": "real-only"}, {"name": "hybrid", "alpha": 0.5}]),
    ("seeds", [0, 1, 0]),
    ("tasks", ["codegen", "codegen"]),
])
def test_a_value_listed_twice_is_blamed_on_its_own_axis(tmp_path, axis, values):
    with pytest.raises(ConfigError, match=rf"grid\.{axis}\[2\]: repeats grid\.{axis}\[0\]"
                       if len(values) == 3 else rf"grid\.{axis}\[1\]: repeats grid\.{axis}\[0\]"):
        grid.load_grid(write(tmp_path, with_change(f"grid.{axis}", values)))


def test_two_models_with_one_label_are_refused_before_anything_runs(tmp_path):
    data = with_change("grid.models", ["Qwen/Qwen3-0.6B", {"name_or_path": "other/Qwen3-0.6B"}])
    with pytest.raises(ConfigError, match="grid.models: two trials would both be named "
                                          "'qwen3-0.6b_codegen_real-only_s0_none'.*label"):
        grid.expand(grid.load_grid(write(tmp_path, data)))


def test_dry_run_plans_a_task_this_install_lacks_and_a_real_run_refuses_it(tmp_path, monkeypatch, capsys):
    from collapse_ray import tasks

    tasks.registered_tasks()
    # as when the module's import fails for want of a third-party package
    monkeypatch.delitem(tasks._REGISTRY, "summarization")
    monkeypatch.setitem(tasks._UNAVAILABLE, "summarization", "rouge_score")
    data = with_change("grid.tasks", ["codegen", "summarization"])
    data["grid"]["models"] = [{"name_or_path": "tiny"}]   # a hub model is refused offline by the pre-flight
    data["base"]["output_dir"] = str(tmp_path / "runs")
    path = write(tmp_path, data)
    grid.main(grid_args(path, dry_run=True))
    out = capsys.readouterr().out
    assert "4 trials" in out and "note: task(s) summarization cannot be loaded" in out
    assert "pre-flight: every trial's config" in out   # the loadable task's trials checked, the other planned
    with pytest.raises(ConfigError, match=r"grid\.tasks\[1\]\.name: unknown task 'summarization'"):
        grid.main(grid_args(path))


def _embedded_grid(tmp_path, model: str, train_examples: int) -> dict:
    data = with_change("grid.tasks", ["codegen_embedded"])
    data["grid"]["models"] = [{"name_or_path": model, "label": "m"}]
    data["base"].update(output_dir=str(tmp_path / "runs"), tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                        sizes={"train_examples": train_examples, "synthetic_pool": 8, "eval_examples": 8})
    return data


@pytest.mark.parametrize("bad", ["sizes its data cannot fill", "a model directory whose config is not JSON"])
def test_the_dry_run_refuses_what_the_launch_refuses_before_ray_starts(tmp_path, capsys, bad):
    """One pre-flight for both: the dry-run prints its plan, then the launch's own refusal."""
    import ray

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{not json")
    if bad == "sizes its data cannot fill":   # codegen_embedded's families hold 3,360 problems
        data, error = _embedded_grid(tmp_path, "tiny", train_examples=5000), DataError
    else:
        data, error = _embedded_grid(tmp_path, str(model), train_examples=16), ModelError
    path = write(tmp_path, data)
    with pytest.raises(error) as dry:
        grid.main(grid_args(path, dry_run=True))
    assert "2 trials" in capsys.readouterr().out   # the plan came first
    with pytest.raises(error) as launch:
        grid.main(grid_args(path))
    assert str(dry.value) == str(launch.value)
    assert not ray.is_initialized() and not (tmp_path / "mlflow.db").exists()


def test_each_trial_keeps_its_own_generations_in_the_dry_run_and_progress_lines(tmp_path, capsys):
    """A model's overrides may change generations: neither report may take the first trial's."""
    from collapse_ray.grid.console import GridConsole

    data = with_change("grid.models", ["Qwen/Qwen3-0.6B", {"name_or_path": "Qwen/Qwen3-1.7B",
                                                           "overrides": {"generations": 5}}])
    path = write(tmp_path, data)
    cli(["grid", str(path), "--dry-run"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if "_s0_none " in line}
    assert rows == {"qwen3-0.6b_codegen_real-only_s0_none": "0..2", "qwen3-0.6b_codegen_hybrid0.5_s0_none": "0..2",
                    "qwen3-1.7b_codegen_real-only_s0_none": "0..5", "qwen3-1.7b_codegen_hybrid0.5_s0_none": "0..5"}
    assert "generations each" not in out

    stream = io.StringIO()
    console = GridConsole(grid.expand(grid.load_grid(path)), tmp_path / "state", stream, max_failures=2)
    for name, generation in (("qwen3-0.6b_codegen_real-only_s0_none", 0), ("qwen3-1.7b_codegen_real-only_s0_none", 3)):
        console.trial_started(name)
        console.generation_done(name, {"generation": generation})
        console.generation_done(name, {"generation": generation + 1})
    lines = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines() if "generation" in line]
    assert [line.split(" (ETA")[0] for line in lines] == [
        "qwen3-0.6b_codegen_real-only_s0_none: generation 0/2 done ",
        "qwen3-0.6b_codegen_real-only_s0_none: generation 1/2 done ",
        "qwen3-1.7b_codegen_real-only_s0_none: generation 3/5 done ",
        "qwen3-1.7b_codegen_real-only_s0_none: generation 4/5 done "]
    # The ETA is paced by the generations after an attempt's first (neither trial is at its last).
    assert [" (ETA " in line for line in lines] == [False, True, False, True]


def test_a_trial_carries_its_labels_into_its_name_and_mlflow_tags(tmp_path):
    from collapse_ray.labels import labels_of

    data = with_change("grid.mitigations", {"q": {"quality_filter": True}})
    trials = grid.expand(grid.load_grid(write(tmp_path, data)))
    assert [t.name.rsplit("_", 1)[1] for t in trials] == ["q", "q"]
    for t in trials:
        tags = t.labels.tags()
        assert t.name == "_".join([tags["model"], tags["task"], tags["regime"], "s" + tags["seed"], tags["mitigation"]])
    assert labels_of(trials[0].config).mitigation == "quality"   # a single run names its settings


def _trial(name: str, driver_cpus: float, generator: dict | None = None, tp_gpus: int = 0,
           workers: int = 0, per_worker: dict | None = None) -> grid.Trial:
    res = grid.TrialResources(driver={"CPU": driver_cpus}, generator=generator, tp_gpus=tp_gpus,
                              train_workers=workers, per_worker=per_worker or {}, strategy="ddp",
                              zero_stage=None, tensor_parallel=max(1, tp_gpus))
    labels = grid.TrialLabels(model=name, task="codegen", regime="real-only", seed=0, mitigation="none")
    return grid.Trial(ExperimentConfig(name=labels.name), labels, res)


def test_concurrency_fits_every_running_trials_train_group_so_trials_never_deadlock():
    two_cpus = {"CPU": 2.0, "GPU": 0.0}
    # Tune's default (1 CPU per driver) with a 1-CPU Train worker: only one trial at a time.
    assert grid.plan([_trial(f"t{i}", 1.0, workers=1, per_worker={"CPU": 1.0}) for i in range(3)],
                     two_cpus, "test").concurrency == 1
    # Fractional drivers: each trial keeps 0.25 + 0.25 + a 0.5-CPU Train group -> 2 fit in 2 CPUs.
    assert grid.plan([_trial(f"t{i}", 0.25, {"CPU": 0.25}, workers=1, per_worker={"CPU": 0.5}) for i in range(4)],
                     two_cpus, "test").concurrency == 2
    # Training in the driver process: nothing else to leave room for.
    assert grid.plan([_trial(f"t{i}", 1.0) for i in range(3)], two_cpus, "test").concurrency == 2
    # 8 GPUs: each trial keeps a 1-GPU vLLM engine and a 4-GPU Train group -> 1 trial.
    gpu_trials = [_trial(f"g{i}", 0.25, {"CPU": 1, "GPU": 1}, workers=4, per_worker={"CPU": 4, "GPU": 1})
                  for i in range(10)]
    p = grid.plan(gpu_trials, {"CPU": 64.0, "GPU": 8.0}, "test")
    assert (p.concurrency, p.reason.split(":")[0]) == (1, "GPU")
    assert grid.plan(gpu_trials, {"CPU": 128.0, "GPU": 20.0}, "test").concurrency == 4   # 4 x 17.25 CPUs too
    # The planner counts the largest trials first: one TP-4 trial (8 GPUs) among 5-GPU ones.
    mixed = gpu_trials[:3] + [_trial("big", 0.25, {"CPU": 1}, tp_gpus=4, workers=4, per_worker={"GPU": 1})]
    assert grid.plan(mixed, {"CPU": 64.0, "GPU": 23.0}, "test").concurrency == 4
    assert grid.plan(mixed, {"CPU": 64.0, "GPU": 22.0}, "test").concurrency == 3


def test_a_trial_larger_than_the_cluster_is_refused_with_its_needs():
    big = _trial("llama-70b", 0.25, {"CPU": 4}, tp_gpus=4, workers=8, per_worker={"CPU": 8, "GPU": 1})
    with pytest.raises(ConfigError, match=r"trial llama-70b_codegen_real-only_s0_none needs .*12 GPU.* has 8 GPU"):
        grid.plan([big], {"CPU": 96.0, "GPU": 8.0}, "test")


def test_placement_group_holds_driver_then_vllm_actor_then_its_tensor_parallel_gpus(tmp_path):
    data = with_change("base.training.backend", "ray")
    data["base"]["generator"] = {"backend": "vllm"}
    data["grid"]["models"] = [{"name_or_path": "Qwen/Qwen3-14B",
                               "resources": {"train_workers": 8, "gpus_per_worker": 1, "cpus_per_worker": 8,
                                             "strategy": "deepspeed", "zero_stage": 3, "tensor_parallel": 2}}]
    data["resources"] = {"generator_cpus": 4, "colocate": False}
    res = grid.expand(grid.load_grid(write(tmp_path, data)))[0].resources
    assert res.bundles() == [{"CPU": 0.25}, {"CPU": 4.0}, {"GPU": 1.0}, {"GPU": 1.0}]
    assert res.training() == {"CPU": 64.0, "GPU": 8.0}
    # Colocated (the default), the vLLM actor is placed beside Train rank 0, on its GPUs.
    data["resources"] = {"generator_cpus": 4}
    colocated = grid.expand(grid.load_grid(write(tmp_path, data)))[0].resources
    assert colocated.bundles() == [{"CPU": 0.25}]
    assert colocated.held() == {"CPU": 4.25}
    assert colocated.separate() == res


def test_a_grid_on_this_one_machines_ray_plans_with_its_memory():
    import ray

    from collapse_ray.grid.memory import local_memory_gb
    from collapse_ray.grid.tune_runner import running_cluster

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:   # its own Ray, stopped here: the tests around it check that they start none
        cluster = running_cluster()
    finally:
        ray.shutdown()
    assert cluster["memory_gb"] == pytest.approx(local_memory_gb()) and cluster["CPU"] == 2


def test_resume_without_an_earlier_grid_says_so_before_starting_ray(tmp_path):
    import ray

    config = write(tmp_path, with_change("base.output_dir", str(tmp_path / "runs")))
    with pytest.raises(GridError, match="--resume: no grid state at .*small; run without --resume"):
        grid.main(grid_args(config, resume=True))
    assert not ray.is_initialized()
