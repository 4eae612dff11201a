"""The hostile corpus the sandbox must contain (tests/sandbox/test_sandbox_hostile.py): each
program tries, reports on stderr whatever succeeded ("ESCAPE ..."), and ends normally: the
host-side checks decide; the notes say what got through. Fields come from ``Host.fields``."""

CORPUS = {
    "delete files outside": """
        import os, shutil
        for path in {canaries!r}:
            for attempt in (lambda: os.remove(path), lambda: os.rename(path, path + ".moved"),
                            lambda: os.unlink(path), lambda: shutil.rmtree(os.path.dirname(path))):
                try:
                    attempt()
                    print("ESCAPE deleted", path, file=sys.stderr)
                except OSError:
                    pass
    """,
    "write outside": """
        import os
        for path in {canaries!r} + {owned!r}:
            try:
                open(path, "a").write("overwritten")
                print("ESCAPE wrote", path, file=sys.stderr)
            except OSError:
                pass
            try:
                os.chmod(path, 0o777)
                print("ESCAPE chmod", path, file=sys.stderr)
            except OSError:
                pass
        for folder in {folders!r} + ["/var/tmp", {repo!r}]:
            try:
                open(os.path.join(folder, "new-" + {marker!r}), "w").write("x")
                print("ESCAPE created a file in", folder, file=sys.stderr)
            except OSError:
                pass
    """,
    "connect to loopback and host sockets": """
        import socket
        for family, address in ((socket.AF_INET, ("127.0.0.1", {port})),
                                (socket.AF_UNIX, {abstract!r}.encode())):
            try:
                s = socket.socket(family, socket.SOCK_STREAM)
                s.settimeout(2)
                s.connect(address)
                print("ESCAPE connected to", address, file=sys.stderr)
            except OSError:
                pass
    """,
    "kill the supervisor, init and everyone": """
        import os, signal
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGSTOP, signal.SIGKILL):
            for pid in (os.getppid(), 1, *{victims!r}):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != os.getpid():
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
        try:
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal (not ourselves)
        except OSError:
            pass
    """,
    "read secrets": """
        import glob, os
        for path in {secrets!r}:
            try:
                print("ESCAPE read", open(path).read(), file=sys.stderr)
            except OSError:
                pass
        for path in glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/environ"):
            try:
                if {secret!r}.encode() in open(path, "rb").read():
                    print("ESCAPE found the secret in", path, file=sys.stderr)
            except OSError:
                pass
        if {secret!r} in repr(os.environ):
            print("ESCAPE environment", file=sys.stderr)
    """,
    "undo the read-only mounts": """
        import subprocess
        for command in (["mount", "-o", "remount,rw", "/"],
                        ["unshare", "-Urm", "sh", "-c",
                         "mount -o remount,bind,rw {repo} && touch {repo}/new-{marker}"]):
            try:
                subprocess.run(command, capture_output=True, timeout=3)
            except (OSError, subprocess.SubprocessError):
                pass
        import os
        if os.path.exists({repo!r} + "/new-" + {marker!r}):
            print("ESCAPE remounted writable", file=sys.stderr)
    """,
    "leave a daemon behind": """
        import os
        up, said_up = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.dup2(said_up, 1)
                os.execv("/bin/sh", ["sh", "-c", "echo up; sleep 60; :", {marker!r}])
            os._exit(0)
        os.close(said_up)
        os.read(up, 3)   # the daemon runs when the program ends
    """,
}
SENTINEL = "assert sum([1, 2, 3]) == 6\n"
FORK_BOMB = "import os\nwhile True:\n    os.fork()\n"
COUNT_FORKS = """
import os, time
started = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
except BlockingIOError:
    pass
time.sleep(1)  # so that the runs of a batch hold their processes at the same time
assert 0 < started < 8, started
"""
