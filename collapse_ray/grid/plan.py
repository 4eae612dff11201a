"""How many trials may run at once. Pure: no Ray.

A trial keeps, for its whole life, its placement group (its driver, its vLLM actor) and its Ray
Train worker group (backends.TrialResources; Train V2 places the group in a placement group of
its own, started once per trial: train/worker_group.py; a finished trial's driver that Tune keeps
for the next trial keeps both, the same amount: grid/kept_backends.py). A trial therefore never gives its Train
resources back between generations, and trials cannot take turns on them: with ``n`` trials
running, everything each keeps must fit at once, or a Train group waits forever for resources
another trial will never release. So, per resource:

    n = max { n : sum of the n largest (held + Train group) <= cluster }

On GPU, a colocated trial (grid ``resources.colocate``) keeps its training GPUs only: its vLLM
engine sleeps on them while they train. The planner checks that the engine's tensor-parallel
GPUs exist among the Train ranks of one node.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from collapse_ray.config import ConfigError
from collapse_ray.grid.expand import Trial
from collapse_ray.grid.memory import local_memory_gb, trial_memory_gb
from collapse_ray.grid.spec import GridConfig

EPS = 1e-9


@dataclass(frozen=True)
class Plan:
    cluster: dict[str, float]
    cluster_source: str
    concurrency: int
    reason: str
    refusal: str | None = None   # why the grid must not start here (a trial the memory cannot hold)


def local_resources() -> dict[str, float]:
    """What a local ``ray.init()`` would find here, without starting Ray, and the memory its
    trials may use (``memory_gb``, grid/memory.py)."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    n_gpus = len([g for g in gpus.split(",") if g.strip()]) if gpus is not None else len(glob.glob("/dev/nvidia[0-9]*"))
    memory = local_memory_gb()
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(n_gpus), **({"memory_gb": memory} if memory else {})}


def configured_cluster(grid: GridConfig) -> tuple[dict[str, float], str] | None:
    """The grid config's ``cluster:`` and where that figure comes from; None when it has none."""
    if grid.cluster is None:
        return None
    return {"CPU": grid.cluster.cpus, "GPU": grid.cluster.gpus}, "grid config `cluster:`"


def plan(trials: list[Trial], cluster: dict[str, float], source: str, requested: int | None = None,
         gpus_per_node: float | None = None) -> Plan:
    """How many trials may run at once without starving each other (module docstring).
    ``gpus_per_node``: the nodes' size, where known, for the colocation check."""
    for t in trials:
        need = t.resources.reserved()
        short = {k: v for k, v in need.items() if v > cluster.get(k, 0.0) + EPS}
        if short:
            have = ", ".join(f"{cluster.get(k, 0.0):g} {k}" for k in short)
            raise ConfigError(f"trial {t.name} needs {fmt_resources(need)} but the cluster ({source}) has {have}")
        check_colocation(t, gpus_per_node)
    bound, reason = len(trials), f"all {len(trials)} trials fit at once"
    for r in sorted({k for t in trials for k in t.resources.reserved()}):
        kept = sorted((t.resources.reserved().get(r, 0.0) for t in trials), reverse=True)
        n = largest_that_fit(kept, cluster.get(r, 0.0))
        if n < bound:
            bound, reason = n, (f"{r}: {n} trial(s) x up to {kept[0]:g} (held + Train group) "
                                f"<= {cluster.get(r, 0.0):g}")
    memory, refusal = memory_bound(trials, cluster, source)
    if memory is not None and memory[0] < bound:
        bound, reason = memory
    bound = max(1, bound)   # each trial fits alone (checked above)
    if requested is not None:
        if memory is not None and requested > memory[0]:   # Ray would start them, and then kill workers
            return Plan(cluster, source, max(1, memory[0]), f"tune.max_concurrent_trials {requested} lowered: "
                                                            f"{memory[1]}", refusal)
        return Plan(cluster, source, requested, f"tune.max_concurrent_trials (derived bound: {bound}; {reason})",
                    refusal)
    return Plan(cluster, source, bound, reason, refusal)


def largest_that_fit(descending: list[float], capacity: float) -> int:
    """How many of the largest (``descending``: sorted largest first) fit ``capacity`` together."""
    n, total = 0, 0.0
    while n < len(descending) and total + descending[n] <= capacity + EPS:
        total += descending[n]
        n += 1
    return n


def memory_bound(trials: list[Trial], cluster: dict[str, float],
                 source: str) -> tuple[tuple[int, str] | None, str | None]:
    """How many trials this machine's memory holds at once, and why (``cluster["memory_gb"]``; None
    where it is not known or no trial has an estimate); and the refusal of a trial that alone does
    not fit (the dry-run prints the plan first, the launch refuses before any trial starts)."""
    have = cluster.get("memory_gb")
    needs = [(gb, t.name) for t in trials if (gb := trial_memory_gb(t)) is not None]
    if have is None or not needs:
        return None, None
    largest = sorted((gb for gb, _ in needs), reverse=True)
    n = largest_that_fit(largest, have)
    reason = f"memory: {n} trial(s) x up to {largest[0]:.1f} GB (estimated) <= {have:.1f} GB"
    refusal = None
    if n == 0:
        big = max(needs)[1]
        refusal = (f"trial {big} needs about {largest[0]:.1f} GB of memory (grid/memory.py) but {source} has "
                   f"{have:.1f} GB for trials; use a smaller model or a larger machine")
    return (n, reason), refusal


def check_colocation(trial: Trial, gpus_per_node: float | None) -> None:
    """A colocated engine runs on the GPUs of the Train ranks on rank 0's node (backends.py): each
    rank needs whole GPUs, and that node's ranks need at least ``tensor_parallel`` of them."""
    r = trial.resources
    if not r.colocated:
        return
    per_worker = r.per_worker.get("GPU", 0.0)
    if per_worker != int(per_worker):
        raise ConfigError(f"trial {trial.name}: resources.colocate runs vLLM on its Train workers' GPUs, which "
                          f"needs whole GPUs per worker, got gpus_per_worker {per_worker:g}; use whole GPUs or "
                          f"set resources.colocate: false")
    ranks = r.train_workers if gpus_per_node is None else min(r.train_workers, int(gpus_per_node // per_worker))
    on_node = ranks * per_worker
    if r.tensor_parallel > on_node:
        where = "its Train run has" if gpus_per_node is None else f"one node ({gpus_per_node:g} GPUs) holds"
        raise ConfigError(f"trial {trial.name}: resources.colocate runs vLLM's tensor_parallel "
                          f"{r.tensor_parallel} on its Train workers' GPUs of one node, but {where} "
                          f"{on_node:g}; lower tensor_parallel, raise train_workers, or set resources.colocate: false")


def fmt_resources(res: dict[str, float]) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in sorted(res.items()) if v) or "nothing"
