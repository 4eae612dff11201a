"""init: pid 1 of a run's pid namespace (namespace and user-namespace modes)."""
from __future__ import annotations

import os
import signal

from collapse_ray.sandbox.child.linux import PR_SET_DUMPABLE, PR_SET_PDEATHSIG, Libc
from collapse_ray.sandbox.child.mounts import setup_mounts
from collapse_ray.sandbox.child.processes import kill_quietly, reap_all, say, worker_report
from collapse_ray.sandbox.child.worker import start_worker
from collapse_ray.sandbox.protocol import LINE_WORKER


def init_main(cfg: dict, libc: Libc, status) -> None:
    """Set up the mounts, fork the worker, reap every orphan of the run, and when the worker
    ends kill everything left in the namespace; report how the worker ended."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # The kernel delivers to a namespace's init only the signals it handles: with no Python
    # handler left, the run's processes (the same uid in a user namespace) cannot stop it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc.prctl(PR_SET_DUMPABLE, 0)  # nor ptrace it
    setup_mounts(cfg, libc)
    cfg["mounted"] = True
    worker, setup_r = start_worker(cfg, libc)
    while True:  # as pid 1 we also reap every orphan of the run, so zombies never pile up
        pid, wstatus, rusage = os.wait4(-1, 0)
        if pid == worker:
            break
    report = worker_report(wstatus, rusage, setup_r)
    kill_quietly(-1)  # from pid 1: every other process of this namespace
    reap_all(block=True)
    say(status, LINE_WORKER, report)
    os._exit(0)
