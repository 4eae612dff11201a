"""Typed experiment config: dataclasses loaded from YAML and validated before any compute.

Every error names the field (``training.lr``) and what is allowed, so a typo fails in a second,
not three hours into a grid.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from collapse_ray.regimes import Regime, default_regime
from collapse_ray.typed import ConfigError, build, require

# The grid spec builds its parts with the same builder and checks.
build_dataclass = build

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
    # The task's own settings: a mapping in YAML, its Options dataclass once validated
    # (None: the task's defaults). docs/tasks.md lists each task's options.
    options: Any = None


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
    # vllm: KV cache size; None: 1 GiB on CPU (its build refuses to guess), sized by vLLM on GPU.
    kv_cache_gb: float | None = None
    # vllm: "auto" (the dtype the model was saved in: training's precision), "float32", "bfloat16", ...
    dtype: str = "auto"
    # vllm: after every weight load, compare the engine's log-probs with the checkpoint's on a
    # fixed batch and fail the generation on a mismatch (stale weights): generate/weight_probe.py.
    weight_probe: bool = True


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
    # Mid-run logging retries with backoff while the server is away for up to this long, then
    # the trial fails (its state stays on disk; a rerun resumes and logs what is missing).
    retry_minutes: float = 10.0


@dataclass
class SandboxConfig:
    # Where no namespace can isolate generated programs (not root, and the kernel refuses an
    # unprivileged user namespace), evaluation refuses to run unless this is true: the programs
    # then run as this user, able to read and write what it can and to reach the network.
    allow_unisolated: bool = False


@dataclass
class RetentionConfig:
    """Which generations' models stay on disk once later generations finish. Synthetic data
    always stays (accumulate trains on all of it); so do metrics and checksums."""

    # "needed": generation 0 (drift's reference), the last finished generation (resume and
    # init: previous start from it) and keep_generations; "all": every generation's model.
    keep_models: Literal["needed", "all"] = "needed"
    keep_generations: list[int] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    # A registered regime with its own parameters (collapse_ray/regimes/): {name: hybrid, alpha: 0.5}.
    regime: Regime = field(default_factory=default_regime)
    generations: int = 10
    sizes: SizesConfig = field(default_factory=SizesConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    seed: int = 0
    output_dir: str = "runs"

    def validate(self) -> "ExperimentConfig":
        """Check every value; ``task.options`` becomes the task's typed options."""
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

def read_yaml_mapping(path: str | os.PathLike, what: str = "config file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return data


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    data = read_yaml_mapping(path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    return build(ExperimentConfig, data, "").validate()


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


# ---------------------------------------------------------------- value checks

def _check_values(cfg: ExperimentConfig) -> None:
    require(0 <= cfg.generations <= 100, "generations", f"must be between 0 and 100, got {cfg.generations}")
    cfg.task = check_task(cfg.task, "task")
    for name in ("train_examples", "synthetic_pool", "eval_examples", "max_new_tokens"):
        value = getattr(cfg.sizes, name)
        require(value > 0, f"sizes.{name}", f"must be positive, got {value}")
    require(cfg.sampling.temperature >= 0, "sampling.temperature", f"must be >= 0, got {cfg.sampling.temperature}")
    require(0 < cfg.sampling.top_p <= 1, "sampling.top_p", f"must be in (0, 1], got {cfg.sampling.top_p}")
    t = cfg.training
    require(t.epochs > 0, "training.epochs", f"must be positive, got {t.epochs}")
    require(t.max_steps is None or t.max_steps > 0, "training.max_steps", f"must be positive, got {t.max_steps}")
    require(0 < t.lr < 1, "training.lr", f"must be in (0, 1), got {t.lr}")
    require(t.batch_size > 0, "training.batch_size", f"must be positive, got {t.batch_size}")
    require(t.max_length >= 16, "training.max_length", f"must be at least 16, got {t.max_length}")
    require(t.lora_rank > 0, "training.lora_rank", f"must be positive, got {t.lora_rank}")
    require(cfg.generator.batch_size > 0, "generator.batch_size", f"must be positive, got {cfg.generator.batch_size}")
    kv = cfg.generator.kv_cache_gb
    require(kv is None or kv > 0, "generator.kv_cache_gb", f"must be positive, got {kv}")
    if cfg.generator.backend == "vllm" and cfg.model.name_or_path == TINY_MODEL:
        head = cfg.model.tiny.hidden_size // max(1, cfg.model.tiny.num_heads)
        require(head in VLLM_CPU_HEAD_SIZES, "model.tiny.hidden_size",
                 f"vLLM's CPU attention needs a head size (hidden_size / num_heads) in "
                 f"{sorted(VLLM_CPU_HEAD_SIZES)}, got {head}")
    m = cfg.mitigation
    require(0 < m.minhash_threshold <= 1, "mitigation.minhash_threshold", f"must be in (0, 1], got {m.minhash_threshold}")
    require(m.oversample >= 1, "mitigation.oversample", f"must be >= 1, got {m.oversample}")
    cfg.regime.check_sizes(cfg.sizes, "regime")
    check_model(cfg.model)
    require(bool(cfg.tracking.uri.strip()), "tracking.uri", "must not be empty")
    require(0 <= cfg.tracking.retry_minutes < float("inf"), "tracking.retry_minutes",
            f"must be a number of minutes >= 0, got {cfg.tracking.retry_minutes}")
    for i, g in enumerate(cfg.retention.keep_generations):
        require(0 <= g <= cfg.generations, f"retention.keep_generations[{i}]",
                f"must be a generation in 0..{cfg.generations} (generations), got {g}")


def check_task(task: TaskConfig, where: str) -> TaskConfig:
    """The task with its options typed; its name must be registered and its data path exist."""
    from collapse_ray.tasks import registered_tasks, task_class, unavailable_tasks

    missing = unavailable_tasks()
    require(task.name not in missing, f"{where}.name",
             f"task {task.name!r} needs the package {missing.get(task.name)!r}, which is not installed")
    require(task.name in registered_tasks(), f"{where}.name",
             f"unknown task {task.name!r}; known tasks: {', '.join(registered_tasks())}")
    if task.data_path is not None:
        require(Path(task.data_path).exists(), f"{where}.data_path", f"{task.data_path} does not exist")
    options = task_class(task.name).parse_options(task.options, f"{where}.options")
    return dataclasses.replace(task, options=options)


def check_model(model: ModelConfig) -> None:
    ref = model.name_or_path
    if ref == TINY_MODEL:
        tiny = model.tiny
        require(tiny.hidden_size % tiny.num_heads == 0, "model.tiny.hidden_size",
                 f"must be divisible by model.tiny.num_heads ({tiny.num_heads}), got {tiny.hidden_size}")
        require(tiny.vocab_size >= 300, "model.tiny.vocab_size", f"must be at least 300 (256 bytes + specials), got {tiny.vocab_size}")
        require(tiny.train_minutes > 0, "model.tiny.train_minutes", f"must be positive, got {tiny.train_minutes}")
        return
    looks_local = ref.startswith((".", "/", "~")) or Path(ref).exists()
    if looks_local:
        path = Path(ref).expanduser()
        require(path.is_dir(), "model.name_or_path", f"local model directory {ref} does not exist")
        require((path / "config.json").is_file() or (path / "adapter_config.json").is_file(),
                 "model.name_or_path", f"{ref} holds no config.json: not a model in HF format")
        return
    require(ref.count("/") == 1 and all(ref.split("/")), "model.name_or_path",
             f"{ref!r} is neither 'tiny', a local HF model directory, nor a hub id like 'Qwen/Qwen3-0.6B'")
