"""The parent's handle on its zygote (child/zygote.py): started on first use, one per parent
process, restarted if it died (in plain mode a program can kill it)."""
from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import threading

import collapse_ray
from collapse_ray.sandbox.resources import scrubbed_env
from collapse_ray.sandbox.result import SandboxError

# `python -I -S` ignores PYTHONPATH and site-packages: put the directory holding the
# collapse_ray package on sys.path for the child side's imports only (stdlib modules only).
BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
             "from collapse_ray.sandbox.child.zygote import main; del sys.path[0]; "
             "main(int(sys.argv[2]))")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(collapse_ray.__file__)))


class ZygoteGone(SandboxError):
    """The zygote died (or was killed) before it answered."""


class Zygote:
    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, PACKAGE_ROOT,
                 str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                env=scrubbed_env("/"), cwd="/", start_new_session=True)
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.broken = False

    def alive(self) -> bool:
        return not self.broken and self.owner == os.getpid() and self.process.poll() is None

    def spawn(self, cfg: dict, fds: list[int]) -> int:
        """Start a supervisor for `cfg` on the run's descriptors; returns its pid."""
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(cfg).encode()], fds)
                reply = self.sock.recv(32)
            except OSError as exc:
                self.broken = True
                raise ZygoteGone(f"the sandbox's zygote is gone: {exc}") from exc
        if not reply:
            self.broken = True
            raise ZygoteGone("the sandbox's zygote is gone")
        return int(reply)

    def close(self) -> None:
        self.sock.close()  # the zygote exits on EOF
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def zygote() -> Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            if _ZYGOTE is None:
                atexit.register(_close_zygote)
            else:
                _ZYGOTE.sock.close()
            _ZYGOTE = Zygote()
        return _ZYGOTE


def spawn(cfg: dict, fds: list[int]) -> tuple[Zygote, int]:
    """Start a run's supervisor; a zygote that died meanwhile is replaced once."""
    try:
        current = zygote()
        return current, current.spawn(cfg, fds)
    except ZygoteGone:
        current = zygote()
        return current, current.spawn(cfg, fds)


def _close_zygote() -> None:
    if _ZYGOTE is not None and _ZYGOTE.owner == os.getpid():
        _ZYGOTE.close()
