"""Fine-tuning on Ray Train (Train V2): one worker group per trial, one job per ``train`` call.

The first ``train`` starts the trial's worker group (worker_group.py: one ``TorchTrainer.fit``
in a thread of this process, serving jobs from a job board); every later ``train`` sends it one
job and waits for it. ``close()`` stops the group; if nobody calls it, the group stops when this
trainer is garbage-collected or the process exits. The workers (ray_worker.py) run DDP or
DeepSpeed ZeRO, full or LoRA, with the in-process trainer's recipe.

Rank 0 saves the result to ``out_dir`` (core.save_trained: atomic; LoRA saves only the adapter)
and acknowledges the job with its metrics. The texts travel as a file beside ``out_dir``
(``<out_dir>.texts.json``, removed once the job is acknowledged); ``out_dir`` must be on storage
the driver and every worker share (one machine's disk, or NFS on a cluster), and so must
``storage_path`` (default: a ``ray_train`` folder beside ``out_dir``'s parent, i.e. in the trial
directory, removed by ``close()``).

Costs and placement:
- Starting the group (Train controller + worker group) costs about 20-25 s quiet, minutes on a
  loaded machine, once per trial; ``startup_s`` and ``starts`` expose it.
- The workers are placed in Train's own placement group of exactly ``num_workers`` bundles of
  ``resources_per_worker`` and hold it for the whole trial, through its generate and evaluate
  phases too; the controller and the job board take no CPU. Started from a Tune trial function
  (as in Ray's Train V2 hyperparameter guide) the trial reserves only the driver's resources:
  Train V2 does not schedule into the trial's placement group, so bundles a trial reserved for
  the workers would stay idle while Train waits for its own (measured: the run never starts).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from collapse_ray.atomic_io import write_json_atomic
from collapse_ray.config import TrainingConfig
from collapse_ray.datatypes import ModelRef
from collapse_ray.train.base import TrainResult
from collapse_ray.train.ray_worker import Job, Strategy
from collapse_ray.train.worker_group import TrainGroupDied, TrainWorkerGroup  # noqa: F401 (re-exported)


class RayTrainer:
    def __init__(self, cfg: TrainingConfig, num_workers: int = 1, use_gpu: bool = False,
                 resources_per_worker: dict[str, float] | None = None,
                 strategy: Strategy | None = None, storage_path: str | None = None,
                 zero_stage: int | None = None,
                 progress: Callable[[str], None] | None = None):
        """``strategy`` defaults to deepspeed on GPU and ddp on CPU; ``zero_stage`` (DeepSpeed
        only; 0 is ZeRO off) defaults to the size rule in deepspeed_config; ``storage_path``
        (where Ray Train keeps run state) defaults to a ``ray_train`` folder in the trial directory."""
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        strategy = strategy or ("deepspeed" if use_gpu else "ddp")
        if strategy not in ("ddp", "deepspeed"):
            raise ValueError(f"strategy must be 'ddp' or 'deepspeed', got {strategy!r}")
        if zero_stage is not None and zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
        self.cfg = cfg
        self.num_workers = num_workers
        self.use_gpu = use_gpu
        self.resources_per_worker = resources_per_worker
        self.strategy: Strategy = strategy
        self.zero_stage = zero_stage
        self.progress = progress or (lambda msg: None)
        self.group = TrainWorkerGroup(num_workers=num_workers, use_gpu=use_gpu,
                                      resources_per_worker=resources_per_worker,
                                      storage_path=storage_path, progress=self.progress)
        self.last_metrics: dict = {}

    @property
    def starts(self) -> int:
        """Worker groups started for this trainer (TorchTrainer.fit calls)."""
        return self.group.fits

    @property
    def startup_s(self) -> float | None:
        """The current group's start-up: fit launched -> its workers serving jobs."""
        return self.group.startup_s

    def train(self, init: ModelRef, texts: Sequence[str], out_dir: str, seed: int,
              cfg: TrainingConfig | None = None) -> TrainResult:
        if len(texts) < self.num_workers:
            raise ValueError(f"{len(texts)} training texts cannot be shared by {self.num_workers} workers")
        init = _absolute(init)   # the workers do not run in this process's directory
        out = Path(out_dir).resolve()
        texts_path = out.with_name(out.name + ".texts.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(texts_path, list(texts))
        job = Job(cfg=cfg or self.cfg, init=init, texts_path=str(texts_path), out_dir=str(out), seed=seed,
                  strategy=self.strategy, use_gpu=self.use_gpu, zero_stage=self.zero_stage)
        self.progress(f"ray train: {self.num_workers} {self.strategy} worker(s) on {len(texts)} texts")
        fits_before = self.group.fits
        start = time.monotonic()
        try:
            metrics = self.group.run(job, storage_default=out.parent.parent / "ray_train")
        finally:
            texts_path.unlink(missing_ok=True)
        seconds = time.monotonic() - start
        started_now = self.group.fits > fits_before
        startup = (self.group.startup_s or 0.0) if started_now else 0.0
        self.last_metrics = metrics
        core_wait = metrics["core_wait_s"]
        self.progress(f"ray train: {metrics['steps']} steps, loss {metrics['train_loss']:.3f}, {seconds:.0f}s"
                      + (f" ({startup:.0f}s worker-group start-up)" if started_now else "")
                      + (f" ({core_wait:.0f}s waiting for a free core)" if core_wait >= 1 else ""))
        ref = ModelRef(path=metrics["model_path"], adapter=metrics["adapter_path"] or None)
        return TrainResult(model=ref, train_loss=metrics["train_loss"], steps=metrics["steps"],
                           tokens=metrics["tokens"], seconds=seconds, startup_s=startup, core_wait_s=core_wait,
                           steps_s=metrics["steps_s"], steps_cpu_s=metrics["steps_cpu_s"])

    def close(self) -> None:
        """Stop the trial's worker group (it finishes a running job first) and free its resources."""
        self.group.close()

    def __enter__(self) -> "RayTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _absolute(ref: ModelRef) -> ModelRef:
    """Local paths made absolute; a hub id (no such local path) stays as it is."""
    def fix(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    return ModelRef(path=fix(ref.path), adapter=fix(ref.adapter))
