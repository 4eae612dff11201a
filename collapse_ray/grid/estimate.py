"""The dry-run's estimates: disk per trial and for the grid, and the grid's wall time and
GPU-hours (colocated vs separate). Pure arithmetic: no Ray, no torch; every figure is approximate.

Time per generation, per phase (train, generate, evaluate, drift):

* CPU trials: measured seconds scaled by the trial's work over the measurement's, where a phase's
  work is tokens x parameters (active ones, for a mixture of experts; train: the trainer's steps
  (train/base.total_steps: training.max_steps when set, else epochs over train_examples) x
  batch_size x max_length; generate and drift: synthetic_pool x oversample x max_new_tokens;
  evaluate: eval_examples x max_new_tokens). The measurement: the task's entry in
  benchmarks/compute_floor.json (per task, at its sizes, one core each) when it has one, else
  benchmarks/phase_costs.json (one reference codegen trial measured with ``cores`` cores).
  Trials with one generation-0 key (shared_gen0.py) train and evaluate generation 0 once: the
  grid counts it once per key. The grid's wall time is a schedule (grid/schedule.py): Tune starts
  the trials in the grid's order, max_concurrent_trials at once, the running ones share the
  cluster's CPUs (each on at most the measurement's cores), and a trial waiting for a shared
  generation 0 computes nothing.
* GPU trials (Train workers with GPUs): a throughput model, not a measurement (none can be made
  here): training 6 (LoRA 4) x parameters x tokens at TRAIN_MFU of PEAK_FLOPS per training GPU;
  generation and evaluation 2 x parameters x generated tokens at GENERATE_MFU per serving GPU
  (decoding is memory-bound); drift a forward pass under two models at TRAIN_MFU; plus saving the
  model and loading it into vLLM at SYNC_BYTES_PER_S each. The sandbox's time in evaluation and
  the engine's wake-up are left out. Trials each own their GPUs, so the
  grid's wall time is the trials' summed time over the planned concurrency (a trial waiting for
  a shared generation 0 holds its GPUs, so nothing is taken off for it).

A trial's GPU-hours are its time x the GPUs it keeps (colocated: its training GPUs; separate:
training + serving GPUs, the serving ones idle while it trains).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from collapse_ray.checkpoint_estimate import CheckpointEstimate, estimate_checkpoint_bytes, grid_checkpoint_bytes
from collapse_ray.config import ConfigError, ExperimentConfig, ModelConfig, TinyModelConfig
from collapse_ray.loop import fingerprint_data
from collapse_ray.model_size import ModelSize, model_size
from collapse_ray.grid.plan import Plan
from collapse_ray.grid.schedule import Schedule, TrialWork, shortest_order, simulate
from collapse_ray.shared_gen0 import generation0_key
from collapse_ray.train.base import total_steps

PHASES = ("train", "generate", "evaluate", "drift")
PHASE_COSTS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "phase_costs.json"
COMPUTE_FLOOR_FILE = PHASE_COSTS_FILE.with_name("compute_floor.json")
# The GPU throughput model (module docstring): an H100 SXM's dense bf16 peak, issue 9's MFU goal for
# training, a tenth of peak for batched decoding, and a shared file system's write or read rate.
PEAK_FLOPS = 989e12
TRAIN_MFU = 0.40
GENERATE_MFU = 0.10
SYNC_BYTES_PER_S = 1e9
# What a CPU trial at once beyond the cluster's CPUs adds to every running trial's time: its Ray
# processes (driver, vLLM actor, Train controller and worker) and its phases time-sharing the
# cores with the others' training. Fitted on this project's 2-core VM to two pairs run side by
# side (docs/BENCHMARKS.md, "How many trials at once"): make grid's 9 trials 4 against 2 at
# once (0.115 a trial beyond the cores) and three codegen trials 3 against 2 (0.066).
OVERHEAD_BEYOND_CORES = 0.10
FEWER_UNLESS = 0.01   # more trials at once must be expected this much sooner to be chosen


@dataclass(frozen=True)
class PhaseCosts:
    seconds: dict[str, float]       # per phase, one generation of the reference trial
    work: dict[str, float]          # the reference's work per phase (phase_work)
    cores: float                    # the cores the measurement had
    source: str                     # file and machine, for the report

    def for_task(self, task: str) -> PhaseCosts:
        """One measurement stands for every task."""
        return self


@dataclass(frozen=True)
class CostTable:
    """compute_floor.json's per-task costs, and phase_costs.json's for the tasks it does not list."""
    by_task: dict[str, PhaseCosts]
    fallback: PhaseCosts | None

    def for_task(self, task: str) -> PhaseCosts | None:
        return self.by_task.get(task, self.fallback)


def load_costs(compute_floor: str | Path = COMPUTE_FLOOR_FILE,
               phase_costs: str | Path = PHASE_COSTS_FILE) -> CostTable | None:
    """The dry-run's measured costs: those of the files that exist; None if neither does."""
    by_task = load_compute_floor(compute_floor) if Path(compute_floor).is_file() else {}
    fallback = load_phase_costs(phase_costs) if Path(phase_costs).is_file() else None
    return CostTable(by_task, fallback) if by_task or fallback else None


def _unreadable(path: Path, e: Exception, example: str) -> ConfigError:
    return ConfigError(f"phase costs {path}: cannot read it ({type(e).__name__}: {e}); expected the "
                       f"format of {example}")


def load_phase_costs(path: str | Path = PHASE_COSTS_FILE) -> PhaseCosts:
    """Read a phase-costs file (benchmarks/phase_costs.json's format); a clear error if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        ref = data["reference"]
        sizes = ref["sizes"]
        work = _work(ref["n_params"], _train_tokens(sizes["train_examples"], ref["training"]),
                     sizes["synthetic_pool"] * ref.get("oversample", 1.0) * sizes["max_new_tokens"],
                     sizes["eval_examples"] * sizes["max_new_tokens"])
        seconds = {p: float(data["seconds_per_generation"][p]) for p in PHASES}
        return PhaseCosts(seconds, work, float(data["cores"]), f"{path.name} (measured on {data['machine']})")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _unreadable(path, e, "benchmarks/phase_costs.json") from None


def load_compute_floor(path: str | Path = COMPUTE_FLOOR_FILE) -> dict[str, PhaseCosts]:
    """Per task, the costs of a compute-floor file (benchmarks/compute_floor.json's format, written
    by benchmarks/compute_floor.py): each phase measured on one core at the file's sizes and model."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        sizes, model = data["sizes"], data["sizes"]["model"]
        tiny = {f.name: model[f.name] for f in dataclasses.fields(TinyModelConfig) if f.name in model}
        size = model_size(ModelConfig(model["name_or_path"], TinyModelConfig(**tiny)))
        if size is None:
            raise ValueError(f"size of model {model['name_or_path']!r} unknown")
        work = _work(size.compute_params, _train_tokens(sizes["train_examples"], sizes["training"]),
                     sizes["synthetic_pool"] * sizes.get("oversample", 1.0) * sizes["max_new_tokens"],
                     sizes["eval_examples"] * sizes["max_new_tokens"])
        machine = str(data["machine"]).split(";")[0]   # the load averages after it are context only
        return {task: PhaseCosts({p: float(costs[f"{p}_s"]) for p in PHASES}, work, 1.0,
                                 f"{path.name} (measured per task on one core of {machine})")
                for task, costs in data["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise _unreadable(path, e, "benchmarks/compute_floor.json") from None


def _train_tokens(train_examples: int, training: dict) -> int:
    """Tokens one generation's training goes through (``training``: TrainingConfig's fields): the
    trainer's steps x batch_size sequences x max_length (an upper bound: batches are padded to
    their longest text, cut at max_length)."""
    steps = total_steps(train_examples, training["batch_size"], training.get("epochs", 1), training.get("max_steps"))
    return steps * training["batch_size"] * training["max_length"]


def train_tokens(cfg: ExperimentConfig) -> int:
    return _train_tokens(cfg.sizes.train_examples, dataclasses.asdict(cfg.training))


def gen0_train_scale(cfg: ExperimentConfig) -> float:
    """Generation 0's training work over a later generation's (training.gen0_max_steps)."""
    gen0 = dataclasses.asdict(cfg.training.for_generation(0))
    return _train_tokens(cfg.sizes.train_examples, gen0) / train_tokens(cfg)


def _work(n_params: float, train_tokens: float, generated_tokens: float, eval_tokens: float) -> dict[str, float]:
    return {"train": n_params * train_tokens, "generate": n_params * generated_tokens,
            "evaluate": n_params * eval_tokens, "drift": n_params * generated_tokens}


def phase_work(cfg: ExperimentConfig, n_params: int) -> dict[str, float]:
    s = cfg.sizes
    return _work(n_params, train_tokens(cfg), s.synthetic_pool * cfg.mitigation.oversample * s.max_new_tokens,
                 s.eval_examples * s.max_new_tokens)


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
    train_flops = (4 if t.method == "lora" else 6) * n_params * train_tokens(cfg)
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
    costs: PhaseCosts | None = None          # the measurement a CPU trial's time is scaled from
    gen0_train_scale: float = 1.0            # generation 0's training work over a later one's

    def seconds(self, generations: int) -> float | None:
        """The whole trial: generations 0..``generations``."""
        if self.phase_seconds is None:
            return None
        extra_gen0 = (self.gen0_train_scale - 1.0) * self.phase_seconds["train"]
        return (generations + 1) * sum(self.phase_seconds.values()) + extra_gen0


def estimate_trial(trial, costs: PhaseCosts | CostTable | None) -> TrialEstimate | None:
    """A trial's disk and time; None when its model's size is unknown (a hub id outside the table).
    ``costs``: the measured costs its task's are taken from (``for_task``)."""
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
        return TrialEstimate(size, on_gpu, disk, gpu_phase_seconds(cfg, size.compute_params, train_gpus,
                                                                   res.serving_gpus(), disk.model_bytes),
                             gen0_train_scale=gen0_train_scale(cfg))
    measured = None if costs is None else costs.for_task(cfg.task.name)
    seconds = None if measured is None else cpu_phase_seconds(cfg, size.compute_params, measured)
    return TrialEstimate(size, on_gpu, disk, seconds, measured, gen0_train_scale(cfg))


def generation0_key_of(cfg: ExperimentConfig) -> str:
    """The key under which the loop shares the trial's generation 0 (shared_gen0.py)."""
    return generation0_key(fingerprint_data(cfg))


def shared_generation0_work(trials: list[tuple[ExperimentConfig, dict[str, float]]]) -> list[TrialWork]:
    """Each trial's seconds (``phase seconds`` per generation) in generation 0 and in generations
    1..G once generation 0 is shared: the first trial of each generation-0 key trains and evaluates
    it, the others reuse it and only generate and measure drift in generation 0."""
    return [TrialWork(key, sum(gen0.values()), cfg.generations * sum(phases.values()))
            for cfg, phases, key, gen0 in _generation0_phases(trials)]


def _generation0_phases(trials: list[tuple[ExperimentConfig, dict[str, float]]]):
    """(config, phase seconds per generation, generation-0 key, generation 0's phase seconds) of
    each trial: generation 0 against a later one has its own training work (gen0_max_steps) when
    the trial computes it, no training or evaluation when it reuses another's."""
    seen: set[str] = set()
    for cfg, phases in trials:
        key = generation0_key_of(cfg)
        if key in seen:
            gen0 = {**phases, "train": 0.0, "evaluate": 0.0}
        else:
            gen0 = {**phases, "train": gen0_train_scale(cfg) * phases["train"]}
        seen.add(key)
        yield cfg, phases, key, gen0


def with_shared_generation0(trials: list[tuple[ExperimentConfig, dict[str, float]]]) -> list[float]:
    """Each trial's seconds, generations 0..G, once generation 0 is shared (shared_generation0_work)."""
    return [w.gen0_s + w.later_s for w in shared_generation0_work(trials)]


def compute_floor_seconds(trials: list, costs: PhaseCosts | CostTable, cores: float) -> float:
    """The trials' compute floor: every phase of every generation, scaled by each trial's work from
    the measured costs (``estimate_trial``), generation 0 once per key, spread over ``cores``: no
    grid finishes faster on that machine. The one figure the benchmarks divide wall times by; the
    dry-run's CPU wall estimate (cpu_grid_schedule) is it when the trials at once fill the cores."""
    phases = [(t.config, estimate_trial(t, costs).phase_seconds) for t in trials]
    return sum(with_shared_generation0(phases)) / cores


def floor_phase_seconds(trials: list, costs: PhaseCosts | CostTable) -> dict[str, float]:
    """compute_floor_seconds's work by phase, in CPU-seconds (not spread over cores): what each
    kind of process of a grid would spend if it ran as in process, to set against what it did."""
    phases = [(t.config, estimate_trial(t, costs).phase_seconds) for t in trials]
    totals = dict.fromkeys(PHASES, 0.0)
    for cfg, per_generation, _, gen0 in _generation0_phases(phases):
        for phase in PHASES:
            totals[phase] += gen0[phase] + cfg.generations * per_generation[phase]
    return totals


def grid_disk(estimates: list[TrialEstimate], concurrency: int) -> tuple[int, int]:
    """(peak, final) bytes of the grid's trial directories."""
    return grid_checkpoint_bytes([e.disk for e in estimates], concurrency)


def gpu_grid_wall_seconds(trial_seconds: list[float], concurrency: int) -> float:
    """GPU trials each own their GPUs: the trials' summed seconds over how many run at once."""
    return sum(trial_seconds) / max(1, concurrency)


def cpu_grid_schedule(trials: list[tuple[ExperimentConfig, dict[str, float]]], concurrency: int,
                      cluster_cpus: float, costs: PhaseCosts) -> Schedule:
    """CPU trials (in Tune's start order) on the cluster's CPUs, each on the ``costs.cores`` its
    phases were measured with: the compute floor plus the cores left idle while trials wait for a
    shared generation 0 or too few are left (grid/schedule.py)."""
    return simulate(shared_generation0_work(trials), concurrency, cluster_cpus, costs.cores)


def expected_wall_s(schedule: Schedule, concurrency: int, cluster_cpus: float) -> float:
    """The schedule's wall with what each trial at once beyond the CPUs costs every running trial
    (OVERHEAD_BEYOND_CORES); the schedule alone counts compute only."""
    return schedule.wall_s * (1 + OVERHEAD_BEYOND_CORES * max(0.0, concurrency - cluster_cpus))


def fastest_concurrency(trials: list, costs: PhaseCosts | CostTable | None, bound: int,
                        cluster_cpus: float) -> int | None:
    """Of 1..``bound`` CPU trials at once, the number whose expected wall (each in its own start
    order) is least; fewer where that is within FEWER_UNLESS of it (fewer processes and less
    memory for the same time). None where a trial has no CPU time estimate (a GPU trial, a model
    of unknown size, no costs for its task) or only one measured on more than one core."""
    estimates = _cpu_time_estimates(trials, costs, cluster_cpus)
    if estimates is None:
        return None
    widest = widest_costs(estimates)
    if widest.cores > 1:   # measured on several threads (phase_costs.json): a grid trial computes on one
        return None

    phases = {t.name: e.phase_seconds for t, e in zip(trials, estimates)}

    def wall(concurrency: int) -> float:
        started = start_order(trials, costs, concurrency, cluster_cpus)
        works = [(t.config, phases[t.name]) for t in started]
        return expected_wall_s(cpu_grid_schedule(works, concurrency, cluster_cpus, widest), concurrency, cluster_cpus)

    walls = {n: wall(n) for n in range(1, max(1, bound) + 1)}
    best = min(walls.values())
    return min(n for n, w in walls.items() if w <= best * (1 + FEWER_UNLESS))


def with_fastest_concurrency(p: Plan, trials: list, costs: PhaseCosts | CostTable | None,
                             requested: int | None) -> Plan:
    """The plan with, where the config leaves tune.max_concurrent_trials unset, the CPU grid's
    fastest number of trials at once up to the plan's bound (fastest_concurrency): the bound
    itself counts what fits, not what the extra trials cost."""
    cpus = p.cluster.get("CPU", 0.0)
    fastest = None if requested is not None else fastest_concurrency(trials, costs, p.concurrency, cpus)
    if fastest is None:
        return p
    return dataclasses.replace(p, concurrency=fastest, reason=f"the estimated fastest on {cpus:g} CPUs "
                               f"(grid/estimate.py); derived bound: {p.concurrency}; {p.reason}")


def widest_costs(estimates: list[TrialEstimate]) -> PhaseCosts:
    """Of CPU trials' measured costs, the one with the most cores per trial: with mixed
    measurements it bounds how many trials run at full speed at once."""
    return max((e.costs for e in estimates), key=lambda c: c.cores)


def start_order(trials: list, costs: PhaseCosts | CostTable | None, concurrency: int, cluster_cpus: float) -> list:
    """The trials in the order the launch gives Tune: CPU trials' generation-0 groups in the order
    whose schedule ends soonest (schedule.shortest_order, from the measured costs), each group in
    its own order; the given order where any trial has no CPU time estimate (a GPU trial, a model
    of unknown size, no costs for its task). The dry-run shows the schedule of the same order."""
    estimates = _cpu_time_estimates(trials, costs, cluster_cpus)
    if estimates is None:
        return list(trials)
    works = shared_generation0_work([(t.config, e.phase_seconds) for t, e in zip(trials, estimates)])
    members: dict[str, list[int]] = {}
    for i, work in enumerate(works):
        members.setdefault(work.gen0_key, []).append(i)
    groups = list(members.values())
    order = shortest_order([[works[i] for i in g] for g in groups], concurrency, cluster_cpus,
                           widest_costs(estimates).cores)
    return [trials[i] for g in order for i in groups[g]]


def _cpu_time_estimates(trials: list, costs: PhaseCosts | CostTable | None,
                        cluster_cpus: float) -> list[TrialEstimate] | None:
    """Every trial's estimate where all are CPU trials with a time estimate on a cluster with CPUs;
    else None."""
    estimates = [estimate_trial(t, costs) for t in trials]
    if cluster_cpus <= 0 or any(e is None or e.on_gpu or e.phase_seconds is None for e in estimates):
        return None
    return estimates


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
