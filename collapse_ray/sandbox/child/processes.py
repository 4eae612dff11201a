"""Process helpers shared by the zygote, the supervisor and init: run a forked child's body,
wait with a deadline, kill, reap, and find processes through /proc."""
from __future__ import annotations

import json
import os
import select
import signal
import time

from collapse_ray.sandbox.protocol import EXIT_SETUP, FD_CONTROL


def run_child(func, *args) -> None:
    """Run a forked child's body; never unwind into the parent's frames."""
    try:
        func(*args)
    except BaseException as exc:
        try:
            os.write(2, f"collapse_ray.sandbox: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(EXIT_SETUP)
    os._exit(EXIT_SETUP)


def say(status, kind: str, payload: dict) -> None:
    """One line of the status pipe (protocol.LINE_*)."""
    status.write(f"{kind} {json.dumps(payload)}\n")
    status.flush()


def wait_with_deadline(pid: int, cfg: dict) -> tuple[bool, bool]:
    """Wait for child `pid` to exit (without reaping it) until the deadline or an abort from the
    parent (a byte, or EOF because the parent died). Returns (timed_out, aborted)."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(FD_CONTROL, select.POLLIN)
    deadline = time.monotonic() + cfg["timeout_s"]
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True, False
            for fd, _ in poller.poll(max(1, int(left * 1000))):
                if fd == pidfd:
                    return False, False
                if fd == FD_CONTROL:
                    return False, True
    finally:
        os.close(pidfd)


def worker_report(wstatus: int, rusage, setup_r: int) -> dict:
    setup_ok = os.read(setup_r, 16) == b"ok"
    os.close(setup_r)
    return {
        "setup_ok": setup_ok,
        "exit_code": os.waitstatus_to_exitcode(wstatus),
        "cpu_s": rusage.ru_utime + rusage.ru_stime,
    }


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def reap_all(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _proc_status_fields():
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    yield int(name), f.read()
            except OSError:
                continue


def _field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return -1


def processes_of_uid(uid: int) -> list[int]:
    return [pid for pid, text in _proc_status_fields() if _field(text, "Uid:") == uid]


def descendants(root: int) -> list[int]:
    parent_of = {pid: _field(text, "PPid:") for pid, text in _proc_status_fields()}
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier}
        found.extend(frontier)
    return found


def children_of(parent: int) -> list[int]:
    return [pid for pid, text in _proc_status_fields() if _field(text, "PPid:") == parent]
