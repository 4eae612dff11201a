"""Typed experiment config: dataclasses loaded from YAML and validated before any compute.

Every error names the field (``training.lr``) and what is allowed, so a typo fails in a second,
not three hours into a grid.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from collapse_ray.errors import ConfigError  # noqa: F401 - importable from here, as before
from collapse_ray.path_rules import check_path_text
from collapse_ray.regimes import Regime, default_regime
from collapse_ray.typed import build, require
from collapse_ray.yaml_io import read_yaml_mapping  # noqa: F401 - the grid spec reuses it from here

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
    # Exact optimizer steps. When set, train_minutes is not used and the weights are the same on
    # any machine; when None, the step count fills train_minutes and so depends on its speed.
    train_steps: int | None = None
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
    # Generation 0's steps (None: max_steps): a smaller model can start self-training from the
    # same task score as a larger one (a fair "more collapse in smaller models" comparison).
    gen0_max_steps: int | None = None
    lr: float = 5e-4
    batch_size: int = 8
    max_length: int = 256
    lora_rank: int = 8
    lora_alpha: int = 16
    init: Literal["base", "previous"] = "previous"
    backend: Literal["local", "ray"] = "local"

    def for_generation(self, generation: int) -> "TrainingConfig":
        """The settings generation ``generation`` trains with: generation 0 takes ``gen0_max_steps``."""
        if generation == 0 and self.gen0_max_steps is not None:
            return dataclasses.replace(self, max_steps=self.gen0_max_steps)
        return self


@dataclass
class GeneratorConfig:
    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 32          # hf: prompts per generate() call
    # vllm: KV cache size; None: on CPU what 256 sequences of the model need, at most 1 GiB
    # (generate/kv_cache.py; its build does not size it), on GPU sized by vLLM.
    kv_cache_gb: float | None = None
    # vllm: "auto" (the dtype the model was saved in: training's precision), "float32", "bfloat16", ...
    dtype: str = "auto"
    # vllm: after every weight load, compare the engine's log-probs with the checkpoint's on a
    # fixed batch and fail the generation on a mismatch (stale weights): generate/weight_probe.py.
    weight_probe: bool = True


@dataclass
class MitigationConfig:
    quality_filter: bool = False
    # Keep only the synthetic completions that pass their prompt's own tests, run in the sandbox
    # (tasks whose pool has tests: Task.pool_has_tests). A verifier, where quality_filter is a static check.
    execution_filter: bool = False
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

def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    data = read_yaml_mapping(path)
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    return build(ExperimentConfig, data, "").validate()


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``a.b.c``, making missing sections (``--set``, overrides)."""
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


# ---------------------------------------------------------------- value checks

# A name used as a directory: one path component, never hidden, never '.' or '..'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}")
NAME_RULE = "letters, digits, '.', '_', '+' or '-' (one path component, not starting with '.')"
# The tracking stores MLflow itself knows (mlflow.tracking._tracking_service.utils); plugins add more.
MLFLOW_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                  "databricks-uc", "uc")
VLLM_DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")


# The upper ends of ranges whose lower ends _check_values states beside the field: far past what
# any study uses, short of what would overflow or run for years (tests/test_config.py checks that
# every numeric field refuses a huge value).
UPPER_BOUNDS = {
    "sizes.train_examples": 10**8, "sizes.synthetic_pool": 10**8, "sizes.eval_examples": 10**8,
    "sizes.max_new_tokens": 131_072, "sampling.temperature": 100,
    "training.epochs": 10_000, "training.max_steps": 10**7, "training.gen0_max_steps": 10**7,
    "training.batch_size": 65_536, "training.max_length": 131_072, "training.lora_rank": 65_536,
    "training.lora_alpha": 10**6, "generator.batch_size": 65_536, "generator.kv_cache_gb": 10**4,
    "tracking.retry_minutes": 7 * 24 * 60,
}


def _check_values(cfg: ExperimentConfig) -> None:
    require(NAME_PATTERN.fullmatch(cfg.name) is not None, "name",
            f"{cfg.name!r} cannot name the trial's directory; use {NAME_RULE}")
    require(0 <= cfg.generations <= MAX_GENERATIONS, "generations",
            f"must be between 0 and {MAX_GENERATIONS}, got {cfg.generations}")
    check_seed(cfg.seed, "seed")
    check_path_text(cfg.output_dir, "output_dir")
    cfg.task = check_task(cfg.task, "task")
    for name in ("train_examples", "synthetic_pool", "eval_examples", "max_new_tokens"):
        value = getattr(cfg.sizes, name)
        require(value > 0, f"sizes.{name}", f"must be positive, got {value}")
    require(cfg.sampling.temperature >= 0, "sampling.temperature", f"must be >= 0, got {cfg.sampling.temperature}")
    require(0 < cfg.sampling.top_p <= 1, "sampling.top_p", f"must be in (0, 1], got {cfg.sampling.top_p}")
    t = cfg.training
    require(t.epochs > 0, "training.epochs", f"must be positive, got {t.epochs}")
    require(t.max_steps is None or t.max_steps > 0, "training.max_steps", f"must be positive, got {t.max_steps}")
    require(t.gen0_max_steps is None or t.gen0_max_steps > 0, "training.gen0_max_steps",
            f"must be positive, got {t.gen0_max_steps}")
    require(0 < t.lr < 1, "training.lr", f"must be in (0, 1), got {t.lr}")
    require(t.batch_size > 0, "training.batch_size", f"must be positive, got {t.batch_size}")
    require(t.max_length >= 16, "training.max_length", f"must be at least 16, got {t.max_length}")
    require(t.lora_rank > 0, "training.lora_rank", f"must be positive, got {t.lora_rank}")
    require(t.lora_alpha > 0, "training.lora_alpha",
            f"must be positive (LoRA scales its update by lora_alpha / lora_rank), got {t.lora_alpha}")
    g = cfg.generator
    require(g.batch_size > 0, "generator.batch_size", f"must be positive, got {g.batch_size}")
    require(g.kv_cache_gb is None or g.kv_cache_gb > 0, "generator.kv_cache_gb", f"must be positive, got {g.kv_cache_gb}")
    require(g.dtype in VLLM_DTYPES, "generator.dtype", f"{g.dtype!r} is not allowed; choose one of {', '.join(VLLM_DTYPES)}")
    for dotted, most in UPPER_BOUNDS.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        require(value is None or value <= most, dotted, f"must be at most {most:,}, got {value}")
    m = cfg.mitigation
    require(0 < m.minhash_threshold <= 1, "mitigation.minhash_threshold", f"must be in (0, 1], got {m.minhash_threshold}")
    require(1 <= m.oversample <= 100, "mitigation.oversample", f"must be in [1, 100], got {m.oversample}")
    if m.execution_filter:
        from collapse_ray.tasks import tasks_with_pool_tests
        with_tests = tasks_with_pool_tests()
        require(cfg.task.name in with_tests, "mitigation.execution_filter",
                f"task {cfg.task.name} has no tests for its pool's prompts to run; "
                f"it applies to {', '.join(with_tests) or 'no registered task'}")
    cfg.regime.check_sizes(cfg.sizes, "regime")
    check_model(cfg.model)
    if g.backend == "vllm" and cfg.model.name_or_path == TINY_MODEL:
        head = cfg.model.tiny.hidden_size // cfg.model.tiny.num_heads
        require(head in VLLM_CPU_HEAD_SIZES, "model.tiny.hidden_size",
                f"vLLM's CPU attention needs a head size (hidden_size / num_heads) in "
                f"{sorted(VLLM_CPU_HEAD_SIZES)}, got {head}")
    check_tracking_uri(cfg.tracking.uri)
    require(bool(cfg.tracking.experiment.strip()), "tracking.experiment", "must not be empty; name the MLflow experiment")
    require(0 <= cfg.tracking.retry_minutes < float("inf"), "tracking.retry_minutes",
            f"must be a number of minutes >= 0, got {cfg.tracking.retry_minutes}")
    for i, k in enumerate(cfg.retention.keep_generations):
        require(0 <= k <= cfg.generations, f"retention.keep_generations[{i}]",
                f"must be a generation in 0..{cfg.generations} (generations), got {k}")


def check_task(task: TaskConfig, where: str) -> TaskConfig:
    """The task with its options typed; its name must be registered and its data path exist."""
    from collapse_ray.tasks import registered_tasks, task_class, unavailable_tasks

    missing = unavailable_tasks()
    require(task.name not in missing, f"{where}.name",
             f"task {task.name!r} needs the package {missing.get(task.name)!r}, which is not installed")
    require(task.name in registered_tasks(), f"{where}.name",
             f"unknown task {task.name!r}; known tasks: {', '.join(registered_tasks())}")
    check_data_path(task.name, task.data_path, f"{where}.data_path")
    options = task_class(task.name).parse_options(task.options, f"{where}.options")
    return dataclasses.replace(task, options=options)


def check_data_path(task: str, data_path: str | None, where: str = "task.data_path") -> None:
    """``data_path`` is of a kind the task reads (file, directory, ``hf:<id>``) and, if local, exists."""
    from collapse_ray.tasks import task_data_sources

    if data_path is None:
        return
    sources = task_data_sources(task)
    kinds = "; or ".join(sources.values())
    require(bool(data_path.strip()), where, f"is empty; leave it out for the task's default data, or give {kinds}")
    if data_path.startswith("hf:"):
        require("hf" in sources, where, f"task {task} cannot read a HF dataset id; it reads {kinds}")
        require(re.fullmatch(r"hf:[\w.-]+(/[\w.-]+)?", data_path) is not None, where,
                 f"{data_path!r} is not a dataset id; write hf:<owner>/<name>")
        return
    check_path_text(data_path, where)
    path = Path(data_path)
    require(path.exists(), where, f"{data_path} does not exist; task {task} reads {kinds}")
    kind = "dir" if path.is_dir() else "file"
    require(kind in sources, where, f"{data_path} is a {'directory' if kind == 'dir' else 'file'}; "
                                     f"task {task} reads {kinds}")
    require(os.access(path, os.R_OK | (os.X_OK if kind == "dir" else 0)), where,
             f"{data_path} cannot be read (permissions); make it readable")


def check_tracking_uri(uri: str, where: str = "tracking.uri") -> None:
    """A store MLflow can open: a scheme it knows (or a plugin's), and a URI of that scheme's shape."""
    from importlib.metadata import entry_points
    from urllib.parse import urlparse

    require(bool(uri.strip()), where, "must not be empty; e.g. sqlite:///mlflow.db, ./mlruns or http://host:5000")
    scheme = urlparse(uri).scheme.split("+")[0] if "://" in uri or uri.startswith("file:") else ""
    if scheme == "" or (len(scheme) == 1 and uri[1:3] in (":/", ":\\")):   # a plain path (file store)
        check_path_text(uri, where)
        return
    plugins = {ep.name for ep in entry_points(group="mlflow.tracking_store")}
    require(scheme in MLFLOW_SCHEMES or scheme in plugins, where,
             f"scheme {scheme!r} is not a tracking store MLflow supports; use one of "
             f"{', '.join(MLFLOW_SCHEMES + tuple(sorted(plugins)))} or a plain directory path")
    parsed = urlparse(uri)
    if scheme in ("http", "https"):
        require(bool(parsed.hostname), where, f"{uri!r} names no host; write {scheme}://host:port")
        try:
            parsed.port
        except ValueError:
            require(False, where, f"{uri!r} has an invalid port; write {scheme}://host:port")
    if scheme == "sqlite":
        db = sqlite_path(uri)
        require(db is not None and db.name != "", where,
                f"{uri!r} names no database file; write sqlite:///relative/path.db or sqlite:////absolute/path.db")
        check_path_text(str(db), where)
    if scheme == "file":
        check_path_text(parsed.path, where)


SQLITE_SCHEME = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH[?query]`` URI (SQLAlchemy's form); None for any other."""
    if not uri.startswith(SQLITE_SCHEME):
        return None
    return Path(uri[len(SQLITE_SCHEME):].split("?", 1)[0])


# Seeds reach numpy (vLLM seeds it: below 2**32) and torch after ``seed * 1000 + generation``.
MAX_SEED = 2**31 - 1
MAX_GENERATIONS = 100   # a trial's last generation; the study runs 10
# The tiny model is pre-trained on this machine: bounds that keep a recipe buildable (a typo such
# as an extra zero would otherwise end as an allocation failure minutes into the build).
MAX_TINY_PARAMS = 10**9
MAX_TINY_CONTEXT = 32_768


def check_seed(seed: int, where: str) -> None:
    require(0 <= seed <= MAX_SEED, where, f"must be an integer from 0 to {MAX_SEED} (2**31 - 1), got {seed}")


def tiny_param_count(tiny: TinyModelConfig) -> int:
    from collapse_ray.model_size import dense_param_count, tiny_config

    return dense_param_count(tiny_config(tiny))


def check_model(model: ModelConfig) -> None:
    ref = model.name_or_path
    if ref == TINY_MODEL:
        tiny = model.tiny
        w = "model.tiny"
        require(tiny.num_layers >= 1, f"{w}.num_layers", f"must be at least 1, got {tiny.num_layers}")
        require(tiny.num_heads >= 1, f"{w}.num_heads", f"must be at least 1, got {tiny.num_heads}")
        require(tiny.hidden_size >= 1, f"{w}.hidden_size", f"must be positive, got {tiny.hidden_size}")
        require(16 <= tiny.context_length <= MAX_TINY_CONTEXT, f"{w}.context_length",
                f"must be from 16 to {MAX_TINY_CONTEXT:,} tokens, got {tiny.context_length}")
        check_seed(tiny.seed, f"{w}.seed")
        require(tiny.hidden_size % tiny.num_heads == 0, "model.tiny.hidden_size",
                 f"must be divisible by model.tiny.num_heads ({tiny.num_heads}), got {tiny.hidden_size}")
        head = tiny.hidden_size // tiny.num_heads
        require(head % 2 == 0, f"{w}.hidden_size", f"hidden_size / num_heads must be even (rotary position "
                 f"embeddings rotate pairs of dimensions), got {tiny.hidden_size} / {tiny.num_heads} = {head}")
        require(tiny.vocab_size >= 300, "model.tiny.vocab_size", f"must be at least 300 (256 bytes + specials), got {tiny.vocab_size}")
        require(0 < tiny.train_minutes <= 7 * 24 * 60, "model.tiny.train_minutes",
                 f"must be positive and at most a week (10080), got {tiny.train_minutes}")
        require(tiny.train_steps is None or 1 <= tiny.train_steps <= 10_000_000, "model.tiny.train_steps",
                 f"must be null or a step count from 1 to 10,000,000, got {tiny.train_steps}")
        n_params = tiny_param_count(tiny)
        require(n_params <= MAX_TINY_PARAMS, w,
                f"this recipe has {n_params:.3g} parameters; the tiny model is built and trained here from "
                f"scratch, so at most {MAX_TINY_PARAMS:.0e}: give a hub id or a local directory for a larger model")
        require(bool(tiny.cache_dir.strip()), "model.tiny.cache_dir", "must not be empty")
        check_path_text(tiny.cache_dir, "model.tiny.cache_dir")
        return
    check_path_text(ref, "model.name_or_path")
    looks_local = ref.startswith((".", "/", "~")) or Path(ref).exists()
    if looks_local:
        path = Path(ref).expanduser()
        require(path.is_dir(), "model.name_or_path", f"local model directory {ref} does not exist")
        require((path / "config.json").is_file() or (path / "adapter_config.json").is_file(),
                 "model.name_or_path", f"{ref} holds no config.json: not a model in HF format")
        return
    require(ref.count("/") == 1 and all(ref.split("/")), "model.name_or_path",
             f"{ref!r} is neither 'tiny', a local HF model directory, nor a hub id like 'Qwen/Qwen3-0.6B'")
