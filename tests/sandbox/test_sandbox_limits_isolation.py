"""The sandbox's limits and its isolation from the host, in root's modes (namespaces, and plain
when allowed): hostile programs end with the right status and leave the machine as it was."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from collapse_ray import sandbox
from collapse_ray.sandbox import SandboxUnisolated, api, resources, run_many, run_program

REPO = Path(__file__).resolve().parents[2]
FAST = dict(timeout_s=5)


def program(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# ----------------------------------------------------------------------------- resource limits

def test_an_infinite_loop_times_out():
    result = run_program("while True:\n    pass\n", timeout_s=1)
    assert (result.status, result.returncode) == ("timeout", None)
    assert result.wall_s < 10   # 10x its 1 s timeout: the run is stopped at its timeout


def test_a_busy_signal_handler_that_ignores_sigterm_times_out():
    result = run_program(program("""
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        def busy(*args):
            while True:
                pass
        signal.signal(signal.SIGALRM, busy)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        while True:
            pass
    """), timeout_s=1)
    assert result.status == "timeout"
    assert result.wall_s < 10   # 10x its 1 s timeout


def test_a_fork_bomb_fails_on_the_process_limit(mode):
    result = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=10, max_processes=16,
                         **mode)
    assert result.status == "failed"
    assert "BlockingIOError" in result.stderr_tail


@pytest.mark.parametrize("bomb", [
    "x = bytearray(8 << 30)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
])
def test_a_memory_bomb_hits_the_memory_limit(bomb):
    result = run_program(bomb + "\n", timeout_s=10, memory_mb=256)
    assert (result.status, result.returncode) == ("memory", sandbox.EXIT_MEMORY)


def test_a_file_over_the_size_limit_fails():
    result = run_program("open('big', 'wb').write(bytes(2 << 20))\n", timeout_s=5, max_file_mb=1)
    assert result.status == "failed"
    assert "File too large" in result.stderr_tail


def test_huge_output_is_cut_off_and_fails(mode):
    result = run_program("while True:\n    print('x' * 1000)\n", timeout_s=10, max_output_kb=64,
                         **mode)
    assert result.status == "failed"
    assert "output limit exceeded" in result.stderr_tail


def test_stderr_is_kept_only_as_a_short_tail():
    result = run_program("import sys\nsys.stderr.write('y' * 100_000 + 'END')\n", **FAST)
    assert result.status == "passed"
    assert result.stderr_tail.endswith("END") and len(result.stderr_tail) <= 2048


def test_a_crash_is_reported_as_crashed():
    result = run_program("import faulthandler\nfaulthandler._sigsegv()\n", **FAST)
    assert (result.status, result.returncode) == ("crashed", -11)


# -------------------------------------------------------------------- isolation from the host

def test_files_outside_the_working_directory_can_be_neither_written_nor_deleted(tmp_path, mode):
    canaries = [tmp_path / "canary.txt", REPO / f".sandbox-canary-{uuid.uuid4().hex}"]
    try:
        for canary in canaries:
            canary.write_text("intact")
        listings = {c.parent: sorted(os.listdir(c.parent)) for c in canaries}
        paths = [str(c) for c in canaries]
        result = run_program(program(f"""
            import os, shutil
            attempts = []
            for path in {paths!r}:
                folder = os.path.dirname(path)
                attempts += [
                    lambda path=path: os.remove(path),
                    lambda path=path: open(path, "w").write("overwritten"),
                    lambda path=path: os.rename(path, path + ".moved"),
                    lambda path=path: os.chmod(path, 0o777),
                    lambda folder=folder: open(os.path.join(folder, "new.txt"), "w").close(),
                    lambda folder=folder: shutil.rmtree(folder),
                ]
            succeeded = []
            for attempt in attempts:
                try:
                    attempt()
                    succeeded.append(attempt)
                except OSError:
                    pass
            open("inside.txt", "w").write("the working directory is writable")
            assert succeeded == [], len(succeeded)
            os.remove({paths[0]!r})  # unguarded: the run must fail right here
        """), **FAST, **mode)
        assert result.status == "failed"
        assert "AssertionError" not in result.stderr_tail
        assert "os.remove" in result.stderr_tail
        for canary in canaries:
            assert canary.read_text() == "intact"
        assert {c.parent: sorted(os.listdir(c.parent)) for c in canaries} == listings
    finally:
        for canary in canaries:
            canary.unlink(missing_ok=True)


def test_with_namespaces_writes_to_tmp_and_shm_stay_inside_the_run():
    name = f"sandbox-escape-{uuid.uuid4().hex}"
    result = run_program(program(f"""
        import os
        for folder in ("/tmp", "/dev/shm"):  # private to the run
            open(os.path.join(folder, {name!r}), "w").write("x")
        try:
            open(os.path.join("/var/tmp", {name!r}), "w").close()
        except OSError as error:
            assert error.errno == 30  # read-only file system
        else:
            raise AssertionError("/var/tmp was writable")
        assert not any(n.startswith({sandbox.TMP_PREFIX!r}) and n not in os.getcwd()
                       for n in os.listdir("/tmp")), "other runs' directories are visible"
    """), **FAST)
    if not result.network_isolated:
        pytest.skip("namespaces are not available here")
    assert result.status == "passed", result.stderr_tail
    assert not any(os.path.exists(os.path.join(d, name)) for d in ("/tmp", "/var/tmp", "/dev/shm"))


@pytest.fixture
def open_folder_in_tmp():
    """A folder directly in /tmp that anyone may enter (pytest's own tmp_path is private to its
    user, which the sandbox hides for that reason alone)."""
    folder = Path(tempfile.mkdtemp(prefix="collapse-ray-test-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_interpreter_folder_under_tmp_stays_readable_and_the_rest_of_tmp_hidden(monkeypatch, open_folder_in_tmp):
    # A clone (and its venv) under /tmp: what the interpreter needs there is bound back read-only
    # into the run's private /tmp; a neighbour of it, e.g. another run's folder, is not visible.
    tmp_path = open_folder_in_tmp
    exposed = tmp_path / "venv" / "lib"
    exposed.mkdir(parents=True)
    (exposed / "module.py").write_text("VALUE = 7\n")
    neighbour = tmp_path / "neighbour"
    neighbour.mkdir()
    (neighbour / "secret.txt").write_text("x")
    real = resources.interpreter_paths
    monkeypatch.setattr(resources, "interpreter_paths", lambda run_dir: [*real(run_dir), str(exposed)])
    result = run_program(program(f"""
        import os
        assert open({str(exposed / "module.py")!r}).read() == "VALUE = 7\\n"
        try:
            open({str(exposed / "new.py")!r}, "w").close()
        except OSError as error:
            assert error.errno == 30  # read-only file system
        else:
            raise AssertionError("the interpreter's folder was writable")
        assert not os.path.exists({str(neighbour)!r}), "a neighbour under /tmp is visible"
        open("/tmp/scratch", "w").write("x")  # the rest of /tmp is the run's own
    """), **FAST)
    if not result.network_isolated:
        pytest.skip("namespaces are not available here")
    assert result.status == "passed", result.stderr_tail
    assert not (exposed / "new.py").exists()


def test_multiprocessing_works_in_the_sandbox():
    result = run_program(program("""
        from multiprocessing import Pool
        def square(x):
            return x * x
        if __name__ == "__main__":
            with Pool(2) as pool:
                assert pool.map(square, range(4)) == [0, 1, 4, 9]
    """), timeout_s=20)
    assert result.status == "passed", result.stderr_tail


def test_stdin_is_empty():
    result = run_program("import sys\nassert sys.stdin.read() == ''\n", **FAST)
    assert result.status == "passed", result.stderr_tail


def test_the_working_directory_is_fresh_each_run():
    first = run_program("open('left-behind', 'w').write('x')\n", **FAST)
    second = run_program("import os\nassert os.listdir('.') in ([], ['program.py'])\n", **FAST)
    assert (first.status, second.status) == ("passed", "passed"), second.stderr_tail


def test_secrets_in_the_environment_and_the_home_directory_are_not_visible(monkeypatch, mode):
    secret = f"fake-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    home_canary = Path.home() / f".collapse-ray-canary-{uuid.uuid4().hex}"
    home_canary.write_text(secret)
    try:
        result = run_program(program(f"""
            import glob, os, sys
            assert {secret!r} not in repr(os.environ)
            assert not set(os.environ) & {{"AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}}
            assert os.environ["HOME"] == os.getcwd()
            for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
                try:
                    assert {secret!r}.encode() not in open(path, "rb").read(), path
                except OSError:
                    pass
            try:
                names = os.listdir({str(Path.home())!r})
            except OSError:
                names = []
            assert {home_canary.name!r} not in names
            print(open({str(home_canary)!r}).read(), file=sys.stderr)
        """), **FAST, **mode)
        assert result.status == "failed"  # reading the canary raised
        assert "AssertionError" not in result.stderr_tail
        assert ("FileNotFoundError" in result.stderr_tail
                or "PermissionError" in result.stderr_tail), result.stderr_tail
        assert secret not in result.stderr_tail
    finally:
        home_canary.unlink()


@pytest.fixture
def local_server():
    """A TCP server on 127.0.0.1 that records whether anyone connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    thread.join()
    server.close()
    for conn in connections:
        conn.close()


CONNECT = "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"


def test_the_network_is_unreachable_with_namespaces(local_server):
    port, connections = local_server
    result = run_program(CONNECT.format(port=port), **FAST)
    if not result.network_isolated:
        pytest.skip("namespaces are not available here")
    assert result.status == "failed"
    assert connections == []


def test_without_namespaces_the_result_says_the_network_was_not_isolated(local_server,
                                                                         monkeypatch):
    monkeypatch.setattr(api, "_USE_NAMESPACES", False)
    port, connections = local_server
    result = run_program(CONNECT.format(port=port), allow_unisolated=True, **FAST)
    assert (result.status, result.network_isolated, result.isolation) == ("passed", False, "plain")


def test_without_namespaces_a_run_is_refused_unless_unisolated_runs_are_allowed(monkeypatch):
    monkeypatch.setattr(api, "_USE_NAMESPACES", False)
    with pytest.raises(SandboxUnisolated, match="allow_unisolated"):
        run_program("pass\n", **FAST)
    with pytest.raises(SandboxUnisolated, match="sandbox.allow_unisolated"):
        sandbox.check_isolation()
    with pytest.raises(SandboxUnisolated):
        run_many(["pass\n", "pass\n"], max_workers=2, **FAST)
    assert sandbox.check_isolation(allow_unisolated=True) == "plain"


def test_a_detached_child_does_not_outlive_the_run(marker, leftover_processes, mode):
    result = run_program(program(f"""
        import os
        up, said_up = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:  # a daemon: new session, parent gone, `sh` with our marker
                os.dup2(said_up, 1)
                os.execv("/bin/sh", ["sh", "-c", "echo up; sleep 60; :", {marker!r}])
            os._exit(0)
        os.close(said_up)
        assert os.read(up, 3) == b"up\\n"   # the daemon runs when the program ends
    """), **FAST, **mode)
    assert result.status == "passed", result.stderr_tail
    assert leftover_processes() == []
