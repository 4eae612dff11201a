"""The supervisor of one run, forked from the zygote: chooses how the run is isolated, enforces
the wall clock, and reports how the run ended (it exits 0 unless the sandbox itself broke)."""
from __future__ import annotations

import os
import signal
import time

from collapse_ray.sandbox.child.init import init_main
from collapse_ray.sandbox.child.linux import (PR_SET_CHILD_SUBREAPER, RUN_NAMESPACES, Libc,
                                              enter_user_namespace)
from collapse_ray.sandbox.child.processes import (descendants, kill_quietly, processes_of_uid,
                                                  reap_all, run_child, say, wait_with_deadline,
                                                  worker_report)
from collapse_ray.sandbox.child.worker import close_fds_except, start_worker
from collapse_ray.sandbox.protocol import (FD_CONTROL, FD_DONE, FD_STATUS, FD_TOKEN, LINE_MODE,
                                           LINE_SUPERVISOR, LINE_WORKER, MODE_NAMESPACES,
                                           MODE_PLAIN, MODE_USER_NAMESPACE, PROGRAM_NAME)

# A run's processes counted by RLIMIT_NPROC besides the worker's own: in a user namespace the
# count is per namespace and includes the supervisor and init.
USER_NAMESPACE_OVERHEAD = 2


def supervisor_main(cfg: dict, fds: list[int], libc: Libc) -> None:
    os.setsid()
    arrange_fds(fds)
    status = os.fdopen(FD_STATUS, "w", buffering=1)
    try:
        with open(os.path.join(cfg["workdir"], PROGRAM_NAME), encoding="utf-8") as f:
            cfg["source"] = f.read()
        cfg["mounted"] = False
        cfg["mode"], why_plain = _isolate(cfg, libc)
        plain = cfg["mode"] == MODE_PLAIN
        # Written before any process of the program exists, so the parent can trust it.
        say(status, LINE_MODE, {"mode": cfg["mode"], "reachable": plain and cfg["uid"] is None})
        if plain and not cfg["allow_unisolated"]:
            report = {"refused": why_plain}
        else:
            cfg["nproc"] = _process_limit(cfg)
            report = (_supervise_plain if plain else _supervise_namespaces)(cfg, libc, status)
        report["mode"] = cfg["mode"]
        report["network_isolated"] = not plain
        say(status, LINE_SUPERVISOR, report)
    except BaseException as exc:  # the sandbox broke: tell the parent
        try:
            say(status, LINE_SUPERVISOR, {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(1)
    os._exit(0)


def _isolate(cfg: dict, libc: Libc) -> tuple[str, str]:
    """Enter the run's namespaces if we can. Returns the mode and, for plain mode, why."""
    if not cfg["namespaces"]:
        return MODE_PLAIN, "namespaces are turned off"
    try:
        if cfg["uid"] is not None:  # root
            libc.unshare(RUN_NAMESPACES)
            return MODE_NAMESPACES, ""
        if enter_user_namespace(libc):
            return MODE_USER_NAMESPACE, ""
        return MODE_PLAIN, "the kernel refused an unprivileged user namespace"
    except OSError as exc:
        return MODE_PLAIN, f"the kernel refused new namespaces ({exc.strerror})"


def _process_limit(cfg: dict) -> int:
    if cfg["uid"] is not None:  # the run's own uid: its processes are exactly the run's
        return cfg["max_processes"]
    if cfg["mode"] == MODE_USER_NAMESPACE and _kernel_at_least(5, 14):
        return cfg["max_processes"] + USER_NAMESPACE_OVERHEAD
    # Plain (or an older kernel), not root: RLIMIT_NPROC counts all of this user's processes,
    # so allow for those.
    return len(processes_of_uid(os.getuid())) + cfg["max_processes"]


def _kernel_at_least(major: int, minor: int) -> bool:
    """Since 5.14 RLIMIT_NPROC counts a uid's processes per user namespace."""
    release = os.uname().release.split("-")[0].split(".")
    try:
        return (int(release[0]), int(release[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def arrange_fds(fds: list[int]) -> None:
    """Put the run's descriptors (stdout, stderr, token, done, status, control) at 1..6, stdin
    on /dev/null, and close everything else inherited from the zygote."""
    high = [os.dup(fd) for fd in fds]  # out of the way of the targets first
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for target, fd in enumerate(high, start=1):
        os.dup2(fd, target)
    close_fds_except(0, 1, 2, FD_TOKEN, FD_DONE, FD_STATUS, FD_CONTROL)


def _supervise_namespaces(cfg: dict, libc: Libc, status) -> dict:
    init_pid = os.fork()
    if init_pid == 0:
        run_child(init_main, cfg, libc, status)
    os.close(FD_TOKEN)
    os.close(FD_DONE)
    timed_out, aborted = wait_with_deadline(init_pid, cfg)
    if timed_out or aborted:
        os.kill(init_pid, signal.SIGKILL)  # pid 1 of the run dies: the kernel kills the rest
    _, init_status = os.waitpid(init_pid, 0)
    return {"timed_out": timed_out, "aborted": aborted, "init_status": init_status}


def _supervise_plain(cfg: dict, libc: Libc, status) -> dict:
    """No namespaces: the supervisor is the worker's parent and a subreaper, so that processes
    that escape the worker's session are re-parented to it and can be found and killed."""
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    if cfg["uid"] is not None:
        os.chown(cfg["workdir"], cfg["uid"], cfg["uid"])
    worker, setup_r = start_worker(cfg, libc)
    timed_out, aborted = wait_with_deadline(worker, cfg)
    if timed_out or aborted:
        kill_quietly(worker)
    _, wstatus, rusage = os.wait4(worker, 0)
    report = worker_report(wstatus, rusage, setup_r)
    _kill_run_processes(cfg)
    say(status, LINE_WORKER, report)
    return {"timed_out": timed_out, "aborted": aborted}


def _kill_run_processes(cfg: dict) -> None:
    """Plain mode: kill every process the run left behind, then reap the ones re-parented here."""
    for _ in range(200):
        if cfg["uid"] is not None:
            # kill(-1) from the run's own uid reaches exactly the run's processes, atomically
            # with respect to fork, however they detached.
            killer = os.fork()
            if killer == 0:
                try:
                    os.setgroups([])
                    os.setgid(cfg["uid"])
                    os.setuid(cfg["uid"])
                    kill_quietly(-1)
                finally:
                    os._exit(0)
            os.waitpid(killer, 0)
        else:
            for pid in descendants(os.getpid()):
                kill_quietly(pid)
        reap_all(block=False)
        if not (processes_of_uid(cfg["uid"]) if cfg["uid"] is not None
                else descendants(os.getpid())):
            return
        time.sleep(0.01)
