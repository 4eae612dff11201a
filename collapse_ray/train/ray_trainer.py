"""Fine-tuning on Ray Train (Train V2): one ``TorchTrainer.fit()`` per ``train`` call.

Each worker loads the model (core.load_trainable_model), tokenises its shard of the texts
(core.tokenize), and runs the in-process trainer's recipe: AdamW, the same warm-up + cosine
learning rate (local.lr_at), gradient clipping at 1.0, the loss over non-pad tokens. Two ways to
split the work:

- ``ddp``: torch DistributedDataParallel (gloo on CPU, nccl on GPU with bf16 autocast).
- ``deepspeed``: DeepSpeed ZeRO (stage 2, or 3 for models from 10B parameters; bf16 on GPU, fp32
  on CPU); see deepspeed_config.py. LoRA (peft) works with both.

Rank 0 saves the result to ``out_dir`` (core.save_trained: atomic; LoRA saves only the adapter)
and reports the metrics with a small checkpoint (Train V2 hands a run's metrics back only with a
checkpoint). The checkpoint holds the result record, not the weights: the weights are already in
``out_dir``, which must be on storage the driver and every worker share (one machine's disk, or
NFS on a cluster), and so must ``storage_path`` on a multi-node cluster.

Costs and placement:
- Every fit starts a Train controller and a fresh worker group: about 20-25 s before the first
  step even for a tiny model. ``_Job`` + ``_train_worker`` are free of driver state, so a later
  version can keep a worker group alive and send it one job per generation.
- The workers are placed in Train's own placement group of exactly ``num_workers`` bundles of
  ``resources_per_worker``; the controller takes no CPU. Started from a Tune trial function (as in
  Ray's Train V2 hyperparameter guide) the trial reserves only the driver's resources: Train V2
  does not schedule into the trial's placement group, so bundles a trial reserved for the workers
  would stay idle while Train waits for its own (measured: the run never starts).
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch

from collapse_ray.config import TrainingConfig
from collapse_ray.generate.base import ModelRef
from collapse_ray.train.base import TrainResult
from collapse_ray.train.core import (base_of, batches, load_tokenizer, load_trainable_model,
                                     save_trained, tokenize, total_steps)
from collapse_ray.train.deepspeed_config import (GRAD_CLIP, count_parameters, deepspeed_config,
                                                 zero_stage_for)
from collapse_ray.train.local import lr_at

Strategy = Literal["ddp", "deepspeed"]


@dataclass(frozen=True)
class _Job:
    """One fine-tuning job: everything a worker needs, and nothing of the driver."""

    cfg: TrainingConfig
    init: ModelRef
    texts: tuple[str, ...]
    out_dir: str
    seed: int
    strategy: Strategy
    use_gpu: bool
    zero_stage: int | None


class RayTrainer:
    def __init__(self, cfg: TrainingConfig, num_workers: int = 1, use_gpu: bool = False,
                 resources_per_worker: dict[str, float] | None = None,
                 strategy: Strategy | None = None, storage_path: str | None = None,
                 zero_stage: int | None = None,
                 progress: Callable[[str], None] | None = None):
        """``strategy`` defaults to deepspeed on GPU and ddp on CPU; ``zero_stage`` (DeepSpeed
        only) defaults to the size rule in deepspeed_config; ``storage_path`` (where Ray Train
        keeps run state) defaults to a ``ray_train`` folder beside each ``out_dir``."""
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        strategy = strategy or ("deepspeed" if use_gpu else "ddp")
        if strategy not in ("ddp", "deepspeed"):
            raise ValueError(f"strategy must be 'ddp' or 'deepspeed', got {strategy!r}")
        self.cfg = cfg
        self.num_workers = num_workers
        self.use_gpu = use_gpu
        self.resources_per_worker = resources_per_worker
        self.strategy: Strategy = strategy
        self.storage_path = storage_path
        self.zero_stage = zero_stage
        self.progress = progress or (lambda msg: None)
        self.last_timings: dict[str, float] = {}

    def train(self, init: ModelRef, texts: Sequence[str], out_dir: str, seed: int) -> TrainResult:
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer

        if len(texts) < self.num_workers:
            raise ValueError(f"{len(texts)} training texts cannot be shared by {self.num_workers} workers")
        out = Path(out_dir).resolve()
        storage = self.storage_path or str(out.parent / "ray_train")   # may be a URI (s3://...)
        run_name = f"{out.name}-{uuid.uuid4().hex[:8]}"
        job = _Job(cfg=self.cfg, init=init, texts=tuple(texts), out_dir=str(out), seed=seed,
                   strategy=self.strategy, use_gpu=self.use_gpu, zero_stage=self.zero_stage)
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"job": job},
            scaling_config=ray.train.ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu,
                                                   resources_per_worker=self.resources_per_worker),
            run_config=ray.train.RunConfig(name=run_name, storage_path=storage),
            torch_config=TorchConfig(backend="nccl" if self.use_gpu else "gloo"),
        )
        self.progress(f"ray train: {self.num_workers} {self.strategy} worker(s) on {len(texts)} texts")
        start, wall_start = time.monotonic(), time.time()
        metrics = trainer.fit().metrics
        seconds = time.monotonic() - start
        if not self.storage_path:   # the run's state is spent once its metrics are read
            shutil.rmtree(Path(storage, run_name), ignore_errors=True)
            with contextlib.suppress(OSError):
                Path(storage).rmdir()
        self.last_timings = {"fit_s": seconds, "startup_s": metrics["started_at"] - wall_start,
                             "train_s": metrics["train_s"],
                             "steps_per_s": metrics["steps"] / max(metrics["train_s"], 1e-9)}
        self.progress(f"ray train: {metrics['steps']} steps, loss {metrics['train_loss']:.3f}, "
                      f"{seconds:.0f}s ({self.last_timings['startup_s']:.0f}s start-up)")
        ref = ModelRef(path=metrics["model_path"], adapter=metrics["adapter_path"] or None)
        return TrainResult(model=ref, train_loss=metrics["train_loss"], steps=metrics["steps"],
                           tokens=metrics["tokens"], seconds=seconds)


# ---------------------------------------------------------------- the worker side

def _train_worker(config: dict) -> None:
    import ray.train

    started_at = time.time()
    job: _Job = config["job"]
    cfg = job.cfg
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(job.seed)
    micro = max(1, cfg.batch_size // world)   # global batch = micro * world = cfg.batch_size when divisible
    # Every rank runs exactly this many steps (collectives need equal counts), cycling its shard.
    steps = total_steps(len(job.texts), micro * world, cfg.epochs, cfg.max_steps)
    tokenizer = load_tokenizer(base_of(job.init))
    token_lists = tokenize(tokenizer, _shard(job.texts, job.seed, rank, world), cfg.max_length)
    runner = _DeepSpeedRunner(job, world, micro) if job.strategy == "deepspeed" else _DDPRunner(job)

    train_start = time.monotonic()
    rng = random.Random(job.seed + 1_000_003 * rank)
    step, tokens, epoch_losses = 0, 0, []
    while step < steps:
        epoch_losses = []
        for batch in batches(token_lists, micro, tokenizer.pad_token_id, rng):
            epoch_losses.append(runner.step(batch, lr_at(step, steps, cfg.lr)))
            tokens += int(batch["attention_mask"].sum())
            step += 1
            if step >= steps:
                break
    train_s = time.monotonic() - train_start
    totals = torch.tensor([sum(epoch_losses), len(epoch_losses), tokens], dtype=torch.float64)
    if world > 1:
        totals = totals.to(runner.device)
        torch.distributed.all_reduce(totals)
    loss_sum, loss_count, all_tokens = totals.tolist()

    ref = runner.save(tokenizer, job.out_dir, base_path=job.init.path, rank=rank)
    metrics = {"train_loss": loss_sum / max(1.0, loss_count), "steps": step, "tokens": int(all_tokens),
               "started_at": started_at, "train_s": train_s,
               "model_path": ref.path if ref else "", "adapter_path": (ref.adapter or "") if ref else ""}
    if rank != 0:
        ray.train.report(metrics)   # report is a barrier: every rank calls it
        return
    with tempfile.TemporaryDirectory() as record:
        Path(record, "result.json").write_text(json.dumps(metrics, indent=1))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(record))


def _shard(texts: Sequence[str], seed: int, rank: int, world: int) -> list[str]:
    """This rank's share of a seeded shuffle. One worker keeps the texts as they are (batches()
    shuffles anyway), so it trains exactly like the in-process trainer."""
    if world == 1:
        return list(texts)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[i] for i in order[rank::world]]


class _DDPRunner:
    """torch DDP: fp32 weights, bf16 autocast on GPU."""

    def __init__(self, job: _Job):
        from ray.train.torch import get_device, prepare_model

        cfg = job.cfg
        self.device = get_device()
        self.model = load_trainable_model(job.init, cfg.method, cfg.lora_rank, cfg.lora_alpha)
        self.model.train()
        self.wrapped = prepare_model(self.model, parallel_strategy="ddp")   # DDP only when world > 1
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.bf16 = job.use_gpu

    def step(self, batch: dict[str, torch.Tensor], lr: float) -> float:
        for group in self.optim.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.wrapped(**{k: v.to(self.device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return loss.item()

    def save(self, tokenizer, out_dir: str, base_path: str, rank: int) -> ModelRef | None:
        if rank != 0:
            return None
        self.model.eval()
        return save_trained(self.model, tokenizer, out_dir, base_path=base_path)


class _DeepSpeedRunner:
    """DeepSpeed ZeRO over the process group Ray Train set up (gloo on CPU, nccl on GPU).
    DeepSpeed does the clipping; the learning rate is set on our AdamW, which ZeRO wraps."""

    def __init__(self, job: _Job, world: int, micro: int):
        import deepspeed
        from ray.train.torch import get_device

        cfg = job.cfg
        self.device = get_device()
        # Wrap the process group Ray Train set up, before ZeRO-3's partitioned loading needs it.
        deepspeed.init_distributed(dist_backend="nccl" if job.use_gpu else "gloo")
        n_params = count_parameters(base_of(job.init))
        self.stage = job.zero_stage or zero_stage_for(n_params, job.use_gpu)
        ds_config = deepspeed_config(n_params=n_params, world_size=world, micro_batch=micro,
                                     use_gpu=job.use_gpu, zero_stage=self.stage)
        # ZeRO-3: while this object lives, from_pretrained partitions the weights as it loads them.
        hf_ds = None
        if self.stage == 3:
            from transformers.integrations import HfDeepSpeedConfig

            hf_ds = HfDeepSpeedConfig(ds_config)
        model = load_trainable_model(job.init, cfg.method, cfg.lora_rank, cfg.lora_alpha,
                                     dtype=torch.bfloat16 if job.use_gpu else torch.float32)
        self.optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                       lr=cfg.lr, weight_decay=0.0)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=self.optim, config=ds_config)
        self.engine.train()
        del hf_ds

    def step(self, batch: dict[str, torch.Tensor], lr: float) -> float:
        for group in self.optim.param_groups:
            group["lr"] = lr
        loss = self.engine(**{k: v.to(self.engine.device) for k, v in batch.items()}).loss
        self.engine.backward(loss)
        self.engine.step()   # clips, steps, zeroes the gradients
        return loss.item()

    def save(self, tokenizer, out_dir: str, base_path: str, rank: int) -> ModelRef | None:
        import deepspeed

        module = self.engine.module
        module.eval()
        if self.stage < 3:   # every rank holds the full, updated weights
            return save_trained(module, tokenizer, out_dir, base_path=base_path) if rank == 0 else None
        if hasattr(module, "peft_config"):   # an adapter: gather only the trainable weights
            trainable = [p for p in module.parameters() if p.requires_grad]
            with deepspeed.zero.GatheredParameters(trainable):
                return save_trained(module, tokenizer, out_dir, base_path=base_path) if rank == 0 else None
        state_dict = self.engine._zero3_consolidated_16bit_state_dict()   # collective; full on rank 0
        if rank != 0:
            return None
        return save_trained(_WithStateDict(module, state_dict), tokenizer, out_dir, base_path=base_path)


class _WithStateDict:
    """A model whose save_pretrained writes the given (gathered) state dict."""

    def __init__(self, model, state_dict):
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path, state_dict=self.state_dict)
