"""What the parent prepares for one run: a leased uid (root), a working directory, the pipes,
the scrubbed environment, and the directories the program must (and must not) see."""
from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from collapse_ray.sandbox.result import SandboxError

TMP_PREFIX = "collapse_ray_sandbox_"
# Each run as root gets its own uid from this range (no account needs to exist): RLIMIT_NPROC
# counts the processes of a uid, so a per-run uid makes the process limit per run.
UID_BASE, UID_SPAN = 2_000_000_000, 1 << 24


@contextmanager
def run_uid() -> Iterator[int | None]:
    """A uid no other run on this machine holds (root only; None otherwise). The lease is an
    abstract unix socket: the kernel releases it when we close it or die."""
    if os.geteuid() != 0:
        yield None
        return
    lease = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for _ in range(1000):
            uid = pick_uid()
            try:
                lease.bind(f"\0collapse_ray.sandbox.uid.{uid}")
                break
            except OSError:
                continue
        else:
            raise SandboxError("could not lease a uid for the run")
        yield uid
    finally:
        lease.close()


def pick_uid() -> int:
    return UID_BASE + secrets.randbelow(UID_SPAN)


# A working directory left behind by a parent that died (SIGKILL, OOM) is removed by the next
# process that runs programs, once its owner is gone and it is older than any run could be.
STALE_AFTER_S = 3600


@contextmanager
def workdir() -> Iterator[str]:
    remove_stale_workdirs_once()
    path = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}_")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@functools.cache
def remove_stale_workdirs_once() -> None:
    remove_stale_workdirs(tempfile.gettempdir())


def remove_stale_workdirs(folder: str, older_than_s: float = STALE_AFTER_S) -> None:
    """Remove run directories in ``folder`` whose creating process has exited and that are older
    than ``older_than_s`` (the age guards against a live owner in another pid namespace sharing
    the folder)."""
    now = time.time()
    for name in os.listdir(folder):
        owner = name[len(TMP_PREFIX):].split("_", 1)[0] if name.startswith(TMP_PREFIX) else ""
        path = os.path.join(folder, name)
        try:
            if not owner.isdigit() or _alive(int(owner)) or now - os.stat(path).st_mtime < older_than_s:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        pass
    return True


class Pipes:
    """The parent's pipes to one run: the program's stdout and stderr, the token (to the
    worker), done (from the worker's guard), status (from the supervisor, init and the zygote)
    and control (abort, to the supervisor; EOF if the parent dies)."""

    NAMES = ("stdout", "stderr", "token", "done", "status", "control")
    CHILD_WRITES = ("stdout", "stderr", "done", "status")  # the others the child reads

    def __init__(self):
        self.fds: dict[str, int] = {}
        for name in self.NAMES:
            r, w = os.pipe()
            self.fds[name + "_r"], self.fds[name + "_w"] = r, w

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["fds"][name]
        except KeyError:
            raise AttributeError(name) from None

    def child_ends(self) -> list[int]:
        """In the supervisor's order: stdout, stderr, token, done, status, control."""
        return [self.fds[n + ("_w" if n in self.CHILD_WRITES else "_r")] for n in self.NAMES]

    def close_child_ends(self) -> None:
        for n in self.NAMES:
            self.close(n + ("_w" if n in self.CHILD_WRITES else "_r"))

    def close(self, name: str) -> None:
        fd = self.fds.pop(name, -1)
        if fd >= 0:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name in list(self.fds):
            self.close(name)


@functools.lru_cache(maxsize=None)
def site_packages() -> tuple[str, ...]:
    import site
    return tuple(p for p in site.getsitepackages() if os.path.isdir(p))


def interpreter_paths(run_dir: str) -> list[str]:
    """Directories the worker must be able to reach: the interpreter, its library, its
    site-packages, and the parent of its working directory."""
    return sorted({*interpreter_dirs(), os.path.realpath(os.path.dirname(run_dir))})


@functools.lru_cache(maxsize=None)
def interpreter_dirs() -> frozenset[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), *site_packages()}
    return frozenset(os.path.realpath(p) for p in paths)


@functools.lru_cache(maxsize=None)
def hidden_paths() -> tuple[str, ...]:
    """Not root: what a user namespace hides, because there the program runs as the caller's
    own uid. Its home (keys, tokens, cloud credentials) and /run (its systemd and D-Bus session
    sockets, which can start processes outside the sandbox; docker.sock). Root's per-run uid
    needs none of this: it owns nothing and may enter no private directory."""
    if os.geteuid() == 0:
        return ()
    homes = {os.environ.get("HOME", "")}
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    paths = {os.path.realpath(p) for p in (*homes, "/run", "/var/run") if p}
    return tuple(sorted(p for p in paths if p != "/" and os.path.isdir(p)))


def scrubbed_env(run_dir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": run_dir,
            "TMPDIR": run_dir, "PYTHONDONTWRITEBYTECODE": "1"}
