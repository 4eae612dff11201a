"""The few Linux calls the standard library lacks (unshare, mount, prctl, capset), and the
user namespace set-up, through ctypes."""
from __future__ import annotations

import ctypes
import os

# linux/sched.h, linux/mount.h, linux/prctl.h, linux/capability.h
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
RUN_NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 0x20, 0x400, 0x800, 0x1000
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 0x4000, 0x40000, 0x200000, 0x1000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
MOUNT_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                      "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                      "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class Libc:
    def __init__(self):
        self._lib = ctypes.CDLL(None, use_errno=True)
        self._lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                    ctypes.c_ulong, ctypes.c_char_p]
        self._lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                    ctypes.c_ulong, ctypes.c_ulong]
        self._lib.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self._check(self._lib.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None) -> None:
        enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
        self._check(self._lib.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
                    f"mount {target}")

    def prctl(self, option: int, arg: int) -> None:
        self._check(self._lib.prctl(option, arg, 0, 0, 0), f"prctl {option}")

    def drop_capabilities(self) -> None:
        """Empty the effective, permitted and inheritable sets: in a user namespace its creator
        holds every capability over the run's namespaces (it could remount them writable)."""
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        self._check(self._lib.capset(ctypes.byref(header), data), "capset")


def enter_user_namespace(libc: Libc) -> bool:
    """unshare a user namespace together with the run's namespaces, mapping only our own uid
    and gid (all an unprivileged process may map) to themselves; False if the kernel refuses.
    The caller then holds every capability inside it, until it drops them."""
    uid, gid = os.getuid(), os.getgid()
    try:
        libc.unshare(CLONE_NEWUSER | RUN_NAMESPACES)
    except OSError:
        return False
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return True
