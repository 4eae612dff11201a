"""The vLLM backend as a plain Python class: one ``vllm.LLM`` serves every generation of a trial.

``VLLMEngine`` implements the :class:`~collapse_ray.generate.base.Generator` protocol. It has no
Ray in it; :mod:`collapse_ray.generate.vllm_actor` hosts it in a Ray actor so that vLLM's
process-wide side effects (environment variables, thread binding, NUMA memory policy, the
torch.distributed world it creates) stay in that actor's process.

How ``load`` treats a new model:

* same base ``path``, new ``adapter``: the engine stays; the adapter is served through a
  ``LoRARequest`` with a fresh integer id (requires ``enable_lora=True``).
* new ``path`` with the same architecture config and the same tokenizer files as the one being
  served: the weights are reloaded in place (vLLM's ``reload_weights``, through this project's
  worker extension, vllm_worker.py, which ties tied embeddings again: vLLM 0.32's reload alone
  leaves the output layer on the old weights) and the prefix cache is reset; no engine rebuild.
  A tied model whose layout the extension does not know is rebuilt.
* anything else (first load, another architecture, another tokenizer): the engine is rebuilt.

A path is treated as immutable while it is loaded: ``load`` of the ``ModelRef`` already being
served does nothing.

``vllm`` is imported lazily, so importing this module needs no vLLM.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from collapse_ray.datatypes import ModelRef
from collapse_ray.generate.base import Sampling
from collapse_ray.generate.kv_cache import cpu_kv_cache_bytes
from collapse_ray.generate.vllm_worker import QUALNAME as WORKER_EXTENSION
from collapse_ray.generate.vllm_worker import RELOAD_METHOD
from collapse_ray.model_size import local_config

log = logging.getLogger(__name__)

# Files whose content must match for an in-place weight reload to be valid.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
)
# config.json keys that do not change the model that vLLM builds.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "name_or_path")


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def request_seed(seed: int, index: int) -> int:
    """A per-request seed from the run's seed and the prompt's position: reproducible, and
    distinct for (seed, i) pairs that a plain ``seed + i`` would make collide."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def ties_word_embeddings(path: str) -> bool:
    """Whether the local model at ``path`` shares its input embedding with its output layer
    (transformers' default when config.json does not say)."""
    config = Path(path) / "config.json"
    return bool(json.loads(config.read_text()).get("tie_word_embeddings", True)) if config.is_file() else True


def model_fingerprint(path: str) -> str | None:
    """What must stay equal for new weights at ``path`` to be loadable into a running engine:
    the architecture config (minus bookkeeping keys) and the tokenizer / generation config files.
    ``None`` for anything but a local model directory (a hub id is never reloaded in place)."""
    root = Path(path)
    if not (root / "config.json").is_file():
        return None
    config = json.loads((root / "config.json").read_text())
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in _TOKENIZER_FILES:
        f = root / name
        h.update(name.encode() + (f.read_bytes() if f.is_file() else b"<absent>"))
    return h.hexdigest()


class VLLMEngine:
    """A :class:`Generator` over ``vllm.LLM``.

    Args:
        kv_cache_bytes: KV cache size. Required on CPU (vLLM's CPU build refuses to guess);
            defaults there to what 256 sequences of the model need, at most 1 GiB
            (generate/kv_cache.py). On GPU ``None`` sizes it from ``gpu_memory_utilization``.
        max_model_len: context length (prompt + completion); ``None`` takes the model's.
        enable_lora, max_lora_rank, max_loras: LoRA serving (adapters up to this rank).
        tensor_parallel_size: GPUs per engine (GPU only; >1 uses vLLM's Ray executor).
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``.
        gpu_memory_utilization: fraction of GPU memory for weights + KV cache (GPU only).
        enable_sleep_mode: lets :meth:`sleep` free GPU memory while training shares the GPU.
            Ignored on CPU, where ``sleep``/``wake_up`` are no-ops.
        enforce_eager: ``None`` = eager on CPU (saves ~35 s of compilation), CUDA graphs on GPU.
        reload_in_place: reload compatible full weights into the running engine instead of
            rebuilding it.
        seed: the engine's seed (per-request seeds come from :class:`Sampling`).
        llm_kwargs: anything else for ``vllm.LLM`` (e.g. ``enable_prefix_caching``).
    """

    def __init__(
        self,
        *,
        kv_cache_bytes: int | None = None,
        max_model_len: int | None = None,
        enable_lora: bool = True,
        max_lora_rank: int = 64,
        max_loras: int = 1,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        enable_sleep_mode: bool = False,
        enforce_eager: bool | None = None,
        reload_in_place: bool = True,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        self.kv_cache_bytes = kv_cache_bytes
        self.max_model_len = max_model_len
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.tensor_parallel_size = tensor_parallel_size
        self.dtype = dtype
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enable_sleep_mode = enable_sleep_mode
        self.enforce_eager = enforce_eager
        self.reload_in_place = reload_in_place
        self.seed = seed
        self.llm_kwargs = llm_kwargs

        self.llm = None  # vllm.LLM once loaded
        self.model: ModelRef | None = None
        self._fingerprint: str | None = None
        self._lora_request = None
        self._next_lora_id = 1
        self._sleeping = False
        self._sleep_level = 0
        # Counters, so callers and tests can see what load() did.
        self.builds = 0
        self.reloads = 0

    # ------------------------------------------------------------------ loading
    def load(self, model: ModelRef) -> None:
        if self.llm is not None and model == self.model and not self._sleeping:
            return
        if self._sleeping:
            # After a level-2 sleep the weights are gone: refill them only if no new path follows.
            self._wake(refill=model.path == self.model.path)
        if self.llm is None or model.path != self.model.path:
            fingerprint = model_fingerprint(model.path)
            compatible = fingerprint is not None and fingerprint == self._fingerprint
            reloaded = (self.llm is not None and self.reload_in_place and compatible
                        and self._reload_weights(model.path))
            if not reloaded:
                self._build(model.path)
            self._fingerprint = fingerprint
        self._lora_request = self._adapter_request(model.adapter) if model.adapter else None
        self.model = model

    def _cpu_kv_cache_bytes(self, path: str) -> int:
        """What 256 sequences of this model need (generate/kv_cache.py); 1 GiB for a hub id."""
        return cpu_kv_cache_bytes(local_config(Path(path)), self.max_model_len, self.dtype)

    def _engine_args(self, path: str) -> dict[str, Any]:
        on_cpu = _on_cpu()
        kv_bytes = self.kv_cache_bytes
        if kv_bytes is None and on_cpu:
            kv_bytes = self._cpu_kv_cache_bytes(path)
        eager = self.enforce_eager if self.enforce_eager is not None else on_cpu
        args: dict[str, Any] = dict(
            model=path,
            dtype=self.dtype,
            seed=self.seed,
            enforce_eager=eager,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            kv_cache_memory_bytes=kv_bytes,
            max_model_len=self.max_model_len,
            enable_lora=self.enable_lora,
        )
        if self.enable_lora:
            args.update(max_lora_rank=self.max_lora_rank, max_loras=self.max_loras)
        if self.enable_sleep_mode and not on_cpu:
            args["enable_sleep_mode"] = True
        if on_cpu:
            # A prompt split over two steps (chunked prefill: a batch past the token budget) makes
            # the CPU build rewind its seeded request's torch generator, which CPU generators
            # refuse ("CPU Generator does not use offset"): whole prompts per step there.
            args["enable_chunked_prefill"] = False
        if self.tensor_parallel_size > 1:
            # Inside a Ray actor, vLLM's Ray executor places its workers in the actor's placement group.
            args.setdefault("distributed_executor_backend", "ray")
        args.update(self.llm_kwargs)
        if args.get("worker_extension_cls", WORKER_EXTENSION) != WORKER_EXTENSION:
            raise ValueError(f"worker_extension_cls is this project's ({WORKER_EXTENSION}): in-place weight reloads "
                             f"call it")
        args["worker_extension_cls"] = WORKER_EXTENSION
        return args

    def _build(self, path: str) -> None:
        from vllm import LLM

        self._shutdown()
        start = time.perf_counter()
        self.llm = LLM(**self._engine_args(path))
        self.builds += 1
        log.info("vLLM engine for %s built in %.1f s", path, time.perf_counter() - start)

    def _reload_weights(self, path: str) -> bool:
        """Whether the weights at ``path`` are now served (vllm_worker.py re-ties tied embeddings);
        False: the engine must be rebuilt."""
        tied = ties_word_embeddings(path)
        if not all(self.llm.collective_rpc(RELOAD_METHOD, kwargs={"weights_path": path, "tied": tied})):
            log.info("vLLM cannot re-tie this model's embeddings after a reload: rebuilding")
            return False
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self.reloads += 1
        log.info("vLLM weights reloaded in place from %s", path)
        return True

    def _adapter_request(self, adapter: str):
        from vllm.lora.request import LoRARequest

        if not self.enable_lora:
            raise ValueError(f"adapter {adapter} given but the engine was built with enable_lora=False")
        lora_id = self._next_lora_id
        self._next_lora_id += 1
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(adapter))

    # ------------------------------------------------------------------ generation
    def _require_llm(self):
        if self.llm is None:
            raise RuntimeError("VLLMEngine.load(model) must be called before generating")
        if self._sleeping:
            self.wake_up()
        return self.llm

    def _prompts(self, prompts: Sequence[str], max_new_tokens: int) -> list[dict]:
        """Tokenize as vLLM would, keeping the last tokens of a prompt too long for the context."""
        from vllm.inputs import TokensPrompt

        llm = self._require_llm()
        tok = llm.get_tokenizer()
        limit = llm.llm_engine.model_config.max_model_len - max_new_tokens
        out = []
        truncated = 0
        for p in prompts:
            ids = list(tok.encode(p))
            if len(ids) > limit:
                ids = ids[len(ids) - max(limit, 1):]
                truncated += 1
            out.append(TokensPrompt(prompt_token_ids=ids))
        if truncated:
            log.warning("%d of %d prompts cut from the left to fit max_model_len", truncated, len(prompts))
        return out

    def _sampling_params(self, sampling: Sampling, index: int):
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        return SamplingParams(
            n=1,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=None if greedy else request_seed(sampling.seed, index),
            stop=list(sampling.stop) or None,
        )

    def _run(self, prompts: Sequence[str], sampling: Sampling):
        if not prompts:
            return []
        llm = self._require_llm()
        params = [self._sampling_params(sampling, i) for i in range(len(prompts))]
        outputs = llm.generate(
            self._prompts(prompts, sampling.max_new_tokens),
            params,
            use_tqdm=False,
            lora_request=self._lora_request,
        )
        return [o.outputs[0] for o in outputs]

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        return [c.text for c in self._run(prompts, sampling)]

    def generate_token_ids(self, prompts: Sequence[str], sampling: Sampling) -> list[list[int]]:
        """Like :meth:`generate`, but the completion token ids (for token-level metrics and tests)."""
        return [list(c.token_ids) for c in self._run(prompts, sampling)]

    def option_probs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        """Exact next-token probabilities of each option's first token, renormalised over the options.

        An option's first token is ``tokenizer.encode(option, add_special_tokens=False)[0]``.
        The log-probabilities come from vLLM's ``logprob_token_ids``: the full-vocabulary
        log-softmax read at exactly these ids, so options outside any top-k still get their value.
        Options that share a first token get the same probability.
        """
        if not options:
            raise ValueError("option_probs needs at least one option")
        if not prompts:
            return []
        from vllm import SamplingParams

        llm = self._require_llm()
        tok = llm.get_tokenizer()
        first = []
        for option in options:
            ids = tok.encode(option, add_special_tokens=False)
            if not ids:
                raise ValueError(f"option {option!r} encodes to no tokens")
            first.append(ids[0])
        unique = sorted(set(first))
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=unique)
        outputs = llm.generate(
            self._prompts(prompts, 1), params, use_tqdm=False, lora_request=self._lora_request
        )
        result = []
        for out in outputs:
            step = out.outputs[0].logprobs[0]  # {token_id: Logprob} for the first generated position
            logps = np.array([step[t].logprob for t in first], dtype=np.float64)
            probs = np.exp(logps - logps.max())
            result.append((probs / probs.sum()).tolist())
        return result

    def prompt_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """For each sequence, log p(t_i | t_<i) for i >= 1 under the served weights (and adapter):
        what :mod:`~collapse_ray.generate.weight_probe` compares with the trained model.

        Asked one next token at a time (each prefix, ``logprob_token_ids`` = the true next token)
        rather than through ``prompt_logprobs``, which vLLM 0.32's CPU LoRA layers cannot compute
        (they index the logits per sequence, not per prompt token); prefix caching keeps it cheap."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm = self._require_llm()
        prefixes = [(ids[:i], ids[i]) for ids in token_ids for i in range(1, len(ids))]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p, _ in prefixes],
                               [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[t])
                                for _, t in prefixes],
                               use_tqdm=False, lora_request=self._lora_request)
        flat = [out.outputs[0].logprobs[0][t].logprob for (_, t), out in zip(prefixes, outputs)]
        result, start = [], 0
        for ids in token_ids:
            result.append(flat[start:start + len(ids) - 1])
            start += len(ids) - 1
        return result

    def served_dtype(self) -> str:
        """The dtype the engine computes in (``"float32"``, ``"bfloat16"``, ...)."""
        return str(self._require_llm().llm_engine.model_config.dtype).removeprefix("torch.")

    # ------------------------------------------------------------------ GPU sharing
    def sleep(self, level: int = 1) -> None:
        """Free GPU memory for training (level 1 keeps weights in CPU RAM, level 2 drops them:
        the next :meth:`load` of new weights refills them). No-op on CPU or without sleep mode."""
        if self.llm is None or not self.enable_sleep_mode or _on_cpu() or self._sleeping:
            return
        self.llm.sleep(level=level)
        self._sleeping, self._sleep_level = True, level

    def wake_up(self) -> None:
        self._wake(refill=True)

    def _wake(self, refill: bool) -> None:
        if self.llm is None or not self._sleeping:
            return
        self.llm.wake_up()
        self._sleeping = False
        if self._sleep_level == 2 and refill:
            self._reload_weights(self.model.path)
        self.llm.reset_prefix_cache()

    # ------------------------------------------------------------------ teardown
    def _shutdown(self) -> None:
        if self.llm is None:
            return
        llm, self.llm = self.llm, None
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # best effort: the process may be on its way out anyway
            log.debug("engine core shutdown failed", exc_info=True)
        del llm
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:
            log.debug("vLLM distributed cleanup failed", exc_info=True)
        self._lora_request = None
        self._sleeping = False

    def close(self) -> None:
        self._shutdown()
        self.model = None
        self._fingerprint = None

    def stats(self) -> dict[str, Any]:
        return {"builds": self.builds, "reloads": self.reloads, "model": self.model}
