"""The grid on Ray Tune: one trial per model x task x regime x seed x mitigation.

    grid YAML ──load_grid──> GridConfig ──expand──> [TrialSpec]   (validated before any compute)
    tune.Tuner(with_resources(trial_driver, placement group per trial), max_concurrent_trials)
      trial_driver: build the trial's trainer and generator, run_trial(report=tune.report)

Resources. A trial's placement group holds what the trial keeps for its whole life:

    bundle 0         the trial driver (this function; a fraction of a CPU when it only orchestrates)
    bundle 1         the vLLM generator actor (generator.backend: vllm)
    bundles 2..2+tp  one GPU each for vLLM's tensor-parallel workers (tensor_parallel > 1)

Ray Train V2 places its workers in a placement group of its own, created by each
``TorchTrainer.fit``, so they are *not* in the trial's group (reserving them there too would
count them twice). Concurrency is what keeps trials from deadlocking: with ``n`` trials running,
the groups they hold plus the largest Train run must fit the cluster, so some trial can always
train and every trial progresses:

    n = max { n : sum of the n largest held groups + largest Train run <= cluster }, per resource

Resume. A trial's on-disk state (trial_state.py) is the truth: a retried or restored trial calls
``run_trial`` again, which continues at the first unfinished generation and never logs an MLflow
step twice. Tune's checkpoint is a small pointer to that state.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ray.tune import Callback

from collapse_ray.config import (TINY_MODEL, ConfigError, read_yaml_mapping, ExperimentConfig, MitigationConfig,
                                 RegimeConfig, TaskConfig, _build, _check_model, check_data_path, config_from_dict)
from collapse_ray.errors import DataError, GridError

# Test hook: "<trial>:<generation>:<phase>[,...]" makes that trial's driver die (os._exit) once, at
# phase "train" (model saved, generation unfinished) or "report" (MLflow logged, Tune not told).
CRASH_ENV = "COLLAPSE_RAY_GRID_CRASH_ONCE"
TRAIN_START_TIMEOUT_S = 3600   # how long a trial's Train run waits for its workers' resources


# ---------------------------------------------------------------- the grid config

@dataclass
class ModelResources:
    train_workers: int = 1           # Ray Train workers per fit (training.backend: ray)
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


@dataclass
class TuneSettings:
    max_concurrent_trials: int | None = None   # None: derived from the cluster's resources
    max_failures: int = 2                      # retries of a failed trial
    storage_path: str | None = None            # Tune's state; None: <base.output_dir>/_tune


@dataclass
class ClusterSize:
    """The cluster a grid is planned for (an autoscaling cluster's full size); without it the
    plan uses the running cluster (ray.cluster_resources()), or for a dry-run this machine."""
    cpus: float = 0.0
    gpus: float = 0.0


@dataclass
class GridConfig:
    name: str
    base: dict                       # an ExperimentConfig as a mapping (validated)
    models: list[ModelEntry]
    tasks: list[TaskConfig]
    regimes: list[RegimeConfig]
    seeds: list[int]
    mitigations: dict[str, MitigationConfig]
    resources: GridResources = field(default_factory=GridResources)
    tune: TuneSettings = field(default_factory=TuneSettings)
    cluster: ClusterSize | None = None


def load_grid(path: str | os.PathLike, missing_tasks_ok: bool = False) -> GridConfig:
    """Read and validate a grid YAML; every error names its field. ``missing_tasks_ok`` lets a
    dry-run plan the project's own tasks where this install cannot load them."""
    path = Path(path)
    data = read_yaml_mapping(path, "grid config file")
    allowed = {"name", "base", "grid", "resources", "tune", "cluster"}
    _no_unknown(data, allowed, "")
    for key in ("name", "base", "grid"):
        _require(key in data, key, "is required")
    name = data["name"]
    _require(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9._-]+", name or "") is not None, "name",
             f"must be a non-empty string of letters, digits, '.', '_' or '-', got {name!r}")

    base = data["base"]
    if isinstance(base, str):  # a path to an experiment YAML, relative to the grid file
        base_path = path.parent / base
        _require(base_path.is_file(), "base", f"experiment config {base_path} does not exist")
        base = read_yaml_mapping(base_path, "experiment config")
    _require(isinstance(base, dict), "base", "must be a mapping (an experiment config) or a path to one")
    base = copy.deepcopy(base)
    base.setdefault("tracking", {}).setdefault("experiment", name)   # one MLflow experiment per grid
    _with_prefix("base", lambda: _validate_experiment(base, missing_tasks_ok))

    axes = data["grid"]
    _require(isinstance(axes, dict), "grid", "must be a mapping of axes")
    _no_unknown(axes, {"models", "tasks", "regimes", "seeds", "mitigations"}, "grid")
    grid = GridConfig(   # an axis left out is the base config's single value
        name=name, base=base,
        models=_axis(axes, "models", {"name_or_path": TINY_MODEL, **base.get("model", {})}, _model_entry),
        tasks=_axis(axes, "tasks", base.get("task", {}), lambda v, where: _task(v, where, missing_tasks_ok)),
        regimes=_axis(axes, "regimes", base.get("regime", {}), _regime),
        seeds=_axis(axes, "seeds", base.get("seed", 0), _seed),
        mitigations=_mitigations(axes.get("mitigations"), base),
        resources=_build(GridResources, data.get("resources") or {}, "resources"),
        tune=_build(TuneSettings, data.get("tune") or {}, "tune"),
        cluster=_build(ClusterSize, data["cluster"], "cluster") if data.get("cluster") is not None else None,
    )
    r, t = grid.resources, grid.tune
    _require(r.driver_cpus is None or r.driver_cpus > 0, "resources.driver_cpus",
             f"must be positive, got {r.driver_cpus}")
    _require(r.generator_cpus > 0, "resources.generator_cpus", f"must be positive, got {r.generator_cpus}")
    _require(t.max_concurrent_trials is None or t.max_concurrent_trials >= 1, "tune.max_concurrent_trials",
             f"must be at least 1, got {t.max_concurrent_trials}")
    _require(t.max_failures >= 0, "tune.max_failures", f"must be >= 0, got {t.max_failures}")
    if grid.cluster is not None:
        _require(grid.cluster.cpus > 0, "cluster.cpus", f"must be positive, got {grid.cluster.cpus}")
        _require(grid.cluster.gpus >= 0, "cluster.gpus", f"must be >= 0, got {grid.cluster.gpus}")
    return grid


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def _with_prefix(prefix: str, check) -> Any:
    try:
        return check()
    except ConfigError as e:
        raise ConfigError(f"{prefix}.{e}") from None


def _no_unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        field_name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{field_name}: unknown field; allowed fields: {', '.join(sorted(allowed))}")


def _axis(axes: dict, key: str, default: Any, parse) -> list:
    values = axes.get(key, [default])
    _require(isinstance(values, list) and len(values) > 0, f"grid.{key}", f"must be a non-empty list, got {values!r}")
    parsed = [parse(v, f"grid.{key}[{i}]") for i, v in enumerate(values)]
    for i, value in enumerate(parsed):   # the same value twice would make two trials of one name
        first = parsed.index(value)
        _require(first == i, f"grid.{key}[{i}]", f"repeats grid.{key}[{first}] ({values[i]!r}); list each value once")
    return parsed


def _validate_experiment(data: dict, missing_tasks_ok: bool) -> ExperimentConfig:
    """Validate a full experiment config; with ``missing_tasks_ok``, a task this install lacks is
    checked as if it were a known one (everything else is still checked)."""
    from collapse_ray.tasks import registered_tasks

    task = (data.get("task") or {}).get("name", TaskConfig.name)
    if missing_tasks_ok and _is_builtin_task(task) and task not in registered_tasks():
        data = {**data, "task": {**data.get("task", {}), "name": registered_tasks()[0]}}
    return config_from_dict(data)


def _model_entry(value: Any, where: str) -> ModelEntry:
    if isinstance(value, str):
        value = {"name_or_path": value}
    _require(isinstance(value, dict), where, "must be a hub id / path, or a mapping with name_or_path")
    _no_unknown(value, {"name_or_path", "label", "tiny", "resources", "overrides"}, where)
    _require(isinstance(value.get("name_or_path"), str), f"{where}.name_or_path", "is required (a string)")
    model_data = {"name_or_path": value["name_or_path"], **({"tiny": value["tiny"]} if "tiny" in value else {})}
    model = _with_prefix(where, lambda: _build_model(model_data))
    label = value.get("label") or _short_name(model.name_or_path)
    _require(isinstance(label, str) and re.fullmatch(r"[a-z0-9.-]+", label) is not None, f"{where}.label",
             f"must be lowercase letters, digits, '.' or '-', got {label!r}")
    res = _build(ModelResources, value.get("resources") or {}, f"{where}.resources")
    w = f"{where}.resources"
    _require(res.train_workers >= 1, f"{w}.train_workers", f"must be at least 1, got {res.train_workers}")
    _require(res.cpus_per_worker >= 0, f"{w}.cpus_per_worker", f"must be >= 0, got {res.cpus_per_worker}")
    _require(res.gpus_per_worker >= 0, f"{w}.gpus_per_worker", f"must be >= 0, got {res.gpus_per_worker}")
    _require(res.cpus_per_worker + res.gpus_per_worker > 0, w, "a Train worker must reserve some CPU or GPU")
    _require(res.tensor_parallel >= 1, f"{w}.tensor_parallel", f"must be at least 1, got {res.tensor_parallel}")
    _require(res.zero_stage is None or res.zero_stage in (0, 1, 2, 3), f"{w}.zero_stage",
             f"must be 0, 1, 2 or 3, got {res.zero_stage}")
    _require(res.zero_stage is None or res.strategy == "deepspeed", f"{w}.zero_stage",
             "only applies to strategy: deepspeed")
    _require(res.tensor_parallel == 1 or res.gpus_per_worker > 0, f"{w}.tensor_parallel",
             "tensor parallelism needs GPUs (gpus_per_worker > 0)")
    overrides = value.get("overrides") or {}
    _require(isinstance(overrides, dict), f"{where}.overrides", "must be a mapping (part of an experiment config)")
    _require("model" not in overrides, f"{where}.overrides.model", "set the model with name_or_path / tiny")
    return ModelEntry(model.name_or_path, label, value.get("tiny"), res, overrides)


def _build_model(data: dict):
    from collapse_ray.config import ModelConfig

    model = _build(ModelConfig, data, "model")
    _check_model(model)
    return model


def _short_name(name_or_path: str) -> str:
    """'meta-llama/Llama-3.2-1B' -> 'llama-3.2-1b'; a local directory -> its name."""
    tail = Path(name_or_path.rstrip("/")).name or name_or_path
    return re.sub(r"[^a-z0-9.-]+", "-", tail.lower()).strip("-") or "model"


def _task(value: Any, where: str, missing_ok: bool) -> TaskConfig:
    from collapse_ray.tasks import registered_tasks

    task = _build(TaskConfig, {"name": value} if isinstance(value, str) else value, where)
    known = registered_tasks()
    _require(task.name in known or (missing_ok and _is_builtin_task(task.name)), f"{where}.name",
             f"unknown task {task.name!r}; known tasks: {', '.join(known)}")
    if task.name in known:
        check_data_path(task.name, task.data_path, f"{where}.data_path")
    return task


def _is_builtin_task(name: Any) -> bool:
    """One of the project's own tasks (which a dry-run may plan even where it cannot load)."""
    from collapse_ray.tasks import _BUILTIN_MODULES

    return name in _BUILTIN_MODULES


def _regime(value: Any, where: str) -> RegimeConfig:
    regime = _build(RegimeConfig, {"name": value} if isinstance(value, str) else value, where)
    _require(0.0 <= regime.alpha <= 1.0, f"{where}.alpha", f"must be in [0, 1], got {regime.alpha}")
    return regime


def _seed(value: Any, where: str) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, where,
             f"must be a non-negative integer, got {value!r}")
    return value


def _mitigations(value: Any, base: dict) -> dict[str, MitigationConfig]:
    if value is None:
        return {"none": _build(MitigationConfig, base.get("mitigation") or {}, "base.mitigation")}
    _require(isinstance(value, dict) and len(value) > 0, "grid.mitigations",
             "must be a non-empty mapping: label -> mitigation settings")
    out = {}
    for label, settings in value.items():
        where = f"grid.mitigations.{label}"
        _require(isinstance(label, str) and re.fullmatch(r"[a-z0-9.+-]+", label) is not None, where,
                 "labels must be lowercase letters, digits, '.', '+' or '-'")
        out[label] = _build(MitigationConfig, settings or {}, where)
    return out


# ---------------------------------------------------------------- trials and their resources

@dataclass(frozen=True)
class TrialResources:
    driver: dict[str, float]               # bundle 0: the trial driver
    generator: dict[str, float] | None     # bundle 1: the vLLM actor (None: HF generate in the driver)
    tp_gpus: int                           # bundles 2..: one GPU each for vLLM's TP workers
    train_workers: int                     # Ray Train workers (0: training in the driver)
    per_worker: dict[str, float]
    strategy: str
    zero_stage: int | None
    tensor_parallel: int

    def bundles(self) -> list[dict[str, float]]:
        extra = [self.generator] if self.generator else []
        return [self.driver, *extra, *([{"GPU": 1.0}] * self.tp_gpus)]

    def held(self) -> dict[str, float]:
        """What the trial's placement group keeps reserved while the trial runs."""
        return _add(*self.bundles())

    def training(self) -> dict[str, float]:
        """What one Train run reserves (in its own placement group) while it trains."""
        return {k: v * self.train_workers for k, v in self.per_worker.items() if v}


@dataclass(frozen=True)
class TrialSpec:
    name: str
    model_label: str
    config: dict                           # the trial's ExperimentConfig as a mapping
    resources: TrialResources


def _add(*dicts: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            if v:
                out[k] = out.get(k, 0.0) + v
    return out


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def regime_label(regime: RegimeConfig) -> str:
    return f"hybrid{regime.alpha:g}" if regime.name == "hybrid" else regime.name


def expand(grid: GridConfig, missing_tasks_ok: bool = False, cwd: str | os.PathLike | None = None) -> list[TrialSpec]:
    """Every trial of the grid, in a fixed order, each validated. Relative paths are resolved
    against ``cwd`` (Tune runs each trial in a directory of its own)."""
    trials, seen = [], {}
    axes = itertools.product(grid.models, grid.tasks, grid.regimes, grid.seeds, grid.mitigations.items())
    for model, task, regime, seed, (mitigation_label, mitigation) in axes:
        name = f"{model.label}_{task.name}_{regime_label(regime)}_s{seed}_{mitigation_label}"
        if name in seen:
            axis = _clashing_axis(seen[name], (model, task, regime, seed, mitigation_label))
            raise ConfigError(f"grid.{axis}: two trials would both be named {name!r}: two entries of "
                              f"grid.{axis} differ but get one label; {_CLASH_FIX[axis]}")
        seen[name] = (model, task, regime, seed, mitigation_label)
        data = _deep_merge(grid.base, model.overrides)
        data.update(name=name, seed=seed, task=dataclasses.asdict(task), regime=dataclasses.asdict(regime),
                    mitigation=dataclasses.asdict(mitigation))
        data["model"] = _deep_merge(data.get("model", {}), {"name_or_path": model.name_or_path,
                                                            **({"tiny": model.tiny} if model.tiny else {})})
        data = _absolute_paths(data, Path(cwd or os.getcwd()))
        cfg = _with_prefix(f"trial {name}", lambda: _validate_experiment(data, missing_tasks_ok))
        # data["task"]: the task as written (a dry-run validates a task it cannot load as a known one)
        config = dataclasses.asdict(cfg) | {"task": data["task"]}
        trials.append(TrialSpec(name, model.label, config, _resources(cfg, model.resources, grid.resources)))
    return trials


_AXES = ("models", "tasks", "regimes", "seeds", "mitigations")
_CLASH_FIX = {"models": "give the models distinct labels (grid.models[].label)",
              "tasks": "one task name may appear once (its data_path is part of the task, not the name)",
              "regimes": "use alphas that differ in their first 6 significant digits",
              "seeds": "list each seed once", "mitigations": "give each mitigation its own label"}


def _clashing_axis(first: tuple, second: tuple) -> str:
    """Which axis holds two different values behind one trial name."""
    return next((axis for axis, a, b in zip(_AXES, first, second) if a != b), "models")


def _absolute_paths(data: dict, cwd: Path) -> dict:
    data = copy.deepcopy(data)

    def absolute(p: str) -> str:
        return str((cwd / Path(p).expanduser()).resolve()) if not Path(p).expanduser().is_absolute() else p

    data["output_dir"] = absolute(data.get("output_dir", ExperimentConfig.output_dir))
    model = data.setdefault("model", {})
    ref = model.get("name_or_path", TINY_MODEL)
    if ref != TINY_MODEL and (ref.startswith((".", "/", "~")) or Path(ref).exists()):
        model["name_or_path"] = absolute(ref)
    tiny = model.setdefault("tiny", {})
    tiny["cache_dir"] = absolute(tiny.get("cache_dir", ".cache/collapse_ray"))
    if (data.get("task") or {}).get("data_path"):
        data["task"]["data_path"] = absolute(data["task"]["data_path"])
    tracking = data.setdefault("tracking", {})
    uri = tracking.get("uri", "sqlite:///mlflow.db")
    if "${DRIVER_IP}" in uri:
        uri = uri.replace("${DRIVER_IP}", _driver_ip())
    uri = os.path.expandvars(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + absolute(uri[len("sqlite:///"):])
    elif "://" not in uri:   # a plain directory (MLflow's file store)
        uri = absolute(uri)
    tracking["uri"] = uri
    return data


def _driver_ip() -> str:
    """The IP of the machine running ``collapse-ray grid`` (the head node under ``ray job submit``)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))   # no packet is sent; picks the outgoing interface
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _resources(cfg: ExperimentConfig, model: ModelResources, grid: GridResources) -> TrialResources:
    ray_train = cfg.training.backend == "ray"
    vllm = cfg.generator.backend == "vllm"
    driver_computes = not ray_train or not vllm
    driver_cpus = grid.driver_cpus if grid.driver_cpus is not None else (1.0 if driver_computes else 0.25)
    gpu = model.gpus_per_worker > 0
    tp = model.tensor_parallel
    generator = None
    if vllm:
        generator = {"CPU": grid.generator_cpus, "GPU": 1.0 if gpu and tp == 1 else 0.0}
    return TrialResources(
        driver={"CPU": driver_cpus},
        generator={k: v for k, v in generator.items() if v} if generator else None,
        tp_gpus=tp if vllm and gpu and tp > 1 else 0,
        train_workers=model.train_workers if ray_train else 0,
        per_worker={"CPU": model.cpus_per_worker, "GPU": model.gpus_per_worker},
        strategy=model.strategy if ray_train else "in-process",
        zero_stage=model.zero_stage,
        tensor_parallel=tp,
    )


# ---------------------------------------------------------------- planning: concurrency

@dataclass(frozen=True)
class Plan:
    cluster: dict[str, float]
    cluster_source: str
    concurrency: int
    reason: str


def local_resources() -> dict[str, float]:
    """What a local ``ray.init()`` would find here, without starting Ray."""
    import glob

    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    n_gpus = len([g for g in gpus.split(",") if g.strip()]) if gpus is not None else len(glob.glob("/dev/nvidia[0-9]*"))
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(n_gpus)}


def plan(trials: list[TrialSpec], cluster: dict[str, float], source: str,
         requested: int | None = None) -> Plan:
    """How many trials may run at once without starving each other (module docstring)."""
    for t in trials:
        need = _add(t.resources.held(), t.resources.training())
        short = {k: v for k, v in need.items() if v > cluster.get(k, 0.0) + 1e-9}
        if short:
            have = ", ".join(f"{cluster.get(k, 0.0):g} {k}" for k in short)
            raise ConfigError(f"trial {t.name} needs {_fmt_res(need)} but the cluster ({source}) has {have}")
    bound, reason = len(trials), f"all {len(trials)} trials fit at once"
    for r in sorted({k for t in trials for k in _add(t.resources.held(), t.resources.training())}):
        held = sorted((t.resources.held().get(r, 0.0) for t in trials), reverse=True)
        train = max(t.resources.training().get(r, 0.0) for t in trials)
        n, total = 0, train
        while n < len(held) and total + held[n] <= cluster.get(r, 0.0) + 1e-9:
            total += held[n]
            n += 1
        if n < bound:
            bound, reason = n, (f"{r}: {n} trial(s) x up to {held[0]:g} held + {train:g} for one Train "
                                f"run <= {cluster.get(r, 0.0):g}")
    bound = max(1, bound)   # each trial fits alone (checked above): one at a time cannot deadlock
    if requested is not None:
        return Plan(cluster, source, requested, f"tune.max_concurrent_trials (derived bound: {bound}; {reason})")
    return Plan(cluster, source, bound, reason)


def _fmt_res(res: dict[str, float]) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in sorted(res.items()) if v) or "nothing"


def describe(grid: GridConfig, trials: list[TrialSpec], p: Plan, missing_tasks: list[str]) -> str:
    """The dry-run's report: every trial with what it reserves, then the totals."""
    cfg0 = trials[0].config
    lines = [
        f"grid {grid.name}: {len(trials)} trials = {len(grid.models)} models x {len(grid.tasks)} tasks x "
        f"{len(grid.regimes)} regimes x {len(grid.seeds)} seeds x {len(grid.mitigations)} mitigations, "
        f"{cfg0['generations'] + 1} generations each (0..{cfg0['generations']})",
        f"MLflow: {cfg0['tracking']['uri']} experiment {cfg0['tracking']['experiment']!r}; "
        f"trial state: {cfg0['output_dir']}",
    ]
    if missing_tasks:
        lines.append(f"note: task(s) {', '.join(missing_tasks)} cannot be loaded in this install; "
                     f"planned anyway, a real run will refuse them")
    rows = [("trial", "driver", "generator", "training")]
    for t in trials:
        r = t.resources
        gen = "HF generate in the driver" if r.generator is None else \
            f"vLLM {_fmt_res(_add(r.generator, {'GPU': float(r.tp_gpus)}))} (TP {r.tensor_parallel})"
        if r.train_workers:
            zero = f" ZeRO-{r.zero_stage}" if r.strategy == "deepspeed" and r.zero_stage is not None else ""
            train = f"Ray Train {r.train_workers} x ({_fmt_res(r.per_worker)}) {r.strategy}{zero}"
        else:
            train = "in the driver process"
        rows.append((t.name, _fmt_res(r.driver), gen, train))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += [""] + [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]

    lines += ["", "per model, one trial holds (driver + vLLM, for its whole life) and trains on (Ray Train, "
                  "during each generation's fit):"]
    width = max(len(t.model_label) for t in trials)
    for label in dict.fromkeys(t.model_label for t in trials):
        t = next(x for x in trials if x.model_label == label)
        n = sum(x.model_label == label for x in trials)
        trains = _fmt_res(t.resources.training()) if t.resources.train_workers else "the driver's CPU"
        lines.append(f"  {label:<{width}} {n:>4} trials  holds {_fmt_res(t.resources.held()):<20}  "
                     f"trains on {trains}")
    needs = [_add(t.resources.held(), t.resources.training()) for t in trials]
    peak = {k: max(need.get(k, 0.0) for need in needs) for k in ("CPU", "GPU")}
    summed = _add(*needs)
    lines += [
        "",
        f"totals: {len(trials)} trials; one trial needs at most {peak['CPU']:g} CPUs and {peak['GPU']:g} GPUs; "
        f"summed over all trials {summed.get('CPU', 0):g} CPUs and {summed.get('GPU', 0):g} GPUs",
        f"cluster ({p.cluster_source}): {p.cluster.get('CPU', 0):g} CPUs, {p.cluster.get('GPU', 0):g} GPUs "
        f"-> max_concurrent_trials = {p.concurrency} ({p.reason})",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- the trial driver (Tune trainable)

def trial_driver(params: dict, specs: dict[str, dict]) -> None:
    """One Tune trial: run (or resume) the trial's recursive loop, reporting each generation."""
    import ray
    from ray import tune

    from collapse_ray.loop import run_trial

    if params["trial"] not in specs:
        raise ValueError(f"trial {params['trial']} is no longer in the grid config; restore the config "
                         f"it was started with, or start the grid afresh")
    spec = specs[params["trial"]]
    cfg = config_from_dict(spec["config"])
    res = TrialResources(**spec["resources"])
    state_dir = Path(cfg.output_dir) / cfg.name
    say = _say(cfg.name)
    previous = tune.get_checkpoint()
    if previous is not None:
        with previous.as_directory() as d:
            say(f"restarted by Tune after generation {json.loads(Path(d, 'pointer.json').read_text())['generation']}; "
                f"continuing from the state in {state_dir}")
    # The grid's plan guarantees every Train run fits the cluster once others finish: wait for a
    # turn instead of Train V2's default of giving up (and retrying) every 60 s.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(TRAIN_START_TIMEOUT_S))
    crash = _CrashOnce.from_env(cfg.name, state_dir)
    pg = ray.util.get_current_placement_group()

    def report(generation: int, metrics: dict, gen_dir: Path) -> None:
        crash.at(generation, "report")
        with tempfile.TemporaryDirectory() as d:
            Path(d, "pointer.json").write_text(json.dumps(
                {"trial_dir": str(state_dir), "generation": generation, "gen_dir": str(gen_dir),
                 "driver_node": ray.get_runtime_context().get_node_id()}))
            tune.report({"generation": generation, **metrics}, checkpoint=tune.Checkpoint.from_directory(d))

    trainer = _CrashingTrainer(build_trainer(cfg, res, say), crash)
    run_trial(cfg, trainer=trainer, generator=build_generator(cfg, res, pg), report=report)


def build_trainer(cfg: ExperimentConfig, res: TrialResources, say):
    """The trial's trainer: in the driver's process, or Ray Train workers of the reserved shape."""
    if cfg.training.backend == "ray":
        from collapse_ray.train.ray_trainer import RayTrainer

        use_gpu = res.per_worker.get("GPU", 0) > 0
        return RayTrainer(cfg.training, num_workers=res.train_workers, use_gpu=use_gpu,
                          resources_per_worker={k: v for k, v in res.per_worker.items() if v},
                          strategy=res.strategy, zero_stage=res.zero_stage, progress=say)
    from collapse_ray.train.local import LocalTrainer

    return LocalTrainer(cfg.training, progress=say)


def build_generator(cfg: ExperimentConfig, res: TrialResources, pg):
    """The trial's generator: HF in the driver, or a vLLM actor in the bundles the trial reserved."""
    if cfg.generator.backend == "vllm":
        from collapse_ray.generate.vllm_actor import RayVLLMGenerator

        tp_bundles = list(range(2, 2 + res.tp_gpus)) if res.tp_gpus else None
        return RayVLLMGenerator(num_cpus=res.generator.get("CPU", 0), num_gpus=res.generator.get("GPU", 0),
                                placement_group=pg, bundle_index=1 if pg is not None else -1,
                                bundle_indices=tp_bundles, tensor_parallel_size=res.tensor_parallel,
                                max_model_len=_max_model_len(cfg),
                                enable_lora=cfg.training.method == "lora")
    from collapse_ray.generate.hf import HFGenerator

    return HFGenerator(batch_size=cfg.generator.batch_size)


def _max_model_len(cfg: ExperimentConfig) -> int:
    """Room for a training-length prompt and the completion, within the model's own context
    (vLLM refuses a longer one; the actor cuts longer prompts from the left)."""
    from collapse_ray.base_model import resolve_model_path

    need = cfg.training.max_length + cfg.sizes.max_new_tokens
    config = Path(resolve_model_path(cfg.model, progress=lambda msg: None)) / "config.json"
    if config.is_file():   # a local model (the tiny one included); a hub id is read by vLLM itself
        limit = json.loads(config.read_text()).get("max_position_embeddings")
        if limit:
            return min(need, int(limit))
    return need


def _say(name: str):
    return lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)


class _CrashOnce:
    """The test hook behind ``COLLAPSE_RAY_GRID_CRASH_ONCE``: kill this driver once, hard."""

    def __init__(self, generation: int | None, phase: str | None, marker: Path | None):
        self.generation, self.phase, self.marker = generation, phase, marker

    @classmethod
    def from_env(cls, trial: str, state_dir: Path) -> "_CrashOnce":
        """``CRASH_ENV`` holds comma-separated ``trial:generation:phase`` entries."""
        for entry in os.environ.get(CRASH_ENV, "").split(","):
            parts = entry.strip().split(":")
            if len(parts) == 3 and parts[0] == trial:
                return cls(int(parts[1]), parts[2], state_dir / f".crashed-gen{parts[1]}-{parts[2]}")
        return cls(None, None, None)

    def at(self, generation: int, phase: str) -> None:
        if (generation, phase) == (self.generation, self.phase) and not self.marker.exists():
            self.marker.write_text(f"{time.time()}\n")
            print(f"[{CRASH_ENV}] killing this trial driver at generation {generation}, phase {phase}",
                  file=sys.stderr, flush=True)
            os._exit(1)


class _CrashingTrainer:
    """Passes through to the real trainer; lets the crash hook fire after a generation's training."""

    def __init__(self, inner, crash: _CrashOnce):
        self.inner, self.crash = inner, crash

    def train(self, init, texts, out_dir, seed):
        result = self.inner.train(init, texts, out_dir, seed)
        self.crash.at(int(Path(out_dir).parent.name.removeprefix("gen_")), "train")
        return result


# ---------------------------------------------------------------- running the grid

def tune_storage(grid: GridConfig, trials: list[TrialSpec]) -> str:
    if grid.tune.storage_path:
        p = grid.tune.storage_path
        return p if "://" in p else str(Path(p).expanduser().resolve())
    return str(Path(trials[0].config["output_dir"]) / "_tune")


def run_grid(grid: GridConfig, trials: list[TrialSpec], resume: bool = False):
    """Run (or resume) the grid on the cluster ``RAY_ADDRESS`` names (``ray job submit`` sets it),
    on the one this process is connected to, or else on a local Ray started and stopped here."""
    import ray
    from ray import tune

    storage = tune_storage(grid, trials)
    path = f"{storage.rstrip('/')}/{grid.name}"
    if resume and not tune.Tuner.can_restore(path):
        raise GridError(f"--resume: no grid state at {path}; run without --resume to start the grid")
    _prepare(trials)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init()
    try:
        return _fit(grid, trials, storage, resume)
    finally:
        if started_here:
            ray.shutdown()


def _prepare(trials: list[TrialSpec]) -> None:
    """Before any trial starts: every trial's real data loads, the tracking store answers (and
    its schema and experiment exist, so concurrent trials do not race to create them), and the
    tiny base model is built, once."""
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.config import ModelConfig, SizesConfig
    from collapse_ray.tasks import get_task
    from collapse_ray.tracking import TrialTracker

    for key in sorted({json.dumps([t.config[k] for k in ("task", "seed", "sizes")], sort_keys=True) for t in trials}):
        task, seed, sizes = json.loads(key)
        try:
            get_task(task["name"]).load(task["data_path"], seed, SizesConfig(**sizes))
        except DataError as e:
            raise DataError(f"grid: task {task['name']} (seed {seed}) cannot load its data: {e}") from None
    for uri, experiment in sorted({(t.config["tracking"]["uri"], t.config["tracking"]["experiment"]) for t in trials}):
        TrialTracker(uri, experiment)
    for model in sorted({json.dumps(t.config["model"], sort_keys=True) for t in trials}):
        if json.loads(model)["name_or_path"] == TINY_MODEL:
            resolve_model_path(_build(ModelConfig, json.loads(model), "model"), progress=_say("grid"))


def _fit(grid: GridConfig, trials: list[TrialSpec], storage: str, resume: bool):
    import ray
    from ray import tune

    path = f"{storage.rstrip('/')}/{grid.name}"
    if grid.cluster is not None:
        cluster, source = {"CPU": grid.cluster.cpus, "GPU": grid.cluster.gpus}, "grid config `cluster:`"
    else:
        cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        source = "ray.cluster_resources()"
    p = plan(trials, cluster, source, grid.tune.max_concurrent_trials)
    print(f"[grid] {grid.name}: {len(trials)} trials, up to {p.concurrency} at once ({p.reason})", flush=True)

    specs = {t.name: {"config": t.config, "resources": dataclasses.asdict(t.resources)} for t in trials}
    pgfs = {t.name: tune.PlacementGroupFactory(t.resources.bundles(), strategy="PACK") for t in trials}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, specs=specs),
                                    resources=lambda params: pgfs[params["trial"]])
    if resume:
        # Tune's own settings (concurrency, max_failures) come back from its saved state.
        print(f"[grid] resuming {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.name for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=p.concurrency,
                                        trial_name_creator=lambda trial: trial.config["trial"],
                                        trial_dirname_creator=lambda trial: trial.config["trial"]),
            run_config=tune.RunConfig(
                name=grid.name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=grid.tune.max_failures),
                callbacks=[GridProgress(len(trials), trials[0].config["generations"])]),
        )
    results = tuner.fit()
    failed = [str(r.config.get("trial")) for r in results if r.error is not None]
    unfinished = [t.name for t in trials if not _finished_on_disk(t)]   # the trials' state is the truth
    print(f"[grid] {grid.name}: {len(trials) - len(unfinished)}/{len(trials)} trials finished; "
          f"Tune state in {path}", flush=True)
    if failed:
        raise GridError(f"grid {grid.name}: {len(failed)} trial(s) failed after {grid.tune.max_failures} retries: "
                        f"{', '.join(failed)}; fix the cause and run again with --resume")
    if unfinished:
        raise GridError(f"grid {grid.name}: interrupted with {len(unfinished)} trial(s) unfinished; "
                        f"continue with --resume")
    return results


def _finished_on_disk(trial: TrialSpec) -> bool:
    last = trial.config["generations"]
    return (Path(trial.config["output_dir"]) / trial.name / f"gen_{last:02d}" / "COMPLETE.json").is_file()


class GridProgress(Callback):
    """One line per finished generation and per trial state change, on the grid driver."""

    def __init__(self, n_trials: int, generations: int):
        self.n_trials, self.generations = n_trials, generations
        self.done: set[str] = set()
        self.started = time.monotonic()

    def _line(self, msg: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        print(f"[grid {elapsed // 60}m{elapsed % 60:02d}s, {len(self.done)}/{self.n_trials} trials done] {msg}",
              flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._line(f"{trial.config['trial']}: started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keys = [k for k in ("pass_at_1", "bleu4", "f1", "rougeL", "train/loss") if k in result]
        shown = ", ".join(f"{k}={result[k]:.4g}" for k in keys)
        self._line(f"{trial.config['trial']}: generation {result.get('generation')}/{self.generations} done {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done.add(trial.config["trial"])
        self._line(f"{trial.config['trial']}: finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(f"{trial.config['trial']}: driver failed (Tune retries up to max_failures; the trial "
                   f"resumes at its first unfinished generation)")


def main(args) -> None:
    """``collapse-ray grid CONFIG [--dry-run] [--resume]``."""
    grid = load_grid(args.config, missing_tasks_ok=args.dry_run)
    trials = expand(grid, missing_tasks_ok=args.dry_run)
    if args.dry_run:
        from collapse_ray.tasks import registered_tasks

        missing = sorted({t.name for t in grid.tasks} - set(registered_tasks()))
        if grid.cluster is not None:
            cluster, source = {"CPU": grid.cluster.cpus, "GPU": grid.cluster.gpus}, "grid config `cluster:`"
        else:
            cluster, source = local_resources(), "this machine, as a local ray.init() would see it"
        p = plan(trials, cluster, source, grid.tune.max_concurrent_trials)
        print(describe(grid, trials, p, missing))
        return
    run_grid(grid, trials, resume=args.resume)
