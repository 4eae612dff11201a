"""One launch at a time per trial directory or grid state: a lock file held for the launch's life.

The lock is an ``flock`` on ``<dir>/.launch.lock``. The kernel drops it when its holder exits,
however it exits (SIGKILL included), so a killed launch never blocks the next one and there is
no stale-lock cleanup to get wrong. The file's text (pid, host, start time) only feeds the message.
On NFS, Linux maps ``flock`` onto the server's byte-range locks, so launches on other hosts see it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from collapse_ray.errors import ConfigError

LOCK_NAME = ".launch.lock"


class LaunchLocked(ConfigError):
    """Another live launch holds the same trial directory or grid state."""


@contextmanager
def launch_lock(directory: str | os.PathLike, where: str = "output_dir") -> Iterator[Path]:
    """Hold ``directory``'s launch lock for the ``with`` block; refuse at once if another holds it.

    ``where`` names the config field the directory comes from, for the message."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchLocked(
                f"{where}: {directory} is in use by another launch ({_holder(fd)}); wait for it to "
                f"finish or stop it, or choose another {where} or name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)   # the file stays (unlinking races a launch that just opened it)
    finally:
        os.close(fd)   # releases the flock


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "it has not written its pid yet"
