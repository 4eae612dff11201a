"""Typed experiment config: dataclasses loaded from YAML and validated before any compute.

Every error names the field (``training.lr``) and what is allowed, so a typo fails in a second,
not three hours into a grid.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from collapse_ray.errors import ConfigError  # noqa: F401 - importable from here, as before
from collapse_ray.yaml_io import read_yaml_mapping  # noqa: F401 - the grid spec reuses it from here

TINY_MODEL = "tiny"  # the model built here from scratch (collapse-ray base build)
VLLM_CPU_HEAD_SIZES = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512})


@dataclass
class TinyModelConfig:
    """Recipe for the tiny base model trained here from scratch; changing it rebuilds it."""

    architecture: Literal["llama", "qwen3"] = "llama"
    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    context_length: int = 256
    train_minutes: float = 3.0
    seed: int = 0
    cache_dir: str = ".cache/collapse_ray"


@dataclass
class ModelConfig:
    # "tiny", a HF hub id such as "Qwen/Qwen3-0.6B", or a local directory in HF format.
    name_or_path: str = TINY_MODEL
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class TaskConfig:
    name: str = "codegen"
    # Where the task's real data lives; None uses the task's default source.
    data_path: str | None = None


@dataclass
class RegimeConfig:
    name: Literal["real-only", "synthetic-only", "hybrid", "accumulate"] = "synthetic-only"
    # hybrid: the real fraction of each generation's training set.
    alpha: float = 0.5


@dataclass
class SizesConfig:
    train_examples: int = 256     # training set size per generation (accumulate grows past it)
    synthetic_pool: int = 256     # prompts the model answers each generation
    eval_examples: int = 164      # evaluation subset (164 = all of HumanEval)
    max_new_tokens: int = 128


@dataclass
class SamplingConfig:
    temperature: float = 0.8
    top_p: float = 0.95


@dataclass
class TrainingConfig:
    method: Literal["full", "lora"] = "full"
    epochs: int = 1
    max_steps: int | None = None   # overrides epochs when set
    lr: float = 5e-4
    batch_size: int = 8
    max_length: int = 256
    lora_rank: int = 8
    lora_alpha: int = 16
    init: Literal["base", "previous"] = "previous"
    backend: Literal["local", "ray"] = "local"


@dataclass
class GeneratorConfig:
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 32          # hf: prompts per generate() call
    kv_cache_gb: float = 1.0      # vllm on CPU: KV cache size (the CPU build refuses to guess)
    dtype: str = "auto"           # vllm: "auto", "float32", "bfloat16", ...


@dataclass
class MitigationConfig:
    quality_filter: bool = False
    dedup: Literal["none", "exact", "minhash"] = "none"
    minhash_threshold: float = 0.8
    # Generate this many times the pool, then select (diversity preservation).
    oversample: float = 1.0


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "collapse_ray"


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    generations: int = 10
    sizes: SizesConfig = field(default_factory=SizesConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    output_dir: str = "runs"

    def validate(self) -> "ExperimentConfig":
        _check_values(self)
        return self

    def to_flat_params(self) -> dict[str, Any]:
        """Every config choice as ``section.field`` -> value, for MLflow params."""
        return _flatten(dataclasses.asdict(self))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------- loading with type checks

def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    data = read_yaml_mapping(path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    return _build(ExperimentConfig, data, "").validate()


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for i, p in enumerate(parents):
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parents[:i + 1])}: is a {type(node).__name__}, not a section, so "
                              f"{dotted} cannot be set; set fields of sections only")
    node[leaf] = value


def _build(cls: type, data: Any, where: str):
    if not isinstance(data, dict):
        got = "nothing (an empty section)" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{where or 'config'}: expected a mapping of fields, got {got}; "
                          f"allowed fields: {', '.join(f.name for f in dataclasses.fields(cls))}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{_join(where, unknown[0])}: unknown field; allowed fields: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):   # YAML's .nan / .inf: every float field needs a real number
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


# ---------------------------------------------------------------- value checks

# A name used as a directory: one path component, never hidden, never '.' or '..'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}")
NAME_RULE = "letters, digits, '.', '_', '+' or '-' (one path component, not starting with '.')"
# The tracking stores MLflow itself knows (mlflow.tracking._tracking_service.utils); plugins add more.
MLFLOW_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                  "databricks-uc", "uc")
VLLM_DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def _check_values(cfg: ExperimentConfig) -> None:
    from collapse_ray.tasks import registered_tasks

    _require(NAME_PATTERN.fullmatch(cfg.name) is not None, "name",
             f"{cfg.name!r} cannot name the trial's directory; use {NAME_RULE}")
    _require(0 <= cfg.generations <= 100, "generations", f"must be between 0 and 100, got {cfg.generations}")
    _require(cfg.seed >= 0, "seed", f"must be a non-negative integer, got {cfg.seed}")
    _require(cfg.task.name in registered_tasks(), "task.name",
             f"unknown task {cfg.task.name!r}; known tasks: {', '.join(registered_tasks())}")
    check_data_path(cfg.task.name, cfg.task.data_path)
    _require(0.0 <= cfg.regime.alpha <= 1.0, "regime.alpha", f"must be in [0, 1], got {cfg.regime.alpha}")
    for name in ("train_examples", "synthetic_pool", "eval_examples", "max_new_tokens"):
        value = getattr(cfg.sizes, name)
        _require(value > 0, f"sizes.{name}", f"must be positive, got {value}")
    _require(cfg.sampling.temperature >= 0, "sampling.temperature", f"must be >= 0, got {cfg.sampling.temperature}")
    _require(0 < cfg.sampling.top_p <= 1, "sampling.top_p", f"must be in (0, 1], got {cfg.sampling.top_p}")
    t = cfg.training
    _require(t.epochs > 0, "training.epochs", f"must be positive, got {t.epochs}")
    _require(t.max_steps is None or t.max_steps > 0, "training.max_steps", f"must be positive, got {t.max_steps}")
    _require(0 < t.lr < 1, "training.lr", f"must be in (0, 1), got {t.lr}")
    _require(t.batch_size > 0, "training.batch_size", f"must be positive, got {t.batch_size}")
    _require(t.max_length >= 16, "training.max_length", f"must be at least 16, got {t.max_length}")
    _require(t.lora_rank > 0, "training.lora_rank", f"must be positive, got {t.lora_rank}")
    _require(t.lora_alpha > 0, "training.lora_alpha",
             f"must be positive (LoRA scales its update by lora_alpha / lora_rank), got {t.lora_alpha}")
    g = cfg.generator
    _require(g.batch_size > 0, "generator.batch_size", f"must be positive, got {g.batch_size}")
    _require(g.kv_cache_gb > 0, "generator.kv_cache_gb", f"must be positive, got {g.kv_cache_gb}")
    _require(g.dtype in VLLM_DTYPES, "generator.dtype", f"{g.dtype!r} is not allowed; choose one of {', '.join(VLLM_DTYPES)}")
    m = cfg.mitigation
    _require(0 < m.minhash_threshold <= 1, "mitigation.minhash_threshold", f"must be in (0, 1], got {m.minhash_threshold}")
    _require(1 <= m.oversample <= 100, "mitigation.oversample", f"must be in [1, 100], got {m.oversample}")
    _check_model(cfg.model)
    if g.backend == "vllm" and cfg.model.name_or_path == TINY_MODEL:
        head = cfg.model.tiny.hidden_size // cfg.model.tiny.num_heads
        _require(head in VLLM_CPU_HEAD_SIZES, "model.tiny.hidden_size",
                 f"vLLM's CPU attention needs a head size (hidden_size / num_heads) in "
                 f"{sorted(VLLM_CPU_HEAD_SIZES)}, got {head}")
    check_tracking_uri(cfg.tracking.uri)
    _require(bool(cfg.tracking.experiment.strip()), "tracking.experiment", "must not be empty; name the MLflow experiment")


def check_data_path(task: str, data_path: str | None, where: str = "task.data_path") -> None:
    """``data_path`` is of a kind the task reads (file, directory, ``hf:<id>``) and, if local, exists."""
    from collapse_ray.tasks import task_data_sources

    if data_path is None:
        return
    sources = task_data_sources(task)
    kinds = "; or ".join(sources.values())
    _require(bool(data_path.strip()), where, f"is empty; leave it out for the task's default data, or give {kinds}")
    if data_path.startswith("hf:"):
        _require("hf" in sources, where, f"task {task} cannot read a HF dataset id; it reads {kinds}")
        _require(re.fullmatch(r"hf:[\w.-]+(/[\w.-]+)?", data_path) is not None, where,
                 f"{data_path!r} is not a dataset id; write hf:<owner>/<name>")
        return
    path = Path(data_path)
    _require(path.exists(), where, f"{data_path} does not exist; task {task} reads {kinds}")
    kind = "dir" if path.is_dir() else "file"
    _require(kind in sources, where, f"{data_path} is a {'directory' if kind == 'dir' else 'file'}; "
                                     f"task {task} reads {kinds}")
    _require(os.access(path, os.R_OK | (os.X_OK if kind == "dir" else 0)), where,
             f"{data_path} cannot be read (permissions); make it readable")


def check_tracking_uri(uri: str, where: str = "tracking.uri") -> None:
    """A store MLflow can open: a scheme it knows (or a plugin's), and a URI of that scheme's shape."""
    from importlib.metadata import entry_points
    from urllib.parse import urlparse

    _require(bool(uri.strip()), where, "must not be empty; e.g. sqlite:///mlflow.db, ./mlruns or http://host:5000")
    scheme = urlparse(uri).scheme.split("+")[0] if "://" in uri or uri.startswith("file:") else ""
    if scheme == "" or (len(scheme) == 1 and uri[1:3] in (":/", ":\\")):   # a plain path (file store)
        return
    plugins = {ep.name for ep in entry_points(group="mlflow.tracking_store")}
    _require(scheme in MLFLOW_SCHEMES or scheme in plugins, where,
             f"scheme {scheme!r} is not a tracking store MLflow supports; use one of "
             f"{', '.join(MLFLOW_SCHEMES + tuple(sorted(plugins)))} or a plain directory path")
    parsed = urlparse(uri)
    if scheme in ("http", "https"):
        _require(bool(parsed.hostname), where, f"{uri!r} names no host; write {scheme}://host:port")
        try:
            parsed.port
        except ValueError:
            _require(False, where, f"{uri!r} has an invalid port; write {scheme}://host:port")
    if scheme == "sqlite":
        _require(uri.startswith("sqlite:///") and len(uri) > len("sqlite:///"), where,
                 f"{uri!r} names no database file; write sqlite:///relative/path.db or sqlite:////absolute/path.db")


def _check_model(model: ModelConfig) -> None:
    ref = model.name_or_path
    if ref == TINY_MODEL:
        tiny = model.tiny
        w = "model.tiny"
        _require(tiny.num_layers >= 1, f"{w}.num_layers", f"must be at least 1, got {tiny.num_layers}")
        _require(tiny.num_heads >= 1, f"{w}.num_heads", f"must be at least 1, got {tiny.num_heads}")
        _require(tiny.hidden_size >= 1, f"{w}.hidden_size", f"must be positive, got {tiny.hidden_size}")
        _require(tiny.context_length >= 16, f"{w}.context_length", f"must be at least 16, got {tiny.context_length}")
        _require(tiny.seed >= 0, f"{w}.seed", f"must be a non-negative integer, got {tiny.seed}")
        _require(tiny.hidden_size % tiny.num_heads == 0, "model.tiny.hidden_size",
                 f"must be divisible by model.tiny.num_heads ({tiny.num_heads}), got {tiny.hidden_size}")
        head = tiny.hidden_size // tiny.num_heads
        _require(head % 2 == 0, f"{w}.hidden_size", f"hidden_size / num_heads must be even (rotary position "
                 f"embeddings rotate pairs of dimensions), got {tiny.hidden_size} / {tiny.num_heads} = {head}")
        _require(tiny.vocab_size >= 300, "model.tiny.vocab_size", f"must be at least 300 (256 bytes + specials), got {tiny.vocab_size}")
        _require(0 < tiny.train_minutes <= 7 * 24 * 60, "model.tiny.train_minutes",
                 f"must be positive and at most a week (10080), got {tiny.train_minutes}")
        _require(bool(tiny.cache_dir.strip()), "model.tiny.cache_dir", "must not be empty")
        return
    looks_local = ref.startswith((".", "/", "~")) or Path(ref).exists()
    if looks_local:
        path = Path(ref).expanduser()
        _require(path.is_dir(), "model.name_or_path", f"local model directory {ref} does not exist")
        _require((path / "config.json").is_file() or (path / "adapter_config.json").is_file(),
                 "model.name_or_path", f"{ref} holds no config.json: not a model in HF format")
        return
    _require(ref.count("/") == 1 and all(ref.split("/")), "model.name_or_path",
             f"{ref!r} is neither 'tiny', a local HF model directory, nor a hub id like 'Qwen/Qwen3-0.6B'")
