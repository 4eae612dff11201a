"""A grid's trials: one per model x task x regime x seed x mitigation, in a fixed order.

Each trial carries its ExperimentConfig (validated once, here), the labels its name is made of
(the run name and the MLflow tags use the same ones) and the resources it reserves on Ray.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from collapse_ray.backends import TrialResources
from collapse_ray.config import SQLITE_SCHEME, TINY_MODEL, ConfigError, ExperimentConfig, TaskConfig, sqlite_path
from collapse_ray.labels import TrialLabels
from collapse_ray.regimes import Regime
from collapse_ray.grid.spec import GridConfig, GridResources, ModelResources, validate_experiment, with_prefix

# In tracking.uri: the machine running `collapse-ray grid` (the head node under `ray job submit`),
# filled in by the Tune runner, which asks Ray.
DRIVER_IP = "${DRIVER_IP}"


@dataclass(frozen=True)
class Trial:
    config: ExperimentConfig
    labels: TrialLabels
    resources: TrialResources

    @property
    def name(self) -> str:
        return self.labels.name


def regime_label(regime: Regime) -> str:
    return regime.label()


def expand(grid: GridConfig, missing_tasks_ok: bool = False, cwd: str | os.PathLike | None = None) -> list[Trial]:
    """Every trial of the grid, each validated. Relative paths are resolved against ``cwd``
    (Tune runs each trial in a directory of its own)."""
    trials, seen = [], {}
    # Seed-major: Tune starts trials in this order, so a grid stopped early has compared every regime
    # and mitigation on its first seeds rather than a few regimes on all seeds.
    axes = itertools.product(grid.models, grid.tasks, grid.seeds, grid.regimes, grid.mitigations.items())
    for model, task, seed, regime, (mitigation_label, mitigation) in axes:
        labels = TrialLabels(model.label, task.name, regime_label(regime), seed, mitigation_label)
        name = labels.name
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
        cfg = with_prefix(f"trial {name}", lambda: validate_experiment(data, missing_tasks_ok))
        if cfg.task.name != data["task"]["name"]:   # a dry-run validated a task it cannot load as a known one
            cfg = dataclasses.replace(cfg, task=TaskConfig(**data["task"]))
        trials.append(Trial(cfg, labels, _resources(cfg, model.resources, grid.resources)))
    _shared_by_all(trials)
    return trials


def _shared_by_all(trials: list[Trial]) -> None:
    """One grid, one place: every trial shares output_dir (the grid's state lives under it) and
    the MLflow experiment (the launch's parent run holds every trial's run)."""
    first = trials[0]
    for t in trials[1:]:
        for field, value in (("output_dir", lambda c: c.output_dir),
                             ("tracking", lambda c: (c.tracking.uri, c.tracking.experiment))):
            if value(t.config) != value(first.config):
                raise ConfigError(f"trial {t.name}.{field}: {value(t.config)} differs from trial {first.name}'s "
                                  f"{value(first.config)}; every trial of a grid shares {field}: set it in base, "
                                  f"not in a model's overrides")


_AXES = ("models", "tasks", "regimes", "seeds", "mitigations")
_CLASH_FIX = {"models": "give the models distinct labels (grid.models[].label)",
              "tasks": "one task name may appear once (its data_path is part of the task, not the name)",
              "regimes": "use parameters that differ in their first 6 significant digits",
              "seeds": "list each seed once", "mitigations": "give each mitigation its own label"}


def _clashing_axis(first: tuple, second: tuple) -> str:
    """Which axis holds two different values behind one trial name."""
    return next((axis for axis, a, b in zip(_AXES, first, second) if a != b), "models")


def with_driver_ip(trials: list[Trial], ip: str) -> list[Trial]:
    """The trials with ``${DRIVER_IP}`` in tracking.uri replaced by ``ip``."""
    def resolved(cfg: ExperimentConfig) -> ExperimentConfig:
        uri = cfg.tracking.uri.replace(DRIVER_IP, ip)
        return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, uri=uri))

    return [dataclasses.replace(t, config=resolved(t.config)) for t in trials]


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


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
    uri = os.path.expandvars(tracking.get("uri", "sqlite:///mlflow.db"))
    db = sqlite_path(uri)
    if db is not None and not db.is_absolute():
        uri = SQLITE_SCHEME + absolute(uri[len(SQLITE_SCHEME):])   # the query, if any, stays at the end
    elif "://" not in uri:   # a plain directory (MLflow's file store)
        uri = absolute(uri)
    tracking["uri"] = uri
    return data


def _resources(cfg: ExperimentConfig, model: ModelResources, grid: GridResources) -> TrialResources:
    ray_train = cfg.training.backend == "ray"
    vllm = cfg.generator.backend == "vllm"
    driver_computes = not ray_train or not vllm
    driver_cpus = grid.driver_cpus if grid.driver_cpus is not None else (1.0 if driver_computes else 0.25)
    gpu = model.gpus_per_worker > 0
    tp = model.tensor_parallel
    # Colocated, vLLM serves on the Train workers' GPUs (backends.py): no GPU of its own.
    colocated = grid.colocate and vllm and ray_train and gpu
    generator = None
    if vllm:
        generator = {"CPU": grid.generator_cpus, "GPU": 1.0 if gpu and tp == 1 and not colocated else 0.0}
    return TrialResources(
        driver={"CPU": driver_cpus},
        generator={k: v for k, v in generator.items() if v} if generator else None,
        tp_gpus=tp if vllm and gpu and tp > 1 and not colocated else 0,
        train_workers=model.train_workers if ray_train else 0,
        per_worker={"CPU": model.cpus_per_worker, "GPU": model.gpus_per_worker},
        strategy=model.strategy if ray_train else "in-process",
        zero_stage=model.zero_stage,
        tensor_parallel=tp,
        colocated=colocated,
    )
