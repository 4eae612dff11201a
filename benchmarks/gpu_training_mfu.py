"""Training throughput and MFU of the trainers' own step on one GPU (issue 9, item 6).

    python benchmarks/gpu_training_mfu.py [--shape qwen3-0.6b] [--method full,lora] [--seq-len 2048]
        [--batch 8] [--steps 20] [--warmup 5] [--out result.json]

A model of the shape named (Qwen3-0.6B's config, random weights: no hub access needed) trained by
``collapse_ray.train.core.AdamWStep`` -- the step the in-process and Ray DDP trainers take: fp32
weights, bf16 autocast on GPU, gradient clipping, AdamW -- on random token ids of ``--seq-len``
tokens, ``--batch`` sequences a step (no padding). After ``--warmup`` steps, ``--steps`` steps are
timed (CUDA synchronised). Printed per method: seconds a step, tokens/s, model FLOP/s and MFU =
model FLOP/s over the card's dense bf16 peak, with model FLOPs per token = 6 x parameters for full
fine-tuning and 4 x parameters for LoRA (no weight gradients for the frozen base: the convention
of ``collapse_ray/grid/estimate.py``), attention's FLOPs not counted (a lower bound); and the
peak GPU memory. The peak comes from ``--peak-tflops`` or the card's name (PEAK_TFLOPS); on a CPU
or an unknown card MFU is not computed. ``--shape tiny`` is a small model of the same family for
checking the script without a GPU.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

# Dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name (vendor data sheets, SXM parts).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}

SHAPES = {
    # Qwen/Qwen3-0.6B's config.json (0.60B parameters with the tied embedding counted once)
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                 max_position_embeddings=512),
}


def build_model(shape: str, method: str, device):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen3Config(**SHAPES[shape]), dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    if method == "lora":   # the adapter collapse_ray.train.core.load_trainable_model puts on (rank 16)
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    return model.to(device), params


def measure(shape: str, method: str, seq_len: int, batch: int, steps: int, warmup: int, device) -> dict:
    import torch

    from collapse_ray.train.core import AdamWStep

    model, params = build_model(shape, method, device)
    model.train()
    vocab = SHAPES[shape]["vocab_size"]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=gen)
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    step = AdamWStep(model, lr=1e-5, total=warmup + steps, device=device, bf16=device.type == "cuda")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step(data)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(data)
    sync()
    seconds = (time.perf_counter() - start) / steps
    tokens_per_s = batch * seq_len / seconds
    flops_per_token = (6 if method == "full" else 4) * params
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = {"shape": shape, "method": method, "parameters": params, "trainable": trainable,
              "seq_len": seq_len, "batch": batch, "steps": steps, "warmup": warmup, "step_s": seconds,
              "tokens_per_s": tokens_per_s, "model_tflops": flops_per_token * tokens_per_s / 1e12,
              "last_loss": loss, "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if cuda else None}
    del model, step
    if cuda:
        torch.cuda.empty_cache()
    return result


def peak_tflops(device, given: float | None) -> tuple[float | None, str]:
    import torch

    if given is not None:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--method", default="full,lora", help="comma-separated: full, lora")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda where there is one)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: by its name)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    import torch

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("full", "lora")]
    if bad or not methods:
        parser.error(f"--method: full and/or lora, got {args.method!r}")
    for name in ("seq_len", "batch", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peak, card = peak_tflops(device, args.peak_tflops)
    random.seed(0)
    rows = []
    for method in methods:
        r = measure(args.shape, method, args.seq_len, args.batch, args.steps, args.warmup, device)
        r["mfu"] = r["model_tflops"] / peak if peak else None
        rows.append(r)
        print(f"[gpu_training_mfu] {method}: {r['step_s']:.3f} s/step", file=sys.stderr, flush=True)

    print(f"\n{args.shape} ({rows[0]['parameters'] / 1e6:.1f}M parameters), random weights; seq_len {args.seq_len} x batch "
          f"{args.batch}; {args.steps} timed steps after {args.warmup}; device {card}"
          + (f", peak {peak:.0f} TFLOP/s dense bf16" if peak else ", no peak known: MFU not computed"))
    print(f"{'method':<8}{'trainable':>12}{'s/step':>10}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}{'peak GiB':>10}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        print(f"{r['method']:<8}{r['trainable'] / 1e6:>11.1f}M{r['step_s']:>10.3f}{r['tokens_per_s']:>12,.0f}"
              f"{r['model_tflops']:>10.1f}{mfu:>8}{mem:>10}")
    if args.out:
        args.out.write_text(json.dumps({"device": card, "peak_tflops": peak, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
