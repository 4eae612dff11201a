"""The recursive self-training loop for one trial, readable top to bottom.

    for g in 0..G:
        train_set_g  = regime.mix(real, synthetic_0..g-1)      # generation 0: real data only
        model_g      = fine-tune(init, train_set_g)           # init: base model, or model_{g-1}
        outputs_g    = model_g answers the pool's prompts
        synthetic_g  = mitigations(outputs_g)                 # quality filter, dedup, selection
        metrics_g    = task metrics of model_g + drift of synthetic_g (perplexity under model_0, ...)
        checkpoint generation g; log metrics_g to MLflow at step g

Plain Python: runs in process without Ray. The Ray grid passes its own trainer, generator and
``report`` hook (which hands each generation to Tune); the body stays the same.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Callable

from collapse_ray.config import ExperimentConfig
from collapse_ray.errors import ModelError, TrialError
from collapse_ray.examples import read_jsonl, write_jsonl
from collapse_ray.generate.base import Generator, ModelRef, Sampling
from collapse_ray.mitigations import apply_mitigations
from collapse_ray.preflight import preflight
from collapse_ray.progress import Progress
from collapse_ray.regimes import mix, provenance
from collapse_ray.tasks import get_task
from collapse_ray.tracking import TrialTracker
from collapse_ray.train.base import Trainer
from collapse_ray.trial_state import TrialState

# Fields that do not change what a trial computes: a trial may be resumed with other values
# (more generations, another tracking server).
_RESUMABLE_FIELDS = ("generations", "tracking", "output_dir", "generator")

Report = Callable[[int, dict, Path], None]


def config_fingerprint(cfg: ExperimentConfig) -> str:
    data = dataclasses.asdict(cfg)
    for name in _RESUMABLE_FIELDS:
        data.pop(name)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def make_trainer(cfg: ExperimentConfig, progress: Progress) -> Trainer:
    if cfg.training.backend == "ray":
        from collapse_ray.train.ray_trainer import RayTrainer

        return RayTrainer(cfg.training)
    from collapse_ray.train.local import LocalTrainer

    return LocalTrainer(cfg.training, progress=progress.say)


def make_generator(cfg: ExperimentConfig) -> Generator:
    if cfg.generator.backend == "vllm":
        from collapse_ray.generate.vllm_actor import RayVLLMGenerator

        return RayVLLMGenerator(kv_cache_bytes=int(cfg.generator.kv_cache_gb * 2**30), dtype=cfg.generator.dtype)
    from collapse_ray.generate.hf import HFGenerator

    return HFGenerator(batch_size=cfg.generator.batch_size)


def trial_tags(cfg: ExperimentConfig) -> dict[str, str]:
    return {"model": cfg.model.name_or_path, "task": cfg.task.name, "regime": cfg.regime.name,
            "seed": str(cfg.seed), "mitigation": mitigation_label(cfg)}


def mitigation_label(cfg: ExperimentConfig) -> str:
    m = cfg.mitigation
    parts = (["quality"] if m.quality_filter else []) + ([m.dedup] if m.dedup != "none" else [])
    parts += [f"oversample{m.oversample:g}"] if m.oversample > 1 else []
    return "+".join(parts) or "none"


ModelUnavailable = ModelError   # the name this error had before errors.py


def check_model_loadable(name_or_path: str) -> None:
    """Fail before any training when the model's config cannot be had (offline, typo, no access)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ModelError(f"model.name_or_path: cannot load {name_or_path!r}: "
                         f"{str(e).splitlines()[0]}; check the id, your access and the network") from None


def run_trial(cfg: ExperimentConfig, *, trainer: Trainer | None = None,
              generator: Generator | None = None, report: Report | None = None) -> list[dict]:
    """Run (or resume) one trial; returns the metrics of every generation 0..cfg.generations."""
    progress = Progress(cfg.name, cfg.generations + 1)
    progress.note("checking the config, output_dir, tracking store and model before any compute ...")
    data = preflight(cfg, say=progress.note)   # everything `validate` checks; bad data fails here
    from collapse_ray.base_model import resolve_model_path
    from collapse_ray.synthetic_drift import DriftProbe   # imports torch: after the checks, not before

    task = get_task(cfg.task.name)
    state = TrialState(Path(cfg.output_dir) / cfg.name, config_fingerprint(cfg))
    progress.note(f"opening the MLflow store {cfg.tracking.uri} ...")
    tracker = TrialTracker(cfg.tracking.uri, cfg.tracking.experiment)
    state.set_mlflow_run_id(tracker.start(cfg.name, trial_tags(cfg), run_id=state.mlflow_run_id))
    try:   # from here on the MLflow run exists: whatever stops the trial marks it
        finished = state.finished()
        progress.resume_at(len(finished))
        base = ModelRef(resolve_model_path(cfg.model, progress=progress.say))
        progress.note("loading the base model's config (imports torch and transformers) ...")
        check_model_loadable(base.path)
        tracker.log_params({**cfg.to_flat_params(), "resolved_model_path": base.path, **_metric_settings()})
        for done in finished:  # finished on disk but the crash came before MLflow heard of it
            tracker.log_generation(done.generation, done.metrics)

        history = [read_jsonl(done.synthetic_path) for done in finished]
        all_metrics = [done.metrics for done in finished]
        previous = finished[-1].model if finished else None
        drift = DriftProbe(real_texts=[ex.text for ex in data.train],
                           reference=finished[0].model if finished else None, is_code=task.is_code)
        trainer = trainer or make_trainer(cfg, progress)
        generator = generator or make_generator(cfg)
        sampling = Sampling(max_new_tokens=cfg.sizes.max_new_tokens, temperature=cfg.sampling.temperature,
                            top_p=cfg.sampling.top_p, stop=task.stop)
        for g in range(len(finished), cfg.generations + 1):
            progress.begin_generation(g)
            rng = random.Random(f"{cfg.seed}/{g}")
            gen_dir = state.fresh_gen_dir(g)

            with progress.phase("mix"):
                train_set = mix(cfg.regime.name, data.train, history, g, cfg.sizes.train_examples, rng,
                                alpha=cfg.regime.alpha)
            init = base if g == 0 or cfg.training.init == "base" else previous
            with progress.phase("train"):
                trained = trainer.train(init, [ex.text for ex in train_set], str(gen_dir / "model"),
                                        seed=cfg.seed * 1000 + g)

            with progress.phase("generate"):
                generator.load(trained.model)
                n_samples = round(len(data.pool) * cfg.mitigation.oversample)
                prompts = [data.pool[i % len(data.pool)] for i in range(n_samples)]
                synthetic = task.synthesize(generator, prompts, dataclasses.replace(sampling, seed=cfg.seed * 1000 + g), g)
                kept, removed = apply_mitigations(synthetic, task, cfg.mitigation, len(data.pool), rng)
                if not kept and cfg.regime.name != "real-only" and g < cfg.generations:
                    raise TrialError(f"generation {g}: the mitigations removed all {len(synthetic)} synthetic "
                                     f"samples ({removed}); generation {g + 1} would have nothing to train on: "
                                     f"loosen mitigation.* or use more sizes.synthetic_pool")
                write_jsonl(gen_dir / "synthetic.jsonl", kept)

            with progress.phase("evaluate"):
                task_metrics = task.evaluate(generator, data.test, sampling)
            with progress.phase("drift"):
                if g == 0:
                    drift.set_reference(trained.model)
                drift_metrics = drift.measure([ex.text for ex in kept], current=trained.model)

            metrics = {
                **task_metrics, **drift_metrics,
                "train/loss": trained.train_loss, "train/examples": float(len(train_set)),
                "train/tokens": float(trained.tokens), "train/steps": float(trained.steps),
                "synthetic/generated": float(len(synthetic)), "synthetic/kept": float(len(kept)),
                **{f"synthetic/removed_{k}": float(v) for k, v in removed.items()},
                **{f"train/share_{k}": v / len(train_set) for k, v in provenance(train_set).items()
                   if k == "real"},
                **{f"time/{k}_s": v for k, v in progress.phase_seconds.items()},
            }
            state.mark_complete(g, trained.model, metrics)
            tracker.log_generation(g, metrics)
            tracker.log_artifact(str(gen_dir / "synthetic.jsonl"), artifact_path=f"synthetic/gen_{g:02d}")
            if report is not None:
                report(g, metrics, gen_dir)
            history.append(kept)
            all_metrics.append(metrics)
            previous = trained.model
            progress.say(_summary(metrics))
    except BaseException as e:
        # Ctrl-C / SIGTERM (interrupts.py) is a stop, not a failure: the run resumes later.
        tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if generator is not None:
            generator.close()
    tracker.finish("FINISHED")
    return all_metrics


def _summary(metrics: dict) -> str:
    keys = [k for k in ("pass_at_1", "bleu4", "f1", "rougeL", "train/loss", "drift/ppl_gen0_mean") if k in metrics]
    return "finished: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in keys)


def _metric_settings() -> dict[str, str]:
    from collapse_ray.metrics.drift import DRIFT_SETTINGS
    from collapse_ray.metrics.text import BLEU_SETTINGS, ROUGE_SETTINGS

    return {**{f"metric.bleu.{k}": v for k, v in BLEU_SETTINGS.items()},
            **{f"metric.rouge.{k}": v for k, v in ROUGE_SETTINGS.items()},
            **{f"metric.drift.{k}": v for k, v in DRIFT_SETTINGS.items()}}
