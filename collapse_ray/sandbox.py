"""Run untrusted, model-generated Python programs: one throwaway sandbox per program.

    result = run_program(prompt + completion + "\\n" + test + f"\\ncheck({entry_point})\\n")
    result.passed  # True only if every statement of the program ran, to its end

The processes of a run (docs/sandbox.md has the full design and its limits):

    parent       this module, any thread: leases a uid, makes the working directory and pipes
     ┆ zygote    one per parent process, `python -I -S sandbox.py --sandbox-zygote FD`: forks
     ┆           a supervisor per run, so that no run pays for an interpreter start
     └─ supervisor  root when we are root: enters new mount/pid/net/ipc/uts namespaces,
        │           enforces the wall clock, reports how the run ended
        └─ init     pid 1 of the run: mounts (everything read-only, a fresh tmpfs as the working
           │        directory, /proc hidden), reaps, and when the worker ends kills everything
           │        left in the run (the kernel kills the namespace's processes when it exits)
           └─ worker  rlimits, then the run's own unprivileged uid, then the program

How a pass is proved: the parent hands the worker a random token through a pipe. An audit hook
(installed just before the program runs; the program cannot remove it) holds the token in a
closure and writes it back to the parent only when the harness's own frame reports that `exec`
of the whole program returned normally. `sys.exit`, `os._exit`, signals, exceptions, a killed
harness and bytes written to the pipe all end without the token: "failed". The hook also refuses
the usual ways to dig the token out (gc and frame introspection, tracing, ctypes, /proc).

When namespaces are unavailable (not root, or a kernel or container that refuses `unshare`) the
worker runs in a plain process group under a subreaper: the limits and the per-run uid still
apply and escaped processes are still killed, but the filesystem is only protected by
permissions and the network is not isolated (`network_isolated=False`).

The child side imports only cheap standard modules and comes first; the parent side (dataclass,
thread pool, ...) is defined after the zygote's entry point.
"""
from __future__ import annotations

import _sitebuiltins
import builtins
import ctypes
import gc
import json
import os
import re
import resource
import select
import signal
import socket
import sys
import time
import types

# Exit codes of the worker (the program can produce them too; none of them is ever a pass).
EXIT_EXCEPTION = 1  # the program raised (including SystemExit)
EXIT_MEMORY = 86  # the program raised MemoryError (RLIMIT_AS)
EXIT_DENIED = 87  # the program tried something the guard refuses, or to forge completion
EXIT_SETUP = 88  # the sandbox could not set the worker up (reported as SandboxError)

AUDIT_START = "collapse_ray.sandbox.start"
AUDIT_DONE = "collapse_ray.sandbox.done"
TOKEN_BYTES = 32
PROGRAM_NAME = "program.py"
# The supervisor's descriptors (0: /dev/null, 1 and 2: the run's stdout and stderr pipes).
FD_TOKEN, FD_DONE, FD_STATUS, FD_CONTROL = 3, 4, 5, 6

# Audit events that could reveal the token held by the guard or let the program skip statements.
_BLOCKED_EVENTS = frozenset({
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",  # find the guard's closure
    "sys._current_frames", "sys._current_exceptions",  # another thread's frames
    "sys.monitoring.register_callback",  # (3.12+) like sys.settrace, below
    # (sys.setprofile is allowed: a profile function cannot jump, and hooks are never profiled)
    "cpython.PyInterpreterState_New",  # a subinterpreter has no guard but shares our memory
})

# Linux constants (linux/sched.h, linux/mount.h, linux/prctl.h).
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 0x20, 0x400, 0x800, 0x1000
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 0x4000, 0x40000, 0x200000, 0x1000000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
_MOUNT_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                       "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                       "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}


# ----------------------------------------------------------------------------------------------
# Child side: zygote, supervisor, init and worker, in `python -I -S sandbox.py --sandbox-zygote`.
# ----------------------------------------------------------------------------------------------

class _Libc:
    def __init__(self):
        self._lib = ctypes.CDLL(None, use_errno=True)
        self._lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                    ctypes.c_ulong, ctypes.c_char_p]
        self._lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                    ctypes.c_ulong, ctypes.c_ulong]

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


def _zygote_main(sock_fd: int) -> None:
    """A small long-lived process (one per parent process) that forks a supervisor per run, so
    that a run does not pay for an interpreter start. Single-threaded, hence safe to fork.
    Each request is a JSON config plus the run's seven descriptors; the reply is the pid."""
    sock = socket.socket(fileno=sock_fd)
    libc = _Libc()  # loaded once here, inherited by every supervisor
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN)
    children: dict[int, int] = {}  # pidfd -> supervisor pid, reaped as soon as they exit
    while True:
        for fd, _ in poller.poll():
            if fd != sock_fd:
                poller.unregister(fd)
                os.waitpid(children.pop(fd), 0)
                os.close(fd)
                continue
            message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 8)
            if not message:  # the parent is gone
                os._exit(0)
            pid = os.fork()
            if pid == 0:
                _run_child(_supervisor_main, json.loads(message), fds, libc)
            for passed in fds:
                os.close(passed)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = pid
            poller.register(pidfd, select.POLLIN)
            sock.send(str(pid).encode())


def _fork_worker(cfg: dict, libc: _Libc) -> tuple[int, int]:
    """Start the worker; the token and completion pipes then belong to it alone. Returns its pid
    and the pipe on which it reports that its set-up succeeded."""
    setup_r, setup_w = os.pipe()
    worker = os.fork()
    if worker == 0:
        os.close(setup_r)
        _run_child(_worker_main, cfg, libc, setup_w)
    os.close(setup_w)
    os.close(FD_TOKEN)
    os.close(FD_DONE)
    return worker, setup_r


def _supervisor_main(cfg: dict, fds: list[int], libc: _Libc) -> None:
    """The supervisor of one run; exits 0 unless the sandbox itself broke."""
    os.setsid()
    _arrange_fds(fds)
    status = os.fdopen(FD_STATUS, "w", buffering=1)
    try:
        with open(os.path.join(cfg["workdir"], PROGRAM_NAME), encoding="utf-8") as f:
            cfg["source"] = f.read()
        cfg["mounted"] = False
        namespaces = False
        if cfg["namespaces"]:
            try:
                libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
                             | CLONE_NEWUTS)
                namespaces = True
            except OSError:
                pass
        if namespaces:
            report = _supervise_namespaces(cfg, libc, status)
        else:
            report = _supervise_plain(cfg, libc, status)
        report["mode"] = "namespaces" if namespaces else "plain"
        report["network_isolated"] = namespaces
        status.write("B " + json.dumps(report) + "\n")
        status.flush()
    except BaseException as exc:  # the sandbox broke: tell the parent
        try:
            status.write("B " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
            status.flush()
        finally:
            os._exit(1)
    os._exit(0)


def _arrange_fds(fds: list[int]) -> None:
    """Put the run's descriptors (stdout, stderr, token, done, status, control) at 1..6, stdin
    on /dev/null, and close everything else inherited from the zygote."""
    high = [os.dup(fd) for fd in fds]  # out of the way of the targets first
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for target, fd in enumerate(high, start=1):
        os.dup2(fd, target)
    _close_fds_except(0, 1, 2, FD_TOKEN, FD_DONE, FD_STATUS, FD_CONTROL)


def _wait_with_deadline(pid: int, cfg: dict) -> tuple[bool, bool]:
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


def _supervise_namespaces(cfg: dict, libc: _Libc, status) -> dict:
    init_pid = os.fork()
    if init_pid == 0:
        _run_child(_init_main, cfg, libc, status)
    os.close(FD_TOKEN)
    os.close(FD_DONE)
    timed_out, aborted = _wait_with_deadline(init_pid, cfg)
    if timed_out or aborted:
        os.kill(init_pid, signal.SIGKILL)  # pid 1 of the run dies: the kernel kills the rest
    _, init_status = os.waitpid(init_pid, 0)
    return {"timed_out": timed_out, "aborted": aborted, "init_status": init_status}


def _supervise_plain(cfg: dict, libc: _Libc, status) -> dict:
    """No namespaces: the supervisor is the worker's parent and a subreaper, so that processes
    that escape the worker's session are re-parented to it and can be found and killed."""
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    if cfg["uid"] is not None:
        os.chown(cfg["workdir"], cfg["uid"], cfg["uid"])
    worker, setup_r = _fork_worker(cfg, libc)
    timed_out, aborted = _wait_with_deadline(worker, cfg)
    if timed_out or aborted:
        _kill_quietly(worker)
    _, wstatus, rusage = os.wait4(worker, 0)
    report = _worker_report(wstatus, rusage, setup_r)
    _kill_run_processes(cfg, libc)
    status.write("W " + json.dumps(report) + "\n")
    return {"timed_out": timed_out, "aborted": aborted}


def _run_child(func, *args) -> None:
    """Run a forked child's body; never unwind into the supervisor's frames."""
    try:
        func(*args)
    except BaseException as exc:
        try:
            os.write(2, f"collapse_ray.sandbox: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(EXIT_SETUP)
    os._exit(EXIT_SETUP)


def _kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_run_processes(cfg: dict, libc: _Libc) -> None:
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
                    _kill_quietly(-1)
                finally:
                    os._exit(0)
            os.waitpid(killer, 0)
        else:
            for pid in _descendants(os.getpid()):
                _kill_quietly(pid)
        _reap_all(block=False)
        if not (_processes_of_uid(cfg["uid"]) if cfg["uid"] is not None
                else _descendants(os.getpid())):
            return
        time.sleep(0.01)


def _proc_stat_fields():
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    yield int(name), f.read()
            except OSError:
                continue


def _processes_of_uid(uid: int) -> list[int]:
    found = []
    for pid, text in _proc_stat_fields():
        for line in text.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(pid)
    return found


def _descendants(root: int) -> list[int]:
    parent_of = {}
    for pid, text in _proc_stat_fields():
        for line in text.splitlines():
            if line.startswith("PPid:"):
                parent_of[pid] = int(line.split()[1])
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier}
        found.extend(frontier)
    return found


def _reap_all(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _worker_report(wstatus: int, rusage, setup_r: int) -> dict:
    setup_ok = os.read(setup_r, 16) == b"ok"
    os.close(setup_r)
    return {
        "setup_ok": setup_ok,
        "exit_code": os.waitstatus_to_exitcode(wstatus),
        "cpu_s": rusage.ru_utime + rusage.ru_stime,
    }


def _init_main(cfg: dict, libc: _Libc, status) -> None:
    """pid 1 of the run's pid namespace."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _setup_mounts(cfg, libc)
    cfg["mounted"] = True
    worker, setup_r = _fork_worker(cfg, libc)
    while True:  # as pid 1 we also reap every orphan of the run, so zombies never pile up
        pid, wstatus, rusage = os.wait4(-1, 0)
        if pid == worker:
            break
    report = _worker_report(wstatus, rusage, setup_r)
    _kill_quietly(-1)  # from pid 1: every other process of this namespace
    _reap_all(block=True)
    status.write("W " + json.dumps(report) + "\n")
    status.flush()
    os._exit(0)


def _setup_mounts(cfg: dict, libc: _Libc) -> None:
    """In the run's own mount namespace: make everything read-only, give the worker a fresh
    tmpfs as its working directory, keep the interpreter reachable, hide /proc."""
    workdir = cfg["workdir"]
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    # The interpreter may live under a directory the worker's uid cannot traverse (a pyenv under
    # /root): mask that directory with an empty tmpfs and bind back only what Python needs.
    masks: dict[str, set[str]] = {}
    for path in cfg["expose"]:
        hidden = _first_untraversable(path)
        if hidden is not None:
            masks.setdefault(hidden, set()).add(path)
    for hidden, paths in masks.items():
        keep = [p for p in paths if not any(q != p and p.startswith(q + "/") for q in paths)]
        fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
        libc.mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        for path, fd in fds.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            libc.mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
    # Writable, size-limited, private to the run, gone with it: the working directory, and when
    # no interpreter file lives there, its parent (/tmp) too, so the host's /tmp is not even
    # visible; and /dev/shm (multiprocessing's semaphores).
    scratch_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    scratch_options = f"size={1024 * max(8, 4 * cfg['max_file_mb'])}k,nr_inodes=16384"
    parent = os.path.dirname(workdir)
    private_parent = parent != "/" and not any(
        p == parent or p.startswith(parent + "/") for p in cfg["expose"] if p != parent)
    writable = [workdir, "/proc"]
    if private_parent:
        libc.mount("tmpfs", parent, "tmpfs", scratch_flags, scratch_options + ",mode=1777")
        os.mkdir(workdir, 0o700)
        os.chown(workdir, cfg["uid"], cfg["uid"])
        writable.append(parent)
    else:
        libc.mount("tmpfs", workdir, "tmpfs", scratch_flags,
                   f"{scratch_options},mode=0700,uid={cfg['uid']},gid={cfg['uid']}")
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target = _unescape_mount_path(fields[4])
        if target in writable:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for option in fields[5].split(","):
            flags |= _MOUNT_OPTION_FLAGS.get(option, 0)
        try:
            libc.mount(None, target, None, flags)
        except OSError:  # over-mounted (hidden) mount points cannot be reached, nor written
            pass
    if os.path.isdir("/dev/shm"):
        libc.mount("tmpfs", "/dev/shm", "tmpfs", scratch_flags, scratch_options + ",mode=1777")
    # No /proc at all: nothing to read of other processes, nor of our own memory.
    libc.mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "size=4k,mode=0555")


def _unescape_mount_path(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _first_untraversable(path: str) -> str | None:
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


def _worker_main(cfg: dict, libc: _Libc, setup_w: int) -> None:
    """Set the worker up (as root, when we are), drop to the run's uid, run the program."""
    os.chdir(cfg["workdir"])  # after the tmpfs is mounted on it (namespaces)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update(cfg["env"])
    os.setpgid(0, 0)
    _close_fds_except(0, 1, 2, FD_TOKEN, FD_DONE, setup_w)
    limits = {
        resource.RLIMIT_CPU: (cfg["cpu_s"], cfg["cpu_s"] + 1),
        resource.RLIMIT_AS: (cfg["memory_mb"] << 20,) * 2,
        resource.RLIMIT_FSIZE: (cfg["max_file_mb"] << 20,) * 2,
        resource.RLIMIT_NPROC: (cfg["nproc"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NOFILE: (256, 256),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid binary can give privileges back
    if cfg["uid"] is not None and not cfg["mounted"]:
        cfg["site_packages"] = _reroute_unreachable(cfg["expose"], cfg["site_packages"])
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
        if os.getuid() != cfg["uid"] or os.geteuid() != cfg["uid"]:
            raise RuntimeError("could not drop privileges")
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no Python-level handler can fire in the guard
    os.write(setup_w, b"ok")
    os.close(setup_w)
    _run_user_program(cfg["source"], FD_TOKEN, FD_DONE, cfg["workdir"],
                      cfg["site_packages"])


def _reroute_unreachable(expose: list[str], site_packages: list[str]) -> list[str]:
    """Plain mode, as root: the interpreter may live under a directory the run's uid cannot
    traverse (a pyenv under /root), and without a mount namespace it cannot be bind-mounted.
    Open each such directory now and reach it through /proc/self/fd/N, which checks only the
    directory itself, not its ancestors. Returns `site_packages` rerouted."""
    routes = sorted(((p, f"/proc/self/fd/{os.open(p, os.O_PATH | os.O_DIRECTORY)}")
                     for p in expose if _first_untraversable(p) is not None),
                    key=lambda route: -len(route[0]))

    def reroute(path: str) -> str:
        for original, via_fd in routes:
            if path == original or path.startswith(original + "/"):
                return via_fd + path[len(original):]
        return path

    if routes:
        sys.path[:] = [reroute(p) for p in sys.path]
        for module in list(sys.modules.values()):
            search = getattr(module, "__path__", None)
            if isinstance(search, list):
                search[:] = [reroute(p) for p in search]
        sys.path_importer_cache.clear()
    return [reroute(p) for p in site_packages]


def _close_fds_except(*keep: int) -> None:
    # Never pass an empty range: CPython 3.11's closerange(n, n) closes every fd from n up.
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    high = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if high > low:
        os.closerange(low, high)


def _run_user_program(source: str, token_fd: int, done_fd: int, workdir: str,
                      site_packages: list[str]) -> None:
    exit_ = os._exit
    display = sys.__excepthook__
    stdout, stderr = sys.stdout, sys.stderr
    code = EXIT_EXCEPTION
    filename = os.path.join(workdir, PROGRAM_NAME)
    try:
        # What `site` would have added (the child runs with -S to start faster).
        builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
        builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
        try:  # only so that tracebacks can show source lines
            with open(filename, "w", encoding="utf-8") as f:
                f.write(source)
        except OSError:
            pass
        program = compile(source, filename, "exec", dont_inherit=True)
        module = types.ModuleType("__main__")
        module.__file__ = filename
        sys.modules["__main__"] = module
        sys.argv = [filename]
        sys.path.extend(site_packages)
        _install_guard(token_fd, done_fd)
        _run(program, module.__dict__, sys.audit)
        code = 0
    except BaseException as exc:
        code = EXIT_MEMORY if isinstance(exc, MemoryError) else EXIT_EXCEPTION
        try:  # the traceback from the program's own frames on, without the harness's
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != filename:
                tb = tb.tb_next
            exc.__traceback__ = tb
            display(type(exc), exc, tb)
        except BaseException:
            pass
    for stream in (stdout, stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    exit_(code)


def _run(program, namespace, audit, start=AUDIT_START, done=AUDIT_DONE):
    """The harness frame: the guard only accepts `done` from this frame, after `exec` returned."""
    audit(start)
    exec(program, namespace)
    audit(done)


def _install_guard(token_fd: int, done_fd: int) -> None:
    """Install the audit hook that holds the completion token. Python offers no way to remove
    an audit hook, and this one refuses any later hook, so the program cannot take it out.

    Everything the hook uses is a local or a closure cell bound here (never a global or a
    builtin looked up at call time, which the program could replace), and it never raises
    (except the RuntimeError that CPython swallows to refuse a new hook), so no traceback can
    expose its frame."""
    token = b""
    while len(token) < TOKEN_BYTES:
        chunk = os.read(token_fd, TOKEN_BYTES)
        if not chunk:
            break
        token += chunk
    os.close(token_fd)
    write, exit_, getframe, getpid = os.write, os._exit, sys._getframe, os.getpid
    stat, getuid = os.stat, os.getuid
    gc_isenabled, gc_disable, gc_enable = gc.isenabled, gc.disable, gc.enable
    blocked, denied = _BLOCKED_EVENTS, EXIT_DENIED
    start_event, done_event = AUDIT_START, AUDIT_DONE
    base_exception, runtime_error, str_type, bytes_type, type_, len_ = (
        BaseException, RuntimeError, str, bytes, type, len)
    state = [None, 0]  # the harness frame that sent `start`, and the worker's pid

    # A trace function can jump over an `assert` (by setting `frame.f_lineno`), so the program
    # may only clear tracing (doctest and others call `sys.settrace(None)` to restore it).
    clear_trace = sys.settrace

    def settrace(function):
        if function is not None:
            write(2, b"\ncollapse_ray.sandbox: refused sys.settrace\n")
            exit_(denied)
        clear_trace(None)

    sys.settrace = settrace
    settrace_code = settrace.__code__

    def own_library(name) -> bool:
        """A library the program could have written itself (native code reads memory)."""
        if name is None:
            return False
        if type_(name) is str_type:
            slash = "/"
        elif type_(name) is bytes_type:
            slash = b"/"
        else:
            return True
        if slash not in name:
            return False  # looked up in the system's library directories only
        try:
            return stat(name).st_uid == getuid()
        except base_exception:
            return False  # dlopen will fail too

    def guard(event, args):
        if event == "sys.addaudithook":
            raise runtime_error("collapse_ray.sandbox: audit hooks are reserved")
        try:
            if event == "sys.settrace" and getframe(1).f_code is not settrace_code:
                write(2, b"\ncollapse_ray.sandbox: refused sys.settrace\n")
                exit_(denied)
            if (event in blocked
                    or (event.startswith("ctypes.")
                        and (event != "ctypes.dlopen" or own_library(args[0])))
                    or (event == "object.__setattr__" and len_(args) > 1
                        and type_(args[1]) is str_type and args[1] == "__code__")):
                write(2, b"\ncollapse_ray.sandbox: refused " + event.encode() + b"\n")
                exit_(denied)
            if event == start_event or event == done_event:
                was_enabled = gc_isenabled()
                gc_disable()  # no finalizer of the program may run while this frame is live
                caller = getframe(1)
                if event == start_event:
                    if state[0] is not None:
                        exit_(denied)
                    state[0], state[1] = caller, getpid()
                else:
                    if caller is not state[0] or state[1] == 0 or getpid() != state[1]:
                        exit_(denied)
                    state[1] = 0
                    write(done_fd, token)
                if was_enabled:
                    gc_enable()
        except base_exception:
            exit_(denied)

    sys.addaudithook(guard)


if __name__ == "__main__" and sys.argv[1:2] == ["--sandbox-zygote"]:
    _zygote_main(int(sys.argv[2]))


# ----------------------------------------------------------------------------------------------
# Parent side: the API.
# ----------------------------------------------------------------------------------------------

import atexit  # noqa: E402
import functools  # noqa: E402
import secrets  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Iterator, Sequence  # noqa: E402

STATUSES = ("passed", "failed", "timeout", "crashed", "memory")
TMP_PREFIX = "collapse_ray_sandbox_"
# Each run as root gets its own uid from this range (no account needs to exist): RLIMIT_NPROC
# counts the processes of a uid, so a per-run uid makes the process limit per run.
UID_BASE, UID_SPAN = 2_000_000_000, 1 << 24
STDERR_TAIL_BYTES = 2048
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
                  signal.SIGSYS}
# Tests set this to exercise the plain (no namespace) mode on a machine that has namespaces.
_USE_NAMESPACES = True


from collapse_ray.errors import SandboxError  # noqa: E402,F401 - the parent side's error, importable here


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "crashed" | "memory"
    returncode: int | None  # the program's exit code, -N if killed by signal N, None if unknown
    stderr_tail: str  # last ~2 KB of stderr, then any note from the sandbox
    wall_s: float
    network_isolated: bool  # False: the program could reach the network (no namespaces here)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(source: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                max_processes: int = 64, max_file_mb: int = 16,
                max_output_kb: int = 256) -> SandboxResult:
    """Run one whole Python program in a fresh sandbox and say how it ended."""
    _check_limits(timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes,
                  max_file_mb=max_file_mb, max_output_kb=max_output_kb)
    started = time.monotonic()
    with _run_uid() as uid, _workdir() as workdir, _Pipes() as pipes:
        with open(os.path.join(workdir, PROGRAM_NAME), "w", encoding="utf-8") as f:
            f.write(source)
        token = secrets.token_hex(TOKEN_BYTES // 2).encode()
        os.write(pipes.token_w, token)
        pipes.close("token_w")
        cfg = {
            "workdir": workdir, "uid": uid, "timeout_s": timeout_s,
            "cpu_s": max(1, int(timeout_s + 0.999)), "memory_mb": memory_mb,
            "nproc": _nproc_limit(uid, max_processes), "max_file_mb": max_file_mb,
            "namespaces": _USE_NAMESPACES and uid is not None,
            "expose": _interpreter_paths(workdir),
            "site_packages": _site_packages(), "env": _scrubbed_env(workdir),
        }
        supervisor = _zygote().spawn(cfg, pipes.child_ends())
        pipes.close_child_ends()
        outcome = _collect(supervisor, pipes, timeout_s, max_output_kb << 10)
    return _result(outcome, token, time.monotonic() - started, cfg["cpu_s"])


def run_many(sources: Sequence[str], *, max_workers: int | None = None,
             **limits) -> list[SandboxResult]:
    """`run_program` for each source, in order, at most `max_workers` at a time (default: the
    CPUs this process may use)."""
    _check_limits(**limits)
    sources = list(sources)
    workers = max(1, min(max_workers or _available_cpus(), len(sources) or 1))
    if workers == 1:
        return [run_program(s, **limits) for s in sources]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda s: run_program(s, **limits), sources))


def _check_limits(*, timeout_s: float = 10.0, memory_mb: int = 1024, max_processes: int = 64,
                  max_file_mb: int = 16, max_output_kb: int = 256) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be >= 64 (the interpreter needs some), got {memory_mb}")
    for name, value in (("max_processes", max_processes), ("max_file_mb", max_file_mb),
                        ("max_output_kb", max_output_kb)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _Pipes:
    """The parent's pipes to one run: the program's stdout and stderr, the token (to the
    worker), done (from the worker's guard), status (from the supervisor and init) and control
    (abort, to the supervisor; EOF if the parent dies)."""

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


class _Zygote:
    """The parent's handle on its zygote process (see `_zygote_main`)."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__),
                 "--sandbox-zygote", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                env=_scrubbed_env("/"), cwd="/", start_new_session=True)
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def spawn(self, cfg: dict, fds: list[int]) -> int:
        """Start a supervisor for `cfg` on the run's descriptors; returns its pid."""
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(cfg).encode()], fds)
                reply = self.sock.recv(32)
            except OSError as exc:
                raise SandboxError(f"the sandbox's zygote is gone: {exc}") from exc
        if not reply:
            raise SandboxError("the sandbox's zygote is gone")
        return int(reply)

    def close(self) -> None:
        self.sock.close()  # the zygote exits on EOF
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_ZYGOTE: _Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> _Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or not _ZYGOTE.alive():
            if _ZYGOTE is None:
                atexit.register(_close_zygote)
                if os.geteuid() != 0:
                    warnings.warn(
                        "collapse_ray.sandbox is not running as root: programs run as this "
                        "user, without namespaces (see docs/sandbox.md)", RuntimeWarning,
                        stacklevel=3)
            _ZYGOTE = _Zygote()
        return _ZYGOTE


def _close_zygote() -> None:
    if _ZYGOTE is not None and _ZYGOTE.owner == os.getpid():
        _ZYGOTE.close()


@dataclass
class _Outcome:
    done: bytes = b""
    status: str = ""
    stderr_tail: bytes = b""
    output_bytes: int = 0
    output_exceeded: bool = False
    killed_by_parent: bool = False


def _collect(supervisor: int, pipes: _Pipes, timeout_s: float, max_output: int) -> _Outcome:
    """Drain the run's pipes until every writer is gone (the supervisor writes its report last,
    after everything else of the run has died). The supervisor enforces the deadline; the parent
    only aborts on too much output, or kills the supervisor's group if it hangs."""
    out = _Outcome()
    status = bytearray()
    selector = selectors.DefaultSelector()
    for name in ("stdout", "stderr", "done", "status"):
        selector.register(pipes.fds[name + "_r"], selectors.EVENT_READ, name)
    backstop = time.monotonic() + timeout_s + 30
    open_streams = 4
    while open_streams:
        left = backstop - time.monotonic()
        if left <= 0 and not out.killed_by_parent:
            out.killed_by_parent = True
            _kill_quietly(-supervisor)  # supervisor and init: the namespace goes with init
            backstop = time.monotonic() + 5
            continue
        if left <= 0:
            break
        for key, _ in selector.select(timeout=left):
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fd)
                open_streams -= 1
            elif key.data in ("stdout", "stderr"):
                out.output_bytes += len(data)
                if key.data == "stderr":
                    out.stderr_tail = (out.stderr_tail + data)[-STDERR_TAIL_BYTES:]
                if out.output_bytes > max_output and not out.output_exceeded:
                    out.output_exceeded = True
                    try:
                        os.write(pipes.control_w, b"k")
                    except OSError:
                        pass
            elif key.data == "done":
                out.done = (out.done + data)[:4 * TOKEN_BYTES]
            else:
                status += data
    selector.close()
    out.status = status.decode("utf-8", "replace")
    return out


def _result(out: _Outcome, token: bytes, wall_s: float, cpu_limit_s: int) -> SandboxResult:
    lines = {line[:1]: line[2:] for line in out.status.splitlines() if line[1:2] == " "}
    try:
        supervisor = json.loads(lines.get("B", "null")) or {}
        worker = json.loads(lines.get("W", "null"))
    except json.JSONDecodeError:
        supervisor, worker = {}, None
    stderr = out.stderr_tail.decode("utf-8", "replace")
    if "error" in supervisor or not supervisor:
        raise SandboxError(f"the sandbox failed ({supervisor.get('error', 'no report')}): "
                           f"{stderr[-500:]}")
    if worker is not None and not worker["setup_ok"]:
        raise SandboxError(f"the sandbox could not set up the worker: {stderr[-500:]}")
    returncode = None if worker is None else worker["exit_code"]
    notes = []
    if out.output_exceeded:
        status = "failed"
        notes.append(f"output limit exceeded ({out.output_bytes} bytes): the run was stopped")
    elif supervisor["timed_out"] or out.killed_by_parent:
        status = "timeout"
        notes.append("wall-clock time limit exceeded")
    elif worker is None:
        raise SandboxError(f"the run ended without a report from its worker: {stderr[-500:]}")
    elif out.done == token and returncode == 0:
        status = "passed"
    elif returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and
                                           worker["cpu_s"] >= cpu_limit_s):
        status = "timeout"
        notes.append("CPU time limit exceeded")
    elif returncode == EXIT_MEMORY:
        status = "memory"
    elif returncode is not None and returncode < 0 and -returncode in _CRASH_SIGNALS:
        status = "crashed"
        notes.append(f"killed by {signal.Signals(-returncode).name}")
    else:
        status = "failed"
        if returncode == 0:
            notes.append("exited before the end of the program")
        elif returncode == EXIT_DENIED:
            notes.append("refused operation, or an attempt to fake completion")
    if notes:
        stderr = (stderr + "\n[sandbox] " + "; ".join(notes)).lstrip("\n")
    return SandboxResult(status=status, returncode=returncode, stderr_tail=stderr,
                         wall_s=wall_s, network_isolated=bool(supervisor["network_isolated"]))


@contextmanager
def _run_uid() -> Iterator[int | None]:
    """A uid no other run on this machine holds (root only; None otherwise). The lease is an
    abstract unix socket: the kernel releases it when we close it or die."""
    if os.geteuid() != 0:
        yield None
        return
    lease = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for _ in range(1000):
            uid = _pick_uid()
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


def _pick_uid() -> int:
    return UID_BASE + secrets.randbelow(UID_SPAN)


def _nproc_limit(uid: int | None, max_processes: int) -> int:
    if uid is not None:
        return max_processes
    # Not root: RLIMIT_NPROC counts all of this user's processes, so allow for those.
    own = sum(1 for name in os.listdir("/proc") if name.isdigit() and _owned(name))
    return own + max_processes


def _owned(pid: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


@contextmanager
def _workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=TMP_PREFIX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _site_packages() -> tuple[str, ...]:
    import site
    return tuple(p for p in site.getsitepackages() if os.path.isdir(p))


def _interpreter_paths(workdir: str) -> list[str]:
    """Directories the worker must be able to reach: the interpreter, its library, its
    site-packages, and the parent of its working directory."""
    return sorted({*_interpreter_dirs(), os.path.realpath(os.path.dirname(workdir))})


@functools.lru_cache(maxsize=None)
def _interpreter_dirs() -> frozenset[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)), *_site_packages()}
    return frozenset(os.path.realpath(p) for p in paths)


def _scrubbed_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir,
            "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1"}
