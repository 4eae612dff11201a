"""The worker: the process of a run that becomes the program. It sets its limits, gives up
every privilege, installs the guard and runs the program under the harness."""
from __future__ import annotations

import _sitebuiltins
import builtins
import os
import resource
import signal
import sys
import types

from collapse_ray.sandbox.child.guard import install_guard, run_harness
from collapse_ray.sandbox.child.linux import (PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, Libc)
from collapse_ray.sandbox.child.mounts import first_untraversable
from collapse_ray.sandbox.child.processes import run_child
from collapse_ray.sandbox.protocol import (EXIT_EXCEPTION, EXIT_MEMORY, FD_DONE, FD_TOKEN,
                                           MODE_USER_NAMESPACE, PROGRAM_NAME)


def worker_main(cfg: dict, libc: Libc, setup_w: int) -> None:
    """Set the worker up (as root, when we are), drop to the run's uid, run the program."""
    os.chdir(cfg["workdir"])  # after the tmpfs is mounted on it (namespaces)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update(cfg["env"])
    os.setpgid(0, 0)
    close_fds_except(0, 1, 2, FD_TOKEN, FD_DONE, setup_w)
    limits = {
        resource.RLIMIT_CPU: (cfg["cpu_s"], cfg["cpu_s"] + 1),
        resource.RLIMIT_AS: (cfg["memory_mb"] << 20,) * 2,
        resource.RLIMIT_FSIZE: (cfg["max_file_mb"] << 20,) * 2,
        resource.RLIMIT_NPROC: (cfg["nproc"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NOFILE: (256, 256),
    }
    for which, (soft, hard) in limits.items():
        ceiling = resource.getrlimit(which)[1]  # not root: a limit can only be lowered
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid binary can give privileges back
    if cfg["uid"] is not None and not cfg["mounted"]:
        cfg["site_packages"] = _reroute_unreachable(cfg["expose"], cfg["site_packages"])
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
        if os.getuid() != cfg["uid"] or os.geteuid() != cfg["uid"]:
            raise RuntimeError("could not drop privileges")
    else:
        if cfg["mode"] == MODE_USER_NAMESPACE:
            libc.drop_capabilities()  # else it could remount the run's filesystem writable
        # No uid change made us non-dumpable: do it, so that no other process of the run may
        # ptrace the worker or read its memory (and the token).
        libc.prctl(PR_SET_DUMPABLE, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no Python-level handler can fire in the guard
    os.write(setup_w, b"ok")
    os.close(setup_w)
    run_user_program(cfg["source"], FD_TOKEN, FD_DONE, cfg["workdir"], cfg["site_packages"])


def _reroute_unreachable(expose: list[str], site_packages: list[str]) -> list[str]:
    """Plain mode, as root: the interpreter may live under a directory the run's uid cannot
    traverse (a pyenv under /root), and without a mount namespace it cannot be bind-mounted.
    Open each such directory now and reach it through /proc/self/fd/N, which checks only the
    directory itself, not its ancestors. Returns `site_packages` rerouted."""
    routes = sorted(((p, f"/proc/self/fd/{os.open(p, os.O_PATH | os.O_DIRECTORY)}")
                     for p in expose if first_untraversable(p) is not None),
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


def close_fds_except(*keep: int) -> None:
    # Never pass an empty range: CPython 3.11's closerange(n, n) closes every fd from n up.
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    high = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if high > low:
        os.closerange(low, high)


def run_user_program(source: str, token_fd: int, done_fd: int, workdir: str,
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
        install_guard(token_fd, done_fd)
        run_harness(program, module.__dict__, sys.audit)
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




def start_worker(cfg: dict, libc: Libc) -> tuple[int, int]:
    """Fork the worker; the token and completion pipes then belong to it alone. Returns its pid
    and the pipe on which it reports that its set-up succeeded."""
    setup_r, setup_w = os.pipe()
    worker = os.fork()
    if worker == 0:
        os.close(setup_r)
        run_child(worker_main, cfg, libc, setup_w)
    os.close(setup_w)
    os.close(FD_TOKEN)
    os.close(FD_DONE)
    return worker, setup_r
