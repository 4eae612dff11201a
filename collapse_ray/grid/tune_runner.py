"""The grid on Ray Tune: the only grid module that imports Ray.

    tune.Tuner(with_resources(trial_driver, the trial's placement group), max_concurrent_trials)
      trial_driver: backends.build_trainer / build_generator for the trial's resources,
                    loop.run_trial(report=tune.report)

Resume. A trial's on-disk state (trial_state.py) is the truth: a retried or restored trial calls
``run_trial`` again, which continues at the first unfinished generation and never logs an MLflow
step twice. Tune's checkpoint is a small pointer to that state.

Hook. ``COLLAPSE_RAY_TRIAL_HOOK=module:function`` (the module importable where the trial drivers
run) makes each trial driver call ``function(cfg, trainer, report)`` and run the trial with the
``(trainer, report)`` it returns: wrappers that observe, or break, a trial (the fault tests use
tests/grid_crash_hook.py).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from collapse_ray.backends import build_generator, build_trainer
from collapse_ray.errors import ConfigError, DataError, GridError
from collapse_ray.grid.expand import Trial, with_driver_ip
from collapse_ray.grid.plan import configured_cluster, plan
from collapse_ray.grid.spec import GridConfig
from collapse_ray.trial_state import TrialState, trial_dir

TRIAL_HOOK_ENV = "COLLAPSE_RAY_TRIAL_HOOK"
TRAIN_START_TIMEOUT_S = 3600   # how long a trial's Train run waits for its workers' resources


# ---------------------------------------------------------------- the trial driver (Tune trainable)

def trial_driver(params: dict, trials: dict[str, Trial]) -> None:
    """One Tune trial: run (or resume) the trial's recursive loop, reporting each generation."""
    from collapse_ray.loop import run_trial

    if params["trial"] not in trials:
        raise ValueError(f"trial {params['trial']} is no longer in the grid config; restore the config "
                         f"it was started with, or start the grid afresh")
    trial = trials[params["trial"]]
    cfg = trial.config
    state_dir = trial_dir(cfg.output_dir, cfg.name)
    say = _say(cfg.name)
    previous = tune.get_checkpoint()
    if previous is not None:
        with previous.as_directory() as d:
            say(f"restarted by Tune after generation {json.loads(Path(d, 'pointer.json').read_text())['generation']}; "
                f"continuing from the state in {state_dir}")
    # The grid's plan fits every running trial's Train worker group beside the others'; one may
    # still wait for a finished trial's group to go or for the autoscaler to add a node: wait
    # instead of Train V2's default of giving up (and retrying) every 60 s.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(TRAIN_START_TIMEOUT_S))

    def report(generation: int, metrics: dict, gen_dir: Path) -> None:
        with tempfile.TemporaryDirectory() as d:
            Path(d, "pointer.json").write_text(json.dumps(
                {"trial_dir": str(state_dir), "generation": generation, "gen_dir": str(gen_dir),
                 "driver_node": ray.get_runtime_context().get_node_id()}))
            tune.report({"generation": generation, **metrics}, checkpoint=tune.Checkpoint.from_directory(d))

    trainer = build_trainer(cfg, say, trial.resources)
    generator = build_generator(cfg, trial.resources, ray.util.get_current_placement_group())
    trainer, report = _hook()(cfg, trainer, report)
    run_trial(cfg, trainer=trainer, generator=generator, report=report, labels=trial.labels)


def _hook():
    """The function ``COLLAPSE_RAY_TRIAL_HOOK`` names (module docstring), else one that changes nothing."""
    target = os.environ.get(TRIAL_HOOK_ENV)
    if not target:
        return lambda cfg, trainer, report: (trainer, report)
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"{TRIAL_HOOK_ENV}={target!r}: cannot load it ({e}); expected module:function") from None


def _say(name: str):
    return lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running the grid

def tune_storage(grid: GridConfig, trials: list[Trial]) -> str:
    if grid.tune.storage_path:
        p = grid.tune.storage_path
        return p if "://" in p else str(Path(p).expanduser().resolve())
    return str(Path(trials[0].config.output_dir) / "_tune")


def runnable(trials: list[Trial]) -> list[Trial]:
    """The trials as this version can start them: colocation is planned (the dry-run prints it)
    but vLLM cannot yet be pinned to its Train workers' GPUs, so a colocated trial's engine gets
    GPUs of its own, and the grid says so once."""
    colocated = [t for t in trials if t.resources.colocated]
    if colocated:
        print(f"[grid] resources.colocate: {len(colocated)} trial(s) planned with vLLM on their Train GPUs; "
              f"this version gives each vLLM engine GPUs of its own instead (docs/grid.md, \"GPU colocation\")",
              flush=True)
    return [dataclasses.replace(t, resources=t.resources.separate()) if t.resources.colocated else t for t in trials]


def run_grid(grid: GridConfig, trials: list[Trial], resume: bool = False):
    """Run (or resume) the grid on the cluster ``RAY_ADDRESS`` names (``ray job submit`` sets it),
    on the one this process is connected to, or else on a local Ray started and stopped here."""
    trials = runnable(trials)
    storage = tune_storage(grid, trials)
    path = f"{storage.rstrip('/')}/{grid.name}"
    if resume and not tune.Tuner.can_restore(path):
        raise GridError(f"--resume: no grid state at {path}; run without --resume to start the grid")
    trials = with_driver_ip(trials, ray.util.get_node_ip_address())
    _prepare(trials)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init()
    try:
        return _fit(grid, trials, storage, resume)
    finally:
        if started_here:
            ray.shutdown()


def _prepare(trials: list[Trial]) -> None:
    """Before any trial starts: every trial's real data loads, the tracking store answers (and
    its schema and experiment exist, so concurrent trials do not race to create them), and the
    tiny base model is built, once."""
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.config import TINY_MODEL
    from collapse_ray.tasks import get_task
    from collapse_ray.tracking import TrialTracker

    loads = {json.dumps([dataclasses.asdict(t.config.task), t.config.seed, dataclasses.asdict(t.config.sizes)],
                        sort_keys=True): t.config for t in trials}
    for key in sorted(loads):
        cfg = loads[key]
        try:
            get_task(cfg.task.name, cfg.task.options).load(cfg.task.data_path, cfg.seed, cfg.sizes)
        except DataError as e:
            raise DataError(f"grid: task {cfg.task.name} (seed {cfg.seed}) cannot load its data: {e}") from None
    for uri, experiment in sorted({(t.config.tracking.uri, t.config.tracking.experiment) for t in trials}):
        TrialTracker(uri, experiment)
    models = {json.dumps(dataclasses.asdict(t.config.model), sort_keys=True): t.config.model for t in trials}
    for key in sorted(models):
        if models[key].name_or_path == TINY_MODEL:
            resolve_model_path(models[key], progress=_say("grid"))


def _fit(grid: GridConfig, trials: list[Trial], storage: str, resume: bool):
    path = f"{storage.rstrip('/')}/{grid.name}"
    cluster, source = configured_cluster(grid) or (
        {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}, "ray.cluster_resources()")
    p = plan(trials, cluster, source, grid.tune.max_concurrent_trials,
             grid.cluster.gpus_per_node if grid.cluster else None)
    print(f"[grid] {grid.name}: {len(trials)} trials, up to {p.concurrency} at once ({p.reason})", flush=True)

    by_name = {t.name: t for t in trials}
    pgfs = {t.name: tune.PlacementGroupFactory(t.resources.bundles(), strategy="PACK") for t in trials}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, trials=by_name),
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
                callbacks=[GridProgress(trials)]),
        )
    results = tuner.fit()
    failed = [str(r.config.get("trial")) for r in results if r.error is not None]
    unfinished = [t.name for t in trials   # the trials' state is the truth
                  if not TrialState.read(trial_dir(t.config.output_dir, t.name)).is_finished(t.config.generations)]
    print(f"[grid] {grid.name}: {len(trials) - len(unfinished)}/{len(trials)} trials finished; "
          f"Tune state in {path}", flush=True)
    if failed:
        raise GridError(f"grid {grid.name}: {len(failed)} trial(s) failed after {grid.tune.max_failures} retries: "
                        f"{', '.join(failed)}; fix the cause and run again with --resume")
    if unfinished:
        raise GridError(f"grid {grid.name}: interrupted with {len(unfinished)} trial(s) unfinished; "
                        f"continue with --resume")
    return results


class GridProgress(tune.Callback):
    """One line per finished generation and per trial state change, on the grid driver."""

    def __init__(self, trials: list[Trial]):
        from collapse_ray.tasks import headline_metrics

        self.generations = {t.name: t.config.generations for t in trials}   # each trial's last generation
        self.headline = {t.name: headline_metrics(t.config.task.name) for t in trials}
        self.done: set[str] = set()
        self.started = time.monotonic()

    def _line(self, msg: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        print(f"[grid {elapsed // 60}m{elapsed % 60:02d}s, {len(self.done)}/{len(self.generations)} trials done] "
              f"{msg}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._line(f"{trial.config['trial']}: started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["trial"]
        keys = [k for k in (*self.headline[name], "train/loss") if k in result]
        shown = ", ".join(f"{k}={result[k]:.4g}" for k in keys)
        self._line(f"{name}: generation {result.get('generation')}/{self.generations[name]} done {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done.add(trial.config["trial"])
        self._line(f"{trial.config['trial']}: finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(f"{trial.config['trial']}: driver failed (Tune retries up to max_failures; the trial "
                   f"resumes at its first unfinished generation)")
