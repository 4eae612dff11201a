"""One Ray Train worker group for a whole trial: started once, sent one job per generation.

Ray Train V2 has no public call that hands a running worker group more work, so the group is one
``TorchTrainer.fit`` that runs in a thread of the trial driver and whose training function
(ray_worker.serve_jobs) serves jobs from this group's list on a ``JobBoard`` until told to stop:

    driver (this process)                    JobBoard actor (0 CPU)          Train workers
    run(job): put(g, seq, job) ------------> jobs[g][seq]   <-- take(g, after) -- every rank polls
              wait: result(g, seq, timeout) <- results[g][seq] <-- ack(g, seq, m) -- rank 0, model saved
              ...and the fit thread: has the group died?

The board keeps one job list per group (``g``, the fit's run name). A grid launch starts one board
for all its trials (``launch_board``, owned by the launch's driver; every idle Ray process wakes
about 146 times a second, and a board per trial was one more for each trial at once:
docs/BENCHMARKS.md); a group started outside a launch (``collapse-ray run``) starts its own.

A job leaves the board only when rank 0 acknowledges it, which it does after the model is saved
(atomically); a worker group that Train restarts takes it again and reruns it (idempotent on its
output directory). The driver waits for the acknowledgement in short polls and checks between
them whether the fit has ended: a dead group (a killed worker, a failed job) raises
``TrainGroupDied`` naming the fit's error within about Train's health-check interval (2 s)
plus the controller's shutdown, instead of hanging.

Resources: the group holds ``num_workers x resources_per_worker`` from its start to ``close()``
(the whole trial), in Train's own placement group; the board and Train's controller take no CPU. Train's helpers that
would idle beside such a group are left out (lean_trainer.py).
What the driver owns dies with it: a killed driver takes the controller and the workers along
(Ray's owner fate-sharing), and its own board if it started one; the launch's board outlives it
and keeps that group's last few entries (paths and metrics) until the launch ends.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable

from collapse_ray.atomic_io import write_json_atomic
from collapse_ray.errors import TrialError
from collapse_ray.ray_here import init_ray

# Train runs the training function in a thread of the worker; glibc gives such a thread an arena
# whose heaps hold at most 64 MiB, so a CPU step's larger tensors (the embedded model's logits)
# were mapped and zeroed afresh every step whatever cpu_allocator.py set: 1.15x the time in a
# second thread, 8x the page faults (docs/BENCHMARKS.md). One arena puts the thread on the main
# heap. glibc reads the variable when the process starts, hence the worker's runtime env.
CPU_WORKER_ENV = {"env_vars": {"MALLOC_ARENA_MAX": "1"}}
POLL_S = 1.0             # how long one wait for an acknowledgement blocks before checking the fit
GROUP_RECORD = "ray_train_group.json"   # beside the default storage folder, in the trial directory
CLOSE_TIMEOUT_S = 120.0  # how long close() waits for the workers to finish and the fit to return
LAUNCH_BOARD = "collapse_ray_job_board"   # the named actor of a grid launch's board (the job's namespace)


def cpu_threads(resources_per_worker: dict[str, float] | None) -> int:
    """Torch's intra-op threads for a worker: its whole CPUs, at least one. Train does not set
    OMP_NUM_THREADS, so a worker with a fraction of a core would run one thread per core of
    the machine beside every other trial's."""
    cpus = (resources_per_worker or {}).get("CPU", 1.0)
    return max(1, int(cpus))


class TrainGroupDied(TrialError):
    """The trial's Ray Train worker group stopped before acknowledging a job."""


class _GroupJobs:
    """One group's list on the board: jobs by sequence number until acknowledged, results until
    read, and the group's start-up record."""

    def __init__(self):
        self.jobs: dict[int, Any] = {}
        self.results: dict[int, dict] = {}
        self.changed = asyncio.Event()
        self.starts = 0               # times rank 0 entered the training function
        self.first_hello: float | None = None
        self.pids: dict[int, int] = {}
        self.placement_group: str | None = None   # Train's placement group of the workers (hex id)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)


class JobBoard:
    """Worker groups' job lists (a Ray actor), one per group id. A group the board does not know
    (never opened, or forgotten) reads as stopped, so its workers end."""

    def __init__(self):
        self.groups: dict[str, _GroupJobs] = {}

    async def open(self, group: str) -> None:
        self.groups.setdefault(group, _GroupJobs())

    async def hello(self, group: str, rank: int, pid: int, at: float, placement_group: str | None = None) -> None:
        g = self.groups.get(group)
        if g is None:
            return
        g.pids[rank] = pid
        if rank == 0:
            g.starts += 1
            g.first_hello = g.first_hello or at
            g.placement_group = placement_group

    async def put(self, group: str, seq: int, job: Any) -> None:
        g = self.groups[group]
        g.jobs[seq] = job
        g.notify()

    async def take(self, group: str, after: int, timeout: float):
        """The oldest unacknowledged job after ``after`` as (seq, job); "wait" if none came
        within ``timeout``; None once the group is forgotten."""
        deadline = time.monotonic() + timeout
        while True:
            g = self.groups.get(group)
            if g is None:   # forgotten: its group is closing
                return None
            pending = sorted(s for s in g.jobs if s > after)
            if pending:
                return pending[0], g.jobs[pending[0]]
            if time.monotonic() >= deadline:
                return "wait"
            await g.wait(deadline - time.monotonic())

    async def ack(self, group: str, seq: int, result: dict) -> None:
        g = self.groups.get(group)
        if g is None:
            return
        g.jobs.pop(seq, None)
        g.results[seq] = result
        g.notify()

    async def result(self, group: str, seq: int, timeout: float) -> dict | None:
        g = self.groups[group]
        if seq not in g.results:
            await g.wait(timeout)
        return g.results.pop(seq, None)

    async def forget(self, group: str) -> None:
        """Drop the group's list; its workers' waiting ``take`` wakes and returns None."""
        g = self.groups.pop(group, None)
        if g is not None:
            g.notify()

    async def info(self, group: str) -> dict:
        g = self.groups.get(group) or _GroupJobs()
        return {"starts": g.starts, "first_hello": g.first_hello, "pids": dict(g.pids),
                "pending": sorted(g.jobs), "placement_group": g.placement_group}

    async def groups_open(self) -> list[str]:
        return sorted(self.groups)


def launch_board():
    """Start the grid launch's job board on this node, for all the launch's trials; the caller
    owns it (its death ends the board) and kills it when the launch ends."""
    return _new_board(name=LAUNCH_BOARD, get_if_exists=True)


def _board_for_group():
    """(board, own): the running launch's board, or a new one of this group's own."""
    import ray

    with contextlib.suppress(ValueError):   # no launch's board in this job's namespace
        return ray.get_actor(LAUNCH_BOARD), False
    return _new_board(), True


def _new_board(**options):
    """A job board actor on this node (soft: another node if this one is gone), taking no CPU."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(JobBoard).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True), **options).remote()


class _Running:
    """A started group's handles; kept apart from TrainWorkerGroup so a finalizer can stop it."""

    def __init__(self, board, own_board: bool, storage: str, run_name: str, remove_storage: bool, record: Path):
        self.board, self.own_board = board, own_board
        self.storage, self.run_name, self.remove_storage = storage, run_name, remove_storage
        self.record = record   # the group's placement group, for a later driver of the trial (see _free_orphan)
        self.recorded: str | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.launched_at = time.time()

    def fit(self, trainer) -> None:
        try:
            trainer.fit()
        except BaseException as e:   # read by the driver; a thread must not print it
            self.error = e

    def stop(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        with contextlib.suppress(Exception):   # the workers end at their next take, after their current job
            ray.get(self.board.forget.remote(self.run_name), timeout=10)
        if self.thread is not None:
            self.thread.join(CLOSE_TIMEOUT_S)
        if self.own_board:
            with contextlib.suppress(Exception):   # a group still running fails its next board call and ends
                ray.kill(self.board)
            if self.thread is not None:
                self.thread.join(CLOSE_TIMEOUT_S)
        if self.thread is None or not self.thread.is_alive():   # Train removed its placement group
            self.record.unlink(missing_ok=True)
        if self.remove_storage:
            shutil.rmtree(Path(self.storage, self.run_name), ignore_errors=True)
            with contextlib.suppress(OSError):
                Path(self.storage).rmdir()


class TrainWorkerGroup:
    """Starts the fit on the first ``run`` and keeps it until ``close()``. A group that died is
    not reused: the next ``run`` starts a new one (``fits`` counts them)."""

    def __init__(self, *, num_workers: int, use_gpu: bool, resources_per_worker: dict[str, float] | None,
                 storage_path: str | None, progress: Callable[[str], None]):
        self.num_workers, self.use_gpu = num_workers, use_gpu
        self.resources_per_worker, self.storage_path = resources_per_worker, storage_path
        self.progress = progress
        self.fits = 0                 # TorchTrainer.fit calls this group has made
        self.startup_s: float | None = None   # the current fit's launch -> its workers serving
        self._running: _Running | None = None
        self._finalizer: weakref.finalize | None = None
        self._seq = 0

    def run(self, job, storage_default: Path) -> dict:
        """Send ``job`` and wait for rank 0's acknowledgement (its metrics)."""
        import ray

        running = self._running
        if running is None or not running.thread.is_alive():
            running = self._start(storage_default)
        else:
            self._follow(running, Path(storage_default).with_name(GROUP_RECORD))
        self._seq += 1
        seq = self._seq
        ray.get(running.board.put.remote(running.run_name, seq, job))
        while True:
            try:
                result = ray.get(running.board.result.remote(running.run_name, seq, POLL_S))
            except ray.exceptions.RayError as e:
                raise TrainGroupDied(f"the trial's Ray Train job board is gone ({type(e).__name__}); "
                                     f"job {seq} ({job.out_dir}) was not acknowledged") from e
            if result is not None or running.recorded is None:   # from the workers' first hello on
                self._record_placement_group(running)
            if result is not None:
                self._note_startup(running)
                return result
            if not running.thread.is_alive():
                self._running = None
                error = running.error or RuntimeError("the fit returned without being told to stop")
                raise TrainGroupDied(
                    f"the trial's Ray Train worker group ({self.num_workers} worker(s)) stopped before "
                    f"acknowledging job {seq} ({job.out_dir}): {type(error).__name__}: {error}") from error

    def info(self) -> dict:
        """The board's record: worker-group starts (Train restarts included), worker pids, pending jobs."""
        import ray

        if self._running is None:
            return {"starts": 0, "first_hello": None, "pids": {}, "pending": []}
        return ray.get(self._running.board.info.remote(self._running.run_name))

    def close(self) -> None:
        """Tell the workers to stop after their current job, wait for the fit to return, free the
        group's resources and remove its run state."""
        if self._finalizer is not None:
            self._finalizer()   # runs _Running.stop once
        self._running = self._finalizer = None

    def _start(self, storage_default: Path) -> _Running:
        import ray
        import ray.train
        from ray.train.torch import TorchConfig

        from collapse_ray.train.lean_trainer import LeanTorchTrainer
        from collapse_ray.train.ray_worker import serve_jobs

        self.close()
        if not ray.is_initialized():   # as TorchTrainer.fit would: join RAY_ADDRESS's cluster, or start one
            init_ray()
        board, own_board = _board_for_group()
        storage = self.storage_path or str(storage_default)   # may be a URI (s3://...)
        record = Path(storage_default).with_name(GROUP_RECORD)
        _free_orphan(record)
        running = _Running(board, own_board, storage, f"train-group-{uuid.uuid4().hex[:8]}",
                           remove_storage=not self.storage_path, record=record)
        ray.get(board.open.remote(running.run_name))
        trainer = LeanTorchTrainer(
            serve_jobs,
            train_loop_config={"board": board, "group": running.run_name,
                               "cpu_threads": cpu_threads(self.resources_per_worker)},
            scaling_config=ray.train.ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu,
                                                   resources_per_worker=self.resources_per_worker),
            run_config=ray.train.RunConfig(name=running.run_name, storage_path=storage,
                                           worker_runtime_env={} if self.use_gpu else CPU_WORKER_ENV),
            torch_config=TorchConfig(backend="nccl" if self.use_gpu else "gloo"),
        )
        running.thread = threading.Thread(target=running.fit, args=(trainer,), daemon=True,
                                          name=running.run_name)
        running.thread.start()
        self.fits += 1
        self.startup_s = None
        self._running = running
        self._finalizer = weakref.finalize(self, running.stop)
        self.progress(f"ray train: started a worker group of {self.num_workers} worker(s) for this trial")
        return running

    def _note_startup(self, running: _Running) -> None:
        if self.startup_s is None:
            first = self.info()["first_hello"]
            self.startup_s = (first - running.launched_at) if first else None

    def _follow(self, running: _Running, record: Path) -> None:
        """A kept group serving another trial (grid/kept_backends.py): its record moves to that
        trial's directory, whose retry is the one to free it; a record already there is an earlier
        attempt's orphan, freed first."""
        if record == running.record:
            return
        _free_orphan(record, keep=running.recorded)
        if running.recorded:
            write_json_atomic(record, {"placement_group": running.recorded})
        running.record.unlink(missing_ok=True)
        running.record = record

    def _record_placement_group(self, running: _Running) -> None:
        """Keep the trial's record naming the group's placement group (see _free_orphan); Train
        makes a new one when it restarts the workers."""
        import ray

        try:
            group = self.info()["placement_group"]
        except ray.exceptions.RayError:   # the board is gone: the next poll says so
            return
        if group and group != running.recorded:
            write_json_atomic(running.record, {"placement_group": group})
            running.recorded = group


def _free_orphan(record: Path, keep: str | None = None) -> None:
    """Remove the placement group of this trial's earlier worker group, if it outlived its driver.
    A driver that dies hard (SIGKILL, out of memory) takes Train's controller with it, but not the
    group's placement group: Train's cleaner watches the controller through Ray's state API, which
    needs the dashboard (`ray[default]`), and without it the group's resources stayed reserved until
    the launch's Ray ended (docs/BENCHMARKS.md), so the retried trial's new group could wait for them.
    ``keep``: the placement group of the group about to use the record, never removed."""
    from ray.util.placement_group import placement_group_table, remove_placement_group

    try:
        named = json.loads(record.read_text())["placement_group"]
        group = placement_group_by_id(named)
    except (OSError, ValueError, KeyError, TypeError):
        return
    if named == keep:   # the live group itself (``keep``), not an orphan
        return
    if placement_group_table(group).get("state") not in (None, "REMOVED"):
        remove_placement_group(group)
    record.unlink(missing_ok=True)


def placement_group_by_id(hex_id: str):
    """A handle on the placement group with this id (as the workers report it: ``id.hex()``)."""
    import ray
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(ray.PlacementGroupID(bytes.fromhex(hex_id)))
