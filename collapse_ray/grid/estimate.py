"""The dry-run's estimates: disk per trial and for the grid, and the grid's wall time and
GPU-hours (colocated vs separate). Pure arithmetic: no Ray, no torch; every figure is approximate.

Time per generation, per phase (train, generate, evaluate, drift):

* CPU trials: the measured seconds of benchmarks/phase_costs.json (one generation of a reference
  trial, in process), scaled by the trial's work over the reference's, where a phase's work is
  examples x tokens x parameters (active ones, for a mixture of experts; train: train_examples x epochs x max_length; generate and
  drift: synthetic_pool x oversample x max_new_tokens; evaluate: eval_examples x max_new_tokens).
  Trials share the cluster's CPUs: at most cluster CPUs / the reference's cores run at full speed.
* GPU trials (Train workers with GPUs): a throughput model, not a measurement (none can be made
  here): training 6 (LoRA 4) x parameters x tokens at TRAIN_MFU of PEAK_FLOPS per training GPU;
  generation and evaluation 2 x parameters x generated tokens at GENERATE_MFU per serving GPU
  (decoding is memory-bound); drift a forward pass under two models at TRAIN_MFU; plus saving the
  model and loading it into vLLM at SYNC_BYTES_PER_S each. The sandbox's time in evaluation and
  the engine's wake-up are left out. Trials each own their GPUs, so the
  grid's wall time is the trials' summed time over the planned concurrency.

A trial's GPU-hours are its time x the GPUs it keeps (colocated: its training GPUs; separate:
training + serving GPUs, the serving ones idle while it trains).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from collapse_ray.checkpoint_estimate import CheckpointEstimate, estimate_checkpoint_bytes, grid_checkpoint_bytes
from collapse_ray.config import ConfigError, ExperimentConfig
from collapse_ray.model_size import ModelSize, model_size

PHASES = ("train", "generate", "evaluate", "drift")
PHASE_COSTS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "phase_costs.json"
# The GPU throughput model (module docstring): an H100 SXM's dense bf16 peak, issue 9's MFU goal for
# training, a tenth of peak for batched decoding, and a shared file system's write or read rate.
PEAK_FLOPS = 989e12
TRAIN_MFU = 0.40
GENERATE_MFU = 0.10
SYNC_BYTES_PER_S = 1e9


@dataclass(frozen=True)
class PhaseCosts:
    seconds: dict[str, float]       # per phase, one generation of the reference trial
    work: dict[str, float]          # the reference's work per phase (phase_work)
    cores: float                    # the cores the measurement had
    source: str                     # file and machine, for the report


def load_phase_costs(path: str | Path = PHASE_COSTS_FILE) -> PhaseCosts:
    """Read a phase-costs file (benchmarks/phase_costs.json's format); a clear error if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        ref = data["reference"]
        sizes, training = ref["sizes"], ref["training"]
        work = _work(ref["n_params"], sizes["train_examples"] * training["epochs"] * training["max_length"],
                     sizes["synthetic_pool"] * ref.get("oversample", 1.0) * sizes["max_new_tokens"],
                     sizes["eval_examples"] * sizes["max_new_tokens"])
        seconds = {p: float(data["seconds_per_generation"][p]) for p in PHASES}
        return PhaseCosts(seconds, work, float(data["cores"]), f"{path.name} (measured on {data['machine']})")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"phase costs {path}: cannot read it ({type(e).__name__}: {e}); expected the "
                          f"format of benchmarks/phase_costs.json") from None


def _work(n_params: float, train_tokens: float, generated_tokens: float, eval_tokens: float) -> dict[str, float]:
    return {"train": n_params * train_tokens, "generate": n_params * generated_tokens,
            "evaluate": n_params * eval_tokens, "drift": n_params * generated_tokens}


def phase_work(cfg: ExperimentConfig, n_params: int) -> dict[str, float]:
    s, t = cfg.sizes, cfg.training
    return _work(n_params, s.train_examples * t.epochs * t.max_length,
                 s.synthetic_pool * cfg.mitigation.oversample * s.max_new_tokens, s.eval_examples * s.max_new_tokens)


def cpu_phase_seconds(cfg: ExperimentConfig, n_params: int, costs: PhaseCosts) -> dict[str, float]:
    """Seconds per generation of each phase on CPU: the measured costs scaled by the work."""
    work = phase_work(cfg, n_params)
    return {p: costs.seconds[p] * work[p] / costs.work[p] for p in PHASES}


def gpu_phase_seconds(cfg: ExperimentConfig, n_params: int, train_gpus: float, serving_gpus: float,
                      model_bytes: int) -> dict[str, float]:
    """Seconds per generation of each phase on GPUs, from the throughput model (module docstring)."""
    s, t = cfg.sizes, cfg.training
    generated = s.synthetic_pool * cfg.mitigation.oversample * s.max_new_tokens
    serving = max(serving_gpus, 1.0)
    train_flops = (4 if t.method == "lora" else 6) * n_params * s.train_examples * t.epochs * t.max_length
    return {
        "train": train_flops / (TRAIN_MFU * PEAK_FLOPS * train_gpus) + 2 * model_bytes / SYNC_BYTES_PER_S,
        "generate": 2 * n_params * generated / (GENERATE_MFU * PEAK_FLOPS * serving),
        "evaluate": 2 * n_params * s.eval_examples * s.max_new_tokens / (GENERATE_MFU * PEAK_FLOPS * serving),
        "drift": 2 * 2 * n_params * generated / (TRAIN_MFU * PEAK_FLOPS * serving),
    }


@dataclass(frozen=True)
class TrialEstimate:
    size: ModelSize
    on_gpu: bool
    disk: CheckpointEstimate
    phase_seconds: dict[str, float] | None   # per generation; None without phase costs on CPU

    def seconds(self, generations: int) -> float | None:
        """The whole trial: generations 0..``generations``."""
        return None if self.phase_seconds is None else (generations + 1) * sum(self.phase_seconds.values())


def estimate_trial(trial, costs: PhaseCosts | None) -> TrialEstimate | None:
    """A trial's disk and time; None when its model's size is unknown (a hub id outside the table)."""
    cfg, res = trial.config, trial.resources
    size = model_size(cfg.model)
    if size is None:
        return None
    train_gpus = res.training().get("GPU", 0.0)
    on_gpu = train_gpus > 0
    lora = size.lora_params(cfg.training.lora_rank) if cfg.training.method == "lora" else None
    if cfg.training.method == "lora" and lora is None:
        return None
    # What the trainer saves: bf16 on GPU, float32 on CPU (PEFT keeps adapters in float32 anyway).
    disk = estimate_checkpoint_bytes(cfg, size.n_params, bytes_per_param=2 if on_gpu else 4, lora_params=lora)
    if on_gpu:
        seconds = gpu_phase_seconds(cfg, size.compute_params, train_gpus, res.serving_gpus(), disk.model_bytes)
    else:
        seconds = None if costs is None else cpu_phase_seconds(cfg, size.compute_params, costs)
    return TrialEstimate(size, on_gpu, disk, seconds)


def grid_disk(estimates: list[TrialEstimate], concurrency: int) -> tuple[int, int]:
    """(peak, final) bytes of the grid's trial directories."""
    return grid_checkpoint_bytes([e.disk for e in estimates], concurrency)


def grid_wall_seconds(trial_seconds: list[float], concurrency: int, on_gpu: bool, cluster_cpus: float,
                      costs: PhaseCosts | None) -> tuple[float, float]:
    """(wall seconds, trials effectively at full speed at once): GPU trials each own their GPUs;
    CPU trials share the cluster's CPUs, of which the reference measurement used ``costs.cores``."""
    parallel = float(concurrency)
    if not on_gpu and costs is not None:
        parallel = min(parallel, max(cluster_cpus / costs.cores, 1.0))
    return sum(trial_seconds) / parallel, parallel


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def fmt_count(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"
