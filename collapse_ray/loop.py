"""The recursive self-training loop for one trial, readable top to bottom.

    for g in 0..G:
        train_set_g  = regime.mix(real, synthetic_0..g-1)      # generation 0: real data only
        model_g      = fine-tune(init, train_set_g)           # init: base model, or model_{g-1}
        outputs_g    = model_g answers the pool's prompts
        synthetic_g  = mitigations(outputs_g)                 # quality filter, dedup, selection
        metrics_g    = task metrics of model_g + drift of what model_g wrote (perplexity under model_0, ...)
        checkpoint generation g; log metrics_g to MLflow at step g

Plain Python: runs in process without Ray. The Ray grid passes the trainer and generator that
backends.py built for the trial's reserved resources, and a ``report`` hook (which hands each
generation to Tune); the body stays the same.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Callable

from collapse_ray.backends import build_generator, build_trainer
from collapse_ray.config import ExperimentConfig
from collapse_ray.datatypes import ModelRef, read_jsonl, write_jsonl
from collapse_ray.disk_full import as_no_space_left
from collapse_ray.errors import ModelError, TrialError
from collapse_ray.generate.base import Generator, Sampling
from collapse_ray.labels import TrialLabels, labels_of
from collapse_ray.launch_lock import launch_lock
from collapse_ray.mitigations import apply_mitigations
from collapse_ray.preflight import preflight
from collapse_ray.progress import Progress
from collapse_ray.regimes import provenance
from collapse_ray.resource_meter import ProcessTreeMeter
from collapse_ray.retention import apply_retention
from collapse_ray.shared_gen0 import SharedGeneration0, generation0_key
from collapse_ray.tasks import get_task
from collapse_ray.tracking import TrackingError, TrialTracker
from collapse_ray.train.base import Trainer
from collapse_ray.trial_state import TrialState, trial_dir

# Fields that do not change what a trial computes: a trial may be resumed with other values
# (more generations, another tracking server).
_RESUMABLE_FIELDS = ("generations", "tracking", "output_dir", "generator", "sandbox", "retention")

Report = Callable[[int, dict, Path], None]


def fingerprint_data(cfg: ExperimentConfig) -> dict:
    """What the trial computes, as config_fingerprint hashes it. It keeps the shape it had before regimes and task
    options became registered classes, so trials started then still resume: every regime carries
    ``alpha`` (0.5 unless it has its own), and a task option counts only when it differs from its
    default (so adding an option with a default never orphans a trial on disk)."""
    data = dataclasses.asdict(cfg)
    for name in _RESUMABLE_FIELDS:
        data.pop(name)
    # Where the base model is kept, not what it is (its recipe is): a grid expands it to an absolute
    # path, so with it a trial would not resume from another directory or clone.
    data["model"]["tiny"].pop("cache_dir")
    data["regime"] = {"alpha": 0.5, **data["regime"]}
    if data["model"]["tiny"]["train_steps"] is None:   # added later; unpinned trials keep their identity
        data["model"]["tiny"].pop("train_steps")
    if not data["mitigation"]["execution_filter"]:      # likewise
        data["mitigation"].pop("execution_filter")
    if data["training"]["gen0_max_steps"] is None:      # likewise
        data["training"].pop("gen0_max_steps")
    task = data["task"]
    defaults = dataclasses.asdict(type(cfg.task.options)()) if dataclasses.is_dataclass(cfg.task.options) else {}
    changed = {k: v for k, v in (task.pop("options") or {}).items() if defaults.get(k, object()) != v}
    if changed:
        task["options"] = changed
    return data


def config_fingerprint(cfg: ExperimentConfig) -> str:
    """The trial directory's identity: a rerun resumes only a trial of the same fingerprint."""
    return _hashed(fingerprint_data(cfg))


def earlier_fingerprints(cfg: ExperimentConfig) -> tuple[str, ...]:
    """What earlier versions fingerprinted the same config as (trials they started resume, and take
    the current fingerprint): with the base model's cache directory in it."""
    data = fingerprint_data(cfg)
    data["model"]["tiny"]["cache_dir"] = cfg.model.tiny.cache_dir
    return (_hashed(data),)


def _hashed(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def check_model_loadable(name_or_path: str) -> None:
    """Fail before any training when the model's config cannot be had (offline, typo, no access)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ModelError(f"model.name_or_path: cannot load {name_or_path!r}: "
                         f"{str(e).splitlines()[0]}; check the id, your access and the network") from None


def run_trial(cfg: ExperimentConfig, *, trainer: Trainer | None = None, generator: Generator | None = None,
              report: Report | None = None, labels: TrialLabels | None = None,
              parent_run_id: str | None = None) -> list[dict]:
    """Run (or resume) one trial; returns the metrics of every generation 0..cfg.generations.
    Without ``trainer`` / ``generator`` it builds them in this process (backends.py) and closes
    them at the end; ones passed in stay open (the grid keeps them for its next trial). ``labels``:
    the grid's labels of the trial (its MLflow tags), else made from the config. ``parent_run_id``:
    the grid launch's MLflow run, under which this trial's run is nested."""
    progress = Progress(cfg.name, cfg.generations + 1)
    progress.note("checking the config, output_dir, tracking store and model before any compute ...")
    data = preflight(cfg, say=progress.note)   # everything `validate` checks; bad data fails here
    task = get_task(cfg.task.name, cfg.task.options)
    task.allow_unisolated = cfg.sandbox.allow_unisolated  # read by tasks that run programs
    with launch_lock(trial_dir(cfg.output_dir, cfg.name)):   # a second launch of this trial is refused
        return _run_locked(cfg, task, data, progress, trainer, generator, report, labels or labels_of(cfg),
                           parent_run_id)


def _run_locked(cfg: ExperimentConfig, task, data, progress: Progress, trainer: Trainer | None,
                generator: Generator | None, report: Report | None, labels: TrialLabels,
                parent_run_id: str | None) -> list[dict]:
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.synthetic_drift import DriftProbe   # imports torch: after the checks, not before

    state = TrialState(trial_dir(cfg.output_dir, cfg.name), config_fingerprint(cfg), earlier_fingerprints(cfg))
    progress.note(f"opening the MLflow store {cfg.tracking.uri} ...")
    tracker = TrialTracker(cfg.tracking.uri, cfg.tracking.experiment, retry_minutes=cfg.tracking.retry_minutes)
    state.set_mlflow_run_id(tracker.start(cfg.name, labels.tags(), run_id=state.mlflow_run_id,
                                          parent_run_id=parent_run_id))
    shared0 = SharedGeneration0(cfg.output_dir, generation0_key(fingerprint_data(cfg)), cfg.name)
    meter = ProcessTreeMeter().start()   # this trial's own CPU-seconds and peak memory per generation
    built_trainer = built_generator = None
    finished = state.finished()
    g = len(finished)
    try:   # from here on the MLflow run exists: whatever stops the trial marks it
        if finished:   # a policy tightened since the last launch applies at once
            apply_retention(state, cfg.retention, finished[-1].generation)
        progress.resume_at(len(finished))
        base = ModelRef(resolve_model_path(cfg.model, progress=progress.say))
        progress.note("loading the base model's config (imports torch and transformers) ...")
        check_model_loadable(base.path)
        tracker.log_params({**cfg.to_flat_params(), "resolved_model_path": base.path, **_metric_settings()})
        tracker.log_manifest([cfg.task.data_path], base.path)
        for done in finished:  # finished on disk but the crash came before MLflow heard of it
            tracker.log_generation(done.generation, done.metrics)

        history = [read_jsonl(done.synthetic_path) for done in finished]
        all_metrics = [done.metrics for done in finished]
        previous = finished[-1].model if finished else None
        drift = DriftProbe(task, data.train, reference=finished[0].model if finished else None)
        if trainer is None:   # built here, closed here; a caller's own it closes itself
            trainer = built_trainer = build_trainer(cfg, progress.say)
        if generator is None:
            generator = built_generator = build_generator(cfg)
        generator.prefetch(previous or base)   # vLLM builds its engine while the first generation trains
        sampling = Sampling(max_new_tokens=cfg.sizes.max_new_tokens, temperature=cfg.sampling.temperature,
                            top_p=cfg.sampling.top_p, stop=task.stop)
        for g in range(len(finished), cfg.generations + 1):
            progress.begin_generation(g)
            rng = random.Random(f"{cfg.seed}/{g}")
            gen_dir = state.fresh_gen_dir(g)

            with progress.phase("mix"):
                train_set = cfg.regime.mix(data.train, history, g, cfg.sizes.train_examples, rng)
            init = base if g == 0 or cfg.training.init == "base" else previous
            with progress.phase("train"):
                generator.sleep()   # colocated on a GPU, the engine frees it while the workers train
                reused = shared0.claim() if g == 0 else None   # None: this trial computes generation 0
                trained = reused.trained if reused else trainer.train(
                    init, [ex.text for ex in train_set], str(gen_dir / "model"), seed=cfg.seed * 1000 + g,
                    cfg=cfg.training.for_generation(g))

            with progress.phase("generate"):
                generator.load(trained.model)
                n_samples = round(len(data.pool) * cfg.mitigation.oversample)
                prompts = [data.pool[i % len(data.pool)] for i in range(n_samples)]
                synthetic = task.synthesize(generator, prompts, dataclasses.replace(sampling, seed=cfg.seed * 1000 + g), g)
                kept, removed = apply_mitigations(synthetic, task, cfg.mitigation, len(data.pool), rng)
                if not kept and cfg.regime.uses_synthetic and g < cfg.generations:
                    raise TrialError(f"generation {g}: the mitigations removed all {len(synthetic)} synthetic "
                                     f"samples ({removed}); generation {g + 1} would have nothing to train on: "
                                     f"loosen mitigation.* or use more sizes.synthetic_pool")
                write_jsonl(gen_dir / "synthetic.jsonl", kept)

            with progress.phase("evaluate"):
                task_metrics = reused.task_metrics if reused else task.evaluate(generator, data.test, sampling)
                if g == 0 and not reused:
                    shared0.publish(trained, task_metrics)
            with progress.phase("drift"):
                if g == 0:
                    drift.set_reference(trained.model)
                drift_metrics, drift_files = drift.measure(kept, current=trained.model, out_dir=gen_dir / "drift",
                                                           previous=history[g - 1] if g else None)

            metrics = {
                **task_metrics, **drift_metrics,
                "train/loss": trained.train_loss, "train/examples": float(len(train_set)),
                "train/tokens": float(trained.tokens), "train/steps": float(trained.steps),
                "train/startup_s": 0.0 if reused else trained.startup_s,   # part of time/train_s
                "train/core_wait_s": 0.0 if reused else trained.core_wait_s,   # part of time/train_s
                "train/steps_s": 0.0 if reused else trained.steps_s,           # part of time/train_s
                "train/steps_cpu_s": 0.0 if reused else trained.steps_cpu_s,
                "synthetic/generated": float(len(synthetic)), "synthetic/kept": float(len(kept)),
                **{f"synthetic/removed_{k}": float(v) for k, v in removed.items()},
                **{f"train/share_{k}": v / len(train_set) for k, v in provenance(train_set).items()
                   if k == "real"},
                **{f"time/{k}_s": v for k, v in progress.phase_seconds.items()}, **meter.sample(),
            }
            if reused:   # another trial spent that time: counted once, where it was spent
                metrics.update({"time/gen0_wait_s": metrics["time/train_s"], "time/train_s": 0.0,
                                "time/evaluate_s": 0.0})
                tracker.set_tags({"gen0_source": reused.source})
            state.mark_complete(g, trained.model, metrics)
            apply_retention(state, cfg.retention, g)
            tracker.log_generation(g, metrics)
            tracker.log_artifact(str(gen_dir / "synthetic.jsonl"), artifact_path=f"synthetic/gen_{g:02d}")
            for path in drift_files:
                tracker.log_artifact(str(path), artifact_path=f"drift/gen_{g:02d}")
            if report is not None:
                report(g, metrics, gen_dir)
            history.append(kept)
            all_metrics.append(metrics)
            previous = trained.model
            progress.say(_summary(metrics, task.headline_metrics))
    except BaseException as e:
        # Ctrl-C / SIGTERM (interrupts.py) is a stop, not a failure: the run resumes later.
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        full = None if isinstance(e, TrackingError) else as_no_space_left(e, state.gen_dir(g), g)
        if full is not None:
            raise full from e
        raise
    finally:
        shared0.release()
        meter.stop()
        if built_generator is not None:
            built_generator.close()
        if built_trainer is not None:
            built_trainer.close()
    tracker.finish("FINISHED")
    return all_metrics


def _summary(metrics: dict, headline: tuple[str, ...]) -> str:
    keys = [k for k in (*headline, "train/loss", "drift/ppl_gen0_mean") if k in metrics]
    return "finished: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in keys)


def _metric_settings() -> dict[str, str]:
    from collapse_ray.metrics.drift import DRIFT_SETTINGS
    from collapse_ray.metrics.text import BLEU_SETTINGS, ROUGE_SETTINGS

    return {**{f"metric.bleu.{k}": v for k, v in BLEU_SETTINGS.items()},
            **{f"metric.rouge.{k}": v for k, v in ROUGE_SETTINGS.items()},
            **{f"metric.drift.{k}": v for k, v in DRIFT_SETTINGS.items()}}
