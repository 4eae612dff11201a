"""The grid on Ray Tune: the only grid module that imports Ray.

    tune.Tuner(with_resources(trial_driver, the trial's placement group), max_concurrent_trials,
               reuse_actors)
      trial_driver: the trial's trainer and generator (kept_backends.py: the previous trial's
                    in this driver process where they match), loop.run_trial(report=tune.report)

Resume. A trial's on-disk state (trial_state.py) is the truth: a retried or restored trial calls
``run_trial`` again, which continues at the first unfinished generation and never logs an MLflow
step twice. Tune's checkpoint is a small pointer to that state.

Launch. One launch at a time per grid state (launch_lock.py); an MLflow parent run per launch
(grid/launch.py), reopened on ``--resume``, with every trial's run nested under it and the
launch's report logged to it at the end. The console shows grid/console.py's lines; Ray, Tune
and each trial driver write to log files in the grid's state directory, unless ``verbose``.

Hook. ``COLLAPSE_RAY_TRIAL_HOOK=module:function`` (the module importable where the trial drivers
run) makes each trial driver call ``function(cfg, trainer, report)`` and run the trial with the
``(trainer, report)`` it returns: wrappers that observe, or break, a trial (the fault tests use
tests/grid_crash_hook.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import ray
from ray import tune

from collapse_ray.console import output_to, quiet_libraries, ray_init_options
from collapse_ray.errors import ConfigError, GridError
from collapse_ray.interrupts import sigterm_as_sigint
from collapse_ray.ray_here import init_ray
from collapse_ray.train.worker_group import launch_board
from collapse_ray.grid.console import GRID_LOG, GridConsole, logs_dir, trial_log
from collapse_ray.grid.estimate import load_costs, start_order, with_fastest_concurrency
from collapse_ray.grid.expand import Trial, with_driver_ip
from collapse_ray.grid.kept_backends import KeptBackends
from collapse_ray.grid.launch import GridLaunch, grid_state_dir
from collapse_ray.grid.memory import local_memory_gb
from collapse_ray.grid.plan import configured_cluster, plan
from collapse_ray.grid.spec import GridConfig
from collapse_ray.launch_lock import launch_lock
from collapse_ray.trial_state import TrialState, trial_dir

TRIAL_HOOK_ENV = "COLLAPSE_RAY_TRIAL_HOOK"
TRAIN_START_TIMEOUT_S = 3600   # how long a trial's Train run waits for its workers' resources
_KEPT = KeptBackends()   # this trial driver process's backends, for the next trial Tune runs in it


# ---------------------------------------------------------------- the trial driver (Tune trainable)

def trial_driver(params: dict, trials: dict[str, Trial], grid_state: str, parent_run_id: str | None,
                 verbose: bool) -> None:
    """One Tune trial: run (or resume) the trial's recursive loop, reporting each generation. Its
    output (and the traceback of its failure) goes to its log in the grid's state, unless ``verbose``."""
    if params["trial"] not in trials:
        raise ValueError(f"trial {params['trial']} is no longer in the grid config; restore the config "
                         f"it was started with, or start the grid afresh")
    name = params["trial"]
    with contextlib.nullcontext() if verbose else output_to(trial_log(grid_state, name)):
        if not verbose:
            quiet_libraries()
        print(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')}: trial {name}, driver pid {os.getpid()} on "
              f"{ray.util.get_node_ip_address()}", file=sys.stderr, flush=True)
        try:
            _drive(trials[name], parent_run_id)
        except BaseException:
            traceback.print_exc()   # into the trial's log; Tune records it too
            raise


def _drive(trial: Trial, parent_run_id: str | None) -> None:
    import torch

    from collapse_ray.loop import run_trial
    from collapse_ray.train.worker_group import cpu_threads

    cfg = trial.config
    torch.set_num_threads(cpu_threads(trial.resources.driver))   # drift scoring runs here (see cpu_threads)
    state_dir = trial_dir(cfg.output_dir, cfg.name)
    say = lambda msg: print(f"[{cfg.name}] {msg}", file=sys.stderr, flush=True)   # noqa: E731
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

    try:
        trainer, generator = _KEPT.for_trial(cfg, trial.resources, ray.util.get_current_placement_group(), say)
        trainer, report = _hook()(cfg, trainer, report)
        run_trial(cfg, trainer=trainer, generator=generator, report=report, labels=trial.labels,
                  parent_run_id=parent_run_id)
    except BaseException:
        _KEPT.close()   # they may be what failed: the retry starts with new ones
        raise


def closing_kept_backends(driver: Callable[[dict], None]) -> type:
    """The trial driver as Tune's trainable class, which closes the process's kept backends when
    Tune stops it. Tune stops a driver it no longer needs (at the grid's end, or when no pending
    trial fits its placement group) by calling ``stop`` and then removing the driver's placement
    group, which kills the process: a kept Train worker group's own placement group would then stay
    reserved (nothing here watches for a dead controller, see worker_group._free_orphan)."""
    from ray.tune.trainable import wrap_function

    class TrialDriver(wrap_function(driver)):   # Ray's name for the driver's actor and process
        def cleanup(self):
            try:
                super().cleanup()
            finally:
                close_kept_backends()

    return TrialDriver


def close_kept_backends() -> None:
    """Close this process's kept backends. A module function, so that the trainable class (sent to
    the driver by value) reaches the process's own ``_KEPT``, not a copy sent along with it."""
    _KEPT.close()


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


def run_grid(grid: GridConfig, trials: list[Trial], resume: bool = False, verbose: bool = False):
    """Run (or resume) the grid on the cluster ``RAY_ADDRESS`` names (``ray job submit`` sets it),
    on the one this process is connected to, or else on a local Ray started and stopped here.
    ``verbose``: Ray's, Tune's and the trials' output on the console instead of in log files."""
    trials = runnable(trials)
    storage = tune_storage(grid, trials)
    path = f"{storage.rstrip('/')}/{grid.name}"
    if resume and not tune.Tuner.can_restore(path):
        raise GridError(f"--resume: no grid state at {path}; run without --resume to start the grid")
    state = grid_state_dir(grid, trials)
    with launch_lock(state, where="grid state"), _console(state, verbose) as stream:
        console = GridConsole(trials, state, stream, grid.tune.max_failures)
        if not verbose:
            quiet_libraries()   # this process's own MLflow and report output, in its log
            console.line(f"[grid] {grid.name}: Ray's, Tune's and each trial's output go to {logs_dir(state)} "
                         f"({GRID_LOG}, <trial>.log); --verbose prints them here")
        _launch(grid, trials, storage, resume, verbose, console)


def _console(state: Path, verbose: bool):
    return contextlib.nullcontext(sys.stdout) if verbose else output_to(logs_dir(state) / GRID_LOG)


def _launch(grid: GridConfig, trials: list[Trial], storage: str, resume: bool, verbose: bool,
            console: GridConsole):
    trials = with_driver_ip(trials, ray.util.get_node_ip_address())
    _prepare(trials, console.line)
    launch = GridLaunch(grid, trials, console.state_dir, console.line)
    launch.start(resume)
    started_here = not ray.is_initialized()
    if started_here:   # workers' output reaches this process, whose output is the grid's log
        init_ray(**ray_init_options(verbose, log_to_driver=True))
    try:
        with sigterm_as_sigint():   # again: ray.init put its own SIGTERM handler (log, then abort) in place
            outcome = _fit(grid, trials, storage, resume, verbose, console, launch.run_id)
    except BaseException as e:
        launch.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED", report=False)
        raise
    finally:
        if started_here:
            ray.shutdown()
    failed, unfinished = outcome
    mark_stopped_trials_killed([t for t in trials if t.name in unfinished and t.name not in failed])
    launch.finish("FAILED" if failed else "KILLED" if unfinished else "FINISHED", report=True)
    if failed:
        raise GridError(f"grid {grid.name}: {len(failed)} trial(s) failed after {grid.tune.max_failures} retries: "
                        f"{', '.join(failed)}; fix the cause and run again with --resume")
    if unfinished:
        raise GridError(f"grid {grid.name}: interrupted with {len(unfinished)} trial(s) unfinished; "
                        f"continue with --resume")


def mark_stopped_trials_killed(trials: list[Trial]) -> None:
    """A trial Tune stopped (not one that failed: those are not passed here) ends as RUNNING, when
    its driver was killed before its cleanup ran, or as FAILED, when Tune's stop reached the loop as
    an error; either way it was stopped, and its run (its id is in the trial's state) is marked KILLED."""
    from mlflow.tracking import MlflowClient

    for t in trials:
        run_id = TrialState.read(trial_dir(t.config.output_dir, t.name)).mlflow_run_id
        if run_id is None:
            continue
        client = MlflowClient(tracking_uri=t.config.tracking.uri)
        if client.get_run(run_id).info.status in ("RUNNING", "FAILED"):
            client.set_terminated(run_id, status="KILLED")


def _prepare(trials: list[Trial], say) -> None:
    """Before any trial starts: every trial's pre-flight (grid/preflight.py), the tracking stores'
    schema and experiment (so concurrent trials do not race to create them), and the tiny base
    model, built once."""
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.config import TINY_MODEL
    from collapse_ray.grid.preflight import preflight_grid
    from collapse_ray.tracking import TrialTracker

    preflight_grid(trials, say=lambda msg: say(f"[grid] pre-flight: {msg}"))
    for uri, experiment in sorted({(t.config.tracking.uri, t.config.tracking.experiment) for t in trials}):
        TrialTracker(uri, experiment)
    models = {json.dumps(dataclasses.asdict(t.config.model), sort_keys=True): t.config.model for t in trials}
    for key in sorted(models):
        if models[key].name_or_path == TINY_MODEL:
            resolve_model_path(models[key], progress=lambda msg: say(f"[grid] {msg}"))


def running_cluster() -> dict[str, float]:
    """The running cluster's CPUs and GPUs; when it is this one machine, also the memory its
    trials may use (grid/memory.py), which Ray itself does not pack trials by."""
    cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    memory = local_memory_gb()
    if len(nodes) == 1 and nodes[0].get("NodeManagerAddress") == ray.util.get_node_ip_address() and memory:
        cluster["memory_gb"] = memory
    return cluster


def _fit(grid: GridConfig, trials: list[Trial], storage: str, resume: bool, verbose: bool, console: GridConsole,
         parent_run_id: str) -> tuple[list[str], list[str]]:
    """Run the trials on Tune; returns (failed, unfinished) trial names."""
    global _CONSOLE
    path = f"{storage.rstrip('/')}/{grid.name}"
    cluster, source = configured_cluster(grid) or (running_cluster(), "ray.cluster_resources()")
    costs = load_costs()
    p = with_fastest_concurrency(plan(trials, cluster, source, grid.tune.max_concurrent_trials,
                                      grid.cluster.gpus_per_node if grid.cluster else None),
                                 trials, costs, grid.tune.max_concurrent_trials)
    if p.refusal:
        raise ConfigError(p.refusal)
    console.line(f"[grid] {grid.name}: {len(trials)} trials, up to {p.concurrency} at once ({p.reason})")

    by_name = {t.name: t for t in trials}
    pgfs = {t.name: tune.PlacementGroupFactory(t.resources.bundles(), strategy="PACK") for t in trials}
    trainable = closing_kept_backends(tune.with_resources(
        tune.with_parameters(trial_driver, trials=by_name, grid_state=str(console.state_dir),
                             parent_run_id=parent_run_id, verbose=verbose),
        resources=lambda params: pgfs[params["trial"]]))
    _CONSOLE = console
    if resume:
        # Tune's own settings (concurrency, max_failures, its callbacks) come back from its saved state.
        console.line(f"[grid] resuming {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        started = start_order(trials, costs, p.concurrency, cluster.get("CPU", 0.0))
        if started != trials:
            console.line(f"[grid] {grid.name}: trials start in the order whose estimated schedule ends soonest, "
                         f"each generation-0 key's together, first {started[0].name} (the dry-run shows it)")
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.name for t in started])},
            # A finished trial's driver, with its Train worker group and vLLM actor
            # (kept_backends.py), runs the next trial of the same placement group.
            tune_config=tune.TuneConfig(max_concurrent_trials=p.concurrency, reuse_actors=True,
                                        trial_name_creator=lambda trial: trial.config["trial"],
                                        trial_dirname_creator=lambda trial: trial.config["trial"]),
            run_config=tune.RunConfig(
                name=grid.name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=grid.tune.max_failures),
                callbacks=[GridProgress()], **({} if verbose else {"verbose": 0})),
        )
    # One job board for every trial's Ray Train worker group (worker_group.py), owned by this process.
    board = launch_board() if any(t.config.training.backend == "ray" for t in trials) else None
    try:
        results = tuner.fit()
    finally:
        _CONSOLE = None
        if board is not None:
            ray.kill(board)
    failed = [str(r.config.get("trial")) for r in results if r.error is not None]
    unfinished = [t.name for t in trials   # the trials' state is the truth
                  if not TrialState.read(trial_dir(t.config.output_dir, t.name)).is_finished(t.config.generations)]
    console.line(f"[grid] {grid.name}: {len(trials) - len(unfinished)}/{len(trials)} trials finished; "
                 f"Tune state in {path}")
    return failed, unfinished


# The console of the launch running in this process. Tune pickles its callbacks into its state
# and brings them back on --resume, so GridProgress keeps nothing itself (no stream, no counts).
_CONSOLE: GridConsole | None = None


class GridProgress(tune.Callback):
    """Tune's trial events, as the running launch's console lines (grid/console.py), on the grid driver."""

    def on_trial_start(self, iteration, trials, trial, **info):
        if _CONSOLE:
            _CONSOLE.trial_started(trial.config["trial"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if _CONSOLE:
            _CONSOLE.generation_done(trial.config["trial"], result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _CONSOLE:
            _CONSOLE.trial_finished(trial.config["trial"])

    def on_trial_recover(self, iteration, trials, trial, **info):
        if _CONSOLE:
            _CONSOLE.trial_retried(trial.config["trial"], _error_text(trial), trial.num_failures)

    def on_trial_error(self, iteration, trials, trial, **info):
        if _CONSOLE:
            _CONSOLE.trial_failed(trial.config["trial"], _error_text(trial))


def _error_text(trial) -> str | None:
    """The trial's error file as Tune just wrote it: on this machine (``trial.get_error`` reads the
    storage copy, synced later)."""
    path = trial.error_file
    return Path(path).read_text(errors="replace") if path and Path(path).is_file() else trial.get_error()
