"""The vLLM backend in a Ray actor, and a driver-side :class:`Generator` that talks to it.

The actor owns one :class:`~collapse_ray.generate.vllm_engine.VLLMEngine` for the life of a
trial. vLLM's process-wide settings (environment variables, OpenMP thread binding, NUMA memory
policy, the torch.distributed world) live and die with the actor's process; ``close()`` kills
it, which frees its memory (CPU RAM or GPU) at once.

Placement: pass ``placement_group`` (and ``bundle_index``) or a ready ``scheduling_strategy``
to put the actor in resources a Tune trial reserved; with neither, an actor created inside a
trial lands in the trial's placement group anyway (Tune captures child tasks).

GPU: with ``tensor_parallel_size == 1`` the actor takes ``num_gpus=1`` (the default when the
cluster has GPUs) and vLLM runs in its process. With ``tensor_parallel_size > 1`` the actor
takes no GPU itself and vLLM's Ray executor starts one worker per GPU bundle of the actor's
placement group (``placement_group_capture_child_tasks=True``); ``bundle_indices`` chooses
which bundles (vLLM's ``VLLM_RAY_BUNDLE_INDICES``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from collapse_ray.datatypes import ModelRef
from collapse_ray.generate.base import Sampling
from collapse_ray.generate.gloo_groups import share_one_gloo_device
from collapse_ray.generate.vllm_engine import VLLMEngine

# Set in the actor's process before vLLM is imported there, never in the driver's.
DEFAULT_ENV_VARS = {
    # Build the engine core in the actor's own process: ~3-15 s instead of ~25-40 s on CPU,
    # and no grandchild process to leak if the actor is killed.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


class VLLMActor(VLLMEngine):
    """A :class:`VLLMEngine` that first sets vLLM's environment in its own process, and lets its
    one-member torch.distributed groups share one gloo device (gloo_groups.py: vLLM's 13 groups
    of an engine on one CPU each polled every 10 ms)."""

    def __init__(self, env_vars: dict[str, str], **engine_kwargs: Any) -> None:
        os.environ.update(env_vars)  # runtime_env set them already; this covers a reused worker
        share_one_gloo_device()
        super().__init__(**engine_kwargs)

    def pid(self) -> int:
        return os.getpid()


VLLMGeneratorActor = ray.remote(VLLMActor)


class RayVLLMGenerator:
    """A :class:`Generator` whose work runs in a :data:`VLLMGeneratorActor`.

    Args:
        num_cpus: CPUs the actor reserves.
        num_gpus: GPUs the actor reserves; ``None`` = 1 if the cluster has GPUs and
            ``tensor_parallel_size == 1``, else 0.
        placement_group, bundle_index: put the actor in this bundle of a reserved group.
        scheduling_strategy: any Ray scheduling strategy (overrides ``placement_group``).
        bundle_indices: for ``tensor_parallel_size > 1``, the group's bundles vLLM's workers use.
        env_vars: more environment variables for the actor's process (e.g. ``HF_HUB_OFFLINE``,
            ``VLLM_LOGGING_LEVEL``); they override :data:`DEFAULT_ENV_VARS`.
        engine_kwargs: :class:`VLLMEngine` arguments (``kv_cache_bytes``, ``max_model_len``,
            ``enable_lora``, ``max_lora_rank``, ``tensor_parallel_size``, ``dtype``, ...).
    """

    def __init__(
        self,
        *,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        placement_group=None,
        bundle_index: int = -1,
        scheduling_strategy=None,
        bundle_indices: Sequence[int] | None = None,
        env_vars: dict[str, str] | None = None,
        **engine_kwargs: Any,
    ) -> None:
        tp = int(engine_kwargs.get("tensor_parallel_size", 1))
        if num_gpus is None:
            has_gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
            num_gpus = 1 if has_gpus and tp == 1 else 0
        if scheduling_strategy is None and placement_group is not None:
            scheduling_strategy = PlacementGroupSchedulingStrategy(
                placement_group=placement_group,
                placement_group_bundle_index=bundle_index,
                placement_group_capture_child_tasks=tp > 1,
            )
        env = {**DEFAULT_ENV_VARS, **(env_vars or {})}
        if bundle_indices is not None:
            env["VLLM_RAY_BUNDLE_INDICES"] = ",".join(map(str, bundle_indices))
        options: dict[str, Any] = dict(
            num_cpus=num_cpus, num_gpus=num_gpus, runtime_env={"env_vars": env}
        )
        if scheduling_strategy is not None:
            options["scheduling_strategy"] = scheduling_strategy
        self._actor = VLLMGeneratorActor.options(**options).remote(env, **engine_kwargs)
        self._prefetching = None   # the ObjectRef of a load() started by prefetch()
        self._sleep_mode = bool(engine_kwargs.get("enable_sleep_mode"))

    def _call(self, method: str, *args: Any) -> Any:
        if self._actor is None:
            raise RuntimeError("RayVLLMGenerator is closed")
        self._await_prefetch()
        return ray.get(getattr(self._actor, method).remote(*args))

    def _await_prefetch(self) -> None:
        pending, self._prefetching = self._prefetching, None
        if pending is not None:
            ray.get(pending)   # a failed build surfaces here, at the next call

    # The Generator protocol.
    def prefetch(self, model: ModelRef) -> None:
        """Build the engine for ``model`` in the actor while the driver goes on (e.g. the base
        model while generation 0 trains: the trained weights then reload in place)."""
        if self._actor is None:
            raise RuntimeError("RayVLLMGenerator is closed")
        self._await_prefetch()
        self._prefetching = self._actor.load.remote(model)

    def load(self, model: ModelRef) -> None:
        self._call("load", model)

    def generate(self, prompts: Sequence[str], sampling: Sampling) -> list[str]:
        return self._call("generate", list(prompts), sampling)

    def option_probs(self, prompts: Sequence[str], options: Sequence[str]) -> list[list[float]]:
        return self._call("option_probs", list(prompts), list(options))

    def close(self) -> None:
        """Kill the actor: its process, and all the memory vLLM held, go with it."""
        if self._actor is not None:
            ray.kill(self._actor, no_restart=True)
            self._actor, self._prefetching = None, None

    # Extras.
    def generate_token_ids(self, prompts: Sequence[str], sampling: Sampling) -> list[list[int]]:
        return self._call("generate_token_ids", list(prompts), sampling)

    def prompt_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        return self._call("prompt_logprobs", [list(ids) for ids in token_ids])

    def served_dtype(self) -> str:
        return self._call("served_dtype")

    def sleep(self, level: int = 1) -> None:
        """Free the GPU for training (a no-op on CPU or without ``enable_sleep_mode``). Without
        sleep mode it returns at once: waiting for a prefetch here would put the engine's build
        back in front of generation 0's training, which the prefetch exists to overlap."""
        if self._sleep_mode:
            self._call("sleep", level)

    def wake_up(self) -> None:
        self._call("wake_up")

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def pid(self) -> int:
        return self._call("pid")

    def __enter__(self) -> "RayVLLMGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
