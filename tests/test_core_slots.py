"""A node's core slots (collapse_ray.train.core_slots): at most one CPU-training thread per core,
slots taken in turn, and a killed holder's slots free again."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from collapse_ray.train.core_slots import core_slots


def hold_in_thread(threads: int, cores: int, folder, seconds: float, log: list) -> threading.Thread:
    """Start a thread that waits for ``threads`` slots, holds them ``seconds``, and logs
    (waited, taken_at, released_at)."""
    def run() -> None:
        with core_slots(threads, cores=cores, directory=folder, poll_s=0.01) as waited:
            taken = time.monotonic()
            time.sleep(seconds)
        log.append((waited, taken, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def most_at_once(log: list) -> int:
    events = sorted([(taken, 1) for _, taken, _ in log] + [(released, -1) for _, _, released in log])
    now = most = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def test_no_more_jobs_hold_a_slot_at_once_than_there_are_cores(tmp_path):
    log: list = []
    for thread in [hold_in_thread(1, 2, tmp_path, 0.3, log) for _ in range(5)]:
        thread.join()
    assert len(log) == 5 and most_at_once(log) == 2
    assert sorted(waited for waited, _, _ in log)[-1] >= 0.5   # the fifth waited for two rounds


def test_jobs_take_slots_in_turn_so_one_needing_every_core_is_not_passed_by_later_ones(tmp_path):
    """Before the turnstile a one-slot job took the free slot at once, and a job needing both
    waited for a moment when none was held, which a busy node need not give it."""
    log_one: list = []
    first = hold_in_thread(1, 2, tmp_path, 1.0, log_one)   # one of the two slots, for a second
    time.sleep(0.1)
    log_two: list = []
    both = hold_in_thread(2, 2, tmp_path, 0.3, log_two)   # needs both: waits for the first
    time.sleep(0.1)
    log_late: list = []
    late = hold_in_thread(1, 2, tmp_path, 0.0, log_late)   # a slot is free, but the job before it waits
    for thread in (first, both, late):
        thread.join()
    ((waited_two, _, released_two),) = log_two
    ((_, taken_late, _),) = log_late
    assert waited_two >= 0.7 and taken_late >= released_two


def test_a_job_needing_every_core_gets_them_among_one_slot_jobs_that_keep_coming(tmp_path):
    stop = threading.Event()

    def keep_training() -> None:   # a trial's one-thread jobs, back to back
        while not stop.is_set():
            with core_slots(1, cores=2, directory=tmp_path, poll_s=0.01):
                time.sleep(0.05)

    trainers = [threading.Thread(target=keep_training) for _ in range(3)]
    for t in trainers:
        t.start()
    try:
        time.sleep(0.2)
        log: list = []
        hold_in_thread(2, 2, tmp_path, 0.0, log).join(timeout=10)
        assert log and log[0][0] < 2.0
    finally:
        stop.set()
        for t in trainers:
            t.join()


def test_a_job_asking_for_more_threads_than_cores_takes_every_core(tmp_path):
    with core_slots(8, cores=2, directory=tmp_path):
        log: list = []
        thread = hold_in_thread(1, 2, tmp_path, 0.0, log)
        time.sleep(0.3)
        assert not log   # still waiting
    thread.join()
    assert log[0][0] >= 0.25


def test_a_killed_holders_slot_is_free_again(tmp_path):
    """The kernel drops an flock when its process dies: a SIGKILLed Train worker keeps no core."""
    code = ("import sys, time; from pathlib import Path; from collapse_ray.train.core_slots import core_slots\n"
            "with core_slots(2, cores=2, directory=Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        log: list = []
        waiter = hold_in_thread(1, 2, tmp_path, 0.0, log)
        time.sleep(0.3)
        assert not log   # the holder has both slots
        holder.send_signal(signal.SIGKILL)
        waiter.join(timeout=10)
        assert log and log[0][0] >= 0.25
    finally:
        holder.kill()
        holder.wait()


def test_a_node_without_a_writable_slot_folder_trains_without_slots(tmp_path):
    """The slots only save time: a job whose node cannot keep them is not failed for it."""
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with core_slots(1, cores=2, directory=blocker / "core_slots") as waited:   # mkdir under a file fails
        assert waited < 1.0


def test_a_take_cut_short_by_an_error_gives_back_the_slots_it_had_locked(tmp_path):
    """A slot kept by a failed take would stay locked for the Train worker's whole life."""
    import fcntl
    import os

    (tmp_path / "slot-1").mkdir()   # opening the second slot fails (a directory)
    with core_slots(2, cores=2, directory=tmp_path) as waited:   # trains without slots
        assert waited < 1.0
    fd = os.open(tmp_path / "slot-0", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # raises if the first slot were still held
    finally:
        os.close(fd)
