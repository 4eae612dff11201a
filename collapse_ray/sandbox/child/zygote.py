"""The zygote: a small long-lived process (one per parent process) that forks a supervisor per
run, so that a run does not pay for an interpreter start. Single-threaded, hence safe to fork
(and to unshare a user namespace from: the supervisor does, right after the fork).

Started by the parent as `python -I -S -B -c BOOTSTRAP <root> <fd>`; see launcher.py."""
from __future__ import annotations

import json
import os
import select
import socket

from collapse_ray.sandbox.child.linux import PR_SET_CHILD_SUBREAPER, Libc
from collapse_ray.sandbox.child.processes import children_of, descendants, kill_quietly, run_child
from collapse_ray.sandbox.child.supervisor import supervisor_main
from collapse_ray.sandbox.protocol import LINE_REAPED

# The run's descriptors in a request, in this order (see launcher.Pipes.child_ends).
STATUS_INDEX = 4


def main(sock_fd: int) -> None:
    """Each request is a JSON config plus the run's six descriptors; the reply is the pid of
    the run's supervisor. When a supervisor has been reaped, a last line on the run's status
    pipe says how it ended, so the parent can tell a supervisor the program killed (possible in
    plain mode, where the program runs as the same user) from a sandbox that broke."""
    sock = socket.socket(fileno=sock_fd)
    libc = Libc()  # loaded once here, inherited by every supervisor
    # Orphans of a supervisor that died before its run did are re-parented here, to be killed.
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN)
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (supervisor pid, its status pipe)
    while True:
        for fd, _ in poller.poll():
            if fd != sock_fd:
                poller.unregister(fd)
                os.close(fd)
                pid, status_fd = children.pop(fd)
                _, wait_status = os.waitpid(pid, 0)
                if not (os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0):
                    _kill_orphans({supervisor for supervisor, _ in children.values()})
                _report_reaped(status_fd, wait_status)
                continue
            try:
                message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
            except ConnectionResetError:  # the parent died with our last reply unread
                message = b""
            if not message:  # the parent is gone: no traceback on its console, which is the user's
                os._exit(0)
            pid = os.fork()
            if pid == 0:
                run_child(supervisor_main, json.loads(message), fds, libc)
            for index, passed in enumerate(fds):
                if index != STATUS_INDEX:
                    os.close(passed)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = (pid, fds[STATUS_INDEX])
            poller.register(pidfd, select.POLLIN)
            try:
                sock.send(str(pid).encode())
            except (BrokenPipeError, ConnectionResetError):
                os._exit(0)  # the parent is gone


def _kill_orphans(supervisors: set[int]) -> None:
    """Kill and reap every child of ours that is not a live supervisor, with its descendants."""
    while True:
        orphans = [pid for pid in children_of(os.getpid()) if pid not in supervisors]
        if not orphans:
            return
        for orphan in orphans:
            for pid in [orphan, *descendants(orphan)]:
                kill_quietly(pid)
        for orphan in orphans:
            try:
                os.waitpid(orphan, 0)
            except ChildProcessError:
                pass


def _report_reaped(status_fd: int, wait_status: int) -> None:
    try:
        os.write(status_fd, f"{LINE_REAPED} {json.dumps({'wait_status': wait_status})}\n".encode())
    except OSError:  # the parent stopped reading
        pass
    os.close(status_fd)
