"""How many trials may run at once, and the dry-run's report. Pure: no Ray.

A trial's placement group holds what the trial keeps for its whole life (its driver, its vLLM
actor; backends.TrialResources). Ray Train V2 places a fit's workers in a group of its own, so
they are counted apart. Concurrency is what keeps trials from deadlocking: with ``n`` trials
running, the groups they hold plus the largest Train run must fit the cluster, so some trial can
always train and every trial progresses:

    n = max { n : sum of the n largest held groups + largest Train run <= cluster }, per resource
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from collapse_ray.backends import add_resources
from collapse_ray.config import ConfigError
from collapse_ray.grid.expand import Trial
from collapse_ray.grid.spec import GridConfig


@dataclass(frozen=True)
class Plan:
    cluster: dict[str, float]
    cluster_source: str
    concurrency: int
    reason: str


def local_resources() -> dict[str, float]:
    """What a local ``ray.init()`` would find here, without starting Ray."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    n_gpus = len([g for g in gpus.split(",") if g.strip()]) if gpus is not None else len(glob.glob("/dev/nvidia[0-9]*"))
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(n_gpus)}


def configured_cluster(grid: GridConfig) -> tuple[dict[str, float], str] | None:
    """The grid config's ``cluster:`` and where that figure comes from; None when it has none."""
    if grid.cluster is None:
        return None
    return {"CPU": grid.cluster.cpus, "GPU": grid.cluster.gpus}, "grid config `cluster:`"


def plan(trials: list[Trial], cluster: dict[str, float], source: str, requested: int | None = None) -> Plan:
    """How many trials may run at once without starving each other (module docstring)."""
    for t in trials:
        need = add_resources(t.resources.held(), t.resources.training())
        short = {k: v for k, v in need.items() if v > cluster.get(k, 0.0) + 1e-9}
        if short:
            have = ", ".join(f"{cluster.get(k, 0.0):g} {k}" for k in short)
            raise ConfigError(f"trial {t.name} needs {_fmt_res(need)} but the cluster ({source}) has {have}")
    bound, reason = len(trials), f"all {len(trials)} trials fit at once"
    for r in sorted({k for t in trials for k in add_resources(t.resources.held(), t.resources.training())}):
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


def _one_or_each(values: list[str]) -> str:
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else "per trial: " + ", ".join(distinct)


def describe(grid: GridConfig, trials: list[Trial], p: Plan, missing_tasks: list[str]) -> str:
    """The dry-run's report: every trial with what it reserves, then the totals."""
    generations = sorted({t.config.generations for t in trials})
    each = (f"{generations[0] + 1} generations each (0..{generations[0]})" if len(generations) == 1 else
            f"{generations[0]}..{generations[-1]} generations after generation 0, per trial below")
    mlflow = _one_or_each([f"{t.config.tracking.uri} experiment {t.config.tracking.experiment!r}" for t in trials])
    lines = [
        f"grid {grid.name}: {len(trials)} trials = {len(grid.models)} models x {len(grid.tasks)} tasks x "
        f"{len(grid.regimes)} regimes x {len(grid.seeds)} seeds x {len(grid.mitigations)} mitigations, {each}",
        f"MLflow: {mlflow}; trial state: {_one_or_each([t.config.output_dir for t in trials])}",
    ]
    if missing_tasks:
        lines.append(f"note: task(s) {', '.join(missing_tasks)} cannot be loaded in this install; "
                     f"planned anyway, a real run will refuse them")
    rows = [("trial", "generations", "driver", "generator", "training")]
    for t in trials:
        r = t.resources
        gen = "HF generate in the driver" if r.generator is None else \
            f"vLLM {_fmt_res(add_resources(r.generator, {'GPU': float(r.tp_gpus)}))} (TP {r.tensor_parallel})"
        if r.train_workers:
            zero = f" ZeRO-{r.zero_stage}" if r.strategy == "deepspeed" and r.zero_stage is not None else ""
            train = f"Ray Train {r.train_workers} x ({_fmt_res(r.per_worker)}) {r.strategy}{zero}"
        else:
            train = "in the driver process"
        rows.append((t.name, f"0..{t.config.generations}", _fmt_res(r.driver), gen, train))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines += [""] + ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths)) + f"  {row[-1]}" for row in rows]

    lines += ["", "per model, one trial holds (driver + vLLM, for its whole life) and trains on (Ray Train, "
                  "during each generation's fit):"]
    width = max(len(t.labels.model) for t in trials)
    for label in dict.fromkeys(t.labels.model for t in trials):
        t = next(x for x in trials if x.labels.model == label)
        n = sum(x.labels.model == label for x in trials)
        trains = _fmt_res(t.resources.training()) if t.resources.train_workers else "the driver's CPU"
        lines.append(f"  {label:<{width}} {n:>4} trials  holds {_fmt_res(t.resources.held()):<20}  "
                     f"trains on {trains}")
    needs = [add_resources(t.resources.held(), t.resources.training()) for t in trials]
    peak = {k: max(need.get(k, 0.0) for need in needs) for k in ("CPU", "GPU")}
    summed = add_resources(*needs)
    lines += [
        "",
        f"totals: {len(trials)} trials; one trial needs at most {peak['CPU']:g} CPUs and {peak['GPU']:g} GPUs; "
        f"summed over all trials {summed.get('CPU', 0):g} CPUs and {summed.get('GPU', 0):g} GPUs",
        f"cluster ({p.cluster_source}): {p.cluster.get('CPU', 0):g} CPUs, {p.cluster.get('GPU', 0):g} GPUs "
        f"-> max_concurrent_trials = {p.concurrency} ({p.reason})",
    ]
    return "\n".join(lines)
