"""At most one CPU-training thread per core of a node: a node-wide counting semaphore of lock files.

A CPU grid runs more trials than cores, so that one trial's generation, evaluation or wait for a
shared generation 0 leaves no core idle. When several of them train at once, though, their
one-thread trainers time-share the cores, and each switch evicts the other trainer's weights and
activations from the core's caches: on this project's 2-core VM four one-thread trainers got 0.91
of the two cores' throughput, two 0.96, and four taking turns through these slots 0.96
(benchmarks/trainers_at_once.py); the whole `make grid` ran at 1.35 x its compute floor with them
and 1.40 x without, the same afternoon (docs/BENCHMARKS.md). So a CPU training job first takes one
slot per torch thread and holds them to its end; a job that finds none free waits, and its trial's
other phases never wait (they take no slot).

A slot is an ``flock`` on one of ``cores`` files in a per-user folder of the node's temp dir: the
kernel drops a lock when its holder's process dies, so a killed worker never keeps a slot, and
every process of the node (any launch, any Ray session) counts against the same cores. Waiting
polls; a training job lasts tens of seconds to hours, a poll every 0.2 s costs nothing.

Jobs take slots in turn: a waiting job holds the folder's turnstile (one more flock) and gathers
slots as they free, and the jobs behind it wait for the turnstile. Without the turnstile a job
of several threads (a Train worker of several CPUs) would wait for a moment when enough slots are
free at once, which on a node busy with one-thread jobs may not come; with it, it waits for the
jobs running when it asked. Only the turnstile's holder gathers, so no two jobs each hold part of
what the other needs.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from collapse_ray.cores import available_cores

POLL_S = 0.2


def slot_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"collapse_ray-{os.getuid()}" / "core_slots"


@contextmanager
def core_slots(threads: int, *, cores: int | None = None, directory: Path | None = None,
               poll_s: float = POLL_S) -> Iterator[float]:
    """Hold ``threads`` of the node's ``cores`` slots (all of them if it asks for more) for the
    block; yields the seconds it waited for them (module docstring: in turn)."""
    cores = cores or available_cores()
    start = time.monotonic()
    held = _wait_for(directory or slot_dir(), cores, max(1, min(threads, cores)), poll_s)
    try:
        yield time.monotonic() - start
    finally:
        for fd in held:
            os.close(fd)   # closing the descriptor drops its lock


def _wait_for(folder: Path, cores: int, wanted: int, poll_s: float) -> list[int]:
    """The descriptors of ``wanted`` locked slots, taken through the turnstile; none where the node
    cannot keep the slot files (no writable temp dir): the slots only save time, a job trains
    without them."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        turnstile = os.open(folder / "turnstile", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return []
    held: list[int] = []
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)   # the jobs before this one have their slots
        while True:
            held += _take_free(folder, cores, wanted - len(held))
            if len(held) == wanted:
                taken, held = held, []
                return taken
            time.sleep(poll_s)
    except OSError:
        return []
    finally:   # a take cut short gives back what it had: a kept lock lasts the worker's life
        for fd in held:
            os.close(fd)
        os.close(turnstile)


def _take_free(folder: Path, cores: int, wanted: int) -> list[int]:
    """Up to ``wanted`` of the slots free now (one this process holds through another descriptor
    is not free)."""
    taken: list[int] = []
    try:
        for slot in range(cores):
            if len(taken) == wanted:
                break
            fd = os.open(folder / f"slot-{slot}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            taken.append(fd)
        return taken
    except BaseException:
        for fd in taken:
            os.close(fd)
        raise
