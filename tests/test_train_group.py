"""One Ray Train worker group per trial (collapse_ray.train.worker_group): jobs on a group that
lives across generations train exactly like a fresh one, the group starts once, its memory stays
flat, and a dead group fails the driver with a clear message instead of a hang. The tiny random
Llama (``train_llama``) and the local two-CPU Ray come from conftest."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from collapse_ray.datatypes import ModelRef
from collapse_ray.train.deepspeed_config import deepspeed_config, resolve_zero_stage
from collapse_ray.train.lean_trainer import idle_helpers, state_api_answers
from tests.ray_training import TEXTS, mean_loss, training


def state_dict(path: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


def assert_same_weights(a: str, b: str) -> None:
    sa, sb = state_dict(a), state_dict(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.allclose(sa[k], sb[k], rtol=1e-5, atol=1e-6)]
    assert not different, f"weights differ in {different[:5]} ({len(different)} tensors)"


@contextlib.contextmanager
def hold_every_core_slot(seconds: float):
    """Hold all of this node's core slots from a thread for ``seconds``, from the block's start."""
    from collapse_ray.cores import available_cores
    from collapse_ray.train.core_slots import core_slots

    taken = threading.Event()

    def hold() -> None:
        with core_slots(available_cores()):
            taken.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(timeout=60)
    try:
        yield
    finally:
        thread.join()


def ray_actor_classes() -> collections.Counter:
    """This machine's Ray actor processes by class (Ray titles them ray::Class[.method])."""
    import psutil

    titles = collections.Counter()
    for proc in psutil.process_iter(["cmdline"]):
        first = (proc.info["cmdline"] or [""])[0]
        if first.startswith("ray::"):
            titles[first[len("ray::"):].split(".")[0].split()[0]] += 1
    return titles


# ---------------------------------------------------------------- issue 8: ZeRO stage 0

def test_zero_stage_0_means_zero_stage_0_not_the_size_rule():
    # Before: deepspeed_config refused 0, and the worker's `job.zero_stage or ...` turned it into 2.
    assert resolve_zero_stage(0, n_params=10**6, use_gpu=False) == 0
    assert deepspeed_config(n_params=10**6, world_size=2, micro_batch=4, use_gpu=False,
                            zero_stage=0)["zero_optimization"]["stage"] == 0
    assert resolve_zero_stage(None, n_params=10**6, use_gpu=False) == 2


def test_ray_trainer_rejects_a_zero_stage_deepspeed_does_not_have():
    from collapse_ray.train.ray_trainer import RayTrainer

    with pytest.raises(ValueError, match="zero_stage must be 0, 1, 2 or 3, got 4"):
        RayTrainer(training(), strategy="deepspeed", zero_stage=4)


# ---------------------------------------------------------------- the persistent group

def test_train_helpers_are_left_out_only_where_they_would_have_nothing_to_do():
    assert idle_helpers(has_datasets=False, state_api=False) == {"DatasetsCallback", "PlacementGroupCleanerCallback"}
    assert idle_helpers(has_datasets=True, state_api=False) == {"PlacementGroupCleanerCallback"}
    assert idle_helpers(has_datasets=False, state_api=True) == {"DatasetsCallback"}
    assert idle_helpers(has_datasets=True, state_api=True) == set()


def test_a_job_on_a_used_group_gives_the_weights_of_a_fresh_group_and_of_the_in_process_trainer(
        train_llama, local_ray, tmp_path):
    from collapse_ray.train.local import LocalTrainer
    from collapse_ray.train.ray_trainer import RayTrainer

    cfg = training(max_steps=6)
    base = ModelRef(train_llama)
    with RayTrainer(cfg, num_workers=1, resources_per_worker={"CPU": 1}) as used:
        # Two other jobs first: another seed, other texts, and training on from the first one's output.
        first = used.train(base, TEXTS[::-1], str(tmp_path / "job1"), seed=11)
        # A CPU job trains only on a free core of its node (train/core_slots.py): with all of them
        # held here for 2 s, the second job waits that long, and says so.
        with hold_every_core_slot(seconds=2.0):
            second = used.train(first.model, TEXTS[:16], str(tmp_path / "job2"), seed=12)
        assert second.core_wait_s >= 1.5, second
        # Its steps are timed apart from the wait, the loading and the saving (train/core.py, timed_steps).
        assert 0 < second.steps_s < second.seconds - second.core_wait_s and second.steps_cpu_s > 0, second
        third = used.train(base, TEXTS, str(tmp_path / "job3"), seed=3)
        assert (used.starts, used.group.info()["starts"]) == (1, 1)   # one fit, its workers started once
        actors = ray_actor_classes()   # Ray started here: Train's preemption watcher is not started
        assert "TrainController" in actors and "PreemptionWatcher" not in actors, actors
        # Nor the helpers that would idle beside the group (lean_trainer.py): no Ray Data datasets,
        # and a cleaner only where Ray's state API answers.
        assert "SynchronizationActor" in actors and "DatasetManager" not in actors, actors
        assert ("PlacementGroupCleaner" in actors) == state_api_answers(), actors
        assert used.startup_s is not None and used.startup_s > 0
        # A CPU worker starts on glibc's main arena (worker_group.CPU_WORKER_ENV): the environment it
        # was started with, which is what glibc reads.
        worker_pid = used.group.info()["pids"][0]
        assert "MALLOC_ARENA_MAX=1" in Path(f"/proc/{worker_pid}/environ").read_text().split("\0")
    with RayTrainer(cfg, num_workers=1, resources_per_worker={"CPU": 1}) as fresh:
        alone = fresh.train(base, TEXTS, str(tmp_path / "fresh"), seed=3)
    local = LocalTrainer(cfg).train(base, TEXTS, str(tmp_path / "local"), seed=3)

    assert (third.steps, third.tokens, third.train_loss) == (alone.steps, alone.tokens, alone.train_loss)
    assert 0 < local.steps_s < local.seconds and local.steps_cpu_s > 0, local
    assert_same_weights(third.model.path, alone.model.path)
    assert_same_weights(third.model.path, local.model.path)
    assert not list(tmp_path.glob("*.texts.json"))   # each job's texts file is removed once acknowledged


def test_a_killed_worker_group_fails_the_waiting_driver_with_a_clear_message(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer, TrainGroupDied

    trainer = RayTrainer(training(max_steps=10**6), num_workers=1, resources_per_worker={"CPU": 1})
    killed: dict = {}

    def kill_when_training() -> None:
        while "at" not in killed:
            info = trainer.group.info() if trainer.group.fits else {}
            if info.get("pids") and info.get("pending"):   # the workers serve, the job is out
                time.sleep(1.0)
                os.kill(info["pids"][0], signal.SIGKILL)
                killed.update(pid=info["pids"][0], at=time.monotonic())
            time.sleep(0.1)

    threading.Thread(target=kill_when_training, daemon=True).start()
    try:
        with pytest.raises(TrainGroupDied, match=r"worker group \(1 worker\(s\)\) stopped before "
                                                 r"acknowledging job 1 \(.*/model\)") as failure:
            trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "model"), seed=0)
        noticed_s = time.monotonic() - killed["at"]
    finally:
        trainer.close()
    print(f"the driver noticed the dead group {noticed_s:.1f}s after the kill")
    # Train's health check runs every 2 s, so the driver hears within about 2 s (10x: 20 s), not at a hang.
    assert noticed_s < 20, f"the driver noticed the dead group after {noticed_s:.0f}s"
    assert str(killed["pid"]) in str(failure.value)   # Train's error, naming the dead worker, is kept
    assert not (tmp_path / "model").exists()


class DriverOfOneTrainer:
    """A trial driver's part in a Ray actor of its own: one RayTrainer of the trial's directory."""

    def train(self, model: str, out: str, max_steps: int) -> str:
        from collapse_ray.train.ray_trainer import RayTrainer

        self.trainer = RayTrainer(training(max_steps=max_steps), num_workers=1, resources_per_worker={"CPU": 1.25})
        self.trainer.train(ModelRef(model), TEXTS, out, seed=0)
        return self.trainer.group.info()["placement_group"]

    def close(self) -> None:
        self.trainer.close()


def test_a_trials_next_worker_group_frees_the_placement_group_a_killed_driver_left(train_llama, local_ray,
                                                                                   tmp_path, module_by_value):
    """A driver killed hard (here in its first job) takes Train's controller with it, not the group's
    placement group (Train's cleaner needs Ray's state API, absent here); the trial's next group
    removes it first. Each group takes 1.25 of the 2 CPUs, so the second could not start beside the
    first's leftover."""
    from ray.util.placement_group import placement_group_table

    from collapse_ray.train.worker_group import placement_group_by_id

    def state(group_id: str) -> str:
        return placement_group_table(placement_group_by_id(group_id))["state"]

    record = tmp_path / "trial" / "ray_train_group.json"
    driver = local_ray.remote(num_cpus=0)(DriverOfOneTrainer).remote()
    driver.train.remote(train_llama, str(tmp_path / "trial" / "gen_00" / "model"), 10**6)   # never ends
    deadline = time.monotonic() + 300
    while not record.exists() and time.monotonic() < deadline:   # written once the workers say hello
        time.sleep(0.5)
    first = json.loads(record.read_text())["placement_group"]
    local_ray.kill(driver)
    time.sleep(5)
    assert state(first) == "CREATED"   # left behind by the dead driver's group
    again = local_ray.remote(num_cpus=0)(DriverOfOneTrainer).remote()
    second = local_ray.get(again.train.remote(train_llama, str(tmp_path / "trial" / "gen_01" / "model"), 1),
                           timeout=180)
    assert (state(first), state(second)) == ("REMOVED", "CREATED")
    local_ray.get(again.close.remote())
    assert state(second) == "REMOVED" and not record.exists()


def test_a_kept_groups_placement_group_record_follows_the_trial_it_serves(train_llama, local_ray, tmp_path):
    """A group kept for the grid's next trial (grid/kept_backends.py) is recorded in that trial's
    directory, whose retry is the one that would free it."""
    from collapse_ray.train.ray_trainer import RayTrainer

    first, second = tmp_path / "a" / "ray_train_group.json", tmp_path / "b" / "ray_train_group.json"
    with RayTrainer(training(max_steps=1), num_workers=1, resources_per_worker={"CPU": 1}) as trainer:
        trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "a" / "gen_00" / "model"), seed=0)
        recorded = json.loads(first.read_text())
        trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "b" / "gen_00" / "model"), seed=0)
        assert trainer.starts == 1 and not first.exists() and json.loads(second.read_text()) == recorded
    assert not second.exists()


def test_the_job_board_keeps_each_groups_jobs_apart_and_an_unknown_group_reads_as_stopped():
    from collapse_ray.train.worker_group import JobBoard

    async def scenario() -> None:
        board = JobBoard()
        await board.open("a")
        await board.open("b")
        await board.put("a", 1, "job a1")
        assert await board.take("b", after=0, timeout=0.01) == "wait"
        assert await board.take("a", after=0, timeout=0.01) == (1, "job a1")
        waiting = asyncio.create_task(board.take("b", after=0, timeout=30))   # woken by b's put, not a's
        await asyncio.sleep(0.01)
        await board.put("b", 1, "job b1")
        assert await asyncio.wait_for(waiting, 1) == (1, "job b1")
        await board.ack("a", 1, {"loss": 1.0})
        assert await board.result("b", 1, timeout=0.01) is None
        assert await board.result("a", 1, timeout=0.01) == {"loss": 1.0}
        await board.forget("a")   # its group closed
        assert await board.take("a", after=1, timeout=0.01) is None   # so its workers end
        assert await board.take("never opened", after=0, timeout=0.01) is None
        await board.ack("a", 2, {})   # a late acknowledgement of a forgotten group is dropped
        assert await board.groups_open() == ["b"]

    asyncio.run(scenario())


def test_a_launchs_worker_groups_share_its_job_board_and_one_closing_leaves_the_others_served(
        train_llama, local_ray, tmp_path):
    """A grid launch starts one job board for all its trials' worker groups (one Ray process, not one
    a trial); a group that closes is forgotten by it and the others go on. Outside a launch a group
    starts a board of its own and ends it when it closes."""
    from collapse_ray.train.ray_trainer import RayTrainer
    from collapse_ray.train.worker_group import LAUNCH_BOARD, launch_board

    def trainer() -> RayTrainer:
        return RayTrainer(training(max_steps=1), num_workers=1, resources_per_worker={"CPU": 1})

    board = launch_board()
    try:
        a, b = trainer(), trainer()
        a.train(ModelRef(train_llama), TEXTS, str(tmp_path / "a0"), seed=0)
        b.train(ModelRef(train_llama), TEXTS, str(tmp_path / "b0"), seed=0)
        assert ray_actor_classes()["JobBoard"] == 1
        assert len(local_ray.get(board.groups_open.remote())) == 2
        a.close()
        assert len(local_ray.get(board.groups_open.remote())) == 1
        b.train(ModelRef(train_llama), TEXTS, str(tmp_path / "b1"), seed=0)
        assert b.starts == 1 and (tmp_path / "b1").is_dir()
        b.close()
        assert local_ray.get(board.groups_open.remote()) == []
    finally:
        local_ray.kill(board)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # the name goes with the killed actor
        try:
            local_ray.get_actor(LAUNCH_BOARD)
        except ValueError:
            break
        time.sleep(0.2)
    with trainer() as alone:
        alone.train(ModelRef(train_llama), TEXTS, str(tmp_path / "c0"), seed=0)
        own = alone.group._running.board
        assert own != board and local_ray.get(own.groups_open.remote()) != []
    with pytest.raises(local_ray.exceptions.RayActorError):   # its own board ended with it
        local_ray.get(own.groups_open.remote(), timeout=30)


@pytest.mark.slow  # 11 jobs on one worker: ~1 min quiet
def test_memory_after_the_eleventh_job_is_within_ten_percent_of_the_first(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    rss = []
    with RayTrainer(training(max_steps=4), num_workers=1, resources_per_worker={"CPU": 1}) as trainer:
        init = ModelRef(train_llama)
        for job in range(11):
            init = trainer.train(init, TEXTS, str(tmp_path / f"gen_{job:02d}" / "model"), seed=job).model
            rss.append(trainer.last_metrics["rss_bytes"])
        assert trainer.group.info()["starts"] == 1
    print(f"worker RSS per job (MiB): {[round(r / 2**20) for r in rss]}")
    assert abs(rss[10] - rss[0]) <= 0.10 * rss[0], rss


@pytest.mark.slow
def test_two_ddp_workers_serve_jobs_generation_after_generation(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=2, resources_per_worker={"CPU": 1}, strategy="ddp") as trainer:
        gen0 = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "gen_00" / "model"), seed=0)
        gen1 = trainer.train(gen0.model, TEXTS, str(tmp_path / "gen_01" / "model"), seed=1)
        assert (trainer.starts, trainer.group.info()["starts"], len(trainer.group.info()["pids"])) == (1, 1, 2)
    assert mean_loss(gen1.model) < mean_loss(gen0.model) < mean_loss(ModelRef(train_llama)) - 0.5


@pytest.mark.slow
def test_deepspeed_zero2_workers_build_and_destroy_an_engine_per_job(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=2, resources_per_worker={"CPU": 1},
                    strategy="deepspeed", zero_stage=2) as trainer:
        gen0 = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "gen_00" / "model"), seed=0)
        gen1 = trainer.train(gen0.model, TEXTS, str(tmp_path / "gen_01" / "model"), seed=1)
        assert trainer.last_metrics["zero_stage"] == 2 and trainer.group.info()["starts"] == 1
    assert mean_loss(gen1.model) < mean_loss(gen0.model) < mean_loss(ModelRef(train_llama)) - 0.5


@pytest.mark.slow
def test_deepspeed_with_zero_stage_0_trains_at_stage_0(train_llama, local_ray, tmp_path):
    from collapse_ray.train.ray_trainer import RayTrainer

    with RayTrainer(training(), num_workers=2, resources_per_worker={"CPU": 1},
                    strategy="deepspeed", zero_stage=0) as trainer:
        result = trainer.train(ModelRef(train_llama), TEXTS, str(tmp_path / "model"), seed=0)
        assert trainer.last_metrics["zero_stage"] == 0   # before: 0 became "auto", i.e. 2
    assert mean_loss(result.model) < mean_loss(ModelRef(train_llama)) - 0.5


@pytest.mark.parametrize("address, local", [(None, True), ("", True), ("local", True), ("auto", False),
                                            ("ray://head:10001", False), ("10.0.0.5:6379", False)])
def test_only_a_ray_started_here_goes_without_trains_preemption_watcher(address, local):
    from collapse_ray.ray_here import starts_local_ray

    assert starts_local_ray(address) is local


def test_a_ray_started_here_has_a_log_monitor_that_lists_its_folder_every_few_seconds(local_ray):
    import psutil

    from collapse_ray.ray_here import LOG_MONITOR_ENV

    def command(p: psutil.Process) -> list[str]:
        try:
            return p.cmdline()
        except psutil.Error:   # an earlier test's child that exited (a zombie) or is exiting
            return []

    monitors = [p for p in psutil.Process().children(recursive=True) if any("log_monitor.py" in part for part in command(p))]
    assert len(monitors) == 1, monitors
    environ = monitors[0].environ()   # what the monitor read its settings from when it started
    assert {name: environ.get(name) for name in LOG_MONITOR_ENV} == LOG_MONITOR_ENV
