"""The grid: one trial per model x task x regime x seed x mitigation, run on Ray Tune.

    grid YAML --spec.load_grid--> GridConfig --expand.expand--> [Trial]   (validated before any compute)
    plan.plan: concurrency; dry_run.describe: the dry-run's report, with estimate.py's disk,
        wall time and GPU-hours (no Ray); preflight.preflight_grid: every trial's pre-flight,
        run by the launch and the dry-run
    tune_runner.run_grid: the trials on Ray Tune (the only module here that imports Ray)
"""
from __future__ import annotations

from collapse_ray.backends import TrialResources
from collapse_ray.errors import ConfigError
from collapse_ray.grid.expand import DRIVER_IP, Trial, TrialLabels, expand, regime_label
from collapse_ray.grid.dry_run import describe, finished_on_disk
from collapse_ray.grid.estimate import load_costs, with_fastest_concurrency
from collapse_ray.grid.plan import Plan, configured_cluster, local_resources, plan
from collapse_ray.grid.preflight import preflight_grid
from collapse_ray.grid.spec import GridConfig, load_grid

__all__ = ["GridConfig", "Plan", "Trial", "TrialLabels", "TrialResources", "describe", "expand", "load_grid",
           "local_resources", "main", "plan", "regime_label"]


def main(args) -> None:
    """``collapse-ray grid CONFIG [--dry-run] [--resume] [--verbose]``."""
    grid = load_grid(args.config, missing_tasks_ok=args.dry_run)
    trials = expand(grid, missing_tasks_ok=args.dry_run)
    if args.dry_run:
        dry_run(grid, trials)
        return
    from collapse_ray.grid.tune_runner import run_grid

    run_grid(grid, trials, resume=args.resume, verbose=getattr(args, "verbose", False))


def dry_run(grid: GridConfig, trials: list[Trial]) -> None:
    """The plan, then the launch's pre-flight where the launch would run: it refuses what the
    launch would refuse, after printing the plan."""
    from collapse_ray.tasks import registered_tasks

    missing = sorted({t.name for t in grid.tasks} - set(registered_tasks()))
    cluster, source = configured_cluster(grid) or (
        local_resources(), "this machine, as a local ray.init() would see it")
    # Without a configured cluster, this machine is the one node.
    per_node = grid.cluster.gpus_per_node if grid.cluster else (cluster["GPU"] or None)
    costs = load_costs()
    p = with_fastest_concurrency(plan(trials, cluster, source, grid.tune.max_concurrent_trials, per_node), trials,
                                 costs, grid.tune.max_concurrent_trials)
    print(describe(grid, trials, p, missing, per_node, costs, finished_on_disk(trials)))
    elsewhere = _checked_where_it_runs(grid, trials)
    if elsewhere:
        print(f"\npre-flight: not run here; {elsewhere}: the launch checks every trial before any starts")
        return
    print("\npre-flight on this machine (what the launch checks before any trial starts) ...", flush=True)
    preflight_grid(trials, skip_tasks=missing)
    if p.refusal:
        raise ConfigError(p.refusal)
    print("pre-flight: every trial's config, output directory, tracking store, model and data check out, "
          "and the memory holds every trial")


def _checked_where_it_runs(grid: GridConfig, trials: list[Trial]) -> str | None:
    """Why this grid's pre-flight belongs to another machine; None when it would run here."""
    if grid.cluster is not None:
        return "the grid is planned for the cluster in `cluster:`"
    if any(DRIVER_IP in t.config.tracking.uri for t in trials):
        return "tracking.uri names ${DRIVER_IP}, which the launch resolves with Ray"
    return None
