"""The grid YAML: its schema and validation, with config.py's loader and checks.

    name: <grid name>              one MLflow experiment and one Tune run per grid
    base: <experiment config>      a mapping, or a path to an experiment YAML (relative to this file)
    grid:                          the axes; one left out is the base config's single value
      models: [hub id | path | {name_or_path, label, tiny, resources, overrides}]
      tasks: [name | {name, data_path}]
      regimes: [name | {name, alpha}]
      seeds: [int]
      mitigations: {label: mitigation settings}
    resources: {driver_cpus, generator_cpus, colocate}
    tune: {max_concurrent_trials, max_failures, storage_path}
    cluster: {cpus, gpus, gpus_per_node}   the cluster to plan for (default: the running one)

Every error names its field (``grid.regimes[1].alpha: ...``), before any compute.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


from collapse_ray.config import (TINY_MODEL, ConfigError, ExperimentConfig, MitigationConfig, ModelConfig,
                                 TaskConfig, build_dataclass, check_data_path, check_model, check_seed,
                                 config_from_dict, read_yaml_mapping, require)
from collapse_ray.labels import short_model_name
from collapse_ray.path_rules import check_path_text
from collapse_ray.regimes import Regime, parse_regime
from collapse_ray.typed import coerce


@dataclass
class ModelResources:
    train_workers: int = 1           # the trial's Ray Train worker group (training.backend: ray)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int | None = None    # DeepSpeed ZeRO stage; None: chosen by model size
    tensor_parallel: int = 1         # vLLM tensor_parallel_size (GPUs for the generator)


@dataclass
class ModelEntry:
    name_or_path: str
    label: str                       # the model's part of trial names
    tiny: dict | None                # model.tiny settings (name_or_path: tiny)
    resources: ModelResources
    overrides: dict                  # partial experiment config merged into base for this model


@dataclass
class GridResources:
    # CPUs of the trial driver's bundle; None: 1 when the driver computes (local training or HF
    # generation run in its process), else 0.25 (it only orchestrates Ray Train and vLLM).
    driver_cpus: float | None = None
    generator_cpus: float = 1.0      # the vLLM actor's CPUs
    # On GPU, vLLM sleeps on its trial's Train workers' GPUs while they train instead of holding
    # GPUs of its own (backends.py, "GPU colocation"); no effect on CPU or without vLLM.
    colocate: bool = True


@dataclass
class TuneSettings:
    max_concurrent_trials: int | None = None   # None: what fits (plan.py); on CPUs the fastest of it (estimate.py)
    max_failures: int = 2                      # retries of a failed trial
    storage_path: str | None = None            # Tune's state; None: <base.output_dir>/_tune


@dataclass
class ClusterSize:
    """The cluster a grid is planned for (an autoscaling cluster's full size); without it the
    plan uses the running cluster (ray.cluster_resources()), or for a dry-run this machine."""
    cpus: float = 0.0
    gpus: float = 0.0
    gpus_per_node: float | None = None   # lets the planner check that a colocated engine fits one node


@dataclass
class GridConfig:
    name: str
    base: dict                       # an ExperimentConfig as a mapping (validated)
    models: list[ModelEntry]
    tasks: list[TaskConfig]
    regimes: list[Regime]
    seeds: list[int]
    mitigations: dict[str, MitigationConfig]
    resources: GridResources = field(default_factory=GridResources)
    tune: TuneSettings = field(default_factory=TuneSettings)
    cluster: ClusterSize | None = None


# Fields of a trial's config that the grid writes from its axes, which a model's overrides cannot set.
SET_PER_TRIAL = frozenset({"name", "seed", "task", "regime", "mitigation"})

# Upper ends of the grid's numeric fields, far past any cluster (config.UPPER_BOUNDS holds the
# experiment's): a typo of extra zeros fails in the dry-run, not in the planner or in Ray.
GRID_UPPER_BOUNDS: dict[type, dict[str, int]] = {
    ModelResources: {"train_workers": 100_000, "cpus_per_worker": 4096, "gpus_per_worker": 64, "tensor_parallel": 1024},
    GridResources: {"driver_cpus": 4096, "generator_cpus": 4096},
    TuneSettings: {"max_concurrent_trials": 100_000, "max_failures": 10_000},
    ClusterSize: {"cpus": 10**7, "gpus": 10**6, "gpus_per_node": 1024},
}


def _check_upper_bounds(section: Any, where: str) -> None:
    for name, most in GRID_UPPER_BOUNDS[type(section)].items():
        value = getattr(section, name)
        require(value is None or value <= most, f"{where}.{name}", f"must be at most {most:,}, got {value}")


# The YAML's shapes, read by config.build_dataclass (unknown and missing fields name themselves).
@dataclass
class _GridFile:
    name: str
    base: Any
    grid: Any
    resources: GridResources = field(default_factory=GridResources)
    tune: TuneSettings = field(default_factory=TuneSettings)
    cluster: ClusterSize | None = None


@dataclass
class _Axes:
    models: Any = None
    tasks: Any = None
    regimes: Any = None
    seeds: Any = None
    mitigations: Any = None


@dataclass
class _ModelItem:
    name_or_path: str
    label: str | None = None
    tiny: dict | None = None
    resources: ModelResources = field(default_factory=ModelResources)
    overrides: dict | None = None


def load_grid(path: str | os.PathLike, missing_tasks_ok: bool = False) -> GridConfig:
    """Read and validate a grid YAML; every error names its field. ``missing_tasks_ok`` lets a
    dry-run plan the project's own tasks where this install cannot load them."""
    path = Path(path)
    file = build_dataclass(_GridFile, _present(read_yaml_mapping(path, "grid config file")), "")
    require(re.fullmatch(r"[A-Za-z0-9._-]+", file.name) is not None, "name",
            f"must be a non-empty string of letters, digits, '.', '_' or '-', got {file.name!r}")
    base = _base(file.base, path, file.name)
    with_prefix("base", lambda: validate_experiment(base, missing_tasks_ok))

    require(isinstance(file.grid, dict), "grid", "must be a mapping of axes")
    axes = build_dataclass(_Axes, _present(file.grid), "grid")
    grid = GridConfig(   # an axis left out is the base config's single value
        name=file.name, base=base,
        models=_axis(axes.models, "models", {"name_or_path": TINY_MODEL, **base.get("model", {})}, _model_entry),
        tasks=_axis(axes.tasks, "tasks", base.get("task", {}), lambda v, where: _task(v, where, missing_tasks_ok)),
        regimes=_axis(axes.regimes, "regimes", base.get("regime", {}), _regime),
        seeds=_axis(axes.seeds, "seeds", base.get("seed", 0), _seed),
        mitigations=_mitigations(axes.mitigations, base),
        resources=file.resources, tune=file.tune, cluster=file.cluster,
    )
    r, t = grid.resources, grid.tune
    _check_upper_bounds(r, "resources")
    _check_upper_bounds(t, "tune")
    if grid.cluster is not None:
        _check_upper_bounds(grid.cluster, "cluster")
    require(r.driver_cpus is None or r.driver_cpus > 0, "resources.driver_cpus",
            f"must be positive, got {r.driver_cpus}")
    require(r.generator_cpus > 0, "resources.generator_cpus", f"must be positive, got {r.generator_cpus}")
    require(t.max_concurrent_trials is None or t.max_concurrent_trials >= 1, "tune.max_concurrent_trials",
            f"must be at least 1, got {t.max_concurrent_trials}")
    require(t.max_failures >= 0, "tune.max_failures", f"must be >= 0, got {t.max_failures}")
    if t.storage_path is not None and "://" not in t.storage_path:
        check_path_text(t.storage_path, "tune.storage_path")
    if grid.cluster is not None:
        require(grid.cluster.cpus > 0, "cluster.cpus", f"must be positive, got {grid.cluster.cpus}")
        require(grid.cluster.gpus >= 0, "cluster.gpus", f"must be >= 0, got {grid.cluster.gpus}")
        per_node = grid.cluster.gpus_per_node
        require(per_node is None or 0 < per_node <= grid.cluster.gpus, "cluster.gpus_per_node",
                f"must be positive and at most cluster.gpus ({grid.cluster.gpus:g}), got {per_node}")
    return grid


def _present(data: dict) -> dict:
    """A YAML key written without a value (``tune:``) counts as left out."""
    return {k: v for k, v in data.items() if v is not None}


def _base(base: Any, grid_path: Path, grid_name: str) -> dict:
    if isinstance(base, str):  # a path to an experiment YAML, relative to the grid file
        base_path = grid_path.parent / base
        require(base_path.is_file(), "base", f"experiment config {base_path} does not exist")
        base = read_yaml_mapping(base_path, "experiment config")
    require(isinstance(base, dict), "base", "must be a mapping (an experiment config) or a path to one")
    _check_shapes(base, "base")
    base = copy.deepcopy(base)
    base.setdefault("tracking", {}).setdefault("experiment", grid_name)   # one MLflow experiment per grid
    return base


def _check_shapes(data: dict, where: str) -> None:
    """Each field of an experiment config the grid file writes (``base``, a model's ``overrides``)
    has its type, a section being a mapping, before the grid reads it: refused with the experiment
    config's own message. A section's own fields are checked with each trial's whole config."""
    for name, tp in typing.get_type_hints(ExperimentConfig).items():
        value = data.get(name)
        if name in data and not (dataclasses.is_dataclass(tp) and isinstance(value, dict)):
            with_prefix(where, lambda: coerce(tp, value, name))   # e.g. ``regime: real-only`` reads as itself


def with_prefix(prefix: str, check) -> Any:
    """``check()``, its ConfigError's field put under ``prefix`` (``base.training.lr``)."""
    try:
        return check()
    except ConfigError as e:
        raise ConfigError(f"{prefix}.{e}") from None


def _axis(values: Any, key: str, default: Any, parse) -> list:
    values = [default] if values is None else values
    require(isinstance(values, list) and len(values) > 0, f"grid.{key}", f"must be a non-empty list, got {values!r}")
    parsed = [parse(v, f"grid.{key}[{i}]") for i, v in enumerate(values)]
    for i, value in enumerate(parsed):   # the same value twice would make two trials of one name
        first = parsed.index(value)
        require(first == i, f"grid.{key}[{i}]", f"repeats grid.{key}[{first}] ({values[i]!r}); list each value once")
    return parsed


def validate_experiment(data: dict, missing_tasks_ok: bool) -> ExperimentConfig:
    """Validate a full experiment config; with ``missing_tasks_ok``, a task this install lacks is
    checked as if it were a known one (everything else is still checked)."""
    from collapse_ray.tasks import registered_tasks

    task = (data.get("task") or {}).get("name", TaskConfig.name)
    if missing_tasks_ok and is_builtin_task(task) and task not in registered_tasks():
        data = {**data, "task": {**data.get("task", {}), "name": registered_tasks()[0], "options": None}}
    return config_from_dict(data)


def _model_entry(value: Any, where: str) -> ModelEntry:
    if isinstance(value, str):
        value = {"name_or_path": value}
    require(isinstance(value, dict), where, "must be a hub id / path, or a mapping with name_or_path")
    item = build_dataclass(_ModelItem, _present(value), where)
    model_data = {"name_or_path": item.name_or_path, **({"tiny": item.tiny} if item.tiny is not None else {})}
    model = with_prefix(where, lambda: _checked_model(model_data))
    label = item.label or short_model_name(model.name_or_path)
    require(re.fullmatch(r"[a-z0-9.-]+", label) is not None, f"{where}.label",
            f"must be lowercase letters, digits, '.' or '-', got {label!r}")
    res, w = item.resources, f"{where}.resources"
    _check_upper_bounds(res, w)
    require(res.train_workers >= 1, f"{w}.train_workers", f"must be at least 1, got {res.train_workers}")
    require(res.cpus_per_worker >= 0, f"{w}.cpus_per_worker", f"must be >= 0, got {res.cpus_per_worker}")
    require(res.gpus_per_worker >= 0, f"{w}.gpus_per_worker", f"must be >= 0, got {res.gpus_per_worker}")
    require(res.cpus_per_worker + res.gpus_per_worker > 0, w, "a Train worker must reserve some CPU or GPU")
    require(res.tensor_parallel >= 1, f"{w}.tensor_parallel", f"must be at least 1, got {res.tensor_parallel}")
    require(res.zero_stage is None or res.zero_stage in (0, 1, 2, 3), f"{w}.zero_stage",
            f"must be 0, 1, 2 or 3, got {res.zero_stage}")
    require(res.zero_stage is None or res.strategy == "deepspeed", f"{w}.zero_stage",
            "only applies to strategy: deepspeed")
    require(res.tensor_parallel == 1 or res.gpus_per_worker > 0, f"{w}.tensor_parallel",
            "tensor parallelism needs GPUs (gpus_per_worker > 0)")
    overrides = {} if item.overrides is None else item.overrides   # a mapping: the type check saw to it
    require("model" not in overrides, f"{where}.overrides.model", "set the model with name_or_path / tiny")
    per_trial = sorted(SET_PER_TRIAL & set(overrides))
    if per_trial:
        raise ConfigError(f"{where}.overrides.{per_trial[0]}: "
                          "each trial's own comes from the grid (its name from the axes, the rest from grid.seeds, grid.tasks, "
                          "grid.regimes and grid.mitigations); an override of it would be ignored")
    _check_shapes(overrides, f"{where}.overrides")
    return ModelEntry(model.name_or_path, label, item.tiny, res, overrides)


def _checked_model(data: dict) -> ModelConfig:
    model = build_dataclass(ModelConfig, data, "model")
    check_model(model)
    return model



def _task(value: Any, where: str, missing_ok: bool) -> TaskConfig:
    from collapse_ray.tasks import registered_tasks

    task = build_dataclass(TaskConfig, {"name": value} if isinstance(value, str) else value, where)
    known = registered_tasks()
    require(task.name in known or (missing_ok and is_builtin_task(task.name)), f"{where}.name",
            f"unknown task {task.name!r}; known tasks: {', '.join(known)}")
    if task.name in known:
        check_data_path(task.name, task.data_path, f"{where}.data_path")
    return task


def is_builtin_task(name: Any) -> bool:
    """One of the project's own tasks (which a dry-run may plan even where it cannot load)."""
    from collapse_ray.tasks import unavailable_tasks

    return name in unavailable_tasks()


def _regime(value: Any, where: str) -> Regime:
    return parse_regime(value, where)


def _seed(value: Any, where: str) -> int:
    require(isinstance(value, int) and not isinstance(value, bool), where, f"must be an integer, got {value!r}")
    check_seed(value, where)
    return value


def _mitigations(value: Any, base: dict) -> dict[str, MitigationConfig]:
    if value is None:
        settings = base.get("mitigation")
        return {"none": build_dataclass(MitigationConfig, {} if settings is None else settings, "base.mitigation")}
    require(isinstance(value, dict) and len(value) > 0, "grid.mitigations",
            "must be a non-empty mapping: label -> mitigation settings")
    out = {}
    for label, settings in value.items():
        where = f"grid.mitigations.{label}"
        require(isinstance(label, str) and re.fullmatch(r"[a-z0-9.+-]+", label) is not None, where,
                "labels must be lowercase letters, digits, '.', '+' or '-'")
        out[label] = build_dataclass(MitigationConfig, {} if settings is None else settings, where)
    return out
