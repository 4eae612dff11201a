"""RayVLLMGenerator's prefetch against the loop's sleep before each training phase: without sleep
mode the engine keeps building while generation 0 trains; with it (colocated on GPU) sleep waits
for the build, since an engine must exist before it can free its GPU. The actor is a stand-in
that records calls and whose load blocks until released (the call order needs no vLLM)."""
from __future__ import annotations

import asyncio
import threading

import pytest

from collapse_ray.datatypes import ModelRef


class StandInEngine:
    """The driver-facing methods of VLLMActor that these tests call, recording their order."""

    def __init__(self, env_vars: dict, **engine_kwargs):
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def load(self, model) -> None:
        self.calls.append("load started")
        await self.release.wait()
        self.calls.append("load done")

    async def sleep(self, level: int) -> None:
        self.calls.append("sleep")

    async def finish_load(self) -> None:
        self.release.set()

    async def recorded(self) -> list[str]:
        return list(self.calls)


@pytest.fixture
def stand_in(local_ray, monkeypatch, module_by_value):
    import collapse_ray.generate.vllm_actor as vllm_actor

    monkeypatch.setattr(vllm_actor, "VLLMGeneratorActor", local_ray.remote(StandInEngine))
    return vllm_actor.RayVLLMGenerator


def test_without_sleep_mode_sleep_returns_while_the_prefetched_engine_is_still_building(stand_in, local_ray):
    gen = stand_in(num_cpus=0, num_gpus=0)
    try:
        gen.prefetch(ModelRef("base"))
        sleeping = threading.Thread(target=gen.sleep)
        sleeping.start()
        sleeping.join(30)
        assert not sleeping.is_alive()   # returned with the build still blocked: training starts beside it
        assert "load done" not in local_ray.get(gen._actor.recorded.remote(), timeout=30)
        local_ray.get(gen._actor.finish_load.remote())
        gen.load(ModelRef("trained"))   # waits for the prefetch, then loads
        assert local_ray.get(gen._actor.recorded.remote()) == ["load started", "load done"] * 2
    finally:
        local_ray.get(gen._actor.finish_load.remote())
        gen.close()


def test_with_sleep_mode_sleep_waits_for_the_prefetched_engine_and_then_frees_it(stand_in, local_ray):
    gen = stand_in(num_cpus=0, num_gpus=0, enable_sleep_mode=True)
    try:
        gen.prefetch(ModelRef("base"))
        sleeping = threading.Thread(target=gen.sleep)
        sleeping.start()
        sleeping.join(1.0)   # blocked behind the build it has to wait for
        assert sleeping.is_alive()
        local_ray.get(gen._actor.finish_load.remote())
        sleeping.join(30)
        assert local_ray.get(gen._actor.recorded.remote()) == ["load started", "load done", "sleep"]
    finally:
        gen.close()
