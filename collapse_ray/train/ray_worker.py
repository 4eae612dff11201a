"""The Ray Train worker side: a training function that serves fine-tuning jobs until told to stop.

``serve_jobs`` is the ``train_loop_per_worker`` of the one ``TorchTrainer.fit`` a trial runs (see
worker_group.py). Every rank asks its group's list on the job board for the oldest job it has not run yet; a
job stays on the board until rank 0 acknowledges it, so all ranks see the same job without a
collective, and no rank sits in a collective while the trial generates (the process group's
default timeout only ever covers a job's own steps). A worker group that Train restarts begins
again at the oldest unacknowledged job: jobs are idempotent on their output directory.

A job (``Job``) holds ids and paths only; its texts are read from ``texts_path``. Model,
optimizer and DeepSpeed engine are built per job and freed after it (the engine destroyed,
``gc.collect()``, the CUDA cache emptied on GPU), so the 11th job of a trial runs in the memory
the first one did.

Each job runs the in-process trainer's recipe (core.py: AdamW, transformers' warm-up + cosine
schedule, gradient clipping at 1.0, the loss over non-pad tokens, the same epoch loop). Two ways
to split it:
- ``ddp``: torch DistributedDataParallel (gloo on CPU, nccl on GPU with bf16 autocast).
- ``deepspeed``: DeepSpeed ZeRO (stage 0-3; by default 2, or 3 for models from 10B parameters;
  bf16 on GPU, fp32 on CPU); see deepspeed_config.py. LoRA (peft) works with both.
"""
from __future__ import annotations

import gc
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch

from collapse_ray.config import TrainingConfig
from collapse_ray.datatypes import ModelRef
from collapse_ray.train.base import total_steps
from collapse_ray.train.core_slots import core_slots
from collapse_ray.train.cpu_allocator import keep_freed_memory
from collapse_ray.train.core import (AdamWStep, load_tokenizer, load_trainable_model, lr_schedule, run_steps,
                                     save_trained, timed_steps, tokenize)
from collapse_ray.train.deepspeed_config import count_parameters, deepspeed_config, resolve_zero_stage

Strategy = Literal["ddp", "deepspeed"]
TAKE_TIMEOUT_S = 5.0   # how long one board call waits for a job before asking again


@dataclass(frozen=True)
class Job:
    """One fine-tuning job: what a worker needs to run it, and nothing of the driver."""

    cfg: TrainingConfig
    init: ModelRef
    texts_path: str        # a JSON list of the training texts, on storage every worker sees
    out_dir: str
    seed: int
    strategy: Strategy
    use_gpu: bool
    zero_stage: int | None


def serve_jobs(config: dict) -> None:
    """Run the board's jobs in order until it says stop (the board returns ``None`` then)."""
    import ray
    import ray.train

    board, job_list = config["board"], config["group"]
    torch.set_num_threads(config.get("cpu_threads", 1))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    placement = ray.util.get_current_placement_group()   # Train's own, recorded so a later driver can free it
    ray.get(board.hello.remote(job_list, rank, os.getpid(), time.time(), placement.id.hex() if placement else None))
    done = -1
    while True:
        taken = ray.get(board.take.remote(job_list, after=done, timeout=TAKE_TIMEOUT_S))
        if taken is None:
            return
        if taken == "wait":
            continue
        seq, job = taken
        metrics = run_job(job, rank, world)
        if rank == 0:
            ray.get(board.ack.remote(job_list, seq, metrics))
        done = seq


def run_job(job: Job, rank: int, world: int) -> dict:
    """Train, save (rank 0, atomically), and return the job's metrics (the same on every rank).
    A one-worker CPU job first takes a free core of its node (core_slots.py); a group of several
    workers does not, as one rank holding a core while another waits for one would stall both."""
    started_at = time.time()
    share_cores = not job.use_gpu and world == 1
    with core_slots(torch.get_num_threads()) if share_cores else nullcontext(0.0) as core_wait_s:
        metrics = _train_and_save(job, rank, world)
    return {**metrics, "started_at": started_at, "core_wait_s": core_wait_s}


def _train_and_save(job: Job, rank: int, world: int) -> dict:
    cfg = job.cfg
    if not job.use_gpu:
        keep_freed_memory()
    texts = json.loads(Path(job.texts_path).read_text())
    torch.manual_seed(job.seed)
    micro = max(1, cfg.batch_size // world)   # global batch = micro * world = cfg.batch_size when divisible
    # Every rank runs exactly this many steps (collectives need equal counts), cycling its shard.
    steps = total_steps(len(texts), micro * world, cfg.epochs, cfg.max_steps)
    tokenizer = load_tokenizer(job.init.path)   # an adapter's tokenizer is its base's
    token_lists = tokenize(tokenizer, _shard(texts, job.seed, rank, world), cfg.max_length)
    runner = _DeepSpeedRunner(job, world, micro, steps) if job.strategy == "deepspeed" else _DDPRunner(job, steps)
    try:
        rng = random.Random(job.seed + 1_000_003 * rank)
        with timed_steps() as timing:
            tokens, epoch_losses = run_steps(runner.step, token_lists, micro, tokenizer.pad_token_id, rng, steps)
        totals = torch.tensor([sum(epoch_losses), len(epoch_losses), tokens], dtype=torch.float64)
        if world > 1:
            totals = totals.to(runner.device)
            torch.distributed.all_reduce(totals)
        loss_sum, loss_count, all_tokens = totals.tolist()
        ref = runner.save(tokenizer, job.out_dir, base_path=job.init.path, rank=rank)
        zero_stage = getattr(runner, "stage", None)
    finally:
        runner.close()
        del runner
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"train_loss": loss_sum / max(1.0, loss_count), "steps": steps, "tokens": int(all_tokens),
            "steps_s": timing.wall_s, "steps_cpu_s": timing.cpu_s, "zero_stage": zero_stage, "rss_bytes": _rss_bytes(),
            "model_path": ref.path if ref else "", "adapter_path": (ref.adapter or "") if ref else ""}


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


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

    def __init__(self, job: Job, steps: int):
        from ray.train.torch import get_device, prepare_model

        cfg = job.cfg
        self.device = get_device()
        self.model = load_trainable_model(job.init, cfg.method, cfg.lora_rank, cfg.lora_alpha)
        self.model.train()
        wrapped = prepare_model(self.model, parallel_strategy="ddp")   # DDP only when world > 1
        self.step = AdamWStep(self.model, cfg.lr, steps, forward=wrapped, device=self.device, bf16=job.use_gpu)

    def save(self, tokenizer, out_dir: str, base_path: str, rank: int) -> ModelRef | None:
        if rank != 0:
            return None
        self.model.eval()
        return save_trained(self.model, tokenizer, out_dir, base_path=base_path)

    def close(self) -> None:
        self.model = self.step = None


class _DeepSpeedRunner:
    """DeepSpeed ZeRO over the process group Ray Train set up (gloo on CPU, nccl on GPU).
    DeepSpeed does the clipping; the schedule steps our AdamW, which ZeRO wraps (ZeRO's
    optimizer steps with the wrapped one's param groups, learning rates included)."""

    def __init__(self, job: Job, world: int, micro: int, steps: int):
        import deepspeed

        cfg = job.cfg
        # Wrap the process group Ray Train set up, before ZeRO-3's partitioned loading needs it
        # (a no-op from the second job on).
        deepspeed.init_distributed(dist_backend="nccl" if job.use_gpu else "gloo")
        n_params = count_parameters(job.init.path)
        self.stage = resolve_zero_stage(job.zero_stage, n_params, job.use_gpu)
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
        self.schedule = lr_schedule(self.optim, steps)
        self.engine.train()
        self.device = self.engine.device
        del hf_ds

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        loss = self.engine(**{k: v.to(self.engine.device) for k, v in batch.items()}).loss
        self.engine.backward(loss)
        self.engine.step()   # clips, steps, zeroes the gradients
        self.schedule.step()
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

    def close(self) -> None:
        """Free the engine's partitions, hooks and buffers before the next job builds its own."""
        self.engine.destroy()
        self.engine = self.optim = self.schedule = None


class _WithStateDict:
    """A model whose save_pretrained writes the given (gathered) state dict."""

    def __init__(self, model, state_dict):
        self.model, self.state_dict = model, state_dict

    def save_pretrained(self, path) -> None:
        self.model.save_pretrained(path, state_dict=self.state_dict)
