"""The run's filesystem, set up by init in the run's own mount namespace: everything read-only,
a fresh tmpfs as the working directory's parent (/tmp) and /dev/shm, the interpreter reachable, /proc
hidden; in a user namespace also the caller's home, /run and all but a few devices hidden."""
from __future__ import annotations

import os
import re

from collapse_ray.sandbox.child.linux import (MOUNT_OPTION_FLAGS, MS_BIND, MS_NODEV, MS_NOEXEC,
                                              MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
                                              MS_REMOUNT, Libc)
from collapse_ray.sandbox.protocol import MODE_USER_NAMESPACE

# The devices a program may use when /dev is rebuilt (user namespace: the caller's groups stay,
# so /dev/kvm or a GPU its groups may open would otherwise be reachable).
DEVICES = ("null", "zero", "full", "random", "urandom")


def setup_mounts(cfg: dict, libc: Libc) -> None:
    workdir = cfg["workdir"]
    owner = cfg["uid"] if cfg["uid"] is not None else os.getuid()
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    _mask(cfg, libc)
    # Writable, size-limited, private to the run, gone with it: the working directory's parent
    # (/tmp), so the host's /tmp and other runs' directories are not even visible, with whatever
    # the interpreter needs under it bound back read-only (a venv in a clone under /tmp); and
    # /dev/shm (multiprocessing's semaphores).
    scratch_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    scratch_options = f"size={1024 * max(8, 4 * cfg['max_file_mb'])}k,nr_inodes=16384"
    parent = os.path.dirname(workdir)
    writable = [workdir, "/proc"]
    if parent != "/":
        keep = _outermost({p for p in cfg["expose"] if p != parent and _within(p, parent)})
        _cover(libc, parent, keep, "tmpfs", scratch_flags, scratch_options + ",mode=1777")
        os.mkdir(workdir, 0o700)
        os.chown(workdir, owner, owner)
        writable.append(parent)
    else:
        libc.mount("tmpfs", workdir, "tmpfs", scratch_flags,
                   f"{scratch_options},mode=0700,uid={owner},gid={owner}")
    if cfg["mode"] == MODE_USER_NAMESPACE:
        _rebuild_dev(libc)
    _remount_read_only(libc, writable)
    if os.path.isdir("/dev/shm"):
        libc.mount("tmpfs", "/dev/shm", "tmpfs", scratch_flags, scratch_options + ",mode=1777")
    # No /proc at all: nothing to read of other processes, nor of our own memory.
    libc.mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "size=4k,mode=0555")


def _mask(cfg: dict, libc: Libc) -> None:
    """Hide directories behind an empty tmpfs and bind back only what Python needs under them:
    a directory the worker's uid cannot traverse that holds the interpreter (a pyenv under
    /root), and the directories in cfg["hide"] (a user namespace: the caller's home, /run)."""
    roots = {h for h in cfg["hide"] if h != "/" and os.path.isdir(h)}
    roots |= {u for u in map(first_untraversable, cfg["expose"]) if u is not None}
    for hidden in _outermost(roots):
        keep = _outermost({p for p in cfg["expose"] if _within(p, hidden)})
        _cover(libc, hidden, keep, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")


def _cover(libc: Libc, folder: str, keep: list[str], *mount_args) -> None:
    """Mount an empty tmpfs over `folder` and bind the directories in `keep` (inside it) back."""
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
    libc.mount("tmpfs", folder, *mount_args)
    for path, fd in fds.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        libc.mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _outermost(paths: set[str]) -> list[str]:
    return sorted(p for p in paths if not any(q != p and _within(p, q) for q in paths))


def _rebuild_dev(libc: Libc) -> None:
    fds = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES}
    libc.mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name, fd in fds.items():
        os.close(os.open(f"/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
        libc.mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
        os.close(fd)
    os.mkdir("/dev/shm", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")


def _remount_read_only(libc: Libc, writable: list[str]) -> None:
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target = unescape_mount_path(fields[4])
        if target in writable:
            continue
        # Keep each mount's own flags: in a user namespace they are locked and a remount that
        # would clear one is refused.
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for option in fields[5].split(","):
            flags |= MOUNT_OPTION_FLAGS.get(option, 0)
        try:
            libc.mount(None, target, None, flags)
        except OSError:  # over-mounted (hidden) mount points cannot be reached, nor written
            pass


def unescape_mount_path(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def first_untraversable(path: str) -> str | None:
    """The outermost directory on `path` that others may not enter, if any."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None
