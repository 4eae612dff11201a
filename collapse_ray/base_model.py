"""The tiny base model, built here from scratch: a byte-level BPE tokenizer and a small Llama- or
Qwen3-architecture causal LM, both trained on real Python functions, saved in HF format.

No model hub is reachable from the machines this project runs its embedded default on, so the
generation-0 model is trained here. Everything downstream sees only a model directory that
``AutoModelForCausalLM`` / ``AutoTokenizer`` load like a hub model.

Recipe (the cache key is a hash of all of it):
  corpus     every function with a docstring in the standard library (``extract_functions``),
             each as ``codegen_text``: its source dedented to column 0, one newline, the eos token
             (the same text format the fine-tuning loop trains code generation on)
  tokenizer  byte-level BPE (``tokenizers``), ``vocab_size`` entries including two specials:
             ``<|endoftext|>`` (eos, and bos for generation; never added automatically) and
             ``<|pad|>`` (a separate pad, so masking padding never masks the eos a model must learn)
  model      LlamaForCausalLM or Qwen3ForCausalLM, random init, tied embeddings, SwiGLU width 8/3
  training   texts shuffled with the seed, concatenated, cut into ``context_length`` blocks;
             AdamW, linear warmup then cosine decay to 10%; the step count is planned from the
             throughput of the first steps, and re-planned after every step, so the schedule
             fills ``train_minutes`` of wall time (the step count, and so the weights, depend on
             the machine's speed; ``build_info.json`` records what was done), unless
             ``train_steps`` pins the step count, which makes the weights machine-independent
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from collapse_ray.config import TINY_MODEL, ModelConfig, TinyModelConfig

RECIPE_VERSION = 1  # bump when the code's recipe changes (data, tokenizer, model or training)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Training settings that are not config fields; part of the recipe hash.
TRAIN_SETTINGS = {
    "peak_lr": 2e-3,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
    "betas": [0.9, 0.95],
    "grad_clip": 1.0,
    "tokens_per_step": 4096,
    "warmup_fraction": 0.05,
    "probe_steps": 3,
}
PROGRESS_EVERY_S = 5.0


def codegen_text(code: str, eos: str = EOS_TOKEN) -> str:
    """The code-generation training text: a function's source (``def`` line, docstring, body)
    dedented to column 0, ending in one newline, then the eos token."""
    return code.rstrip() + "\n" + eos


def default_corpus() -> list[str]:
    """Sources of every function with a docstring in the standard library, in a fixed order."""
    from collapse_ray.data.stdlib_cache import stdlib_function_records

    return [r["code"] for r in stdlib_function_records()]


def corpus_id(corpus: Sequence[str] | None) -> str:
    """What the recipe records about the corpus: the default's name, or a given corpus's hash."""
    if corpus is None:
        return f"python{sys.version_info.major}.{sys.version_info.minor}-stdlib-functions"
    return "sha256:" + hashlib.sha256("\0".join(corpus).encode()).hexdigest()[:16]


def recipe_of(tiny: TinyModelConfig, corpus: Sequence[str] | None = None) -> dict:
    """Everything the model depends on: the config's fields but ``cache_dir``, the corpus, the
    fixed training settings and the code's ``RECIPE_VERSION``."""
    fields = {k: v for k, v in dataclasses.asdict(tiny).items() if k != "cache_dir"}
    # A step-pinned recipe does not depend on time; an unpinned one keeps its earlier hash.
    fields.pop("train_minutes" if tiny.train_steps is not None else "train_steps")
    return {"recipe_version": RECIPE_VERSION, **fields, "corpus": corpus_id(corpus),
            "train": TRAIN_SETTINGS}


def model_dir_for(tiny: TinyModelConfig, corpus: Sequence[str] | None = None) -> Path:
    """The cache directory of this recipe: ``<cache_dir>/tiny-<architecture>-<recipe hash>``."""
    recipe = recipe_of(tiny, corpus)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return Path(tiny.cache_dir).expanduser() / f"tiny-{tiny.architecture}-{digest}"


def resolve_model_path(model_cfg: ModelConfig, progress: Callable[[str], None] = print) -> str:
    """A path or hub id to load: the tiny model's directory (built if needed) for "tiny"."""
    if model_cfg.name_or_path == TINY_MODEL:
        return str(build_base_model(model_cfg.tiny, progress=progress))
    return model_cfg.name_or_path


def build_base_model(tiny: TinyModelConfig, force: bool = False,
                     progress: Callable[[str], None] = print,
                     corpus: Sequence[str] | None = None) -> Path:
    """Build (or find in the cache) the tiny base model and return its HF-format directory.

    ``corpus``: function sources to train on instead of the standard library's (its hash joins
    the recipe). The directory appears only complete: the build happens in a temporary directory
    renamed at the end, under a lock so concurrent callers build once.
    """
    corpus = None if corpus is None else list(corpus)
    recipe = recipe_of(tiny, corpus)
    final = model_dir_for(tiny, corpus)
    if not force and _is_built(final, recipe):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _lock(final.parent / f"{final.name}.lock"):
        if not force and _is_built(final, recipe):   # another process built it meanwhile
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):   # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            if corpus is None:
                progress("base model: extracting Python functions from the standard library")
                corpus = default_corpus()
            _build(tiny, recipe, corpus, tmp, progress)
            if final.exists():
                trash = final.parent / f".{final.name}.old-{os.getpid()}"
                final.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    progress(f"base model: saved to {final}")
    return final


def _is_built(path: Path, recipe: dict) -> bool:
    info = path / "build_info.json"
    if not (info.is_file() and (path / "config.json").is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        return json.loads(info.read_text()).get("recipe") == json.loads(json.dumps(recipe))
    except (OSError, ValueError):
        return False


@contextmanager
def _lock(path: Path):
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the build

def _build(tiny: TinyModelConfig, recipe: dict, corpus: list[str], out: Path, progress) -> None:
    import torch

    if not corpus:
        raise ValueError("base model: the training corpus is empty")
    started = time.time()
    texts = [codegen_text(code) for code in corpus]
    progress(f"base model: training a {tiny.vocab_size}-entry byte-level BPE tokenizer on {len(texts)} functions")
    tokenizer = train_tokenizer(texts, tiny.vocab_size, tiny.context_length)

    torch.manual_seed(tiny.seed)
    model = new_model(tiny, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    progress(f"base model: {tiny.architecture}, {n_params / 1e6:.2f}M parameters, "
             f"hidden {tiny.hidden_size}, {tiny.num_layers} layers")

    blocks = pack(tokenizer, texts, tiny.context_length, tiny.seed)
    n_eval = min(32, len(blocks) // 50)
    train_blocks, eval_blocks = blocks[n_eval:], blocks[:n_eval]
    stats = train(model, train_blocks, tiny, progress)
    stats["eval_loss"] = evaluate(model, eval_blocks) if n_eval else None

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "recipe": recipe,
        "parameters": n_params,
        "corpus_functions": len(texts),
        "corpus_tokens": int(blocks.numel()),
        **stats,
        "build_minutes": round((time.time() - started) / 60, 3),
        "torch": torch.__version__,
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")


def train_tokenizer(texts: Sequence[str], vocab_size: int, context_length: int):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The eos marker is added to texts after a function; train the merges on the code alone.
    tok.train_from_iterator((t[: -len(EOS_TOKEN)] for t in texts), trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=context_length,
        clean_up_tokenization_spaces=False,
    )


def new_model(tiny: TinyModelConfig, tokenizer):
    """A randomly initialised causal LM of the configured architecture and sizes."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=32 * math.ceil(tiny.hidden_size * 8 / 3 / 32),
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=tiny.context_length,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=pad,
        initializer_range=0.02,
    )
    if tiny.architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif tiny.architecture == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=tiny.hidden_size // tiny.num_heads))
    else:
        raise ValueError(f"model.tiny.architecture: unknown architecture {tiny.architecture!r}")
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = eos, eos, pad
    return model


def pack(tokenizer, texts: Sequence[str], context_length: int, seed: int):
    """Texts shuffled with ``seed``, tokenized, concatenated and cut into ``context_length``
    blocks (the remainder is dropped): a LongTensor [n_blocks, context_length]."""
    import torch

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    encodings = tokenizer.backend_tokenizer.encode_batch([texts[i] for i in order])
    ids = [i for enc in encodings for i in enc.ids]
    n = len(ids) // context_length
    if n == 0:
        raise ValueError(f"base model: corpus has {len(ids)} tokens, fewer than one "
                         f"{context_length}-token block")
    return torch.tensor(ids[: n * context_length], dtype=torch.long).view(n, context_length)


def train(model, blocks, tiny: TinyModelConfig, progress) -> dict:
    """Train on ``blocks`` for ``tiny.train_steps`` steps, or for ``tiny.train_minutes`` of wall
    time when no step count is pinned; return the run's statistics."""
    import torch

    s = TRAIN_SETTINGS
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=s["peak_lr"], betas=tuple(s["betas"]))
    batch_size = max(1, s["tokens_per_step"] // tiny.context_length)
    pinned = tiny.train_steps
    budget = math.inf if pinned else tiny.train_minutes * 60
    gen = torch.Generator().manual_seed(tiny.seed)

    def batches():
        while True:  # epochs, each in a fresh order
            for idx in torch.randperm(len(blocks), generator=gen).split(batch_size):
                yield blocks[idx].to(device)

    probe = s["probe_steps"]
    total_steps = warmup = None   # planned after the probe steps, unless pinned
    if pinned:
        total_steps, warmup = pinned, max(1, int(pinned * s["warmup_fraction"]))
    losses: list[float] = []
    tokens = step = 0
    start = last_report = time.time()
    after_first = None
    for x in batches():
        if total_steps is None:
            lr = s["peak_lr"] * (step + 1) / 20          # provisional warmup while probing
        elif step < warmup:
            lr = s["peak_lr"] * (step + 1) / warmup
        else:
            progress_frac = (step - warmup) / max(1, total_steps - warmup)
            cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress_frac)))
            lr = s["peak_lr"] * (s["min_lr_ratio"] + (1 - s["min_lr_ratio"]) * cosine)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += x.numel()
        step += 1
        now = time.time()
        elapsed = now - start
        if step == 1:
            after_first = now
        if step >= probe and not pinned:
            # Plan the step count that fills the budget from the mean step time so far (the first
            # step carries one-off costs and is left out); re-planned at every step, as a shared
            # machine's speed drifts.
            per_step = (now - after_first) / (step - 1) if step > 1 else elapsed
            total_steps = step + max(0, int((budget - elapsed) / max(per_step, 1e-6)))
            if warmup is None:
                warmup = max(probe, int(total_steps * s["warmup_fraction"]))
        done = elapsed >= budget or (total_steps is not None and step >= total_steps)
        if done or now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            planned = total_steps or "?"
            eta = (max(0.0, budget - elapsed) if not pinned
                   else (total_steps - step) * elapsed / step)
            progress(f"base model: step {step}/{planned} | loss {_mean_tail(losses):.3f} | "
                     f"{tokens / elapsed:,.0f} tok/s | lr {lr:.2e} | ETA {eta:.0f}s")
        if done:
            break
    model.to("cpu").eval()
    elapsed = time.time() - start
    return {
        "device": device,
        "steps": step,
        "planned_steps": total_steps,
        "batch_size": batch_size,
        "tokens_seen": tokens,
        "tokens_per_s": round(tokens / elapsed, 1),
        "final_loss": round(_mean_tail(losses), 4),
        "train_minutes": round(elapsed / 60, 3),
    }


def evaluate(model, blocks, batch_size: int = 8) -> float:
    """Mean loss on held-out blocks."""
    import torch

    with torch.no_grad():
        losses = [model(input_ids=b, labels=b).loss.item() for b in blocks.split(batch_size)]
    return round(sum(losses) / len(losses), 4)


def _mean_tail(values: list[float], n: int = 10) -> float:
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else float("nan")
